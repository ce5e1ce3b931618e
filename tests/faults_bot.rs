//! The fault campaign's bot faults (issue #21): the bot directory full or read-only, a
//! shutdown in the middle of a download, bad zips, and a bot that hangs. Each test
//! injects its fault into the real binary running the stand-in bot against the stand-in
//! server, prints its `FAULT` line from what it measured, then asserts.

mod support;

use std::fs;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use support::faults::report;
use support::http::try_request;
use support::swarming::FakeSwarming;
use support::tmm::{line_time, lines_with};
use support::{dir_names, Monitor, Tmm, BOT_ID};

/// A deadline against hangs, never a measure of speed.
const LONG: Duration = Duration::from_secs(30);
/// The monitor's `--grace` by default when it runs a bot.
const GRACE: u64 = 10;

/// The numbers `retrying in N s` of `lines`, in order.
fn retry_delays(lines: &[&str]) -> Vec<f64> {
    lines
        .iter()
        .map(|l| {
            let (_, rest) = l.rsplit_once("retrying in ").expect("a retry line");
            rest.trim_end_matches('s')
                .parse()
                .expect("a delay in seconds")
        })
        .collect()
}

/// Waits for three failed downloads that match `errno_text`, then checks them and the
/// monitor around them: one line per attempt naming the temporary file, the error and
/// `remedy`; backoff between attempts; nothing left in the bot directory; hooks
/// answering. Returns the observation and the failures, for the FAULT line.
fn three_failed_downloads(
    lab: &Tmm,
    m: &Monitor,
    errno_text: &str,
    remedy: &str,
) -> (String, Vec<String>) {
    let log = m.wait_log_n(errno_text, 3, LONG);
    // Listed at once: the next attempt is at least a second away (the third delay).
    let left: Vec<String> = dir_names(&m.seen(&lab.bot_dir()));
    let hook = try_request(m.hook_port, "POST", "/get_state", b"{}");
    let lines = lines_with(&log, errno_text);
    let delays = retry_delays(&lines);
    let gaps: Vec<f64> = lines
        .windows(2)
        .map(|w| line_time(w[1]) - line_time(w[0]))
        .collect();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    let requests = lab.server().state()["bot_code_requests"]
        .as_array()
        .unwrap()
        .len();
    let temp = format!("{}/swarming_bot.zip.download-", lab.bot_dir().display());
    let mut failures = Vec::new();
    if !lines
        .iter()
        .all(|l| l.contains(&temp) && l.contains(remedy))
    {
        failures.push(format!(
            "a line lacks the temporary file {temp} or the remedy"
        ));
    }
    if warnings.len() != lines.len() {
        failures.push(format!(
            "{} warnings for {} attempts",
            warnings.len(),
            lines.len()
        ));
    }
    // The third delay's nominal is four times the first's; the log rounds to 0.1 s.
    let waited = gaps.iter().zip(&delays).all(|(g, d)| g + 0.1 >= *d);
    if !(delays[2] > delays[0] && waited) {
        failures.push(format!("no backoff: delays {delays:?}, gaps {gaps:?}"));
    }
    if !left.is_empty() {
        failures.push(format!("left in the bot directory: {left:?}"));
    }
    let hook_status = hook.as_ref().map(|r| r.status).map_err(String::clone);
    if hook_status != Ok(200) {
        failures.push(format!("get_state answered {hook_status:?}"));
    }
    let observed = format!(
        "{} attempts ({} requests), {} warnings, each like {:?}; delays {delays:?} s, gaps {gaps:.1?} s; bot dir holds {left:?}; get_state answered {hook_status:?}",
        lines.len(),
        requests,
        warnings.len(),
        lines[0].split_once(": ").map_or("", |(_, m)| m),
    );
    (observed, failures)
}

