//! The `devices` subcommand: one look at what the adb server lists, with the running
//! monitor's verdict on each phone, for operators inside a pod that has no shell
//! (`kubectl exec <pod> -- test_machine_monitor devices`).
//!
//! It owns the one-shot `host:devices-l` request, the one-shot `GET /status.json` of the
//! monitor on `--metrics-addr`, and the text it prints. The verdicts are the monitor's
//! own (the result of `verdict::decide` that `get_state` and `/metrics` read), never
//! recomputed here: a phone's fate depends on earlier rounds (how long it has been
//! offline, whether it was seen before) that only the running monitor knows. When the
//! monitor does not answer, the listing is still printed, each phone's verdict says it
//! is unknown and why, and the command exits 1. [`render`] and [`parse_status`] are
//! pure and tested on listings; [`run`] is the thin I/O edge.
//!
//! Must not: start or restart an adb server (the running monitor owns it, and a second
//! server would fight it for the USB devices), or change any phone's state.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::devices::adb::client::{Client, Error, ErrorKind};
use crate::devices::parse::devices_l::Listed;
use crate::runtime::https;
use crate::state::device_view::DeviceView;

/// Deadline of the connect and of each read: the server answers from memory.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// What the command prints, and the error that makes it exit 1 (after printing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub text: String,
    pub error: Option<String>,
}

/// Asks the adb server at `adb` for its list and the monitor at `monitor` for its
/// verdicts, and renders both. A failed listing is one line that names the address; a
/// monitor that does not answer leaves the listing with unknown verdicts.
pub fn run(adb: SocketAddr, monitor: SocketAddr) -> Outcome {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            return Outcome {
                text: String::new(),
                error: Some(format!("devices: cannot start the async runtime: {e}")),
            }
        }
    };
    let listed = match runtime.block_on(Client::new(adb, IO_TIMEOUT).devices()) {
        Ok(l) => l,
        Err(e) => {
            return Outcome {
                text: String::new(),
                error: Some(explain(adb, &e)),
            }
        }
    };
    let monitor = local(monitor);
    let verdicts = fetch_status(monitor);
    let error = verdicts.as_ref().err().cloned();
    Outcome {
        text: render(adb, &listed, monitor, &verdicts),
        error,
    }
}

/// A wildcard listen address (`0.0.0.0:20000`) is reached on loopback.
fn local(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

fn fetch_status(monitor: SocketAddr) -> Result<Vec<DeviceView>, String> {
    let url = format!("http://{monitor}/status.json");
    let agent = https::plain_agent(ureq::Agent::config_builder().timeout_global(Some(IO_TIMEOUT)));
    let unreachable = |e: &dyn std::fmt::Display| {
        format!(
            "devices: the monitor did not answer at {url} ({e}): check that it runs \
             (kubectl logs) and that --metrics-addr matches its address"
        )
    };
    let mut reply = agent.get(&url).call().map_err(|e| unreachable(&e))?;
    let status = reply.status().as_u16();
    let body = reply
        .body_mut()
        .with_config()
        .limit(4 * 1024 * 1024)
        .read_to_string()
        .map_err(|e| unreachable(&e))?;
    if status != 200 {
        return Err(format!("devices: {url} answered HTTP {status}"));
    }
    parse_status(&body).map_err(|e| format!("devices: {url}: {e}"))
}

/// Reads the devices of `/status.json` back as the monitor's [`DeviceView`]s. Every
/// field this command shows must be there: a monitor of another version that lacks one
/// is named, not guessed at.
pub fn parse_status(body: &str) -> Result<Vec<DeviceView>, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let devices = v
        .get("devices")
        .and_then(Value::as_array)
        .ok_or("no \"devices\" array")?;
    devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            DeviceView::from_json(d).map_err(|e| {
                let serial = d.get("serial").and_then(Value::as_str);
                let serial = serial.map(|s| format!(" ({s})")).unwrap_or_default();
                format!("device {i}{serial}: {e}")
            })
        })
        .collect()
}

/// The one-line error for a failed listing: what failed, and what to check.
fn explain(addr: SocketAddr, e: &Error) -> String {
    match e.kind {
        ErrorKind::Connect | ErrorKind::Timeout => format!(
            "devices: no adb server answers at {addr} ({e}). The running monitor starts and \
             owns the adb server, and this command never starts one: check that the monitor \
             runs (kubectl logs) and that --adb-server matches its address"
        ),
        _ => format!("devices: the adb server at {addr} did not give a device list: {e}"),
    }
}

