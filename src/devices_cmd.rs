//! The `devices` subcommand: one look at what the adb server lists, with the monitor's
//! verdict on each phone, for operators inside a pod that has no shell (`kubectl exec
//! <pod> -- test_machine_monitor devices`).
//!
//! It owns the one-shot `host:devices-l` request and the text it prints. The verdicts
//! are the health rules' own reason texts (`health::*_reason`), so what this prints and
//! what the bot reports cannot drift apart. [`render`] is pure and tested on listings;
//! [`run`] is the thin I/O edge.
//!
//! Must not: start or restart an adb server (the running monitor owns it, and a second
//! server would fight it for the USB devices), or change any phone's state.

use std::net::SocketAddr;
use std::time::Duration;

use crate::adb::client::{Client, Error, ErrorKind};
use crate::health;
use crate::parse::devices_l::Listed;

/// Deadline of the connect and of each read: the server answers from memory.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks the adb server at `addr` for its list and renders it, or says why it could not,
/// in one line that names the address.
pub fn run(addr: SocketAddr) -> Result<String, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("devices: cannot start the async runtime: {e}"))?;
    let listed = runtime.block_on(Client::new(addr, IO_TIMEOUT).devices());
    listed
        .map(|l| render(addr, &l))
        .map_err(|e| explain(addr, &e))
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

/// One line per phone: serial, state (the whole `no permissions (...)` phrase), the
/// devpath, product and model when listed, the transport id, then the verdict. With no
/// phones, a single line saying so.
pub fn render(addr: SocketAddr, listed: &[Listed]) -> String {
    if listed.is_empty() {
        return format!("no phones listed by the adb server at {addr}\n");
    }
    let phones = if listed.len() == 1 { "phone" } else { "phones" };
    let mut out = format!(
        "{} {phones} listed by the adb server at {addr}:\n",
        listed.len()
    );
    for l in listed {
        let mut words = vec![
            l.serial.clone(),
            l.state_detail.clone().unwrap_or_else(|| l.state.clone()),
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
        out.push_str(&format!("{}  -> {}\n", words.join("  "), verdict(l)));
    }
    out
}

/// What the monitor makes of a phone from its adb state alone.
fn verdict(l: &Listed) -> String {
    let serial = &l.serial;
    match l.state.as_str() {
        "device" => "online".to_string(),
        "unauthorized" => format!("quarantined: {}", health::unauthorized_reason(serial)),
        "no permissions" => format!("quarantined: {}", health::no_permissions_reason(serial)),
        "offline" => format!(
            "maintenance: {}; if it stays offline, quarantined: {}",
            health::offline_reconnecting_reason(serial),
            health::offline_too_long_reason(serial)
        ),
        other => format!("not usable: adb state {other}, no health rule applies"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::devices_l;

    fn addr() -> SocketAddr {
        "127.0.0.1:5037".parse().unwrap()
    }

    fn lines(listing: &str) -> Vec<String> {
        render(addr(), &devices_l::parse(listing).unwrap())
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn no_phones_says_so_with_the_address() {
        assert_eq!(
            render(addr(), &[]),
            "no phones listed by the adb server at 127.0.0.1:5037\n"
        );
    }

    #[test]
    fn online_phone_with_its_fields() {
        assert_eq!(
            lines("0A1B  device usb:1-1.4 product:husky model:Pixel_8_Pro device:husky transport_id:3\n"),
            vec![
                "1 phone listed by the adb server at 127.0.0.1:5037:",
                "0A1B  device  usb:1-1.4  product:husky  model:Pixel_8_Pro  transport_id:3  -> online",
            ]
        );
    }

    #[test]
    fn unauthorized_gets_the_health_rule_remedy() {
        let out = lines("R58M  unauthorized usb:1-1.3 transport_id:4");
        assert_eq!(
            out[1],
            format!(
                "R58M  unauthorized  usb:1-1.3  transport_id:4  -> quarantined: {}",
                health::unauthorized_reason("R58M")
            )
        );
        assert!(out[1].contains("adb key"), "{}", out[1]);
    }

    #[test]
    fn no_permissions_shows_the_whole_state_and_the_usb_remedy() {
        let out = lines("ZY22  no permissions (user in plugdev group; are your udev rules wrong?); see [http://developer.android.com/tools/device.html] usb:1-1.2 transport_id:6");
        assert_eq!(
            out[1],
            format!(
                "ZY22  no permissions (user in plugdev group; are your udev rules wrong?); see [http://developer.android.com/tools/device.html]  usb:1-1.2  transport_id:6  -> quarantined: {}",
                health::no_permissions_reason("ZY22")
            )
        );
        assert!(out[1].contains("/dev/bus/usb"), "{}", out[1]);
    }

    #[test]
    fn offline_names_both_steps_of_the_rule() {
        let out = lines("HT4A  offline 1-5 transport_id:5");
        assert_eq!(
            out[1],
            "HT4A  offline  1-5  transport_id:5  -> maintenance: device HT4A offline, reconnecting; \
             if it stays offline, quarantined: device HT4A has been offline for 2 rounds"
        );
    }

    #[test]
    fn other_states_are_not_usable_and_old_servers_have_no_transport_id() {
        assert_eq!(
            lines("S1 recovery")[1],
            "S1  recovery  -> not usable: adb state recovery, no health rule applies"
        );
    }

    #[test]
    fn several_phones_one_line_each_in_the_servers_order() {
        let out = lines(include_str!("../tests/fixtures/adb/devices_l_mixed.txt"));
        assert_eq!(
            out[0],
            "6 phones listed by the adb server at 127.0.0.1:5037:"
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
    fn an_unreachable_server_is_named_and_the_monitor_owns_it() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = listener.local_addr().unwrap();
        drop(listener);
        let e = run(closed).unwrap_err();
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