/// Starts the monitor on a bot directory that `script` prepared, with the good zip
/// `good` copied in by it (see [`placing`]), and checks that it runs that zip without a download and leaves it
/// as it was. Returns the observation and the failures.
fn good_zip_is_kept(lab: &Tmm, script: &str, good: &Path) -> (String, Vec<String>) {
    let before = lab.server().state()["bot_code_requests"]
        .as_array()
        .unwrap()
        .len();
    let mut m = lab.clone().mount_first(script).start();
    let log = m.wait_log("started the bot (pid", LONG);
    let kept = fs::read(m.seen(&lab.bot_dir().join("swarming_bot.zip"))).ok();
    let after = lab.server().state()["bot_code_requests"]
        .as_array()
        .unwrap()
        .len();
    m.term();
    let status = m.wait_exit(LONG);
    let mut failures = Vec::new();
    if !log.contains("swarming_bot.zip is usable") {
        failures.push("the good zip was not found usable".to_string());
    }
    if after != before {
        failures.push(format!(
            "{} downloads with a good zip in place",
            after - before
        ));
    }
    if kept.as_deref() != Some(fs::read(good).unwrap().as_slice()) {
        failures.push("the good zip changed".to_string());
    }
    if status.code() != Some(0) {
        failures.push(format!("exit {status}"));
    }
    let observed = format!(
        "with a good zip in place: {} downloads, zip {}, bot started",
        after - before,
        if kept.is_some() { "unchanged" } else { "gone" }
    );
    (observed, failures)
}

/// The command that copies `good` into the bot directory (`$0`).
fn placing(good: &Path) -> String {
    format!("cp '{}' \"$0/swarming_bot.zip\"", good.display())
}

/// A good zip of the stand-in bot that fits a 1 MiB volume, in `dir`.
fn small_good_zip(dir: &Path) -> PathBuf {
    let small = FakeSwarming::start(&[]);
    let path = dir.join("good.zip");
    fs::write(&path, small.zip_bytes()).unwrap();
    path
}

#[test]
fn fault_01_bot_dir_full() {
    // More than the volume holds: the download fails part way with ENOSPC.
    let lab = Tmm::new("fault01").bot(FakeSwarming::start(&["--pad-bytes", "1572864"]));
    let zip = lab.server().zip_bytes();
    let served = zip.len();
    let padding = zip::ZipArchive::new(Cursor::new(zip))
        .ok()
        .and_then(|mut z| z.by_name("padding.bin").ok().map(|e| e.size()));
    let volume = "mount -t tmpfs -o size=1m tmm-fault01 \"$0\"";
    let mut m = lab.clone().mount_first(volume).start();
    let (seen, mut failures) = three_failed_downloads(
        &lab,
        &m,
        "No space left on device",
        "free space on the bot directory's file system or give it a larger volume",
    );
    m.term();
    let status = m.wait_exit(LONG);
    let good = small_good_zip(lab.dir());
    let (kept, kept_failures) =
        good_zip_is_kept(&lab, &format!("{volume} && {}", placing(&good)), &good);
    failures.extend(kept_failures);
    report(
        1,
        "bot dir on a full 1 MiB tmpfs",
        "one line per failed download naming the file, errno and remedy; temp removed, no partial zip; backoff; hooks answer; a good zip in place kept",
        &format!("zip of {served} B: {seen}; exit {status}; {kept}"),
    );
    assert!(served > 1 << 20, "the stand-in's zip is {served} B");
    assert_eq!(padding, Some(1572864), "--pad-bytes");
    assert_eq!(status.code(), Some(0));
    assert!(failures.is_empty(), "{failures:?}\n{}", m.log());
}

#[test]
fn fault_02_bot_dir_read_only() {
    let lab = Tmm::new("fault02").bot(FakeSwarming::start(&[]));
    let read_only = "mount --bind \"$0\" \"$0\" && mount -o remount,bind,ro \"$0\"";
    let mut m = lab.clone().mount_first(read_only).start();
    let (seen, mut failures) = three_failed_downloads(
        &lab,
        &m,
        "Read-only file system",
        "mount it (the pod's volume) read-write",
    );
    m.term();
    let status = m.wait_exit(LONG);
    let good = small_good_zip(lab.dir());
    let (kept, kept_failures) =
        good_zip_is_kept(&lab, &format!("{} && {read_only}", placing(&good)), &good);
    failures.extend(kept_failures);
    report(
        2,
        "bot dir read-only",
        "one line per failed download naming the file, errno and the remedy (mount it read-write); nothing left; backoff; hooks answer; a good zip in place kept",
        &format!("{seen}; exit {status}; {kept}"),
    );
    assert_eq!(status.code(), Some(0));
    assert!(failures.is_empty(), "{failures:?}\n{}", m.log());
}

