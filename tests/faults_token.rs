//! Fault 5 of the campaign (`ci/faults`): a token endpoint that accepts and never
//! answers, then one that answers a byte a second. Each fetch must end at its own
//! deadline and be retried, and nothing else (the hooks, /metrics) may wait on it.

mod support;

use std::time::{Duration, Instant};

use support::http::try_request;
use support::swarming::FakeSwarming;
use support::tmm::{line_time, lines_with};
use support::{faults, Monitor, Tmm, BOT_ID};

/// The fetch's end-to-end deadline in `src/bot/token_fetch.rs`.
const TOKEN_TIMEOUT: f64 = 20.0;

/// How long a hook may take while the fetch hangs before the test calls it blocked: a
/// hang check, generous for a loaded machine, not a speed claim.
const HOOK_LIMIT: Duration = Duration::from_secs(5);

/// The hooks and /metrics, each answered while a fetch hangs; returns the slowest.
fn answers_while_fetch_hangs(m: &Monitor) -> Duration {
    let mut slowest = Duration::ZERO;
    let dimensions = format!(r#"{{"id": ["{BOT_ID}"]}}"#);
    for (port, method, path, body) in [
        (m.hook_port, "POST", "/get_state", "{}"),
        (m.hook_port, "POST", "/get_dimensions", dimensions.as_str()),
        (m.hook_port, "GET", "/get_settings", ""),
        (m.metrics_port, "GET", "/metrics", ""),
    ] {
        let started = Instant::now();
        let reply = try_request(port, method, path, body.as_bytes())
            .unwrap_or_else(|e| panic!("{method} {path} while the token fetch hangs: {e}"));
        let took = started.elapsed();
        assert_eq!(reply.status, 200, "{method} {path}: {}", reply.body);
        assert!(took < HOOK_LIMIT, "{method} {path} took {took:?}");
        slowest = slowest.max(took);
    }
    slowest
}

#[test]
fn fault_05_token_endpoint_stalls_then_dribbles() {
    let lab = Tmm::new("fault-token").bot(FakeSwarming::start(&[]));
    lab.server()
        .control(serde_json::json!({"token_faults": ["stall", "dribble"]}));
    let m = lab.start();
    let token_url = format!("{}/token", lab.server().url);

    // Mid-stall: the first request is in, its deadline not yet reached.
    let deadline = Instant::now() + Duration::from_secs(30);
    while lab.server().state()["token_requests"] != 1 {
        assert!(
            Instant::now() < deadline,
            "the monitor never asked for a token"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    let slowest_stalled = answers_while_fetch_hangs(&m);

    let log = m.wait_log("token fetch from", Duration::from_secs(60));
    let first = lines_with(&log, "token fetch from")[0].to_string();
    // Mid-dribble: the second fetch is receiving its answer a byte at a time.
    std::thread::sleep(Duration::from_secs(3));
    let slowest_dribbled = answers_while_fetch_hangs(&m);

    let log = m.wait_log("access token fetched", Duration::from_secs(90));
    let failures: Vec<String> = lines_with(&log, "token fetch from")
        .into_iter()
        .map(str::to_string)
        .collect();
    let started = line_time(log.lines().next().expect("the monitor logged nothing"));
    let fetched = line_time(lines_with(&log, "access token fetched")[0]);
    let ends: Vec<f64> = failures.iter().map(|l| line_time(l) - started).collect();
    let log = m.wait_log("handshake done", Duration::from_secs(60));
    let st = lab.server().state();

    faults::report(
        5,
        "token endpoint stalls, then dribbles a byte a second",
        "each fetch ends at its 20 s deadline with one log line and is retried; \
         the hooks and /metrics answer meanwhile; the bot starts once a token comes",
        &format!(
            "{} failed fetches, ended {:.1} s and {:.1} s after start ({:?}); token after \
             {:.1} s on request {}; hooks and /metrics answered in at most {:?} during the \
             stall and {:?} during the dribble; the bot handshaked",
            failures.len(),
            ends.first().copied().unwrap_or(f64::NAN),
            ends.get(1).copied().unwrap_or(f64::NAN),
            first
                .split_once(&format!("{token_url}: "))
                .map_or("", |(_, why)| why),
            fetched - started,
            st["token_requests"],
            slowest_stalled,
            slowest_dribbled,
        ),
    );

    assert_eq!(failures.len(), 2, "{log}");
    for line in &failures {
        assert!(
            line.contains(&format!("token fetch from {token_url}:")),
            "{line}"
        );
        assert!(line.contains("no complete answer within 20s"), "{line}");
    }
    // Each ends at its deadline: not early (the fault is a hang, not a refusal), and
    // not unbounded (generous slack for a loaded machine).
    assert!(
        ends[0] >= TOKEN_TIMEOUT - 1.0,
        "first fetch ended at {}",
        ends[0]
    );
    assert!(
        ends[0] < TOKEN_TIMEOUT + 15.0,
        "first fetch ended at {}",
        ends[0]
    );
    let second = ends[1] - ends[0];
    assert!(second >= TOKEN_TIMEOUT - 1.0, "second fetch took {second}");
    assert!(second < TOKEN_TIMEOUT + 15.0, "second fetch took {second}");
    assert_eq!(st["token_requests"], 3, "{st}");
    assert!(
        !log.contains(st["token"].as_str().unwrap()),
        "the token was logged"
    );
}
