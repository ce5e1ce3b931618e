//! Helpers for the Android tests: the phone simulator (`adb_sim.py`), a minimal
//! synchronous adb host-protocol request (to `connect` simulated phones the way
//! `adb connect` does), and what a monitor watching phones says of them.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Child, Stdio};
use std::time::Duration;

use super::{wait_for, Monitor};

/// Debian's adb, whose server the monitor runs.
pub const ADB: &str = "/usr/bin/adb";

/// A generous deadline for what a monitor with 2 s rounds does within a few rounds.
const ROUNDS_LIMIT: Duration = Duration::from_secs(30);

/// The `device_up` series of an Android phone.
pub fn up(serial: &str, device_type: &str) -> String {
    format!("device_up{{serial=\"{serial}\",kind=\"android\",device_type=\"{device_type}\"}}")
}

/// The serial of the simulated phone `name` of a monitor started [`super::Tmm::plugged`],
/// once the monitor shows it usable, a `device_type`.
pub fn usable(tmm: &Monitor, name: &str, device_type: &str) -> String {
    let serial = tmm.sim().serial(name);
    tmm.wait_sample(&up(&serial, device_type), 1.0, ROUNDS_LIMIT);
    serial
}

/// Waits until `n` more device rounds have finished.
pub fn wait_rounds(tmm: &Monitor, n: u32) {
    let rounds = || {
        tmm.sample("interrogation_duration_seconds_count")
            .unwrap_or(0.0)
    };
    let before = rounds();
    wait_for(ROUNDS_LIMIT, &format!("{n} more rounds"), || {
        (rounds() >= before + f64::from(n)).then_some(())
    });
}

/// The get_state answer's reasons of one kind, as one string.
pub fn reasons(tmm: &Monitor, kind: &str) -> String {
    tmm.hook("/get_state")[kind]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits until the get_state reasons of `kind` contain `needle`; returns them.
pub fn wait_reason(tmm: &Monitor, kind: &str, needle: &str) -> String {
    wait_for(ROUNDS_LIMIT, &format!("{kind} reason {needle:?}"), || {
        let r = reasons(tmm, kind);
        r.contains(needle).then_some(r)
    })
}

/// One host request to the adb server; returns the status and the rest of the reply.
pub fn adb_request(server_port: u16, request: &str, timeout: Duration) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", server_port))?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(format!("{:04x}{request}", request.len()).as_bytes())?;
    let mut out = Vec::new();
    // Host requests close after their reply; a timeout leaves what arrived.
    let _ = s.read_to_end(&mut out);
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// What the adb server forwards of `service` (`shell,v2,raw:echo hi`) on `serial`:
/// every byte after the two `OKAY`s of the transport switch and the service, until the
/// stream closes or `timeout` passes between reads.
pub fn device_service(
    server_port: u16,
    serial: &str,
    service: &str,
    timeout: Duration,
) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", server_port))?;
    s.set_read_timeout(Some(timeout))?;
    for request in [format!("host:transport:{serial}"), service.to_string()] {
        s.write_all(format!("{:04x}{request}", request.len()).as_bytes())?;
        let mut status = [0u8; 4];
        s.read_exact(&mut status)?;
        if &status != b"OKAY" {
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
            return Err(std::io::Error::other(format!(
                "{request}: {}{}",
                String::from_utf8_lossy(&status),
                String::from_utf8_lossy(&rest)
            )));
        }
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    Ok(out)
}

/// `adb connect` without the adb client (which would also start a server of its own).
/// Returns at once: a phone that never finishes its handshake keeps the request open.
pub fn connect_phone(server_port: u16, phone_port: u16) {
    std::thread::spawn(move || {
        let _ = adb_request(
            server_port,
            &format!("host:connect:127.0.0.1:{phone_port}"),
            Duration::from_secs(15),
        );
    });
}

/// Plays the USB bus for a network phone: the adb server drops a TCP transport that is
/// reset, where a USB phone would enumerate again; this connects the phone every 300 ms
/// until it is dropped.
pub struct UsbBus {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UsbBus {
    pub fn start(server_port: u16, phone_port: u16) -> UsbBus {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                connect_phone(server_port, phone_port);
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        UsbBus {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UsbBus {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub fn disconnect_phone(server_port: u16, phone_port: u16) -> String {
    adb_request(
        server_port,
        &format!("host:disconnect:127.0.0.1:{phone_port}"),
        Duration::from_secs(5),
    )
    .unwrap()
}

/// The simulator process and its phones.
pub struct Sim {
    child: Child,
    /// (name, port) in the order given.
    pub phones: Vec<(String, u16)>,
    control: u16,
}

impl Sim {
    /// `specs` are `profile:name`.
    pub fn start(specs: &[&str], extra: &[&str]) -> Sim {
        let mut args: Vec<&str> = specs.iter().flat_map(|s| ["--phone", s]).collect();
        args.extend(extra);
        let mut phones = Vec::new();
        let (child, (phones, control)) =
            super::stand_in("adb_sim.py", &args, Stdio::inherit(), move |line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    ["PORT", port, name] => {
                        phones.push((name.to_string(), port.parse().unwrap()));
                        None
                    }
                    ["CONTROL", port] => Some((std::mem::take(&mut phones), port.parse().unwrap())),
                    _ => panic!("unexpected simulator line {line:?}"),
                }
            });
        Sim {
            child,
            phones,
            control,
        }
    }

    pub fn port(&self, name: &str) -> u16 {
        self.phones.iter().find(|(n, _)| n == name).unwrap().1
    }

    /// The serial the adb server lists for `name`.
    pub fn serial(&self, name: &str) -> String {
        format!("127.0.0.1:{}", self.port(name))
    }

    pub fn control(&self, command: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.control)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(format!("{command}\n").as_bytes()).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply)
            .unwrap_or_else(|e| panic!("the simulator's answer to {command:?}: {e}"));
        assert!(reply.starts_with("OK"), "{command}: {reply}");
        reply.trim().to_string()
    }

    pub fn connect_all(&self, server_port: u16) {
        for (_, port) in &self.phones {
            connect_phone(server_port, *port);
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        // Its shells run in sessions of their own: a hung command must go too.
        super::stop_tree(&mut self.child, Duration::from_secs(2));
    }
}
