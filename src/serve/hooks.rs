//! The hook server on `--hook-addr`: the bot's `bot_config` hooks, forwarded by the
//! script in `bot_config.py`, answered from memory.
//!
//! Every answer comes from the latest [`Snapshot`], the
//! token cache, the bot status and the settings fixed at start-up. No route waits on
//! adb, the network or a lock held across I/O; work a hook triggers (the reboot after a
//! task) is handed to the device watcher as a [`DeviceCommand`] and never awaited.
//!
//! [`Hooks::handle`] maps one request to a [`Reply`] and is tested without sockets. The
//! only I/O it does is the forced-quarantine check in `/get_state`: one `unlink` of
//! `config.force_quarantine_file` per call. It is done there, and not on a timer, so
//! the quarantine is reported in the very answer that consumed the file; `get_state`
//! is called once per bot poll, so the cost does not matter.
//!
//! The threads that serve these routes are `hook_server`'s.
//!
//! Each call a bot makes is noted in its [`HookCalls`], with its tasks' start and end:
//! its supervisor kills a bot that has gone silent (`--bot-silence-limit`).
//!
//! This module must not block on anything but its own sockets, and must never log a
//! token.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{json, Map, Value};

use crate::devices::verdict;
use crate::serve::caller::{self, Caller};
use crate::serve::dimension_rules;
use crate::serve::http::{error_reply, json_reply, Reply, MAX_BODY};
use crate::state::metrics::HookRoute;
use crate::state::metrics::Metrics;
use crate::state::snapshot::{Device, Dimensions, Snapshot};
use crate::state::token::TokenCache;
use crate::state::{
    BotStatusCell, DeviceCommand, DeviceCommands, Draining, ForcedQuarantine, HookCalls, Liveness,
    PerDeviceBots, Shared, SnapshotCell,
};

/// The hooks `bot_config.py` forwards, one route each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    GetDimensions,
    GetState,
    GetSettings,
    GetAuthenticationHeaders,
    OnBeforeTask,
    OnAfterTask,
    OnBotShutdown,
}

impl Route {
    pub fn from_path(path: &str) -> Option<Route> {
        Some(match path {
            "/get_dimensions" => Route::GetDimensions,
            "/get_state" => Route::GetState,
            "/get_settings" => Route::GetSettings,
            "/get_authentication_headers" => Route::GetAuthenticationHeaders,
            "/on_before_task" => Route::OnBeforeTask,
            "/on_after_task" => Route::OnAfterTask,
            "/on_bot_shutdown" => Route::OnBotShutdown,
            _ => return None,
        })
    }

    /// The metrics label: the path without its slash.
    pub fn label(self) -> HookRoute {
        match self {
            Route::GetDimensions => HookRoute::GetDimensions,
            Route::GetState => HookRoute::GetState,
            Route::GetSettings => HookRoute::GetSettings,
            Route::GetAuthenticationHeaders => HookRoute::GetAuthenticationHeaders,
            Route::OnBeforeTask => HookRoute::OnBeforeTask,
            Route::OnAfterTask => HookRoute::OnAfterTask,
            Route::OnBotShutdown => HookRoute::OnBotShutdown,
        }
    }

    fn methods(self) -> &'static [&'static str] {
        match self {
            Route::GetDimensions | Route::GetState => &["POST"],
            Route::GetSettings | Route::GetAuthenticationHeaders => &["GET"],
            Route::OnBeforeTask | Route::OnAfterTask | Route::OnBotShutdown => &["POST", "GET"],
        }
    }

    pub fn allows(self, method: &str) -> bool {
        self.methods().contains(&method)
    }

    /// Whether the route looks at the request body at all.
    pub fn reads_body(self) -> bool {
        !matches!(self, Route::GetSettings | Route::GetAuthenticationHeaders)
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The body as a JSON object; `what` names what was expected, for the error.
fn parse_object(body: &[u8], what: &str) -> Result<Map<String, Value>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(format!("expected {what}, got an empty body"));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(format!("expected {what}, got {}", type_name(&other))),
        Err(e) => Err(format!("expected {what}, got invalid JSON: {e}")),
    }
}

