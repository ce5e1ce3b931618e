//! The status server on `--metrics-addr`: `/metrics` for Prometheus, `/healthz` for the
//! kubelet's liveness probe, `/readyz` for its readiness probe, and the status page (`/`,
//! and `/status.json` for scripts and the `devices` subcommand; see `status_page`).
//!
//! tiny_http blocks, so it runs on its own thread and never inside the runtime. The
//! routing is a pure function of the request line and its [`Context`], tested without sockets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::BotsMode;
use crate::devices::verdict;
use crate::serve::http::{send, serve, Reply, ServerHandle};
use crate::serve::metrics::{parse_statm_resident, Exposition};
use crate::serve::status_page::{self, BotView, Status};
use crate::state::{BotStatus, Shared};

/// The slice of the configuration the status server reads.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bot_id: String,
    pub no_bot: bool,
    pub interrogate_every: Duration,
    /// The verdict's thresholds, exported so that alert rules need not repeat them.
    pub max_temperature_celsius: f64,
    pub min_battery_percent: f64,
}

/// What the status server is given: every handle (it reads everything) and its slice
/// of the configuration.
pub struct Context {
    pub shared: Arc<Shared>,
    pub settings: Settings,
}

/// Routes one request.
pub fn route(ctx: &Context, method: &str, path: &str) -> Reply {
    let path = path.split('?').next().unwrap_or(path);
    match path {
        "/" | "/healthz" | "/readyz" | "/metrics" | "/status.json"
            if method != "GET" && method != "HEAD" =>
        {
            Reply::text(405, format!("{method} not allowed on {path}; use GET\n"))
        }
        "/healthz" => healthz(ctx),
        "/readyz" => readyz(ctx),
        "/metrics" => metrics(ctx),
        "/status.json" => with_status(ctx, |s| Reply {
            status: 200,
            content_type: "application/json",
            body: status_page::render_json(s).to_string(),
        }),
        "/" => with_status(ctx, |s| Reply {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: status_page::render_html(s),
        }),
        _ => Reply::text(
            404,
            format!("no route {path}; try /, /metrics, /healthz, /readyz or /status.json\n"),
        ),
    }
}

fn healthz(ctx: &Context) -> Reply {
    let shared = &ctx.shared;
    health(
        shared.liveness.since_last_tick(),
        ctx.settings.interrogate_every,
    )
}

/// How many interrogation periods without a main-loop tick make the process dead.
pub const STALL_PERIODS: u32 = 3;

/// Liveness: alive while the main loop has ticked within [`STALL_PERIODS`] periods of
/// `--interrogate-every`. The device watcher ticks once per period (a timer of the app's
/// does when no watcher runs), and its event handling never awaits the network, so only
/// a stuck runtime (a blocking call on its thread, a deadlock) gets this far; the kubelet
/// then restarts us.
pub fn health(since_last_tick: Duration, interval: Duration) -> Reply {
    let limit = interval * STALL_PERIODS;
    if since_last_tick <= limit {
        Reply::text(200, "ok\n")
    } else {
        Reply::text(
            503,
            format!(
                "main loop stalled: no tick for {:.1}s (limit {}s)\n",
                since_last_tick.as_secs_f64(),
                limit.as_secs()
            ),
        )
    }
}

fn readyz(ctx: &Context) -> Reply {
    let shared = &ctx.shared;
    let draining = shared.draining.is_on().then(|| shared.tasks_draining());
    let started = (
        shared.liveness.hooks_serving(),
        shared.snapshot.first_round_done(),
    );
    readiness(started, draining)
}

/// Readiness: the bot may be sent work once the hook server serves and the first
/// device round is published (`started`; before that, its hooks would describe no
/// phones), and until the drain for shutdown begins (`draining`: how many tasks are
/// still being finished).
pub fn readiness(
    (hooks_serving, first_round_done): (bool, bool),
    draining: Option<usize>,
) -> Reply {
    if let Some(tasks) = draining {
        let s = if tasks == 1 { "" } else { "s" };
        return Reply::text(503, format!("draining: {tasks} task{s} running\n"));
    }
    match (hooks_serving, first_round_done) {
        (true, true) => Reply::text(200, "ready\n"),
        (false, _) => Reply::text(503, "not ready: hook server not serving yet\n"),
        (true, false) => Reply::text(503, "not ready: first device interrogation not finished\n"),
    }
}

