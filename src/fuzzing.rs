//! The fuzz targets' entry points: one function per target, each feeding arbitrary bytes
//! to a real parser, decoder or handler of the program.
//!
//! Why this exists: the program is PID 1 of its pod and is built with `panic = "abort"`,
//! so one panic on an outside input (a phone's output, an adb server's bytes, the token
//! endpoint's answer, a hook request, a downloaded zip) kills the pod, the bot and the
//! task it runs. The libFuzzer targets in `tests/fuzz/` (run by `ci/fuzz`) are three
//! lines each around these functions, and `tests/fuzz_regressions.rs` feeds them every
//! kept crash and seed on each `cargo test`, so a fixed crash stays fixed.
//!
//! Each function takes any bytes and must return; a panic is a finding. Where a cheap
//! invariant exists it is asserted too: a decoder given a stream whole, a byte at a
//! time and in chunks that the input chooses gives the same result; a parser ignores
//! CRLF where its format says it does; what a parser accepts, written out again, reads
//! back the same. Nothing here copies a decoder's logic: the byte streams go through
//! the adb client's own reading (`adb::client::replay`), the hook requests through
//! [`Hooks::handle`].
//!
//! The binary never calls into this module; release builds drop it.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Cursor;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::bot::{token_fetch, zip_check};
use crate::config::{self, swarming_settings, Command};
use crate::devices::adb::client::{replay, ShellProtocol};
use crate::devices::ios::parse as ios;
use crate::devices::parse::{
    batch, battery, data_free, devices_l, getprop, packages, thermal, uptime,
};
use crate::serve::dimension_rules;
use crate::serve::hook_front::{first_request_len, MAX_HEAD};
use crate::serve::hooks::{self, Hooks};
use crate::state::snapshot::{Device, DeviceKind, Dimensions, Link, Snapshot};
use crate::state::token::AccessToken;
use crate::state::{PerDeviceBot, Shared};

/// The bytes as text, as the callers hand them over: the adb client and the iPhone
/// tools' runner decode output with `from_utf8_lossy`.
fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// `text` with every `\n` written as `\r\n` (a PTY's line ends), when that is a
/// transformation the parser must not see: only for text without a `\r` of its own.
fn crlf(text: &str) -> Option<String> {
    (!text.contains('\r')).then(|| text.replace('\n', "\r\n"))
}

/// Both `Ok` and equal (compared through `Debug`, so that floats compare as printed),
/// or both `Err`.
fn same_outcome<T: std::fmt::Debug, E>(a: &Result<T, E>, b: &Result<T, E>, what: &str) {
    match (a, b) {
        (Ok(x), Ok(y)) => assert_eq!(format!("{x:?}"), format!("{y:?}"), "{what}"),
        (Err(_), Err(_)) => {}
        _ => panic!("{what}: one is Ok, the other an error"),
    }
}

/// `getprop`: CRLF line ends read like LF ones, and an accepted map written out again
/// as `[key]: [value]` lines reads back the same.
pub fn getprop(data: &[u8]) {
    let text = text(data);
    let parsed = getprop::parse(&text, |_| true);
    if let Some(crlf) = crlf(&text) {
        same_outcome(
            &parsed,
            &getprop::parse(&crlf, |_| true),
            "getprop with CRLF",
        );
    }
    if let Ok(props) = &parsed {
        if props
            .iter()
            .all(|(k, v)| !k.contains('\r') && !v.contains('\r'))
        {
            let written: String = props
                .iter()
                .map(|(k, v)| format!("[{k}]: [{v}]\n"))
                .collect();
            assert_eq!(
                getprop::parse(&written, |_| true).as_ref(),
                Ok(props),
                "{written:?}"
            );
        }
    }
}

/// `dumpsys battery`: CRLF-blind; an accepted dump has finite readings.
pub fn battery(data: &[u8]) {
    let text = text(data);
    let parsed = battery::parse(&text);
    if let Some(crlf) = crlf(&text) {
        same_outcome(&parsed, &battery::parse(&crlf), "dumpsys battery with CRLF");
    }
    if let Ok(b) = parsed {
        assert!(b.temperature_celsius.is_none_or(f64::is_finite), "{b:?}");
        assert!(b.percent.is_none_or(|p| !p.is_nan()), "{b:?}");
    }
}

