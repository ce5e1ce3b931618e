//! The status page at `/` on the metrics port, and `/status.json`: one Pi's bot, its
//! phones with their verdicts, and the last events, for an operator with `kubectl
//! port-forward` and a browser, or a script.
//!
//! Both come from one [`Status`], built from the current snapshot and bot status; the
//! page is server-rendered HTML with no external assets and no script (a meta refresh
//! reloads it every 10 s), so it costs about what `/metrics` does. Everything that comes
//! from outside (phone properties, serials, reasons, bot output) is HTML-escaped: a
//! phone whose model is `<script>` shows that text and runs nothing.
//!
//! Pure: data in, text out.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::{json, Value};

use crate::runtime::logging::utc_timestamp;
use crate::state::device_view::DeviceView;
use crate::state::snapshot::{Device, Reasons};
use crate::state::{BotStatus, Event, KubeView};

/// Everything the page and the JSON show, as of one moment.
pub struct Status<'a> {
    pub bot_id: &'a str,
    pub version: &'a str,
    pub now_unix: f64,
    /// The Pi's bots: its one bot, or one per phone with `--bots per-device`; `None`
    /// with `--no-bot`.
    pub bots: Option<&'a [BotView]>,
    /// The Pi's reasons: its one bot's, as `get_state` reports them; with
    /// `--bots per-device`, every phone's together.
    pub reasons: &'a Reasons,
    pub devices: &'a [Device],
    /// Oldest first.
    pub events: &'a [Event],
    /// `--bots per-device`: each phone's bot (`bot <id>`) or why it has none, by serial;
    /// empty with one bot for the Pi.
    pub phone_bots: &'a BTreeMap<String, String>,
    /// The Kubernetes client: off and why, or what it watches and its failures.
    pub kube: &'a KubeView,
}

/// One bot as the page shows it.
pub struct BotView {
    pub id: String,
    /// The phone it serves (`--bots per-device`); `None` for the Pi's one bot.
    pub phone: Option<String>,
    pub status: BotStatus,
    /// What its `get_state` reports.
    pub reasons: Reasons,
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn utc(unix: f64) -> String {
    // Whole seconds are enough for people; the logs have the milliseconds.
    let s = utc_timestamp((unix.max(0.0) * 1000.0) as u128);
    format!("{}Z", &s[..19])
}

/// `3d 4h`, `2h 5m`, `7m 3s`, `42s`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m {sec}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

fn reasons_text(r: &Reasons) -> String {
    r.quarantined
        .iter()
        .map(|q| format!("quarantined: {q}"))
        .chain(r.maintenance.iter().map(|m| format!("maintenance: {m}")))
        .collect::<Vec<_>>()
        .join("; ")
}

fn verdict_of(r: &Reasons) -> &'static str {
    if !r.quarantined.is_empty() {
        "quarantined"
    } else if !r.maintenance.is_empty() {
        "maintenance"
    } else {
        "usable"
    }
}

fn reports_of(r: &Reasons) -> String {
    match reasons_text(r) {
        t if t.is_empty() => "no reason: takes tasks".to_string(),
        t => t,
    }
}

