//! The hook server and the hook script, against the real binary: every route and error
//! code over a real socket, the `--settings` file, forced quarantine, stalled clients,
//! and bot_config.py run by real Python (monitor up, monitor down, token fallback).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use support::http::{raw_reply, request, try_request};
use support::{free_port, hook_script, pythons, Monitor, OutputWithin, TempDir, Tmm, EXIT_LIMIT};

const MIB: usize = 1024 * 1024;

/// The monitor at the debug level, where every hook request is logged.
fn monitor(name: &str) -> Tmm {
    Tmm::new(name).env("RUST_LOG", "debug")
}

#[test]
fn every_route_answers_over_http() {
    let m = monitor("routes").start();
    let a = m.hook_port;

    let r = request(
        a,
        "POST",
        "/get_dimensions",
        r#"{"os": ["Linux"], "gpu": []}"#,
    );
    assert_eq!(r.status, 200);
    assert!(r.headers.contains("application/json"), "{}", r.headers);
    assert_eq!(r.json(), json!({"id": ["pi-test"], "os": ["Linux"]}));

    let r = request(a, "POST", "/get_state", r#"{"running_time": 3}"#);
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["running_time"], 3);
    assert_eq!(v["devices"], json!([]));
    assert_eq!(v["monitor"]["bot_restarts"], 0);

    let r = request(a, "GET", "/get_settings", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["free_partition"]["bot"]["size"], 512 * MIB as u64);

    let r = request(a, "GET", "/get_authentication_headers", "");
    assert_eq!(r.status, 503);
    assert!(r.json()["error"].as_str().unwrap().contains("token"));

    for path in ["/on_before_task", "/on_after_task", "/on_bot_shutdown"] {
        assert_eq!(request(a, "GET", path, "").json(), json!({}), "{path}");
        assert_eq!(request(a, "POST", path, "{}").status, 200, "{path}");
    }
    let r = request(
        a,
        "POST",
        "/on_after_task",
        r#"{"failure": false, "internal_failure": true, "dimensions": {}, "summary": {"x": 1}}"#,
    );
    assert_eq!(r.status, 200);

    let metrics = request(m.metrics_port, "GET", "/metrics", "").body;
    assert!(
        metrics.contains(
            "test_machine_monitor_hook_requests_total{route=\"get_dimensions\",code=\"200\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        "test_machine_monitor_hook_requests_total{route=\"get_authentication_headers\",code=\"503\"} 1"
    ));
    assert!(metrics.contains(
        "test_machine_monitor_hook_request_duration_seconds_count{route=\"get_state\"} 1"
    ));

    let log = m.stop();
    assert!(
        log.contains("task ended (failure=false, internal_failure=true)"),
        "{log}"
    );
    assert!(log.contains("hook POST /get_state: 200 in"), "{log}");
}

#[test]
fn every_error_code_has_a_json_reason() {
    let m = monitor("errors").start();
    let a = m.hook_port;
    let cases: &[(&str, &str, &[u8], u16, &str)] = &[
        ("GET", "/nope", b"", 404, "no hook"),
        ("GET", "/get_state", b"", 405, "use POST"),
        ("POST", "/get_settings", b"", 405, "use GET"),
        ("DELETE", "/on_after_task", b"", 405, "use POST or GET"),
        ("POST", "/get_dimensions", b"not json", 400, "invalid JSON"),
        ("POST", "/get_dimensions", b"[1]", 400, "got an array"),
        (
            "POST",
            "/get_dimensions",
            br#"{"os": "Linux"}"#,
            400,
            "list of strings",
        ),
        ("POST", "/get_state", b"", 400, "empty body"),
        (
            "POST",
            "/on_after_task",
            br#"{"failure": 1}"#,
            400,
            "boolean",
        ),
    ];
    for (method, path, body, code, needle) in cases {
        let r = try_request(a, method, path, body).unwrap();
        assert_eq!(r.status, *code, "{method} {path}");
        let e = r.json()["error"].as_str().unwrap().to_string();
        assert!(e.contains(needle), "{method} {path}: {e}");
    }
    let log = m.stop();
    assert!(log.contains("WARN"), "{log}");
    assert!(log.contains("405"), "{log}");
}

#[test]
fn bodies_over_one_mib_get_413_whether_declared_or_streamed() {
    let m = monitor("big").start();
    // Declared: refused from Content-Length without sending the body.
    let mut s = TcpStream::connect(("127.0.0.1", m.hook_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "POST /get_dimensions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        2 * MIB
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let r = raw_reply(&raw);
    assert_eq!(r.status, 413);
    assert!(r.json()["error"].as_str().unwrap().contains("1 MiB"));

    // Streamed (chunked, no length): counted while reading.
    let mut s = TcpStream::connect(("127.0.0.1", m.hook_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // More than the socket buffers hold: a server that stops reading without closing
    // would block the writes for good.
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "POST /get_state HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..17 {
        write!(s, "{:x}\r\n", chunk.len()).unwrap();
        s.write_all(&chunk).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let r = raw_reply(&raw);
    assert_eq!(r.status, 413);

    // Exactly 1 MiB is fine (and then judged as JSON).
    let mut body = b"{\"k\": [\"".to_vec();
    body.resize(MIB - 3, b'x');
    body.extend_from_slice(b"\"]}");
    let r = try_request(m.hook_port, "POST", "/get_dimensions", &body).unwrap();
    assert_eq!(r.status, 200);
    // The 1 MiB value breaks the dimension rules: dropped, with a warning.
    assert_eq!(r.json(), json!({"id": ["pi-test"]}));
    let log = m.stop();
    assert!(log.contains("dropped value"), "{log}");
}

#[test]
fn stalled_clients_do_not_block_other_requests() {
    let m = monitor("stall").start();
    // More stalled bodies than there are threads of either kind: each promises 5000
    // bytes (more than tiny_http reads ahead), sends 10 and then nothing. They arrive
    // one by one: tiny_http's connection pool can queue a connection that arrives in
    // the same instant as another behind a busy thread (a tiny_http race, not ours).
    let mut stalled = Vec::new();
    for _ in 0..12 {
        std::thread::sleep(Duration::from_millis(30));
        let mut s = TcpStream::connect(("127.0.0.1", m.hook_port)).unwrap();
        s.write_all(
            b"POST /get_state HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{\"a\": 1, ",
        )
        .unwrap();
        stalled.push(s);
    }
    // And one that never finishes its headers.
    let mut half = TcpStream::connect(("127.0.0.1", m.hook_port)).unwrap();
    half.write_all(b"GET /get_settings HTTP/1.1\r\nHost:")
        .unwrap();
    std::thread::sleep(Duration::from_millis(30));

    for _ in 0..3 {
        let r = request(m.hook_port, "POST", "/get_dimensions", "{}");
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["id"], json!(["pi-test"]));
    }

    // Once they give up, their bodies are judged (incomplete JSON: 400).
    drop(half);
    for s in &stalled {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut s = stalled.pop().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    assert_eq!(raw_reply(&raw).status, 400);
    drop(stalled);

    // A client that dribbles its body is cut off at the deadline with 408.
    let mut s = TcpStream::connect(("127.0.0.1", m.hook_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s.write_all(b"POST /get_state HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    for _ in 0..100 {
        if s.write_all(b" ").is_err() {
            break;
        }
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if raw.windows(4).any(|w| w == b"\r\n\r\n") && raw.ends_with(b"}") {
            break;
        }
    }
    let r = raw_reply(&raw);
    assert_eq!(r.status, 408, "{r:?}");
    assert!(r.json()["error"].as_str().unwrap().contains("within 5s"));
    // Still serving.
    assert_eq!(request(m.hook_port, "GET", "/get_settings", "").status, 200);
}

#[test]
fn forced_quarantine_is_reported_once_and_the_file_deleted() {
    let m = monitor("force").start();
    let file = m.force_quarantine_file();
    std::fs::write(&file, "please look at this Pi\n").unwrap();
    let v = request(m.hook_port, "POST", "/get_state", "{}").json();
    let q = v["quarantined"].as_str().unwrap();
    assert!(q.contains("forced quarantine"), "{q}");
    assert!(q.contains(&file.display().to_string()), "{q}");
    assert!(!file.exists());
    let v = request(m.hook_port, "POST", "/get_state", "{}").json();
    assert!(v.get("quarantined").is_none(), "{v}");
    let log = m.stop();
    assert!(log.contains("forced quarantine"), "{log}");
}

#[test]
fn settings_file_is_merged_over_the_defaults() {
    let dir = TempDir::new("settings-ok");
    let path = dir.path().join("settings.json");
    std::fs::write(&path, r#"{"free_partition": {"bot": {"size": 0}}}"#).unwrap();
    let m = monitor("settings-ok")
        .args(["--settings", path.to_str().unwrap()])
        .start();
    let v = request(m.hook_port, "GET", "/get_settings", "").json();
    assert_eq!(v["free_partition"]["bot"]["size"], 0);
    assert_eq!(v["free_partition"]["bot"]["max_percent"], 5.0);
    assert_eq!(v["caches"]["isolated"]["items"], 10240);
}

#[test]
fn a_bad_settings_file_is_a_startup_error_naming_it() {
    let dir = TempDir::new("settings-bad");
    let path = dir.path().join("settings.json");
    std::fs::write(&path, r#"{"free_partition": {"bot": {"sise": 1}}}"#).unwrap();
    let out = Tmm::new("settings-bad")
        .args(["--settings", path.to_str().unwrap()])
        .run();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("free_partition.bot.sise"), "{err}");
}

#[test]
fn a_busy_hook_addr_is_a_startup_error_naming_the_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Tmm::new("busy-hook").args(["--hook-addr", &addr]).run();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--hook-addr") && err.contains(&addr), "{err}");
}

#[test]
fn bot_config_prints_exactly_the_script() {
    let out = Tmm::bare().arg("bot-config").run();
    assert!(out.status.success());
    let file =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bot/bot_config.py")).unwrap();
    assert_eq!(out.stdout, file);
}

// ---- the hook script, run by real Python ----

fn driver() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/hook_driver.py")
}

/// Runs the driver with `python` against `addr`; returns its JSON report.
fn drive(python: &Path, script: &Path, addr: &str, token_server: bool) -> Value {
    let mut cmd = Command::new(python);
    cmd.arg(driver())
        .arg(script)
        .arg("pi-test")
        .env("TEST_MACHINE_MONITOR_HOOK_ADDR", addr)
        .env_remove("PYTHONPATH");
    if token_server {
        cmd.arg("--token-server");
    }
    let out = cmd.output_within(EXIT_LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "driver failed: {stderr}");
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("driver output not JSON ({e}): {stderr}"));
    assert_eq!(v["raised"], json!([]), "the script raised: {v}");
    v
}

fn default_python() -> PathBuf {
    PathBuf::from("python3")
}

/// Runs the driver with the default Python and our hook script against `m`.
fn drive_against(m: &Monitor, token_server: bool) -> Value {
    let dir = TempDir::new("script");
    let script = hook_script(dir.path());
    let addr = format!("127.0.0.1:{}", m.hook_port);
    drive(&default_python(), &script, &addr, token_server)
}

#[test]
fn script_against_the_real_server() {
    let m = monitor("script").start();
    let v = drive_against(&m, false);

    // The bot's own os_utilities dimensions, through the monitor.
    assert_eq!(
        v["dimensions"],
        json!({"id": ["pi-test"], "os": ["Linux", "Debian"], "cpu": ["arm"], "python": ["3"]})
    );
    // The bot's own state kept, ours added.
    assert_eq!(v["state"]["running_time"], 12);
    assert_eq!(v["state"]["disks"]["/"]["free_mb"], 1000);
    assert_eq!(v["state"]["devices"], json!([]));
    assert!(v["state"]["monitor"]["version"].is_string());
    assert!(v["state"].get("quarantined").is_none());
    // Settings from the monitor, and the script's fallback copy matches them.
    let settings = request(m.hook_port, "GET", "/get_settings", "").json();
    assert_eq!(v["settings"], settings);
    assert_eq!(v["fallback_settings"], settings);
    // No token anywhere: an empty header set that expires at once, so the bot asks again.
    assert_eq!(v["auth"], json!([{}, 0]));
    assert_eq!(v["auth_is_tuple"], true);

    let metrics = request(m.metrics_port, "GET", "/metrics", "").body;
    for route in ["on_before_task", "on_after_task", "on_bot_shutdown"] {
        assert!(
            metrics.contains(&format!(
                "hook_requests_total{{route=\"{route}\",code=\"200\"}} 1"
            )),
            "{route}: {metrics}"
        );
    }
    let log = m.stop();
    assert!(
        log.contains("task ended (failure=true, internal_failure=false)"),
        "{log}"
    );
}

#[test]
fn script_falls_back_to_the_token_config() {
    let m = monitor("script-token").start();
    let v = drive_against(&m, true);
    assert_eq!(
        v["auth"][0],
        json!({"Authorization": "Bearer tok-from-config"})
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let expiry = v["auth"][1].as_i64().unwrap();
    assert!(
        (now + 3500..=now + 3700).contains(&expiry),
        "{expiry} vs {now}"
    );
}

#[test]
fn script_with_the_monitor_down() {
    let dir = TempDir::new("script-down");
    let script = hook_script(dir.path());
    let addr = format!("127.0.0.1:{}", free_port());
    let v = drive(&default_python(), &script, &addr, true);

    let q = v["dimensions"]["quarantined"][0].as_str().unwrap();
    assert!(q.starts_with("test_machine_monitor unreachable: "), "{q}");
    assert!(q.contains(&addr), "{q}");
    assert_eq!(v["dimensions"]["id"], json!(["pi-test"]));
    assert_eq!(v["dimensions"]["os"], json!(["Linux", "Debian"]));
    let q = v["state"]["quarantined"].as_str().unwrap();
    assert!(q.starts_with("test_machine_monitor unreachable: "), "{q}");
    assert_eq!(v["state"]["running_time"], 12);
    assert_eq!(v["settings"], v["fallback_settings"]);
    assert_eq!(
        v["auth"][0],
        json!({"Authorization": "Bearer tok-from-config"})
    );
    let logs = v["logs"].to_string();
    for hook in ["on_before_task", "on_after_task", "on_bot_shutdown"] {
        assert!(logs.contains(&format!("ERROR {hook}: ")), "{hook}: {logs}");
    }
}

#[test]
fn script_runs_on_the_oldest_and_newest_python() {
    // The bot needs 3.7 or later; older interpreters are not candidates.
    let all = pythons();
    let usable: Vec<_> = all.iter().filter(|(v, _)| *v >= (3, 7)).collect();
    assert!(!usable.is_empty(), "no Python 3.7+ found: {all:?}");
    let oldest = usable[0];
    let newest = usable[usable.len() - 1];
    let picked: Vec<_> = if oldest.0 == newest.0 {
        println!(
            "only one Python 3.7+ found ({}.{} at {}): oldest and newest are the same",
            oldest.0 .0,
            oldest.0 .1,
            oldest.1.display()
        );
        vec![oldest]
    } else {
        vec![oldest, newest]
    };
    let m = monitor("pythons").start();
    let dir = TempDir::new("pythons");
    let script = hook_script(dir.path());
    let down = format!("127.0.0.1:{}", free_port());
    for ((major, minor), python) in picked {
        println!(
            "checking with Python {major}.{minor} at {}",
            python.display()
        );
        let compiled = Command::new(python)
            .args(["-W", "error", "-m", "py_compile"])
            .arg(&script)
            .output_within(EXIT_LIMIT);
        assert!(
            compiled.status.success(),
            "{major}.{minor}: {}",
            String::from_utf8_lossy(&compiled.stderr)
        );
        let up = drive(
            python,
            &script,
            &format!("127.0.0.1:{}", m.hook_port),
            false,
        );
        assert_eq!(up["python"], format!("{major}.{minor}"));
        assert_eq!(up["dimensions"]["id"], json!(["pi-test"]));
        assert!(up["state"]["monitor"].is_object());
        let gone = drive(python, &script, &down, false);
        assert!(gone["dimensions"]["quarantined"].is_array());
    }
}