/// `dumpsys thermalservice`: CRLF-blind; every reading is a finite temperature.
pub fn thermalservice(data: &[u8]) {
    let text = text(data);
    let parsed = thermal::parse_thermalservice(&text);
    if let Some(crlf) = crlf(&text) {
        same_outcome(
            &parsed,
            &thermal::parse_thermalservice(&crlf),
            "thermalservice with CRLF",
        );
    }
    if let Ok(thermal::Thermal::Readings(readings)) = parsed {
        assert!(
            readings.iter().all(|t| t.celsius.is_finite()),
            "{readings:?}"
        );
    }
}

/// The sysfs thermal zones: CRLF-blind; every reading is above 0 °C and finite.
pub fn thermal_zones(data: &[u8]) {
    let text = text(data);
    let parsed = thermal::parse_sysfs(&text);
    if let Some(crlf) = crlf(&text) {
        same_outcome(
            &parsed,
            &thermal::parse_sysfs(&crlf),
            "thermal zones with CRLF",
        );
    }
    if let Ok(readings) = parsed {
        assert!(
            readings
                .iter()
                .all(|t| t.celsius > 0.0 && t.celsius.is_finite()),
            "{readings:?}"
        );
    }
}

/// `/proc/uptime`: an accepted uptime is finite and not negative.
pub fn uptime(data: &[u8]) {
    if let Ok(secs) = uptime::parse(&text(data)) {
        assert!(secs.is_finite() && secs >= 0.0, "{secs}");
    }
}

/// `host:devices-l`: CRLF-blind; every transport has a one-word serial.
pub fn devices_l(data: &[u8]) {
    let text = text(data);
    let parsed = devices_l::parse(&text);
    if let Some(crlf) = crlf(&text) {
        same_outcome(&parsed, &devices_l::parse(&crlf), "devices-l with CRLF");
    }
    if let Ok(listed) = parsed {
        for l in &listed {
            assert!(
                !l.serial.is_empty() && !l.serial.contains(char::is_whitespace),
                "{l:?}"
            );
        }
    }
}

/// The round script's output splitter. The first byte chooses a cut: output cut off
/// there (a deadline) gives a prefix of the sections of the whole output; and the
/// sections written out again as a script would print them split back the same.
pub fn batch_split(data: &[u8]) {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let output = text(rest);
    let sections = batch::split(&output);
    let mut at = output.len() * usize::from(cut) / 255;
    while !output.is_char_boundary(at) {
        at -= 1;
    }
    let early = batch::split(&output[..at]);
    assert!(
        sections.starts_with(&early),
        "cut at {at}: {early:?} is not a prefix of {sections:?}"
    );
    let written: String = sections
        .iter()
        .map(|s| match s.exit_code {
            Some(code) => format!("{}\n@@tmm-end {} {code}\n", s.text, s.name),
            None => format!("{}\n@@tmm-end {}\n", s.text, s.name),
        })
        .collect();
    assert_eq!(batch::split(&written), sections, "{written:?}");
}

/// `df /data`.
pub fn data_free(data: &[u8]) {
    let _ = data_free::parse(&text(data));
}

/// The package versions: every version kept is a non-empty word run.
pub fn packages(data: &[u8]) {
    if let Ok(versions) = packages::parse(&text(data)) {
        assert!(versions.values().all(|v| !v.is_empty()), "{versions:?}");
    }
}

/// The iPhone tools' outputs: `idevice_id -l` (sorted, distinct UDIDs), one
/// `ideviceinfo` value (one trimmed line) and the battery percentage (0 to 100).
pub fn ios(data: &[u8]) {
    let text = text(data);
    if let Ok(udids) = ios::device_list(&text) {
        assert!(udids.windows(2).all(|w| w[0] < w[1]), "{udids:?}");
        assert!(udids.iter().all(|u| !u.is_empty()), "{udids:?}");
    }
    if let Ok(value) = ios::value("ProductType", &text) {
        assert!(!value.is_empty() && !value.contains('\n'), "{value:?}");
        assert_eq!(value.trim(), value);
    }
    if let Ok(percent) = ios::battery_percent(&text) {
        assert!(percent <= 100, "{percent}");
    }
}

/// An in-memory stream that hands out `rest` in chunks of the given sizes, in turn
/// (one chunk of everything when there are none), then the end of the stream. Writes
/// are swallowed.
struct Chunks<'a> {
    rest: &'a [u8],
    sizes: Vec<usize>,
    next: usize,
}