/// Builds the status page's data from the current snapshot and bot status.
fn with_status(ctx: &Context, f: impl FnOnce(&Status) -> Reply) -> Reply {
    let shared = &ctx.shared;
    let snapshot = shared.snapshot.get();
    let reasons = verdict::with_forced(&snapshot.reasons, shared.forced.get().as_deref());
    let events = shared.events.list();
    let bots: Vec<BotView> = match shared.bots_mode {
        BotsMode::One => vec![BotView {
            id: ctx.settings.bot_id.clone(),
            phone: None,
            status: shared.bot.get(),
            reasons: reasons.clone(),
        }],
        // A forced quarantine is owed to each bot once, by its own get_state: the page
        // shows what the phones and the fleet say, which is what lasts.
        BotsMode::PerDevice => shared
            .per_device_bots
            .bots()
            .into_iter()
            .map(|(id, b)| BotView {
                reasons: verdict::phone_view(&snapshot, &b.serial).reasons,
                status: b.status.get(),
                phone: Some(b.serial),
                id,
            })
            .collect(),
    };
    let mut phone_bots: BTreeMap<String, String> = bots
        .iter()
        .filter_map(|b| Some((b.phone.clone()?, format!("bot {}", b.id))))
        .collect();
    phone_bots.extend(shared.per_device_bots.refused());
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    f(&Status {
        bot_id: &ctx.settings.bot_id,
        version: env!("CARGO_PKG_VERSION"),
        now_unix,
        bots: (!ctx.settings.no_bot).then_some(bots.as_slice()),
        reasons: &reasons,
        devices: &snapshot.devices,
        events: &events,
        phone_bots: &phone_bots,
        kube: &shared.kube.get(),
    })
}

/// Each bot with its status, and each phone's bot id by serial (empty for a phone
/// refused a bot): the Pi's one bot serves every phone with `--bots one`.
fn bots_of(
    ctx: &Context,
    snapshot: &crate::state::snapshot::Snapshot,
) -> (Vec<(String, BotStatus)>, BTreeMap<String, String>) {
    let shared = &ctx.shared;
    match shared.bots_mode {
        BotsMode::One => {
            let id = ctx.settings.bot_id.clone();
            let phones = snapshot
                .devices
                .iter()
                .map(|d| (d.serial.clone(), id.clone()))
                .collect();
            (vec![(id, shared.bot.get())], phones)
        }
        BotsMode::PerDevice => {
            let fleet = shared.per_device_bots.bots();
            let mut phones: BTreeMap<String, String> = shared
                .per_device_bots
                .refused()
                .into_keys()
                .map(|serial| (serial, String::new()))
                .collect();
            phones.extend(fleet.iter().map(|(id, b)| (b.serial.clone(), id.clone())));
            let bots = fleet
                .into_iter()
                .map(|(id, b)| (id, b.status.get()))
                .collect();
            (bots, phones)
        }
    }
}

fn metrics(ctx: &Context) -> Reply {
    let shared = &ctx.shared;
    let snapshot = shared.snapshot.get();
    let reasons = verdict::with_forced(&snapshot.reasons, shared.forced.get().as_deref());
    let statm = std::fs::read_to_string("/proc/self/statm").ok();
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let (bots, phone_bots) = bots_of(ctx, &snapshot);
    let body = Exposition {
        metrics: &shared.metrics,
        version: env!("CARGO_PKG_VERSION"),
        commit: env!("TMM_COMMIT"),
        bots: &bots,
        phone_bots: &phone_bots,
        snapshot: &snapshot,
        notes: &shared.notes.get(),
        node_events_dropped: shared.events.node_dropped(),
        quarantined: !reasons.quarantined.is_empty(),
        maintenance: !reasons.maintenance.is_empty(),
        max_temperature_celsius: ctx.settings.max_temperature_celsius,
        min_battery_percent: ctx.settings.min_battery_percent,
        resident_bytes: statm.and_then(|s| parse_statm_resident(&s, page)),
    }
    .render();
    Reply {
        status: 200,
        content_type: "text/plain; version=0.0.4; charset=utf-8",
        body,
    }
}

