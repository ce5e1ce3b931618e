//! The fault campaign's adb faults (issue #21: 3, 4, 9; 6 is the hook port's): each
//! test injects one fault into the real binary, which runs its own real adb server
//! with simulated phones connected over TCP, measures what happened, prints its one
//! `FAULT` line and then asserts. Rounds every 2 s (a phone's deadline is 1.5 s).

mod support;

use std::time::{Duration, Instant};

use support::android::{connect_phone, reasons, up};
use support::faults::report;
use support::{proc_status, send_signal, wait_for, Monitor, Tmm};

const LONG: Duration = Duration::from_secs(30);

/// The rounds finished so far.
fn rounds(tmm: &Monitor) -> f64 {
    tmm.sample("interrogation_duration_seconds_count")
        .unwrap_or(0.0)
}

/// The monitor's one child, its adb server.
fn server_pid(tmm: &Monitor) -> i32 {
    let children = tmm.children();
    assert_eq!(
        children.len(),
        1,
        "expected the adb server alone: {children:?}"
    );
    children[0]
}

/// A monitor with two simulated phones, both connected and usable.
fn two_usable_phones(name: &str) -> (Monitor, [String; 2]) {
    let tmm = Tmm::new(name).plugged(&["modern:A", "modern:B"]).start();
    let sim = tmm.sim();
    let phones = [sim.serial("A"), sim.serial("B")];
    for p in &phones {
        tmm.wait_sample(&up(p, "redfin"), 1.0, LONG);
    }
    (tmm, phones)
}

#[test]
fn fault_03_adb_server_stopped() {
    let (tmm, phones) = two_usable_phones("fault03");
    let pid = server_pid(&tmm);
    send_signal(pid, libc::SIGSTOP);
    let stopped = Instant::now();
    let rounds_at_stop = rounds(&tmm);

    // Rounds go on, each ended by its deadline, and the hooks answer meanwhile.
    let mut hook_answers = 0;
    let reason = wait_for(LONG, "the silent server reported", || {
        hook_answers += 1;
        let m = reasons(&tmm, "maintenance");
        m.split("; ")
            .find(|r| r.starts_with("adb server not answering"))
            .map(str::to_string)
    });
    let reported_after = stopped.elapsed();
    let rounds_to_report = rounds(&tmm) - rounds_at_stop;
    let kill_line = format!("the adb server (pid {pid}) has not answered for");
    tmm.wait_log(&kill_line, LONG);
    let killed = tmm.log_line(&kill_line).unwrap_or_default();
    let killed_after = stopped.elapsed();
    let rounds_to_kill = rounds(&tmm) - rounds_at_stop;
    tmm.wait_sample("adb_server_restarts_total", 1.0, LONG);
    let new_pid = server_pid(&tmm);
    for p in &phones {
        tmm.wait_log(&format!("connecting {p} again"), LONG);
        tmm.wait_sample(&up(p, "redfin"), 1.0, LONG);
    }
    wait_for(LONG, "every reason cleared", || {
        let (m, q) = (reasons(&tmm, "maintenance"), reasons(&tmm, "quarantined"));
        (m.is_empty() && q.is_empty()).then_some(())
    });
    let back_after = stopped.elapsed();

    report(
        3,
        "adb server stopped (SIGSTOP)",
        "rounds end at their deadlines; hooks answer; `adb server not answering` within \
         2 rounds; killed after 3 silent rounds (pid and silence logged), restarted, \
         phones back, reasons cleared",
        &format!(
            "reason after {:.1}s / {rounds_to_report} rounds ({reason:?}); {hook_answers} \
             get_state answers meanwhile; kill after {:.1}s / {rounds_to_kill} rounds: \
             {killed:?}; new server pid {new_pid}; both phones usable and no reason left \
             after {:.1}s",
            reported_after.as_secs_f64(),
            killed_after.as_secs_f64(),
            back_after.as_secs_f64()
        ),
    );
    assert!(rounds_to_report <= 2.0, "{rounds_to_report} rounds");
    assert!(hook_answers >= 1);
    assert!(
        killed.contains("(3 rounds in a row;") && killed.contains("SIGKILL"),
        "{killed}"
    );
    assert!(rounds_to_kill >= 3.0, "{rounds_to_kill} rounds");
    assert_ne!(new_pid, pid);
}