/// The page.
pub fn render_html(s: &Status) -> String {
    let mut o = String::with_capacity(4096 + 600 * s.devices.len());
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"10\">\
         <title>{id}: test_machine_monitor</title>\
         <style>body{{font-family:sans-serif;margin:1.5em;color:#222}}\
         table{{border-collapse:collapse;margin-bottom:1.5em}}\
         td,th{{border:1px solid #bbb;padding:.3em .6em;text-align:left;vertical-align:top}}\
         th{{background:#eee}}.usable{{background:#dfd}}.maintenance{{background:#ffd}}\
         .quarantined{{background:#fdd}}</style></head><body>\n\
         <h1>{id}</h1>\n<p>test_machine_monitor {version}, as of {now}</p>\n",
        id = escape(s.bot_id),
        version = escape(s.version),
        now = utc(s.now_unix),
    );

    let heading = match s.bots {
        Some(bots) if bots.len() != 1 => format!("Bots ({})", bots.len()),
        _ => "Bot".to_string(),
    };
    let _ = writeln!(
        o,
        "<h2>{heading}</h2>\n<table id=\"bot\"><tr><th>bot</th><th>phone</th><th>state</th>\
         <th>uptime</th><th>restarts</th><th>last exit</th><th>reports</th></tr>"
    );
    match s.bots {
        None => {
            let _ = writeln!(
                o,
                "<tr class=\"{}\"><td>{}</td><td></td><td>not run (--no-bot)</td><td></td><td></td><td></td><td>{}</td></tr>",
                verdict_of(s.reasons),
                escape(s.bot_id),
                escape(&reports_of(s.reasons))
            );
        }
        Some(bots) => {
            for b in bots {
                let state = match (b.status.running, b.status.crashlooping, b.status.drain) {
                    (true, _, Some(d)) => format!(
                        "draining for shutdown: its task has run {}, the drain {}",
                        duration(s.now_unix - d.task_started_unix),
                        duration(s.now_unix - d.since_unix)
                    ),
                    (true, _, None) => "running".to_string(),
                    (false, true, _) => "crash-looping".to_string(),
                    (false, false, _) => "not running".to_string(),
                };
                let uptime = b
                    .status
                    .started_at_unix
                    .map(|t| duration(s.now_unix - t))
                    .unwrap_or_default();
                let _ = writeln!(
                    o,
                    "<tr class=\"{}\" id=\"bot-{id}\"><td>{id}</td><td>{}</td><td>{state}</td><td>{uptime}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    verdict_of(&b.reasons),
                    escape(b.phone.as_deref().unwrap_or("")),
                    b.status.restarts,
                    escape(&b.status.last_exit.map(|e| e.to_string()).unwrap_or_default()),
                    escape(&reports_of(&b.reasons)),
                    id = escape(&b.id),
                );
            }
        }
    }
    o.push_str("</table>\n");
    let _ = write!(
        o,
        "<p id=\"kubernetes\">Kubernetes: {}",
        escape(&s.kube.state)
    );
    if let Some(since) = s.kube.unreachable_since_unix {
        let _ = write!(
            o,
            "; <b>failing since {}</b>: {}",
            utc(since),
            escape(s.kube.last_error.as_deref().unwrap_or(""))
        );
    }
    o.push_str("</p>\n");

    let _ = write!(
        o,
        "<h2>Phones ({})</h2>\n<table id=\"phones\"><tr><th>kind</th><th>serial</th><th>model</th>\
         <th>state</th><th>verdict</th><th>battery</th><th>hottest</th><th>uptime</th>\
         <th>read at</th></tr>\n",
        s.devices.len()
    );
    for d in s.devices {
        let verdict = d.verdict_word();
        let mut why = reasons_text(&d.reasons);
        if !d.missing_values.is_empty() {
            if !why.is_empty() {
                why.push_str("; ");
            }
            why.push_str(&format!("could not read: {}", d.missing_values.join("; ")));
        }
        let hottest = d
            .hottest()
            .map(|t| format!("{} {:.1}°C", t.sensor, t.celsius))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "<tr class=\"{verdict}\" id=\"phone-{id}\"><td>{kind}</td><td>{serial}</td><td>{model}</td>\
             <td>{state}</td><td>{verdict_cell}</td><td>{battery}</td><td>{hottest}</td>\
             <td>{uptime}</td><td>{read}</td></tr>",
            id = escape(&d.serial),
            kind = d.kind.as_str(),
            serial = escape(&d.serial),
            model = escape(d.model.as_deref().or(d.device_type.as_deref()).unwrap_or("")),
            state = escape(d.state_word()),
            verdict_cell = if why.is_empty() {
                verdict.to_string()
            } else {
                escape(&why)
            },
            battery = d
                .battery_percent
                .map(|b| format!("{b:.0}%"))
                .unwrap_or_default(),
            hottest = escape(&hottest),
            uptime = d.uptime_secs.map(duration).unwrap_or_default(),
            read = d.read_at_unix.map(utc).unwrap_or_default(),
        );
    }
    o.push_str("</table>\n");

    let _ = write!(
        o,
        "<h2>Last events</h2>\n<table id=\"events\"><tr><th>time (UTC)</th><th>event</th></tr>\n"
    );
    for e in s.events.iter().rev() {
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td></tr>",
            utc(e.at_unix),
            escape(&e.text)
        );
    }
    o.push_str("</table>\n</body></html>\n");
    o
}