impl<'a> Chunks<'a> {
    fn new(rest: &'a [u8], sizes: Vec<usize>) -> Chunks<'a> {
        Chunks {
            rest,
            sizes,
            next: 0,
        }
    }
}

impl AsyncRead for Chunks<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let want = match self.sizes.len() {
            0 => self.rest.len(),
            n => self.sizes[self.next % n],
        };
        self.next += 1;
        let n = want.min(self.rest.len()).min(buf.remaining());
        let (head, tail) = self.rest.split_at(n);
        buf.put_slice(head);
        self.rest = tail;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Chunks<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A stream input: the first byte's low 3 bits say how many chunk-size bytes follow (a
/// byte `b` is a chunk of `b + 1` bytes), its other bits are the target's flags, and
/// the rest is the stream. Returns (flags, sizes, stream).
fn stream_input(data: &[u8]) -> (u8, Vec<usize>, &[u8]) {
    let Some((&head, rest)) = data.split_first() else {
        return (0, Vec::new(), &[]);
    };
    let n = usize::from(head & 7).min(rest.len());
    let (sizes, stream) = rest.split_at(n);
    (
        head >> 3,
        sizes.iter().map(|&b| usize::from(b) + 1).collect(),
        stream,
    )
}

/// Streams up to this long are also handed out a byte at a time: every split at once.
/// (Each read costs the client a 16 KiB buffer, so longer ones would slow the fuzzer
/// down for little: their splits come from the input's own chunk sizes.)
const BYTEWISE_UP_TO: usize = 512;

/// Runs `f` on each way to hand out `stream` (whole, a byte at a time when short, in the
/// input's chunks) and asserts they agree.
fn same_in_any_chunks<'a, T, F, Fut>(stream: &'a [u8], sizes: Vec<usize>, f: F)
where
    T: PartialEq + std::fmt::Debug,
    F: Fn(Chunks<'a>) -> Fut,
    Fut: Future<Output = T>,
{
    let whole = block_on(f(Chunks::new(stream, Vec::new())));
    if stream.len() <= BYTEWISE_UP_TO {
        let bytewise = block_on(f(Chunks::new(stream, vec![1])));
        assert_eq!(bytewise, whole, "a byte at a time");
    }
    if !sizes.is_empty() {
        let chunked = block_on(f(Chunks::new(stream, sizes.clone())));
        assert_eq!(chunked, whole, "in chunks of {sizes:?}");
    }
}

/// One current-thread runtime per thread, with timers (the client's reads have
/// deadlines, which an always-ready stream never meets).
fn block_on<F: Future>(f: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime");
    }
    RUNTIME.with(|rt| rt.block_on(f))
}

/// The adb host protocol as the client reads a server: `OKAY`/`FAIL`, then
/// length-prefixed replies until the stream fails or ends; the same however the bytes
/// are split.
pub fn adb_host(data: &[u8]) {
    let (_, sizes, stream) = stream_input(data);
    same_in_any_chunks(stream, sizes, replay::host);
}

/// A shell service's stream (flag bit 0: shell v1, else shell v2) as the client
/// collects it; the same however the bytes are split.
pub fn adb_shell(data: &[u8]) {
    let (flags, sizes, stream) = stream_input(data);
    let protocol = match flags & 1 {
        1 => ShellProtocol::V1,
        _ => ShellProtocol::V2,
    };
    same_in_any_chunks(stream, sizes, |s| replay::shell(s, protocol));
}

/// The token JSON: the `--token-config` file and the token endpoint's answer. An
/// accepted answer's token is one word that has not expired.
pub fn token_json(data: &[u8]) {
    let text = text(data);
    let _ = token_fetch::parse_token_config(std::path::Path::new("token.json"), &text);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(FUZZ_NOW_UNIX);
    if let Ok(token) = token_fetch::parse_token_answer("http://token/", &text, now) {
        assert!(!token.value.is_empty());
        assert!(!token.value.contains(|c: char| c.is_control() || c == ' '));
        assert!(token.expires_at > now);
    }
}

/// The `--settings` merge: what it accepts merges again to itself.
pub fn settings(data: &[u8]) {
    if let Ok(merged) = swarming_settings::merged(&text(data)) {
        assert_eq!(
            swarming_settings::merged(&merged.to_string()),
            Ok(merged.clone())
        );
    }
}

/// What the hook target answers from: the hooks and two contexts from the default
/// configuration, one with `--bots one` and one with `--bots per-device` whose fleet
/// runs one bot, both with a snapshot of one phone and a token.
struct HookWorld {
    hooks: Hooks,
    one: hooks::Context,
    per_device: hooks::Context,
}

const FUZZ_NOW_UNIX: u64 = 1_800_000_000;