fn parse_dimensions(body: &[u8]) -> Result<Dimensions, String> {
    // The fast path, taken on every poll; the slower walk below only explains errors.
    if let Ok(dims) = serde_json::from_slice::<Dimensions>(body) {
        return Ok(dims);
    }
    let what = "a JSON object of the bot's dimensions ({\"key\": [\"value\", ...]})";
    let map = parse_object(body, what)?;
    let mut dims = Dimensions::new();
    for (key, value) in map {
        let Value::Array(items) = value else {
            return Err(format!(
                "dimension {key:?}: expected a list of strings, got {}",
                type_name(&value)
            ));
        };
        let mut values = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Value::String(s) => values.push(s),
                other => {
                    return Err(format!(
                        "dimension {key:?}: expected a list of strings, found {}",
                        type_name(&other)
                    ))
                }
            }
        }
        dims.insert(key, values);
    }
    Ok(dims)
}

/// The facts the state hook reports for one phone: its device view.
pub fn device_json(d: &Device) -> Value {
    crate::state::device_view::DeviceView::of(d).to_json()
}

/// The slice of the configuration the hooks read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `--bots`: whether a call comes from the Pi's one bot or names a phone's.
    pub bots: crate::config::BotsMode,
    /// The Pi's one bot's id.
    pub bot_id: String,
    /// The file that quarantines the bot at its next `get_state`.
    pub force_quarantine_file: std::path::PathBuf,
}

/// What the hooks are given: their settings, the readings they answer from, the forced
/// quarantine and the device commands, which they alone write and send.
pub struct Context {
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub snapshot: Arc<SnapshotCell>,
    pub bot: Arc<BotStatusCell>,
    /// The Pi's one bot's calls; a phone's bot's are in its [`Caller`].
    pub calls: Arc<HookCalls>,
    pub token: Arc<TokenCache>,
    pub liveness: Arc<Liveness>,
    pub forced: Arc<ForcedQuarantine>,
    pub commands: DeviceCommands,
    pub per_device_bots: Arc<PerDeviceBots>,
    /// Set while the program drains for shutdown: every bot is then in maintenance.
    pub draining: Arc<Draining>,
}

impl Context {
    /// The hooks' handles out of `app`'s bundle.
    pub fn of(shared: &Shared, settings: Settings) -> Context {
        Context {
            settings,
            metrics: shared.metrics.clone(),
            snapshot: shared.snapshot.clone(),
            bot: shared.bot.clone(),
            calls: shared.calls.clone(),
            token: shared.token.clone(),
            liveness: shared.liveness.clone(),
            forced: shared.forced.clone(),
            commands: shared.commands.clone(),
            per_device_bots: shared.per_device_bots.clone(),
            draining: shared.draining.clone(),
        }
    }
}

/// Answers the hooks. Holds what is fixed at start-up; everything else is read from
/// [`Context`] on each call.
pub struct Hooks {
    /// The `/get_settings` answer, rendered once.
    settings: String,
}

impl Hooks {
    /// `settings` are the validated bot settings (see `swarming_settings::load`).
    pub fn new(settings: &Value) -> Hooks {
        Hooks {
            settings: settings.to_string(),
        }
    }