/// The same data for scripts (`/status.json`).
pub fn render_json(s: &Status) -> Value {
    json!({
        "bot_id": s.bot_id,
        "version": s.version,
        "taken_at_unix": s.now_unix,
        "bots": s.bots.map(|bots| bots.iter().map(|b| json!({
            "id": b.id,
            "phone": b.phone,
            "running": b.status.running,
            "started_at_unix": b.status.started_at_unix,
            "restarts": b.status.restarts,
            "last_exit": b.status.last_exit.map(|e| e.to_string()),
            "crashlooping": b.status.crashlooping,
            "draining": b.status.drain.filter(|_| b.status.running).map(|d| json!({
                "since_unix": d.since_unix,
                "task_started_unix": d.task_started_unix,
                "task_for_secs": s.now_unix - d.task_started_unix,
            })),
            "reasons": {"quarantined": b.reasons.quarantined, "maintenance": b.reasons.maintenance},
        })).collect::<Vec<_>>()),
        "reasons": {"quarantined": s.reasons.quarantined, "maintenance": s.reasons.maintenance},
        "devices": s.devices.iter().map(|d| DeviceView {
            bot: s.phone_bots.get(&d.serial).cloned(),
            ..DeviceView::of(d)
        }.to_json()).collect::<Vec<_>>(),
        "events": s.events.iter().map(|e| json!({"at_unix": e.at_unix, "utc": utc(e.at_unix), "text": e.text})).collect::<Vec<_>>(),
        "kubernetes": {
            "state": s.kube.state,
            "node_uid": s.kube.node_uid,
            "unreachable_since": s.kube.unreachable_since_unix,
            "last_error": s.kube.last_error,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::reaper::Exit;
    use crate::state::snapshot::{usable_device, DeviceKind, Temperature};

    fn phones() -> Vec<Device> {
        let mut evil = usable_device(DeviceKind::Android, "E<1>");
        evil.model = Some("<script>alert(1)</script>".into());
        evil.battery_percent = Some(81.0);
        evil.temperatures = vec![
            Temperature {
                sensor: "battery".into(),
                celsius: 30.0,
            },
            Temperature {
                sensor: "cpu\"0".into(),
                celsius: 41.25,
            },
        ];
        evil.uptime_secs = Some(3725.0);
        evil.read_at_unix = Some(1_764_547_200.0);
        evil.reasons.maintenance = vec!["too hot: E<1> cpu\"0 41.2°C (> 35°C)".into()];
        let mut iphone = usable_device(DeviceKind::Ios, "00008030-001A");
        iphone.model = Some("iPhone14,2".into());
        iphone.reasons.quarantined =
            vec!["device 00008030-001A (iPhone14,2) has gone missing".into()];
        vec![evil, iphone]
    }

    fn status<'a>(
        devices: &'a [Device],
        reasons: &'a Reasons,
        bots: Option<&'a [BotView]>,
        events: &'a [Event],
    ) -> Status<'a> {
        Status {
            bot_id: "pi-<01>",
            version: "0.1.0",
            now_unix: 1_764_547_230.0,
            bots,
            reasons,
            devices,
            events,
            phone_bots: &NO_BOTS,
            kube: &NO_KUBE,
        }
    }

    static NO_BOTS: BTreeMap<String, String> = BTreeMap::new();
    static NO_KUBE: KubeView = KubeView {
        state: String::new(),
        node_uid: None,
        unreachable_since_unix: None,
        last_error: None,
    };

    #[test]
    fn the_kubernetes_client_says_what_it_watches_and_since_when_it_fails() {
        let devices = phones();
        let reasons = Reasons::default();
        let failing = KubeView {
            state: "watching node pi<1> at https://10.43.0.1:443".into(),
            node_uid: Some("u-1".into()),
            unreachable_since_unix: Some(1_764_547_200.0),
            last_error: Some("GET https://10.43.0.1:443/api/v1/nodes/pi<1>: no answer".into()),
        };
        let mut s = status(&devices, &reasons, None, &[]);
        s.kube = &failing;
        let html = render_html(&s);
        assert!(
            html.contains("<p id=\"kubernetes\">Kubernetes: watching node pi&lt;1&gt; at https://10.43.0.1:443; <b>failing since 2025-12-01T00:00:00Z</b>: GET https://10.43.0.1:443/api/v1/nodes/pi&lt;1&gt;: no answer</p>"),
            "{html}"
        );
        let v = render_json(&s);
        assert_eq!(v["kubernetes"]["unreachable_since"], 1_764_547_200.0);
        assert_eq!(v["kubernetes"]["node_uid"], "u-1");
        let fine = render_html(&status(&devices, &reasons, None, &[]));
        assert!(!fine.contains("failing since"));
    }

    #[test]
    fn each_phone_names_its_bot_when_it_has_one_of_its_own() {
        let devices = phones();
        let reasons = Reasons::default();
        let bots = BTreeMap::from([
            ("E<1>".to_string(), "bot pi--E-1-".to_string()),
            (
                "00008030-001A".to_string(),
                "no bot for 00008030-001A: --max-bots 1 bots run already".to_string(),
            ),
        ]);
        let mut s = status(&devices, &reasons, None, &[]);
        s.phone_bots = &bots;
        let v = render_json(&s);
        assert_eq!(v["devices"][0]["bot"], "bot pi--E-1-");
        assert!(v["devices"][1]["bot"]
            .as_str()
            .unwrap()
            .contains("--max-bots 1"));
        let alone = render_json(&status(&devices, &reasons, None, &[]));
        assert!(alone["devices"][0].get("bot").is_none());
    }

    #[test]
    fn everything_from_outside_is_escaped() {
        let devices = phones();
        let reasons = Reasons::default();
        let events = [Event {
            at_unix: 1_764_547_200.0,
            text: "device E<1> appeared: <b>device</b>".into(),
        }];
        let html = render_html(&status(&devices, &reasons, None, &events));
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(html.contains("<td>E&lt;1&gt;</td>"), "{html}");
        assert!(html.contains("id=\"phone-E&lt;1&gt;\""), "{html}");
        assert!(html.contains("cpu&quot;0 41.2°C"), "{html}");
        assert!(html.contains("&lt;b&gt;device&lt;/b&gt;"), "{html}");
        assert!(html.contains("<h1>pi-&lt;01&gt;</h1>"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
    }

    #[test]
    fn each_phone_has_its_row_with_verdict_battery_hottest_uptime_and_read_time() {
        let devices = phones();
        let reasons = Reasons::default();
        let html = render_html(&status(&devices, &reasons, None, &[]));
        assert!(html.contains("<h2>Phones (2)</h2>"));
        let row = html
            .lines()
            .find(|l| l.contains("id=\"phone-E&lt;1&gt;\""))
            .unwrap();
        assert!(row.starts_with("<tr class=\"maintenance\""), "{row}");
        assert!(
            row.contains("<td>maintenance: too hot: E&lt;1&gt;"),
            "{row}"
        );
        assert!(row.contains("<td>81%</td>"), "{row}");
        assert!(row.contains("<td>cpu&quot;0 41.2°C</td>"), "{row}");
        assert!(row.contains("<td>1h 2m</td>"), "{row}");
        assert!(row.contains("<td>2025-12-01T00:00:00Z</td>"), "{row}");
        let row = html
            .lines()
            .find(|l| l.contains("id=\"phone-00008030-001A\""))
            .unwrap();
        assert!(row.starts_with("<tr class=\"quarantined\""), "{row}");
        assert!(
            row.contains("<td>ios</td>") && row.contains("<td>iPhone14,2</td>"),
            "{row}"
        );
    }

    #[test]
    fn the_bot_row_and_the_events_newest_first() {
        let bot = BotStatus {
            running: true,
            started_at_unix: Some(1_764_547_230.0 - 90_061.0),
            restarts: 3,
            last_exit: Some(Exit::Code(1)),
            crashlooping: false,
            silence_kills: 0,
            drain: None,
            started: None,
        };
        let reasons = Reasons {
            quarantined: vec![],
            maintenance: vec!["booting: S1".into()],
        };
        let events = [
            Event {
                at_unix: 1_764_547_200.0,
                text: "first".into(),
            },
            Event {
                at_unix: 1_764_547_201.0,
                text: "second".into(),
            },
        ];
        let bots = [BotView {
            id: "pi-<01>".into(),
            phone: None,
            status: bot,
            reasons: reasons.clone(),
        }];
        let html = render_html(&status(&[], &reasons, Some(&bots), &events));
        assert!(html.contains("<h2>Bot</h2>"), "{html}");
        assert!(html.contains("<tr class=\"maintenance\" id=\"bot-pi-&lt;01&gt;\"><td>pi-&lt;01&gt;</td><td></td><td>running</td><td>1d 1h</td><td>3</td><td>exit code 1</td><td>maintenance: booting: S1</td></tr>"), "{html}");
        let (first, second) = (html.find("first").unwrap(), html.find("second").unwrap());
        assert!(second < first, "newest first");
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"10\">"));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no external asset"
        );
    }

    #[test]
    fn json_has_the_same_data() {
        let devices = phones();
        let reasons = Reasons {
            quarantined: vec!["q".into()],
            maintenance: vec![],
        };
        let events = [Event {
            at_unix: 1_764_547_200.0,
            text: "e".into(),
        }];
        let v = render_json(&status(&devices, &reasons, None, &events));
        assert_eq!(v["devices"][0]["serial"], "E<1>");
        assert_eq!(v["devices"][0]["model"], "<script>alert(1)</script>");
        assert_eq!(v["devices"][1]["verdict"], "quarantined");
        assert_eq!(v["reasons"]["quarantined"][0], "q");
        assert_eq!(v["events"][0]["utc"], "2025-12-01T00:00:00Z");
        assert!(v["bots"].is_null());
    }

    #[test]
    fn with_a_bot_per_phone_each_bot_has_its_row_status_and_reasons() {
        let devices = phones();
        let pi = Reasons {
            quarantined: vec!["device 00008030-001A (iPhone14,2) has gone missing".into()],
            maintenance: vec!["too hot: E<1>".into()],
        };
        let running = BotStatus {
            running: true,
            started_at_unix: Some(1_764_547_230.0 - 60.0),
            ..BotStatus::default()
        };
        let looping = BotStatus {
            crashlooping: true,
            restarts: 5,
            last_exit: Some(Exit::Code(2)),
            ..BotStatus::default()
        };
        let bots = [
            BotView {
                id: "pi--E-1-".into(),
                phone: Some("E<1>".into()),
                status: running,
                reasons: devices[0].reasons.clone(),
            },
            BotView {
                id: "pi--00008030-001A".into(),
                phone: Some("00008030-001A".into()),
                status: looping,
                reasons: devices[1].reasons.clone(),
            },
        ];
        let html = render_html(&status(&devices, &pi, Some(&bots), &[]));
        assert!(html.contains("<h2>Bots (2)</h2>"), "{html}");
        assert!(html.contains("<tr class=\"maintenance\" id=\"bot-pi--E-1-\"><td>pi--E-1-</td><td>E&lt;1&gt;</td><td>running</td><td>1m 0s</td>"), "{html}");
        assert!(html.contains("<tr class=\"quarantined\" id=\"bot-pi--00008030-001A\"><td>pi--00008030-001A</td><td>00008030-001A</td><td>crash-looping</td><td></td><td>5</td><td>exit code 2</td><td>quarantined: device 00008030-001A (iPhone14,2) has gone missing</td></tr>"), "{html}");
        assert!(!html.contains("not running"), "{html}");
        let v = render_json(&status(&devices, &pi, Some(&bots), &[]));
        assert_eq!(v["bots"][0]["id"], "pi--E-1-");
        assert_eq!(v["bots"][0]["phone"], "E<1>");
        assert_eq!(v["bots"][0]["running"], true);
        assert!(v["bots"][0]["reasons"]["quarantined"]
            .as_array()
            .unwrap()
            .is_empty());
        assert_eq!(v["bots"][1]["crashlooping"], true);
        assert_eq!(v["bots"][1]["restarts"], 5);
        assert_eq!(
            v["bots"][1]["reasons"]["quarantined"][0],
            "device 00008030-001A (iPhone14,2) has gone missing"
        );
    }

    #[test]
    fn a_draining_bot_shows_how_long_its_task_has_run() {
        let now = 1_764_547_230.0;
        let draining = BotStatus {
            running: true,
            started_at_unix: Some(now - 4000.0),
            drain: Some(crate::state::bot_status::Drain {
                since_unix: now - 30.0,
                task_started_unix: now - 725.0,
            }),
            ..BotStatus::default()
        };
        let gone = BotStatus {
            drain: Some(crate::state::bot_status::Drain {
                since_unix: now - 30.0,
                task_started_unix: now - 725.0,
            }),
            ..BotStatus::default()
        };
        let none = Reasons::default();
        let bots = [
            BotView {
                id: "pi--A".into(),
                phone: Some("A".into()),
                status: draining,
                reasons: none.clone(),
            },
            BotView {
                id: "pi--B".into(),
                phone: Some("B".into()),
                status: gone,
                reasons: none.clone(),
            },
        ];
        let html = render_html(&status(&[], &none, Some(&bots), &[]));
        assert!(html.contains("<td>pi--A</td><td>A</td><td>draining for shutdown: its task has run 12m 5s, the drain 30s</td>"), "{html}");
        assert!(
            html.contains("<td>pi--B</td><td>B</td><td>not running</td>"),
            "{html}"
        );
        let v = render_json(&status(&[], &none, Some(&bots), &[]));
        assert_eq!(v["bots"][0]["draining"]["task_for_secs"], 725.0);
        assert_eq!(v["bots"][0]["draining"]["since_unix"], now - 30.0);
        assert!(v["bots"][1]["draining"].is_null());
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(duration(42.4), "42s");
        assert_eq!(duration(423.0), "7m 3s");
        assert_eq!(duration(7500.0), "2h 5m");
        assert_eq!(duration(273_600.0), "3d 4h");
        assert_eq!(duration(-5.0), "0s");
    }
}