/// The default configuration but for `extra` and the one flag without a default (the
/// server is never contacted).
fn hook_context(extra: &[&str]) -> hooks::Context {
    let args: Vec<String> = ["--swarming-server", "https://swarming.invalid"]
        .iter()
        .chain(extra)
        .map(|a| a.to_string())
        .collect();
    let config = match config::parse(&args, &|_| None, "fuzz-pi") {
        Ok(Command::Run(config)) => *config,
        _ => panic!("the default configuration with {args:?} does not parse"),
    };
    // The device-command receiver is dropped: sends are then ignored, not queued.
    let (shared, _) = Shared::new(config.bots);
    let mut phone = Device::listed(DeviceKind::Android, "S1", Link::Device);
    phone.fault = None;
    phone.battery_percent = Some(80.0);
    let dims: Dimensions = BTreeMap::from([("device_type".to_string(), vec!["husky".to_string()])]);
    shared.snapshot.publish(Snapshot {
        taken_at_unix: FUZZ_NOW_UNIX as f64,
        devices: vec![phone],
        dimensions: dims.clone(),
        phone_dimensions: BTreeMap::from([("S1".to_string(), dims)]),
        ..Snapshot::default()
    });
    shared.token.set(AccessToken {
        value: "fuzz-token".to_string(),
        expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(FUZZ_NOW_UNIX + 3600),
    });
    shared.per_device_bots.set(
        BTreeMap::from([(
            "fuzz-pi--S1".to_string(),
            PerDeviceBot {
                serial: "S1".to_string(),
                status: Arc::default(),
                calls: Arc::default(),
            },
        )]),
        BTreeMap::new(),
    );
    hooks::Context::of(&shared, crate::app::hook_settings(&config))
}

thread_local! {
    static HOOK_WORLD: HookWorld = HookWorld {
        hooks: Hooks::new(&swarming_settings::defaults()),
        one: hook_context(&[]),
        per_device: hook_context(&["--bots", "per-device"]),
    };
}

/// A hook request through the hook server's request handling. The first byte picks
/// the method and the mode, the second the path, the third the bot header; the rest
/// is the body. Every answer is JSON, and the dimensions answered pass Swarming's rules.
pub fn hooks(data: &[u8]) {
    const METHODS: [&str; 4] = ["POST", "GET", "PUT", "post"];
    const PATHS: [&str; 10] = [
        "/get_dimensions",
        "/get_state",
        "/get_settings",
        "/get_authentication_headers",
        "/on_before_task",
        "/on_after_task",
        "/on_bot_shutdown",
        "/get_state?x=1&y",
        "/",
        "/get_state/",
    ];
    const BOTS: [Option<&str>; 4] = [None, Some("fuzz-pi--S1"), Some("fuzz-pi"), Some("")];
    let [a, b, c, body @ ..] = data else {
        return;
    };
    let method = METHODS[usize::from(a & 3)];
    let path = PATHS[usize::from(*b) % PATHS.len()];
    let bot = BOTS[usize::from(c & 3)];
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(FUZZ_NOW_UNIX);
    HOOK_WORLD.with(|w| {
        let ctx = if a & 4 == 0 { &w.one } else { &w.per_device };
        let reply = w.hooks.handle(ctx, now, (method, path, bot), body);
        assert_eq!(reply.content_type, "application/json", "{reply:?}");
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&reply.body) {
            panic!("{method} {path}: the answer is not JSON ({e}): {reply:?}");
        }
        // The dimensions sent to Swarming pass its rules as they are.
        if path == "/get_dimensions" && reply.status == 200 {
            let sent: Dimensions = serde_json::from_str(&reply.body).expect("dimensions");
            let again = dimension_rules::sanitize(sent.clone());
            assert_eq!(again.dimensions, sent, "{:?}", again.warnings);
        }
    });
}

/// The hook port's front door deciding, from a connection's first bytes, when its first
/// request is in full. A complete head always decides, and decides on the head alone
/// (more bytes change nothing); without one, only a head of [`MAX_HEAD`] or more is
/// handed on, whole.
pub fn hook_front(data: &[u8]) {
    let decided = first_request_len(data);
    match data.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => {
            let n = decided.expect("a complete head decides");
            assert!(n >= end + 4, "{n} bytes for a head of {}", end + 4);
            assert_eq!(
                first_request_len(&data[..end + 4]),
                decided,
                "decided on the head"
            );
        }
        None if data.len() >= MAX_HEAD => assert_eq!(decided, Some(data.len())),
        None => assert_eq!(decided, None),
    }
}

/// The check of `swarming_bot.zip` on any bytes: an accepted zip has the bot's two
/// required entries at least.
pub fn bot_zip(data: &[u8]) {
    if let Ok(entries) = zip_check::check_zip(Cursor::new(data)) {
        assert!(entries >= 2, "{entries} entries");
    }
}