    /// Routes one request: `(method, path, bot)`, where `path` may carry a query
    /// string, which is ignored, and `bot` is the calling bot's id from the
    /// [`BOT_HEADER`](crate::serve::caller::BOT_HEADER) header, if it sent one; `body` is what was read of the request
    /// body (at most [`MAX_BODY`] + 1 bytes).
    pub fn handle(
        &self,
        ctx: &Context,
        now: SystemTime,
        request: (&str, &str, Option<&str>),
        body: &[u8],
    ) -> Reply {
        let (method, path, bot) = request;
        let path = path.split('?').next().unwrap_or(path);
        let Some(route) = Route::from_path(path) else {
            return error_reply(
                404,
                format!(
                    "no hook {path:?}; the hooks are /get_dimensions, /get_state, /get_settings, \
                     /get_authentication_headers, /on_before_task, /on_after_task, /on_bot_shutdown"
                ),
            );
        };
        if !route.allows(method) {
            return error_reply(
                405,
                format!(
                    "{method} not allowed on {path}; use {}",
                    route.methods().join(" or ")
                ),
            );
        }
        if route.reads_body() && body.len() > MAX_BODY {
            return error_reply(413, "request body over the 1 MiB limit");
        }
        let caller = || {
            let c = caller::resolve(ctx.settings.bots, &ctx.per_device_bots, bot)?;
            calls_of(ctx, &c).called();
            Ok::<Caller, String>(c)
        };
        let result = match route {
            Route::GetDimensions => caller().and_then(|c| get_dimensions(ctx, &c, body)),
            Route::GetState => caller().and_then(|c| get_state(ctx, &c, body)),
            Route::GetSettings => Ok(Reply {
                status: 200,
                content_type: "application/json",
                body: self.settings.clone(),
            }),
            Route::GetAuthenticationHeaders => Ok(authentication_headers(ctx, now)),
            Route::OnBeforeTask => caller().and_then(|c| {
                // Whatever the body, the bot runs the task and calls no hook meanwhile.
                calls_of(ctx, &c).task_started();
                optional_object(body)?;
                match c {
                    Caller::Pi => {
                        log::info!("task starting: holding off device reboots until it ends");
                        ctx.commands.send(DeviceCommand::TaskStarted);
                    }
                    Caller::Phone { id, serial, .. } => {
                        log::info!(
                            "task starting on {id}: holding off {serial}'s reboot until it ends"
                        );
                        ctx.commands.send(DeviceCommand::PhoneTaskStarted(serial));
                    }
                }
                Ok(json_reply(200, &json!({})))
            }),
            Route::OnAfterTask => caller().and_then(|c| {
                calls_of(ctx, &c).task_ended();
                on_after_task(ctx, c, body)
            }),
            Route::OnBotShutdown => optional_object(body).map(|_| {
                log::info!("bot is shutting down (on_bot_shutdown)");
                json_reply(200, &json!({}))
            }),
        };
        result.unwrap_or_else(|why| error_reply(400, why))
    }
}

/// Where the calls of `caller` are noted.
fn calls_of<'a>(ctx: &'a Context, caller: &'a Caller) -> &'a HookCalls {
    match caller {
        Caller::Pi => &ctx.calls,
        Caller::Phone { calls, .. } => calls,
    }
}

fn get_dimensions(ctx: &Context, caller: &Caller, body: &[u8]) -> Result<Reply, String> {
    let mut dims = parse_dimensions(body)?;
    let snapshot = ctx.snapshot.get();
    let (ours, id) = match caller {
        Caller::Pi => (snapshot.dimensions.clone(), ctx.settings.bot_id.clone()),
        Caller::Phone { id, serial, .. } => (
            verdict::phone_view(&snapshot, serial).dimensions,
            id.clone(),
        ),
    };
    for (key, values) in ours {
        dims.insert(key, values);
    }
    dims.insert("id".to_string(), vec![id]);
    let clean = dimension_rules::sanitize(dims);
    for warning in &clean.warnings {
        log::warn!("get_dimensions: {warning}");
    }
    let body = serde_json::to_string(&clean.dimensions).map_err(|e| e.to_string())?;
    Ok(Reply {
        status: 200,
        content_type: "application/json",
        body,
    })
}

fn get_state(ctx: &Context, caller: &Caller, body: &[u8]) -> Result<Reply, String> {
    let mut state = parse_object(body, "a JSON object of the bot's state")?;
    let snapshot = ctx.snapshot.get();
    add_our_state(ctx, caller, &snapshot, &mut state);
    let forced = take_forced_quarantine(ctx);
    let reasons = match caller {
        Caller::Pi => {
            ctx.forced.set(forced);
            verdict::with_forced(&snapshot.reasons, ctx.forced.get().as_deref())
        }
        Caller::Phone { id, serial, .. } => {
            let forced = ctx
                .forced
                .for_bot(forced, || ctx.per_device_bots.bots().into_keys(), id);
            verdict::with_forced(
                &verdict::phone_view(&snapshot, serial).reasons,
                forced.as_deref(),
            )
        }
    };
    let quarantined = &reasons.quarantined;
    if !quarantined.is_empty() {
        state.insert("quarantined".into(), json!(quarantined.join("; ")));
    }
    let reasons = match ctx.draining.is_on() {
        true => verdict::while_draining(reasons),
        false => reasons,
    };
    let maintenance = &reasons.maintenance;
    if !maintenance.is_empty() {
        state.insert("maintenance".into(), json!(maintenance.join("; ")));
    }
    Ok(json_reply(200, &Value::Object(state)))
}