/// Binds `--metrics-addr` and serves the status routes.
pub fn start(ctx: Context, server: tiny_http::Server) -> std::io::Result<ServerHandle> {
    serve("status-http", server, move |request| {
        let reply = route(&ctx, request.method().as_str(), request.url());
        send(request, reply);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, Command};
    use crate::state::snapshot::Snapshot;

    /// The status server's context as the program wires it from these flags.
    fn context_of(args: &[&str]) -> Context {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let Ok(Command::Run(config)) = parse(&args, &|_| None, "pi") else {
            panic!("config")
        };
        Context {
            shared: Shared::new(config.bots).0,
            settings: Settings {
                bot_id: config.bot_id.clone(),
                no_bot: config.no_bot,
                interrogate_every: config.interrogate_every,
                max_temperature_celsius: config.max_temperature_celsius,
                min_battery_percent: config.min_battery_percent,
            },
        }
    }

    fn shared() -> Context {
        context_of(&["--no-bot"])
    }

    #[test]
    fn healthz_is_ok_while_ticking() {
        let s = shared();
        s.shared.liveness.tick();
        assert_eq!(route(&s, "GET", "/healthz").status, 200);
    }

    #[test]
    fn health_turns_503_just_past_three_periods() {
        let every = Duration::from_secs(2);
        assert_eq!(health(Duration::ZERO, every).status, 200);
        assert_eq!(health(Duration::from_secs(6), every).status, 200);
        let stalled = health(Duration::from_millis(6001), every);
        assert_eq!(stalled.status, 503);
        assert_eq!(
            stalled.body,
            "main loop stalled: no tick for 6.0s (limit 6s)\n"
        );
        assert_eq!(health(Duration::from_secs(3600), every).status, 503);
        // The limit follows --interrogate-every.
        assert_eq!(
            health(Duration::from_secs(60), Duration::from_secs(30)).status,
            200
        );
    }

    #[test]
    fn healthz_of_a_shared_state_whose_loop_stopped_ticking() {
        let s = context_of(&["--no-bot", "--interrogate-every", "1"]);
        s.shared.liveness.tick();
        assert_eq!(route(&s, "GET", "/healthz").status, 200);
        // No tick for just over 3 × 1 s: the watchdog trips; one tick revives it.
        std::thread::sleep(Duration::from_millis(3100));
        let r = route(&s, "GET", "/healthz");
        assert_eq!(r.status, 503, "{}", r.body);
        s.shared.liveness.tick();
        assert_eq!(route(&s, "GET", "/healthz").status, 200);
    }

    #[test]
    fn readiness_needs_both_conditions() {
        assert_eq!(readiness((true, true), None).status, 200);
        assert_eq!(readiness((false, true), None).status, 503);
        assert_eq!(readiness((false, false), None).status, 503);
        let r = readiness((true, false), None);
        assert_eq!(r.status, 503);
        assert!(r.body.contains("interrogation"));
    }

    #[test]
    fn a_drain_for_shutdown_is_not_ready_and_says_how_many_tasks_run() {
        let r = readiness((true, true), Some(2));
        assert_eq!(
            (r.status, r.body.as_str()),
            (503, "draining: 2 tasks running\n")
        );
        let r = readiness((true, true), Some(1));
        assert_eq!(r.body, "draining: 1 task running\n");
        assert_eq!(readiness((true, true), Some(0)).status, 503);
        let s = shared();
        s.shared.liveness.set_hooks_serving();
        s.shared.snapshot.mark_first_round_done();
        s.shared.liveness.tick();
        assert_eq!(route(&s, "GET", "/readyz").status, 200);
        s.shared.draining.start();
        s.shared.bot.update(|b| {
            b.running = true;
            b.drain = Some(crate::state::bot_status::Drain {
                since_unix: 100.0,
                task_started_unix: 40.0,
            })
        });
        let r = route(&s, "GET", "/readyz");
        assert_eq!(
            (r.status, r.body.as_str()),
            (503, "draining: 1 task running\n")
        );
        // Liveness is not readiness: a draining pod stays alive.
        assert_eq!(route(&s, "GET", "/healthz").status, 200);
    }

    #[test]
    fn readyz_waits_for_hooks_and_the_first_round() {
        let s = shared();
        let r = route(&s, "GET", "/readyz");
        assert_eq!(r.status, 503);
        assert!(r.body.contains("hook server"));
        s.shared.liveness.set_hooks_serving();
        assert!(route(&s, "GET", "/readyz").body.contains("interrogation"));
        // A snapshot of a bare device list is not a finished round.
        s.shared.snapshot.publish(Snapshot::default());
        assert_eq!(route(&s, "GET", "/readyz").status, 503);
        s.shared.snapshot.mark_first_round_done();
        assert_eq!(route(&s, "GET", "/readyz").status, 200);
    }

    #[test]
    fn metrics_carry_build_info_and_memory() {
        let s = shared();
        let r = route(&s, "GET", "/metrics");
        assert_eq!(r.status, 200);
        assert!(r
            .body
            .contains("test_machine_monitor_build_info{version=\""));
        assert!(r
            .body
            .contains("test_machine_monitor_process_resident_memory_bytes "));
    }

    #[test]
    fn unknown_paths_and_methods() {
        let s = shared();
        assert_eq!(route(&s, "GET", "/nope").status, 404);
        assert_eq!(route(&s, "POST", "/healthz").status, 405);
    }
}