#[test]
fn fault_04_adb_server_killed() {
    let (tmm, phones) = two_usable_phones("fault04");
    let pid = server_pid(&tmm);
    send_signal(pid, libc::SIGKILL);
    let killed = Instant::now();
    tmm.wait_sample("adb_server_restarts_total", 1.0, LONG);
    let restarted_after = killed.elapsed();
    let new_pid = server_pid(&tmm);
    // The new server knows no network phone: the monitor connects those it followed.
    for p in &phones {
        tmm.wait_log(&format!("connecting {p} again"), LONG);
    }
    for p in &phones {
        tmm.wait_sample(&up(p, "redfin"), 1.0, LONG);
    }
    wait_for(LONG, "every reason cleared", || {
        (reasons(&tmm, "maintenance").is_empty() && reasons(&tmm, "quarantined").is_empty())
            .then_some(())
    });
    let back_after = killed.elapsed();
    let missing = format!("reason set: device {} (redfin) has gone missing", phones[0]);
    let was_missing = tmm.log_has(&missing);
    let reconnects: usize = phones
        .iter()
        .map(|p| tmm.log_count(&format!("connecting {p} again")))
        .sum();

    report(
        4,
        "adb server killed (SIGKILL)",
        "restarted; the network phones connected again and followed; reasons cleared",
        &format!(
            "restart counted after {:.1}s (pid {pid} -> {new_pid}); {reconnects} phones \
             connected again; gone-missing reason set meanwhile: {was_missing}; both \
             usable, no reason left after {:.1}s",
            restarted_after.as_secs_f64(),
            back_after.as_secs_f64()
        ),
    );
    assert_ne!(new_pid, pid);
    assert_eq!(reconnects, 2);
}

#[test]
fn fault_09_phone_floods_or_breaks_shell_v2() {
    let tmm = Tmm::new("fault09")
        .plugged(&["modern:H", "modern:F", "modern:I", "modern:L", "modern:T"])
        .start();
    let sim = tmm.sim();
    let serial = |n: &str| sim.serial(n);
    for n in ["H", "F", "I", "L", "T"] {
        tmm.wait_sample(&up(&serial(n), "redfin"), 1.0, LONG);
    }
    let pid = tmm.pid();
    let hwm_before = proc_status(pid, "VmHWM").unwrap_or(0);

    // F's getprop prints 100 MB; I, L and T answer every shell v2 stream with a bad
    // packet id, a length beyond the data and a header cut short.
    assert_eq!(sim.control("flood F 100000000"), "OK");
    assert_eq!(sim.control("v2 I badid"), "OK");
    assert_eq!(sim.control("v2 L overlong"), "OK");
    assert_eq!(sim.control("v2 T truncated"), "OK");
    let h = serial("H");
    let h_rounds = |tmm: &Monitor| {
        tmm.sample(&format!("device_uptime_seconds{{serial=\"{h}\"}}"))
            .unwrap_or(0.0)
    };
    // Each is reported with why; the reconnect that follows drops a TCP phone from the
    // list (then it is missing), so the reasons are read from the log, where each is set.
    let reported = |n: &str| {
        let set = format!("reason set: device {} not answering (", serial(n));
        tmm.wait_log(&set, LONG);
        tmm.log_line(&set).unwrap_or_default()
    };
    let flood = reported("F");
    // A reason set naming F's flood: its first, or a later step of its ladder.
    let f = serial("F");
    let floods_reported = |tmm: &Monitor| {
        tmm.log_lines("reason set: device ")
            .iter()
            .filter(|l| l.contains(&f) && l.contains("getprop output over"))
            .count()
    };
    // Its kicked transport leaves the list: connected again, it floods again, and is
    // quarantined once its ladder is climbed; it stays listed and floods every round.
    connect_phone(tmm.adb_port(), sim.port("F"));
    wait_for(LONG, "F quarantined for its flood", || {
        (floods_reported(&tmm) >= 2).then_some(())
    });
    let mut broken = Vec::new();
    for (n, why) in [
        ("I", "shell v2 packet id 9 is not 0..=5"),
        ("L", "connection closed in the middle of a shell v2 packet"),
        ("T", "connection closed in the middle of a shell v2 packet"),
    ] {
        broken.push((n, why, reported(n).contains(why)));
    }
    // H's rounds go on (and F floods in each): H's uptime moves, it stays usable.
    let (uptime_then, rounds_then) = (h_rounds(&tmm), rounds(&tmm));
    wait_for(LONG, "three more rounds", || {
        (rounds(&tmm) >= rounds_then + 3.0).then_some(())
    });
    let uptime_now = h_rounds(&tmm);
    let h_up = tmm.sample(&up(&h, "redfin"));
    let h_state = tmm.hook("/get_state");
    let h_reasons = format!("{} {}", h_state["maintenance"], h_state["quarantined"]);
    let hwm_after = proc_status(pid, "VmHWM").unwrap_or(u64::MAX);
    let grew_kib = hwm_after.saturating_sub(hwm_before);

    report(
        9,
        "phone floods getprop (100 MB) or sends malformed shell v2",
        "VmHWM grows < 8 MiB (1 MiB per command); each phone reported with why; the \
         healthy phone's rounds go on",
        &format!(
            "VmHWM {hwm_before} -> {hwm_after} KiB (+{grew_kib}) (F reported twice, then 3 more rounds); F: {:?}; {}; H: up \
             {h_up:?}, uptime {uptime_then:.1} -> {uptime_now:.1}s over 3 rounds, named in \
             the reasons: {}",
            flood.split("reason set: ").nth(1).unwrap_or(&flood),
            broken
                .iter()
                .map(|(n, why, ok)| format!(
                    "{n}: {why} {}",
                    if *ok { "named" } else { "NOT named" }
                ))
                .collect::<Vec<_>>()
                .join("; "),
            h_reasons.contains(&h)
        ),
    );
    assert!(
        flood.contains("getprop output over 1048576 bytes"),
        "{flood}"
    );
    for (n, why, ok) in &broken {
        assert!(ok, "{n}: {why}");
    }
    // One flood in flight at a time costs its buffered reply and its collected output
    // (each at most MAX_OUTPUT and a read), the text made of them, and a Vec's growth.
    assert!(grew_kib < 8 * 1024, "VmHWM grew by {grew_kib} KiB");
    assert_eq!(h_up, Some(1.0));
    assert!(uptime_now > uptime_then, "{uptime_then} -> {uptime_now}");
    assert!(!h_reasons.contains(&h), "{h_reasons}");
}