fn add_our_state(
    ctx: &Context,
    caller: &Caller,
    snapshot: &Snapshot,
    state: &mut Map<String, Value>,
) {
    let (devices, bot): (Vec<Value>, _) = match caller {
        Caller::Pi => (
            snapshot.devices.iter().map(device_json).collect(),
            ctx.bot.get(),
        ),
        Caller::Phone { serial, status, .. } => (
            snapshot
                .devices
                .iter()
                .filter(|d| &d.serial == serial)
                .map(device_json)
                .collect(),
            status.get(),
        ),
    };
    state.insert("devices".into(), Value::Array(devices));
    state.insert(
        "monitor".into(),
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "commit": env!("TMM_COMMIT"),
            "uptime_secs": ctx.liveness.uptime().as_secs(),
            "bot_restarts": bot.restarts,
            "last_bot_exit": bot.last_exit.map(|e| e.to_string()),
        }),
    );
}

/// Consumes the forced-quarantine file: `Some(file)` when it was there (the verdict
/// says it as a reason).
fn take_forced_quarantine(ctx: &Context) -> Option<PathBuf> {
    let path = &ctx.settings.force_quarantine_file;
    match std::fs::remove_file(path) {
        Ok(()) => {
            log::info!(
                "forced quarantine: {} was present; reporting quarantined once and deleted it",
                path.display()
            );
            Some(path.clone())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        // It is there but cannot be deleted: keep reporting until someone removes it.
        Err(e) if std::fs::symlink_metadata(path).is_ok() => {
            log::warn!(
                "forced quarantine: cannot delete {} ({e}); reporting quarantined until it is gone",
                path.display()
            );
            Some(path.clone())
        }
        Err(_) => None,
    }
}

fn authentication_headers(ctx: &Context, now: SystemTime) -> Reply {
    match ctx.token.get(now) {
        Some(token) => {
            let expiry = token
                .expires_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            json_reply(
                200,
                &json!({
                    "headers": {"Authorization": format!("Bearer {}", token.value)},
                    "expiry": expiry,
                }),
            )
        }
        None => error_reply(
            503,
            "no OAuth access token: none fetched yet, or the last one expired \
             (see test_machine_monitor_token_fetches_total)",
        ),
    }
}

/// An empty body, or a JSON object.
fn optional_object(body: &[u8]) -> Result<Option<Map<String, Value>>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    parse_object(body, "an empty body or a JSON object").map(Some)
}