#[test]
fn fault_07_sigterm_mid_download() {
    let lab = Tmm::new("fault07").bot(FakeSwarming::start(&[]));
    let size = lab.server().zip_bytes().len() as u64;
    lab.server()
        .control(json!({"download_faults": ["dribble"]}));
    let mut m = lab.start();
    let partial = m.wait_partial_download(1, LONG);
    let t0 = Instant::now();
    m.term();
    let status = m.wait_exit(LONG);
    let took = t0.elapsed();
    let left = dir_names(&lab.bot_dir());
    let log = m.log();
    let interrupted = lines_with(&log, "interrupted by shutdown");
    report(
        7,
        "SIGTERM during a zip download",
        &format!("exit 0 within the grace ({GRACE} s), no partial zip nor temporary file"),
        &format!(
            "SIGTERM at {partial} of {size} B; {status} after {:.1} s; bot dir holds {left:?}; logged {:?}",
            took.as_secs_f64(),
            interrupted.first().map_or("nothing", |l| l.split_once(": ").map_or(*l, |(_, m)| m)),
        ),
    );
    assert!(partial < size, "the download ended before SIGTERM");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(took < Duration::from_secs(GRACE), "{log}");
    assert_eq!(left, Vec::<String>::new());
    assert_eq!(interrupted.len(), 1, "{log}");
}

/// `zip` with one more entry, `name`.
fn with_entry(zip: &[u8], name: &str, data: &[u8]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new_append(Cursor::new(zip.to_vec())).unwrap();
    w.start_file(name, zip::write::SimpleFileOptions::default())
        .unwrap();
    w.write_all(data).unwrap();
    w.finish().unwrap().into_inner()
}