/// One line per phone the adb server lists: serial, state (the whole `no permissions
/// (...)` phrase), the devpath, product and model when listed, the transport id, then
/// the monitor's verdict. Then one line per phone the monitor knows and adb does not
/// list (gone missing, being rebooted, iPhones). With no phones, a single line saying so.
pub fn render(
    adb: SocketAddr,
    listed: &[Listed],
    monitor: SocketAddr,
    verdicts: &Result<Vec<DeviceView>, String>,
) -> String {
    let mut out = String::new();
    if let Err(e) = verdicts {
        out.push_str(&format!("{e}; verdicts unknown\n"));
    }
    if listed.is_empty() {
        out.push_str(&format!("no phones listed by the adb server at {adb}\n"));
    } else {
        let phones = if listed.len() == 1 { "phone" } else { "phones" };
        out.push_str(&format!(
            "{} {phones} listed by the adb server at {adb}, with the verdicts of the monitor at {monitor}:\n",
            listed.len()
        ));
    }
    let known = verdicts.as_ref().ok();
    for l in listed {
        let mut words = vec![
            l.serial.clone(),
            l.state_detail
                .clone()
                .unwrap_or_else(|| l.state.as_str().to_string()),
        ];
        let fields = [
            ("", &l.devpath),
            ("product:", &l.product),
            ("model:", &l.model),
        ];
        for (key, value) in fields {
            if let Some(v) = value {
                words.push(format!("{key}{v}"));
            }
        }
        if let Some(id) = l.transport_id {
            words.push(format!("transport_id:{id}"));
        }
        let verdict = match known {
            None => "verdict unknown".to_string(),
            Some(all) => match all.iter().find(|v| v.serial == l.serial) {
                Some(v) => describe(v),
                None => "not seen by the monitor yet".to_string(),
            },
        };
        out.push_str(&format!("{}  -> {verdict}\n", words.join("  ")));
    }
    for v in known.into_iter().flatten() {
        if !listed.iter().any(|l| l.serial == v.serial) {
            out.push_str(&format!(
                "{}  {} ({}, not listed by the adb server)  -> {}\n",
                v.serial,
                v.state,
                v.kind,
                describe(v)
            ));
        }
    }
    out
}

