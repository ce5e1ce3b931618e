//! End to end, everything real but the Swarming server and the phones: the binary
//! downloads the stand-in bot (tests/support/fake_bot) from the stand-in server, whose
//! zip carries OUR hook script (`test_machine_monitor bot-config`) as
//! config/bot_config.py; real Python runs the bot, whose hooks reach our hook server
//! through that script; the binary runs the real adb server on a private port, with two
//! simulated phones. What the test checks is only what reached the stand-in server.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::android::Sim;
use support::swarming::FakeSwarming;
use support::{descendants, still_there, wait_for, Tmm};

const BOT_ID: &str = "e2e-pi";
const LONG: Duration = Duration::from_secs(60);

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn the_bot_reports_the_phones_through_our_hook_script_and_a_forced_quarantine_once() {
    let server = FakeSwarming::with_hooks();
    // A longer sleep between polls than the test's own polling, so that a state carried
    // by one poll only is still the last one when the test looks.
    server.control(json!({"poll_sleep": 1.0}));
    let sim = Sim::start(&["modern:P", "android6:Q"], &[]);
    // The binary starts the adb server itself; the phones are plugged in once it listens.
    let mut monitor = Tmm::new("e2e")
        .phones()
        .bot(server)
        .args(["--bot-id", BOT_ID])
        .start();
    let server = monitor.server();
    sim.connect_all(monitor.adb_port());
    let (p, q) = (sim.serial("P"), sim.serial("Q"));

    let (dims, state) = wait_for(LONG, "both phones in what the bot sent", || {
        let got = server.state();
        let dims = got["last_dimensions"].clone();
        let state = got["last_state"].clone();
        let up = |serial: &str| {
            state["devices"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|d| d["serial"] == serial && d["state"] == "device")
        };
        (up(&p) && up(&q) && strings(&dims["android_devices"]).contains(&"2"))
            .then_some((dims, state))
    });
    // The phones' dimensions, through the hook script and our hook server...
    assert_eq!(
        strings(&dims["device_type"]),
        ["hammerhead", "redfin"],
        "{dims}"
    );
    assert_eq!(strings(&dims["os"]), ["Android"], "{dims}");
    assert_eq!(strings(&dims["id"]), [BOT_ID], "{dims}");
    // ...merged with the bot's own os_utilities ones.
    assert_eq!(strings(&dims["pool"]), ["default"], "{dims}");
    // The bot's own state is kept, ours added.
    assert!(state["running_time"].is_u64(), "{state}");
    assert!(state["disks"].is_object(), "{state}");
    assert_eq!(state["devices"].as_array().unwrap().len(), 2, "{state}");
    assert_eq!(state["monitor"]["bot_restarts"], 0, "{state}");
    assert!(state.get("quarantined").is_none(), "{state}");
    assert!(state.get("maintenance").is_none(), "{state}");

    // Forced quarantine: reported by exactly one poll, then the file is gone.
    let force = monitor
        .bot_dir
        .parent()
        .unwrap()
        .join(format!("{BOT_ID}.force_quarantine"));
    std::fs::write(&force, "").unwrap();
    let polls_then = server.state()["polls"].as_u64().unwrap();
    wait_for(LONG, "the forced quarantine to reach the server", || {
        (!server.state()["quarantined_seen"]
            .as_array()
            .unwrap()
            .is_empty())
        .then_some(())
    });
    wait_for(LONG, "three more polls", || {
        (server.state()["polls"].as_u64().unwrap() >= polls_then + 3).then_some(())
    });
    let got = server.state();
    let seen = got["quarantined_seen"].as_array().unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let reason = seen[0]["quarantined"].as_str().unwrap();
    assert!(reason.starts_with("forced quarantine ("), "{reason}");
    assert!(!force.exists());
    assert!(got["last_state"].get("quarantined").is_none(), "{got}");

    // SIGTERM: the bot and the adb server are stopped, and the exit is clean.
    let children = descendants(monitor.pid());
    assert!(children.len() >= 2, "the bot and adb: {children:?}");
    monitor.term();
    let status = monitor.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{status}");
    let left = still_there(&children);
    assert!(left.is_empty(), "left running: {left:?}");
}
