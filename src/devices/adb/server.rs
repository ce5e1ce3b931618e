//! Owns the adb server: the vendored `adb` run as `adb -P <port> nodaemon server`, a
//! supervised child (see `daemon`) that does the USB work while we speak its TCP
//! protocol. Each restart bumps `adb_server_restarts_total`; its output lines go to our
//! log prefixed `adb: `.
//!
//! Keys: the server signs the USB handshake with `$HOME/.android/adbkey`, creating it on
//! first start. That file must persist (in the manifests it comes from a Secret):
//! with a new key every phone shows `unauthorized` until someone taps "allow" again.
//!
//! The watcher, which speaks the protocol, asks through `kill` for the server to be
//! killed and started again when it accepts connections but no longer answers them
//! (stopped, or wedged).
//!
//! This module never talks the adb protocol (that is `client`).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::runtime::daemon::{self, Socket, Spec};
use crate::runtime::reaper::Reaper;
use crate::runtime::shutdown::Shutdown;
use crate::state::metrics::Metrics;
use std::path::PathBuf;
use tokio::sync::mpsc;

/// The command line that runs the server in the foreground on `addr`'s port.
fn server_args(addr: SocketAddr) -> Vec<String> {
    vec![
        "-P".into(),
        addr.port().to_string(),
        "nodaemon".into(),
        "server".into(),
    ]
}

/// Our level for one of the server's log lines (`adb I 11-26 17:40:33 ... auth.cpp:437] ...`):
/// its own level letter, mapped; lines without one are info. adb's own `I` lines narrate
/// every transport's threads and keys: at our `info` they would bury the events an
/// operator acts on, so they go to `debug` (`RUST_LOG=adb::server=debug` shows them).
fn level_of(line: &str) -> log::Level {
    match line.split_whitespace().nth(1) {
        Some("E") | Some("F") => log::Level::Error,
        Some("W") => log::Level::Warn,
        Some("I") | Some("D") | Some("V") => log::Level::Debug,
        _ => log::Level::Info,
    }
}

/// Runs until shutdown: keeps `adb` (the program) listening on `addr`, counting its
/// restarts in `metrics`; kills ours whenever `kill` says why.
pub async fn run(
    adb: PathBuf,
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    kill: mpsc::UnboundedReceiver<String>,
    reaper: Reaper,
    shutdown: Shutdown,
) {
    let spec = Spec {
        target: module_path!(),
        name: "the adb server",
        prefix: "adb",
        program: adb,
        args: server_args(addr),
        socket: Socket::Tcp(addr),
        level_of,
        on_restart: Box::new(move || metrics.adb_server_restarts_total.inc()),
        kill: Some(kill),
    };
    daemon::run(spec, reaper, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_log_levels_follow_adbs_own() {
        let line = "adb W 11-26 17:40:35 15575 15575 usb_linux.cpp:1] cannot open /dev/bus/usb";
        assert_eq!(level_of(line), log::Level::Warn);
        assert_eq!(level_of("adb E 11-26 x"), log::Level::Error);
        assert_eq!(level_of("adb I 11-26 x"), log::Level::Debug);
        assert_eq!(level_of("adb V 11-26 x"), log::Level::Debug);
        assert_eq!(level_of("* daemon started successfully"), log::Level::Info);
    }

    #[test]
    fn server_runs_in_the_foreground_on_our_port() {
        let addr: SocketAddr = "127.0.0.1:15037".parse().unwrap();
        assert_eq!(server_args(addr), ["-P", "15037", "nodaemon", "server"]);
    }
}
