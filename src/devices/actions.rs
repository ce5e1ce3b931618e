//! The recovery ladder's edge steps, which the verdict asks for as `Action`s: the adb
//! server's reconnects and restart, and the opt-in USB steps (`usb`). Each is started
//! off the event loop and reports only in the log, so that a wedged server or a slow
//! USB ioctl never holds up plug and unplug events and the hooks' commands. Reboots are
//! not here: the watcher tracks them until the phone is back.

use std::sync::Arc;
use std::time::Duration;

use super::phones::AndroidPhones;
use super::usb;

/// `host-serial:<serial>:reconnect`.
pub fn reconnect(android: &Arc<dyn AndroidPhones>, serial: &str) {
    log::info!("asking the adb server to reconnect {serial}, which does not answer");
    report(android.reconnect(serial));
}

/// `host:reconnect-offline`.
pub fn reconnect_offline(android: &Arc<dyn AndroidPhones>) {
    log::info!("asking the adb server to reconnect offline phones");
    report(android.reconnect_offline());
}

/// `host:kill`, for the server's supervisor to start it again.
pub fn restart_server(android: &Arc<dyn AndroidPhones>) {
    log::warn!("every phone is stuck and no task runs: restarting the adb server");
    report(android.restart_server());
}

/// `USBDEVFS_RESET` of the phone at `devpath`, on a blocking thread.
pub fn usb_reset(serial: String, devpath: String) {
    log::warn!("resetting {serial} over USB ({devpath}): it does not recover");
    tokio::task::spawn_blocking(move || match usb::reset(&usb::Roots::default(), &devpath) {
        Ok(node) => log::info!("reset {serial} over USB ({})", node.display()),
        Err(e) => log::warn!("cannot reset {serial} over USB: {e}"),
    });
}

/// A power cycle of the hub port of the phone at `devpath`, off for `power_off`.
pub fn power_cycle(serial: String, devpath: String, power_off: Duration) {
    log::warn!("power-cycling the hub port of {serial} ({devpath}): it does not recover");
    tokio::task::spawn_blocking(move || {
        match usb::power_cycle(&usb::Roots::default(), &devpath, power_off) {
            Ok(how) => log::info!("power-cycled {serial}: {how}"),
            Err(e) => log::warn!("cannot power-cycle {serial}: {e}"),
        }
    });
}

/// Awaits a step on its own task and logs its failure.
fn report(done: super::phones::BoxFuture<Result<(), String>>) {
    tokio::spawn(async move {
        if let Err(e) = done.await {
            log::warn!("{e}");
        }
    });
}
