//! Owns usbmuxd when `--devices` includes `ios`: libimobiledevice's tools reach the
//! phones only through its socket, `/var/run/usbmuxd`, and the image has no shell to
//! start it with. Run as `usbmuxd --foreground` (as root, which the pod is; no `-U`),
//! a supervised child (see `daemon`) whose output lines go to our log prefixed
//! `usbmuxd: `. If the socket already answers (the host's usbmuxd, mounted into the
//! pod), it is used and nothing is started.

use std::path::PathBuf;

use crate::runtime::daemon::{self, Socket, Spec};
use crate::runtime::reaper::Reaper;
use crate::runtime::shutdown::Shutdown;

/// Fixed in usbmuxd and in the tools that talk to it.
pub const SOCKET: &str = "/var/run/usbmuxd";

/// Our level for one of usbmuxd's lines, `[21:10:08.236][3] usbmuxd v1.1.1 starting
/// up`: its own level number (0 fatal, 1 error, 2 warning, 3 notice, 4 info, 5+ debug),
/// with info and below as our debug: it narrates every USB event at 4.
fn level_of(line: &str) -> log::Level {
    let level = line
        .split(']')
        .nth(1)
        .and_then(|rest| rest.strip_prefix('['))
        .and_then(|n| n.parse::<u8>().ok());
    match level {
        Some(0 | 1) => log::Level::Error,
        Some(2) => log::Level::Warn,
        Some(3) | None => log::Level::Info,
        Some(_) => log::Level::Debug,
    }
}

/// Runs until shutdown: keeps `usbmuxd` (the program) answering on [`SOCKET`].
pub async fn run(usbmuxd: PathBuf, reaper: Reaper, shutdown: Shutdown) {
    let spec = Spec {
        target: module_path!(),
        name: "usbmuxd",
        prefix: "usbmuxd",
        program: usbmuxd,
        args: vec!["--foreground".into()],
        socket: Socket::Unix(PathBuf::from(SOCKET)),
        level_of,
        on_restart: Box::new(|| {}),
        kill: None,
    };
    daemon::run(spec, reaper, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usbmuxd_log_levels_follow_its_own() {
        assert_eq!(
            level_of("[21:10:08.236][3] usbmuxd v1.1.1 starting up"),
            log::Level::Info
        );
        assert_eq!(
            level_of("[21:10:08.237][4] Initializing USB"),
            log::Level::Debug
        );
        assert_eq!(
            level_of("[21:10:08.237][2] Could not open lockfile"),
            log::Level::Warn
        );
        assert_eq!(level_of("[21:10:08.237][0] Fatal"), log::Level::Error);
        assert_eq!(
            level_of("[21:10:08.237][1] libusb error"),
            log::Level::Error
        );
        assert_eq!(level_of("something else"), log::Level::Info);
    }
}