/// Every file under `dir` but those under `except`, relative to `dir`.
fn files_under(dir: &Path, except: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let path = e.path();
            if path.starts_with(except) {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn fault_10_bad_zips() {
    let lab = Tmm::new("fault10").bot(FakeSwarming::start(&[]));
    let good = lab.server().zip_bytes();
    let placed = with_entry(&good, "../../x", b"x\n");
    fs::create_dir_all(lab.bot_dir()).unwrap();
    fs::write(lab.bot_dir().join("swarming_bot.zip"), &placed).unwrap();
    lab.server()
        .control(json!({"download_faults": ["no-main", "traversal"]}));
    let before = files_under(lab.dir(), &lab.bot_dir());
    let mut m = lab.start();
    let log = m.wait_log("handshake done", LONG);
    let bad = m.sample("bot_zip_downloads_total{result=\"bad_zip\"}");
    let ok = m.sample("bot_zip_downloads_total{result=\"ok\"}");
    m.term();
    let status = m.wait_exit(LONG);
    let bot_dir = lab.bot_dir();
    let parent = bot_dir.parent().unwrap();
    let aside: Vec<String> = dir_names(parent)
        .into_iter()
        .filter(|n| n.starts_with("swarming_bot.zip.bad."))
        .collect();
    let aside_same = aside.len() == 1 && fs::read(parent.join(&aside[0])).unwrap() == placed;
    let in_place = fs::read(lab.bot_dir().join("swarming_bot.zip")).unwrap();
    let new: Vec<PathBuf> = files_under(lab.dir(), &lab.bot_dir())
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    // What the monitor writes outside the bot directory: its log, the shim, the zip set aside.
    let ours = |p: &Path| {
        p.starts_with("b/.test_machine_monitor")
            || p.to_string_lossy().starts_with("monitor-")
            || aside.iter().any(|a| p == Path::new("b").join(a))
    };
    let strangers: Vec<&PathBuf> = new.iter().filter(|p| !ours(p)).collect();
    let unusable = lines_with(
        &log,
        "is unusable (entry \"../../x\" would unpack outside the bot directory",
    );
    let no_main = lines_with(&log, "HTTP 200 but no __main__.py in the zip");
    let traversal = lines_with(
        &log,
        "HTTP 200 but entry \"../../x\" would unpack outside the bot directory",
    );
    let requests = lab.server().state()["bot_code_requests"]
        .as_array()
        .unwrap()
        .len();
    report(
        10,
        "zip lacking __main__.py; zip with entry ../../x",
        "rejected with the reason, the one in place moved aside beside the bot dir, refetched until good; nothing written outside the bot dir",
        &format!(
            "in place: {} line(s) {:?}, set aside as {aside:?} (same bytes: {aside_same}); downloads: {} no-__main__ line(s), {} ../../x line(s), {requests} requests, bad_zip {bad:?}, ok {ok:?}; zip in place is the good one: {}; new files outside the bot dir: {new:?}; {status}",
            unusable.len(),
            unusable.first().map_or("", |l| l.split_once(": ").map_or(*l, |(_, m)| m)),
            no_main.len(),
            traversal.len(),
            in_place == good,
        ),
    );
    assert_eq!(unusable.len(), 1, "{log}");
    assert!(aside_same, "{aside:?}");
    assert_eq!((no_main.len(), traversal.len()), (1, 1), "{log}");
    assert_eq!((bad, ok), (Some(2.0), Some(1.0)));
    assert_eq!(requests, 3);
    assert!(in_place == good, "the zip in place is not the good one");
    assert!(
        strangers.is_empty(),
        "written outside the bot dir: {strangers:?}"
    );
    assert!(!lab.dir().join("x").exists());
    assert_eq!(status.code(), Some(0), "{log}");
}

/// The pids of the `started the bot (pid N)` lines of `log`, in order.
fn bot_pids(log: &str) -> Vec<i32> {
    lines_with(log, "started the bot (pid ")
        .iter()
        .map(|l| {
            let (_, rest) = l.split_once("(pid ").unwrap();
            rest.split(')').next().unwrap().parse().unwrap()
        })
        .collect()
}

#[test]
fn fault_08_bot_hangs() {
    let lab = Tmm::new("fault08").bot(FakeSwarming::with_hooks()).args([
        "--grace",
        "2",
        "--bot-silence-limit",
        "3",
    ]);
    // A first task longer than the limit: no hook is called during a task, which must
    // not count as silence.
    lab.server().control(json!({
        "poll_sleep": 0.2,
        "bot_cmds": [{"cmd": "run", "duration": 5}],
    }));
    let mut m = lab.start();
    let log = m.wait_log("task done", LONG);
    let first = bot_pids(&log);
    let during_task = lines_with(&log, "has called no hook").len();
    let polls_before = lab.server().state()["polls"].as_u64().unwrap();
    let stopped_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    support::send_signal(first[0], libc::SIGSTOP);
    let log = m.wait_log("has called no hook for", LONG);
    let log_after = m.wait_log_n("handshake done", 2, LONG);
    let pids = bot_pids(&log_after);
    let deadline = Instant::now() + LONG;
    let polls_after = loop {
        let polls = lab.server().state()["polls"].as_u64().unwrap();
        if polls > polls_before + 2 || Instant::now() > deadline {
            break polls;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let kills = m.sample(&format!("bot_silence_kills_total{{bot=\"{BOT_ID}\"}}"));
    let restarts = m.sample(&format!("bot_restarts_total{{bot=\"{BOT_ID}\"}}"));
    let silent = lines_with(&log, "has called no hook for");
    let killed = lines_with(&log_after, "still running 2s after SIGTERM: SIGKILL");
    let exited = lines_with(&log_after, "bot exited with signal 9");
    let noticed = silent.first().map(|l| line_time(l) - stopped_at);
    m.term();
    let status = m.wait_exit(LONG);
    report(
        8,
        "bot hangs (SIGSTOP), calls no hook",
        "after --bot-silence-limit (3 s here) without a hook call outside a task: one warning naming the bot, pid and silence; counted; killed (TERM, grace, KILL); restarted; hooks called again; a 5 s task is no silence",
        &format!(
            "warnings during the 5 s task: {during_task}; after SIGSTOP {} warning(s) {:?}, {:.1?} s after it; SIGKILL line(s) {}, signal 9 exit line(s) {}; bot pids {pids:?}; bot_silence_kills_total {kills:?}, bot_restarts_total {restarts:?}; polls {polls_before} then {polls_after}; {status}",
            silent.len(),
            silent.first().map_or("", |l| l.split_once(": ").map_or(*l, |(_, m)| m)),
            noticed,
            killed.len(),
            exited.len(),
        ),
    );
    assert_eq!((first.len(), during_task), (1, 0), "{log}");
    assert_eq!(silent.len(), 1, "{log_after}");
    assert!(
        silent[0].contains(&format!("bot (pid {})", first[0])),
        "{}",
        silent[0]
    );
    assert!(
        silent[0].contains("(--bot-silence-limit 3s)"),
        "{}",
        silent[0]
    );
    // Silence counts from the last call, made before the SIGSTOP.
    assert!(noticed.is_some_and(|t| t > 0.0), "{noticed:?}");
    assert_eq!((killed.len(), exited.len()), (1, 1), "{log_after}");
    assert_eq!(pids.len(), 2, "{log_after}");
    assert_ne!(pids[0], pids[1]);
    assert_eq!((kills, restarts), (Some(1.0), Some(1.0)));
    assert!(polls_after > polls_before + 2, "no polls after the restart");
    assert_eq!(status.code(), Some(0));
}