/// `usable`, or the reasons, then what could not be read.
fn describe(v: &DeviceView) -> String {
    let mut parts = Vec::new();
    let reasons = &v.reasons;
    if !reasons.quarantined.is_empty() {
        parts.push(format!("quarantined: {}", reasons.quarantined.join("; ")));
    }
    if !reasons.maintenance.is_empty() {
        parts.push(format!("maintenance: {}", reasons.maintenance.join("; ")));
    }
    if parts.is_empty() {
        parts.push("usable".to_string());
    }
    if !v.missing_values.is_empty() {
        parts.push(format!("could not read: {}", v.missing_values.join("; ")));
    }
    parts.extend(v.bot.clone());
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::parse::devices_l;
    use crate::state::snapshot::Reasons;

    fn addr() -> SocketAddr {
        "127.0.0.1:5037".parse().unwrap()
    }

    fn monitor() -> SocketAddr {
        "127.0.0.1:20000".parse().unwrap()
    }

    fn verdict(serial: &str, state: &str, q: &[&str], m: &[&str]) -> DeviceView {
        DeviceView {
            serial: serial.into(),
            kind: "android".into(),
            state: state.into(),
            reasons: Reasons {
                quarantined: q.iter().map(|s| s.to_string()).collect(),
                maintenance: m.iter().map(|s| s.to_string()).collect(),
            },
            ..DeviceView::default()
        }
    }

    #[test]
    fn a_phone_of_its_own_bot_names_it() {
        let mut v = verdict("S1", "device", &[], &[]);
        v.bot = Some("bot pi-9--S1".into());
        let got = lines("S1 device transport_id:1\n", &Ok(vec![v]));
        assert_eq!(
            got[1],
            "S1  device  transport_id:1  -> usable; bot pi-9--S1"
        );
        let parsed = parse_status(
            r#"{"devices":[{"serial":"S1","kind":"android","state":"device","verdict":"usable","booting":false,"recovery_step":0,"verdict_for_secs":1.5,"reasons":{"quarantined":[],"maintenance":[]},"missing_values":[],"bot":"no bot for S1: --max-bots 1 bots run already"}]}"#,
        )
        .unwrap();
        assert_eq!(
            parsed[0].bot.as_deref(),
            Some("no bot for S1: --max-bots 1 bots run already")
        );
    }

    fn lines(listing: &str, verdicts: &Result<Vec<DeviceView>, String>) -> Vec<String> {
        render(
            addr(),
            &devices_l::parse(listing).unwrap(),
            monitor(),
            verdicts,
        )
        .lines()
        .map(str::to_string)
        .collect()
    }

    #[test]
    fn no_phones_says_so_with_the_address() {
        assert_eq!(
            render(addr(), &[], monitor(), &Ok(vec![])),
            "no phones listed by the adb server at 127.0.0.1:5037\n"
        );
    }

    #[test]
    fn online_phone_with_its_fields_and_the_monitors_verdict() {
        let v = Ok(vec![verdict("0A1B", "device", &[], &[])]);
        assert_eq!(
            lines("0A1B  device usb:1-1.4 product:husky model:Pixel_8_Pro device:husky transport_id:3\n", &v),
            vec![
                "1 phone listed by the adb server at 127.0.0.1:5037, with the verdicts of the monitor at 127.0.0.1:20000:",
                "0A1B  device  usb:1-1.4  product:husky  model:Pixel_8_Pro  transport_id:3  -> usable",
            ]
        );
    }

    #[test]
    fn the_verdict_is_the_monitors_whatever_adb_says() {
        // adb lists it as `device`; the monitor knows it stopped answering.
        let v = Ok(vec![verdict(
            "W1",
            "device",
            &[],
            &["device W1 not answering (timed out), reconnecting"],
        )]);
        assert_eq!(
            lines("W1  device transport_id:2", &v)[1],
            "W1  device  transport_id:2  -> maintenance: device W1 not answering (timed out), reconnecting"
        );
    }

    #[test]
    fn no_permissions_shows_the_whole_state() {
        let v = Ok(vec![verdict(
            "ZY22",
            "no permissions",
            &["device ZY22 has no USB permissions: ..."],
            &[],
        )]);
        let out = lines("ZY22  no permissions (user in plugdev group; are your udev rules wrong?); see [http://developer.android.com/tools/device.html] usb:1-1.2 transport_id:6", &v);
        assert_eq!(
            out[1],
            "ZY22  no permissions (user in plugdev group; are your udev rules wrong?); see [http://developer.android.com/tools/device.html]  usb:1-1.2  transport_id:6  -> quarantined: device ZY22 has no USB permissions: ..."
        );
    }

    #[test]
    fn values_that_could_not_be_read_are_shown() {
        let mut v = verdict("B1", "device", &[], &[]);
        v.missing_values = vec!["battery level (dumpsys battery: no level line)".into()];
        assert_eq!(
            lines("B1 device", &Ok(vec![v]))[1],
            "B1  device  -> usable; could not read: battery level (dumpsys battery: no level line)"
        );
    }

    #[test]
    fn phones_the_monitor_knows_and_adb_does_not_list_follow() {
        let mut iphone = verdict("00008030-001A", "device", &[], &[]);
        iphone.kind = "ios".into();
        let v = Ok(vec![
            verdict(
                "S1",
                "missing",
                &["device S1 (husky) has gone missing"],
                &[],
            ),
            iphone,
        ]);
        let out = lines("S2 device", &v);
        assert_eq!(out[1], "S2  device  -> not seen by the monitor yet");
        assert_eq!(
            out[2],
            "S1  missing (android, not listed by the adb server)  -> quarantined: device S1 (husky) has gone missing"
        );
        assert_eq!(
            out[3],
            "00008030-001A  device (ios, not listed by the adb server)  -> usable"
        );
    }

    #[test]
    fn a_monitor_that_does_not_answer_leaves_the_listing_with_unknown_verdicts() {
        let out = lines(
            "S1 recovery",
            &Err("devices: the monitor did not answer at x".into()),
        );
        assert_eq!(
            out[0],
            "devices: the monitor did not answer at x; verdicts unknown"
        );
        assert_eq!(out[2], "S1  recovery  -> verdict unknown");
    }

    #[test]
    fn several_phones_one_line_each_in_the_servers_order() {
        let out = lines(
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/adb/devices_l_mixed.txt"
            )),
            &Ok(vec![]),
        );
        assert_eq!(
            out[0],
            "6 phones listed by the adb server at 127.0.0.1:5037, with the verdicts of the monitor at 127.0.0.1:20000:"
        );
        assert_eq!(out.len(), 7, "{out:#?}");
        let serials: Vec<&str> = out[1..]
            .iter()
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(
            serials,
            vec![
                "0A1B2C3D4E5F",
                "R58M12ABCDE",
                "HT4A1JT00123",
                "ZY2233445566",
                "emulator-5554",
                "127.0.0.1:40123"
            ]
        );
        assert!(out[6].contains("product:sim phone"), "{}", out[6]);
    }

    #[test]
    fn status_json_is_read_strictly() {
        let good = r#"{"devices": [{"serial": "S1", "kind": "android", "state": "device",
            "verdict": "maintenance", "booting": false, "recovery_step": 0,
            "verdict_for_secs": 12.5,
            "reasons": {"quarantined": [], "maintenance": ["too hot: S1"]},
            "missing_values": []}]}"#;
        assert_eq!(
            parse_status(good).unwrap(),
            vec![DeviceView {
                verdict: "maintenance".into(),
                verdict_for_secs: 12.5,
                ..verdict("S1", "device", &[], &["too hot: S1"])
            }]
        );
        // A field the monitor always writes, missing: named, never taken as a default.
        let no_verdict = good.replace(r#""verdict": "maintenance","#, "");
        assert!(
            parse_status(&no_verdict)
                .unwrap_err()
                .contains("no \"verdict\""),
            "{no_verdict}"
        );
        assert!(parse_status("<html>").unwrap_err().contains("not JSON"));
        assert!(parse_status("{}").unwrap_err().contains("devices"));
        let no_reasons = r#"{"devices": [{"serial": "S1", "kind": "android", "state": "device", "missing_values": []}]}"#;
        assert!(parse_status(no_reasons)
            .unwrap_err()
            .contains("quarantined"));
    }

    #[test]
    fn a_mistyped_field_names_the_device_the_field_and_what_is_expected() {
        let e = parse_status(
            r#"{"devices": [{"serial": "S1", "kind": "android", "state": 3,
                "reasons": {"quarantined": [], "maintenance": []}, "missing_values": []}]}"#,
        )
        .unwrap_err();
        assert!(
            e.starts_with("device 0 (S1): \"state\" is not a string;"),
            "{e}"
        );
        assert!(e.contains("\"state\" and \"verdict\" strings"), "{e}");
    }

    #[test]
    fn wildcard_addresses_are_reached_on_loopback() {
        assert_eq!(
            local("0.0.0.0:20000".parse().unwrap()).to_string(),
            "127.0.0.1:20000"
        );
        assert_eq!(
            local("10.0.0.2:1".parse().unwrap()).to_string(),
            "10.0.0.2:1"
        );
    }

    #[test]
    fn an_unreachable_server_is_named_and_the_monitor_owns_it() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = listener.local_addr().unwrap();
        drop(listener);
        let out = run(closed, monitor());
        let e = out.error.unwrap();
        assert!(out.text.is_empty());
        assert!(e.contains(&closed.to_string()), "{e}");
        assert!(e.contains("owns the adb server"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }

    #[test]
    fn a_list_that_does_not_parse_is_a_protocol_error() {
        // A one-shot fake server that answers host:devices-l with a banner line.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut s, _) = listener.accept().unwrap();
            let mut got = [0u8; 4 + 14];
            s.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"000ehost:devices-l");
            let body = "List of devices attached\n";
            s.write_all(format!("OKAY{:04x}{body}", body.len()).as_bytes())
                .unwrap();
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let e = runtime
            .block_on(Client::new(at, IO_TIMEOUT).devices())
            .unwrap_err();
        server.join().unwrap();
        assert_eq!(e.kind, ErrorKind::Protocol);
        assert_eq!(e.request, "host:devices-l");
        assert!(e.detail.contains("devices-l"), "{e}");
        let text = explain(at, &e);
        assert!(text.contains(&at.to_string()), "{text}");
        assert!(text.contains("did not give a device list"), "{text}");
    }
}
