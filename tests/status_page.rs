//! The status page in a real browser: Debian's headless Chromium against the real
//! binary, with simulated phones through the real adb server. The DOM must have each
//! phone's row and reason, a phone property that is HTML must stay text, and a
//! screenshot must be a non-blank PNG of the window's size.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::http::get;
use support::{wait_for, Tmm};

const LONG: Duration = Duration::from_secs(30);
const CHROMIUM: &str = "/usr/bin/chromium";
const EVIL: &str = "<script>alert(1)</script>";

/// Runs headless Chromium with a fresh profile and the flags a closed network needs,
/// killed if it takes longer than a minute.
fn chromium(profile: &Path, args: &[&str]) -> std::process::Output {
    let child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("Debian's chromium is needed (ci/deps installs it)");
    // Its helper processes inherit the pipes: the deadline covers reading them too.
    support::output_of(
        child,
        Duration::from_secs(60),
        &format!("chromium {args:?}"),
    )
}

/// Width, height and whether the pixels differ, from a PNG's bytes (8-bit RGB or RGBA,
/// as Chromium writes them).
fn png_facts(png: &[u8]) -> (u32, u32, bool) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&png[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let (width, height) = (be(&png[16..20]), be(&png[20..24]));
    let mut idat = Vec::new();
    let mut at = 8;
    while at + 8 <= png.len() {
        let len = be(&png[at..at + 4]) as usize;
        if &png[at + 4..at + 8] == b"IDAT" {
            idat.extend_from_slice(&png[at + 8..at + 8 + len]);
        }
        at += 12 + len;
    }
    let mut raw = Vec::new();
    use std::io::Read;
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .expect("the PNG's image data inflates");
    let distinct: std::collections::BTreeSet<u8> = raw.iter().copied().collect();
    (width, height, distinct.len() > 16)
}

#[test]
fn the_status_page_shows_every_phone_and_its_reason_in_a_real_browser() {
    let tmm = Tmm::new("status-page")
        .plugged(&["modern:M", "hot:H", "unauthorized:U"])
        .start();
    let sim = tmm.sim();
    let (m, h, u) = (sim.serial("M"), sim.serial("H"), sim.serial("U"));
    assert_eq!(
        sim.control(&format!("prop M ro.product.model {EVIL}")),
        "OK"
    );
    let url = format!("http://127.0.0.1:{}/", tmm.metrics_port);
    wait_for(LONG, "the status to show all three phones", || {
        let reply = get(tmm.metrics_port, "/status.json");
        let v: serde_json::Value = serde_json::from_str(&reply.body).ok()?;
        let devices = v["devices"].as_array()?;
        let model = |s: &str| {
            devices
                .iter()
                .find(|d| d["serial"] == s)
                .and_then(|d| d["model"].as_str().map(str::to_string))
        };
        let hot = devices
            .iter()
            .any(|d| d["serial"] == h.as_str() && d["verdict"] == "maintenance");
        let unauthorized = devices
            .iter()
            .any(|d| d["serial"] == u.as_str() && d["verdict"] == "quarantined");
        (reply.status == 200 && model(&m).as_deref() == Some(EVIL) && hot && unauthorized)
            .then_some(())
    });

    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page");
    std::fs::create_dir_all(&out_dir).unwrap();
    let profile = support::TempDir::new("chromium-profile");
    let dom = chromium(profile.path(), &["--dump-dom", &url]);
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    std::fs::write(out_dir.join("dom.html"), &dom).unwrap();
    for serial in [&m, &h, &u] {
        assert!(
            dom.contains(&format!("id=\"phone-{serial}\"")),
            "no row for {serial} in\n{dom}"
        );
    }
    let row = |serial: &str| {
        dom.lines()
            .find(|l| l.contains(&format!("id=\"phone-{serial}\"")))
            .unwrap()
            .to_string()
    };
    assert!(
        row(&h).contains(&format!("too hot: {h} cpu0 44.5°C")),
        "{}",
        row(&h)
    );
    assert!(
        row(&h).contains(&format!("battery low: {h} 12%")),
        "{}",
        row(&h)
    );
    assert!(
        row(&u).contains("is unauthorized: accept this host's adb key"),
        "{}",
        row(&u)
    );
    assert!(row(&m).contains(">usable<"), "{}", row(&m));
    // The model is text in the DOM, not an element the browser ran.
    assert!(
        row(&m).contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{}",
        row(&m)
    );
    assert!(
        !dom.contains("<script"),
        "a script element reached the DOM:\n{dom}"
    );
    assert!(
        dom.contains("<table id=\"events\">") && dom.contains("reason set"),
        "{dom}"
    );

    let shot = out_dir.join("status.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        profile.path(),
        &[
            "--window-size=1280,900",
            &format!("--screenshot={}", shot.display()),
            &url,
        ],
    );
    let png =
        std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", shot.display()));
    let (w, hgt, varied) = png_facts(&png);
    assert_eq!((w, hgt), (1280, 900), "{}", shot.display());
    assert!(varied, "the screenshot is blank: {}", shot.display());
}