/// Stalled clients of the hook port: `n` connections, half that never finish their
/// headers, half that send headers announcing a 100 000-byte body and then dribble it.
struct Stalled {
    headers: Vec<std::net::TcpStream>,
    bodies: Vec<std::net::TcpStream>,
}

impl Stalled {
    fn open(port: u16, n: usize) -> Stalled {
        use std::io::Write;
        let mut s = Stalled {
            headers: Vec::new(),
            bodies: Vec::new(),
        };
        for i in 0..n {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", port))
                .unwrap_or_else(|e| panic!("stalled client {i} of {n}: {e}"));
            if i % 2 == 0 {
                let _ = c.write_all(b"POST /get_state HTTP/1.1\r\nHost: x\r\nContent-Type: appl");
                s.headers.push(c);
            } else {
                let _ = c.write_all(
                    b"POST /get_state HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{",
                );
                s.bodies.push(c);
            }
        }
        s
    }

    /// One more byte of every body (a write to a connection the server closed fails,
    /// which is what a server may do to a dribbler).
    fn dribble(&mut self) {
        use std::io::Write;
        for c in &mut self.bodies {
            let _ = c.write_all(b" ");
        }
    }
}

#[test]
fn fault_06_stalled_hook_connections() {
    const CLIENTS: usize = 600;
    let tmm = Tmm::new("fault06").start();
    let pid = tmm.pid();
    let status = |field: &str| proc_status(pid, field).unwrap_or(0);
    for _ in 0..3 {
        tmm.hook("/get_state");
    }
    let (threads0, rss0) = (status("Threads"), status("VmRSS"));

    let mut stalled = Stalled::open(tmm.hook_port, CLIENTS);
    let (mut threads_max, mut rss_max, mut answers) = (0, 0, 0);
    for _ in 0..10 {
        stalled.dribble();
        let state = tmm.hook("/get_state");
        answers += usize::from(state.is_object());
        threads_max = threads_max.max(status("Threads"));
        rss_max = rss_max.max(status("VmRSS"));
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(stalled);
    let closed = Instant::now();
    let back_within = |(t, r): (u64, u64)| t <= threads0 + 2 && r <= rss0 + 2048;
    let back = loop {
        let now = (status("Threads"), status("VmRSS"));
        if back_within(now) || closed.elapsed() > Duration::from_secs(60) {
            break now;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let after = closed.elapsed();
    report(
        6,
        "600 stalled hook connections",
        "get_state answers; no thread per stalled client (baseline + 2); threads at \
         baseline + 2 and RSS within 2 MiB of baseline within 60 s of the clients closing",
        &format!(
            "baseline {threads0} threads, {rss0} KiB; with {CLIENTS} stalled: up to \
             {threads_max} threads, {rss_max} KiB, get_state answered {answers}/10; \
             {:.1}s after they closed: {} threads, {} KiB",
            after.as_secs_f64(),
            back.0,
            back.1
        ),
    );
    assert_eq!(answers, 10);
    assert!(threads_max <= threads0 + 2, "{threads_max} threads");
    assert!(back_within(back), "{back:?}");
}