fn on_after_task(ctx: &Context, caller: Caller, body: &[u8]) -> Result<Reply, String> {
    let task = optional_object(body)?.unwrap_or_default();
    let flag = |name: &str| -> Result<Option<bool>, String> {
        match task.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(format!(
                "{name:?}: expected a boolean, got {}",
                type_name(other)
            )),
        }
    };
    let failure = flag("failure")?;
    let internal_failure = flag("internal_failure")?;
    for name in ["dimensions", "summary"] {
        match task.get(name) {
            None | Some(Value::Null) | Some(Value::Object(_)) => {}
            Some(other) => {
                return Err(format!(
                    "{name:?}: expected an object, got {}",
                    type_name(other)
                ))
            }
        }
    }
    let shown = |f: Option<bool>| f.map_or("unknown".to_string(), |b| b.to_string());
    let (who, command) = match caller {
        Caller::Pi => (String::new(), DeviceCommand::TaskEnded),
        Caller::Phone { id, serial, .. } => {
            (format!(" on {id}"), DeviceCommand::PhoneTaskEnded(serial))
        }
    };
    log::info!(
        "task ended{who} (failure={}, internal_failure={}): starting the after-task device work",
        shown(failure),
        shown(internal_failure)
    );
    ctx.commands.send(command);
    Ok(json_reply(200, &json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, Command};
    use crate::runtime::reaper::Exit;
    use crate::state::snapshot::{usable_device, DeviceKind, Reasons, Temperature};
    use crate::state::token::AccessToken;
    use std::time::Duration;

    /// The handles and the hooks' settings, as the program wires them from the flags.
    struct Wired {
        shared: Arc<Shared>,
        settings: Settings,
    }

    impl std::ops::Deref for Wired {
        type Target = Shared;
        fn deref(&self) -> &Shared {
            &self.shared
        }
    }

    fn wired(args: &[String]) -> (Wired, tokio::sync::mpsc::UnboundedReceiver<DeviceCommand>) {
        let Ok(Command::Run(config)) = parse(args, &|_| None, "pi") else {
            panic!("config")
        };
        let (shared, rx) = Shared::new(config.bots);
        let settings = Settings {
            bots: config.bots,
            bot_id: config.bot_id.clone(),
            force_quarantine_file: config.force_quarantine_file.clone(),
        };
        (Wired { shared, settings }, rx)
    }

    fn shared_with(args: &[&str]) -> Wired {
        let mut all = vec!["--no-bot".to_string(), "--bot-id".into(), "pi-7".into()];
        all.extend(args.iter().map(|s| s.to_string()));
        wired(&all).0
    }

    /// A bot dir under a fresh temp dir, so the forced-quarantine file is ours.
    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("tmm-hooks-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("b")).unwrap();
        dir
    }

    fn shared(name: &str) -> Wired {
        let dir = temp_dir(name);
        let bot_dir = dir.join("b").join("s");
        shared_with(&["--bot-dir", bot_dir.to_str().unwrap()])
    }

    fn hooks() -> Hooks {
        Hooks::new(&crate::config::swarming_settings::defaults())
    }

    fn call(s: &Wired, method: &str, path: &str, body: &str) -> (u16, Value) {
        call_as(s, None, method, path, body)
    }

    /// A call from the bot `bot` (its [`BOT_HEADER`]).
    fn call_as(s: &Wired, bot: Option<&str>, method: &str, path: &str, body: &str) -> (u16, Value) {
        let ctx = Context::of(s, s.settings.clone());
        let r = hooks().handle(
            &ctx,
            SystemTime::now(),
            (method, path, bot),
            body.as_bytes(),
        );
        assert_eq!(r.content_type, "application/json");
        (r.status, serde_json::from_str(&r.body).unwrap())
    }

    fn android(serial: &str) -> Device {
        let mut d = usable_device(DeviceKind::Android, serial);
        d.battery_percent = Some(88.0);
        d.temperatures = vec![Temperature {
            sensor: "battery".into(),
            celsius: 31.5,
        }];
        d.uptime_secs = Some(120.0);
        d.build = Some("QQ1A_123".into());
        d
    }

    fn publish(s: &Shared, dims: &[(&str, &[&str])], reasons: Reasons) {
        let dimensions = dims
            .iter()
            .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect()))
            .collect();
        s.snapshot.publish(Snapshot {
            taken_at_unix: 1.0,
            devices: vec![android("S1")],
            dimensions,
            reasons,
            ..Snapshot::default()
        });
    }

    #[test]
    fn calls_and_tasks_are_noted_for_the_silence_limit() {
        let s = shared("calls");
        assert_eq!(s.calls.get(), crate::state::Calls::default());
        call(&s, "POST", "/get_state", "{}");
        let first = s.calls.get().last.expect("get_state noted");
        assert_eq!(s.calls.get().task_since, None);
        call(&s, "POST", "/on_before_task", "{}");
        let task = s.calls.get().task_since.expect("the task noted");
        assert!(task >= first && s.calls.get().last >= Some(first));
        // A body the hook refuses still means the task has ended.
        let (code, _) = call(&s, "POST", "/on_after_task", "[]");
        assert_eq!(code, 400);
        assert_eq!(s.calls.get().task_since, None);
        // Settings and tokens are not the bot's polling.
        let before = s.calls.get();
        call(&s, "GET", "/get_settings", "");
        assert_eq!(s.calls.get(), before);
    }

    #[test]
    fn a_phone_bots_calls_are_noted_for_that_bot_alone() {
        let s = shared_with(&["--bots", "per-device"]);
        let bot = crate::state::PerDeviceBot {
            serial: "S1".into(),
            status: Arc::default(),
            calls: Arc::default(),
        };
        let calls = bot.calls.clone();
        s.per_device_bots.set(
            std::collections::BTreeMap::from([("pi-7--S1".to_string(), bot)]),
            std::collections::BTreeMap::new(),
        );
        call_as(&s, Some("pi-7--S1"), "POST", "/on_before_task", "{}");
        assert!(calls.get().last.is_some() && calls.get().task_since.is_some());
        assert_eq!(s.calls.get(), crate::state::Calls::default());
    }

    #[test]
    fn dimensions_overlay_the_device_ones_and_force_the_id() {
        let s = shared("dims");
        publish(
            &s,
            &[("device_type", &["sargo"]), ("os", &["Android"])],
            Reasons::default(),
        );
        let (code, v) = call(
            &s,
            "POST",
            "/get_dimensions",
            r#"{"id": ["other"], "os": ["Linux"], "cpu": ["arm"], "gpu": [], "bad key": ["x"]}"#,
        );
        assert_eq!(code, 200);
        assert_eq!(
            v,
            json!({"id": ["pi-7"], "os": ["Android"], "cpu": ["arm"], "device_type": ["sargo"]})
        );
    }

    #[test]
    fn dimensions_reject_bad_bodies() {
        let s = shared("dims-bad");
        for body in ["", "nope", "[]", r#"{"os": "Linux"}"#, r#"{"os": [1]}"#] {
            let (code, v) = call(&s, "POST", "/get_dimensions", body);
            assert_eq!(code, 400, "{body}");
            assert!(v["error"].as_str().unwrap().contains("expected"), "{v}");
        }
    }

    #[test]
    fn state_keeps_the_bot_keys_and_adds_ours() {
        let s = shared("state");
        s.bot.update(|b| {
            b.restarts = 3;
            b.last_exit = Some(Exit::Code(1));
        });
        publish(
            &s,
            &[],
            Reasons {
                quarantined: vec!["S2: unauthorized".into()],
                maintenance: vec!["S1: battery low (12%)".into(), "S3: booting".into()],
            },
        );
        let (code, v) = call(
            &s,
            "POST",
            "/get_state",
            r#"{"running_time": 5, "quarantined": "bot's own", "maintenance": "bot's own"}"#,
        );
        assert_eq!(code, 200);
        assert_eq!(v["running_time"], 5);
        assert_eq!(v["quarantined"], "S2: unauthorized");
        assert_eq!(v["maintenance"], "S1: battery low (12%); S3: booting");
        assert_eq!(v["monitor"]["bot_restarts"], 3);
        assert_eq!(v["monitor"]["last_bot_exit"], "exit code 1");
        assert_eq!(v["monitor"]["version"], env!("CARGO_PKG_VERSION"));
        let d = &v["devices"][0];
        assert_eq!(d["serial"], "S1");
        assert_eq!(d["kind"], "android");
        assert_eq!(d["battery_percent"], 88.0);
        assert_eq!(d["temperatures"]["battery"], 31.5);
        assert_eq!(d["build"], "QQ1A_123");
        assert_eq!(d["unusable"], Value::Null);
    }

    #[test]
    fn state_keeps_the_bots_reasons_when_we_have_none() {
        let s = shared("state-own");
        let (_, v) = call(
            &s,
            "POST",
            "/get_state",
            r#"{"quarantined": "disk full", "maintenance": "cooling"}"#,
        );
        assert_eq!(v["quarantined"], "disk full");
        assert_eq!(v["maintenance"], "cooling");
        let (_, v) = call(&s, "POST", "/get_state", "{}");
        assert!(v.get("quarantined").is_none());
        assert!(v.get("maintenance").is_none());
    }

    #[test]
    fn while_draining_for_shutdown_every_bot_is_in_maintenance() {
        let s = shared("draining");
        let (_, v) = call(&s, "POST", "/get_state", "{}");
        assert!(v.get("maintenance").is_none());
        s.draining.start();
        let (_, v) = call(&s, "POST", "/get_state", "{}");
        assert_eq!(v["maintenance"], "draining for shutdown");
        publish(
            &s,
            &[],
            Reasons {
                quarantined: vec![],
                maintenance: vec!["S1: battery low (12%)".into()],
            },
        );
        let (_, v) = call(&s, "POST", "/get_state", "{}");
        assert_eq!(
            v["maintenance"],
            "S1: battery low (12%); draining for shutdown"
        );
    }

    #[test]
    fn forced_quarantine_is_reported_once_then_deleted() {
        let s = shared("force");
        let file = s.settings.force_quarantine_file.clone();
        std::fs::write(&file, "").unwrap();
        publish(
            &s,
            &[],
            Reasons {
                quarantined: vec!["S2: missing".into()],
                maintenance: vec![],
            },
        );
        let (_, v) = call(&s, "POST", "/get_state", "{}");
        let q = v["quarantined"].as_str().unwrap();
        assert!(q.starts_with("S2: missing; forced quarantine ("), "{q}");
        assert!(!file.exists());
        let (_, v) = call(&s, "POST", "/get_state", "{}");
        assert_eq!(v["quarantined"], "S2: missing");
    }

    #[test]
    fn state_rejects_non_objects() {
        let s = shared("state-bad");
        assert_eq!(call(&s, "POST", "/get_state", "[1]").0, 400);
        assert_eq!(call(&s, "POST", "/get_state", "{").0, 400);
    }

    #[test]
    fn settings_are_served_as_given() {
        let s = shared("settings");
        let (code, v) = call(&s, "GET", "/get_settings", "");
        assert_eq!(code, 200);
        assert_eq!(v, crate::config::swarming_settings::defaults());
    }

    #[test]
    fn authentication_headers_come_from_the_token_cache() {
        let s = shared("auth");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let headers_at = |at| {
            let ctx = Context::of(&s, s.settings.clone());
            hooks().handle(&ctx, at, ("GET", "/get_authentication_headers", None), b"")
        };
        let r = headers_at(now);
        assert_eq!(r.status, 503);
        assert!(r.body.contains("no OAuth access token"));
        s.token.set(AccessToken {
            value: "ya29.abc".into(),
            expires_at: now + Duration::from_secs(3600),
        });
        let r = headers_at(now);
        assert_eq!(r.status, 200);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(
            v,
            json!({"headers": {"Authorization": "Bearer ya29.abc"}, "expiry": 1_700_003_600u64})
        );
        let later = now + Duration::from_secs(3600);
        let r = headers_at(later);
        assert_eq!(r.status, 503);
    }

    #[test]
    fn task_hooks_answer_at_once_and_notify_the_watcher() {
        let mut all = vec!["--no-bot".to_string()];
        all.extend(["--bot-dir".to_string(), "/nonexistent/b/s".to_string()]);
        let (s, mut rx) = wired(&all);
        assert_eq!(call(&s, "GET", "/on_before_task", "").0, 200);
        assert_eq!(rx.try_recv().unwrap(), DeviceCommand::TaskStarted);
        let body = r#"{"failure": true, "internal_failure": false, "dimensions": {"pool": ["x"]}, "summary": {}}"#;
        let (code, v) = call(&s, "POST", "/on_after_task", body);
        assert_eq!((code, v), (200, json!({})));
        assert_eq!(rx.try_recv().unwrap(), DeviceCommand::TaskEnded);
        assert_eq!(call(&s, "GET", "/on_after_task", "").0, 200);
        assert_eq!(rx.try_recv().unwrap(), DeviceCommand::TaskEnded);
        assert_eq!(call(&s, "POST", "/on_bot_shutdown", "").0, 200);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn after_task_rejects_wrong_types_without_acting() {
        let all = vec!["--no-bot".to_string()];
        let (s, mut rx) = wired(&all);
        for body in [r#"{"failure": "yes"}"#, r#"{"summary": []}"#, "[]", "x"] {
            assert_eq!(call(&s, "POST", "/on_after_task", body).0, 400, "{body}");
        }
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn unknown_paths_wrong_methods_and_big_bodies() {
        let s = shared("errors");
        let (code, v) = call(&s, "GET", "/nope", "");
        assert_eq!(code, 404);
        assert!(v["error"].as_str().unwrap().contains("/get_dimensions"));
        let (code, v) = call(&s, "GET", "/get_dimensions", "");
        assert_eq!(code, 405);
        assert!(v["error"].as_str().unwrap().contains("use POST"));
        assert_eq!(call(&s, "POST", "/get_settings", "").0, 405);
        assert_eq!(call(&s, "PUT", "/on_after_task", "").0, 405);
        let big = format!("{{\"k\": [\"{}\"]}}", "x".repeat(MAX_BODY));
        assert_eq!(call(&s, "POST", "/get_dimensions", &big).0, 413);
        // The query string is not part of the route.
        assert_eq!(call(&s, "GET", "/get_settings?x=1", "").0, 200);
    }
}
