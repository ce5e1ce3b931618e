//! Every reason's text, and only here: what Swarming, the status page and the
//! `devices` subcommand show an operator. The rules (`rules`, `super::decide`) choose
//! which apply; these say them. Tests outside (`tests/`) match these texts exactly.

use std::path::Path;

use super::{Action, FAILED_ROUNDS_TO_QUARANTINE};
use crate::state::snapshot::{DeviceKind, Link, ListingFailure, Temperature};

/// The maintenance reason of the Pi's note, as the operator wrote it.
pub fn pi_note_reason(note: &str) -> String {
    format!("maintenance: {note}")
}

/// The maintenance reason of one phone's note; the serial keeps two phones' equal
/// notes apart in the bot's reasons.
pub fn phone_note_reason(serial: &str, note: &str) -> String {
    format!("maintenance: {serial}: {note}")
}

/// A phone whose shell answers without properties the round can read.
pub fn unreadable_reason(serial: &str, why: &str) -> String {
    format!("device {serial} answers, but its properties cannot be read: {why}")
}

/// The quarantine reason of a phone adb lists as `unauthorized`, with its remedy.
pub fn unauthorized_reason(serial: &str) -> String {
    format!(
        "device {serial} is unauthorized: accept this host's adb key on the phone, \
         or give the pod the adb key pair it was authorized with \
         (Secret mounted at /root/.android)"
    )
}

/// The quarantine reason of a phone adb lists as `no permissions`, with its remedy.
pub fn no_permissions_reason(serial: &str) -> String {
    format!(
        "device {serial} has no USB permissions: run the pod privileged with \
         /dev/bus/usb mounted, or fix the host's udev rules"
    )
}

/// The maintenance reason of a phone's first `offline` round, while the watcher asks
/// the adb server to reconnect it.
pub fn offline_reconnecting_reason(serial: &str) -> String {
    format!("device {serial} offline, reconnecting")
}

/// The steps a phone went through, for its quarantine reason. The text does not grow
/// with the rounds, so the reason is set once and not again every round.
fn tried(ladder: &[(String, Action)]) -> String {
    let steps: Vec<&str> = ladder.iter().map(|(what, _)| what.as_str()).collect();
    match steps.last() {
        Some(last) => format!("tried {} (last: {last})", steps.join(", ")),
        None => String::new(),
    }
}

/// The quarantine reason of a phone still `offline` after the ladder was climbed.
pub fn offline_too_long_reason(serial: &str, ladder: &[(String, Action)]) -> String {
    format!(
        "device {serial} is still offline after every recovery step: {}; check its USB \
         cable and hub port, or replug it",
        tried(ladder)
    )
}

/// The quarantine reason of a phone listed online whose rounds keep failing.
pub fn not_answering_too_long_reason(
    kind: DeviceKind,
    serial: &str,
    why: &str,
    ladder: &[(String, Action)],
) -> String {
    match kind {
        DeviceKind::Android => format!(
            "device {serial} still does not answer after every recovery step (last: {why}): \
             {}; its adbd may be wedged: replug it, or reboot it (adb -s {serial} reboot)",
            tried(ladder)
        ),
        DeviceKind::Ios => format!(
            "device {serial} has not answered for {FAILED_ROUNDS_TO_QUARANTINE} rounds \
             (last: {why}): check that it is unlocked and paired, or replug it"
        ),
    }
}

/// A number for a reason text: at most one decimal, none when it is whole (`12`,
/// `12.5`), so that `100·1/3` does not print sixteen digits.
pub fn short(x: f64) -> String {
    let rounded = (x * 10.0).round() / 10.0;
    format!("{rounded}")
}

/// A phone seen before and not listed now (its last known type, if any).
pub fn gone_missing(serial: &str, device_type: Option<&str>) -> String {
    let type_name = device_type.unwrap_or("unknown type");
    format!("device {serial} ({type_name}) has gone missing")
}

/// A bot of a phone the snapshot does not know (`--bots per-device`).
pub fn not_listed(serial: &str) -> String {
    format!("device {serial} is not listed")
}

/// The adb server accepts connections and answers none; `first` says since when.
pub fn adb_server_silent(first: &str) -> String {
    format!("adb server not answering: {first}")
}

/// The iPhones could not be listed: the bot's reason, and each known iPhone's.
pub fn iphones_unlisted(failure: &ListingFailure) -> String {
    format!("cannot list the iPhones: {}", failure.error)
}

/// The maintenance every bot reports while the program drains for shutdown.
pub fn draining() -> String {
    "draining for shutdown".to_string()
}

/// The operator's request file was present (see the `get_state` hook).
pub fn forced(file: &Path) -> String {
    format!("forced quarantine ({} was present)", file.display())
}

/// The maintenance reason of a phone being rebooted, and what for.
pub fn rebooting_reason(serial: &str, what_for: &str) -> String {
    format!("rebooting {serial} {what_for}")
}

/// The maintenance reason of a phone that says it has not finished booting.
pub fn booting_reason(serial: &str) -> String {
    format!("booting: {serial}")
}

/// A step of the offline phone's ladder after the first.
pub fn offline_recovering_reason(serial: &str, step: u32, what: &str) -> String {
    format!("device {serial} offline, recovering: step {step}, {what}")
}

/// An iPhone whose round failed: no adb step can help.
pub fn not_answering_reason(serial: &str, why: &str) -> String {
    format!("device {serial} not answering ({why})")
}

/// The first round an Android phone listed online did not answer.
pub fn not_answering_reconnecting_reason(serial: &str, why: &str) -> String {
    format!("{}, reconnecting", not_answering_reason(serial, why))
}

/// A step of the not-answering phone's ladder after the first.
pub fn not_answering_recovering_reason(serial: &str, why: &str, step: u32, what: &str) -> String {
    format!(
        "{}, recovering: step {step}, {what}",
        not_answering_reason(serial, why)
    )
}

/// A phone in a handshake (`connecting`, `authorizing`) for `rounds` rounds.
pub fn handshake_reason(serial: &str, link: &Link, rounds: u32) -> String {
    format!(
        "device {serial} has been {} for {rounds} rounds",
        link.as_str()
    )
}

/// A phone in an adb state that is not Android running (bootloader, recovery, ...).
pub fn unready_link_reason(serial: &str, link: &Link) -> String {
    format!(
        "device {serial} is in adb state {}, not Android: reboot it \
         (adb -s {serial} reboot) or replug it",
        link.as_str()
    )
}

/// A battery below the minimum.
pub fn battery_low_reason(serial: &str, percent: f64, min: f64) -> String {
    format!(
        "battery low: {serial} {}% (< {}%)",
        short(percent),
        short(min)
    )
}

/// A battery back above the minimum, not yet at the exit threshold.
pub fn battery_charging_reason(serial: &str, percent: f64, exit: f64) -> String {
    format!(
        "battery low: {serial} {}% (charging to {}%)",
        short(percent),
        short(exit)
    )
}

/// A phone in maintenance for its battery whose level was not read this round.
pub fn battery_unread_reason(serial: &str, exit: f64) -> String {
    format!(
        "battery low: {serial} (not read this round; charging to {}%)",
        short(exit)
    )
}

/// A sensor above the maximum.
pub fn too_hot_reason(serial: &str, temp: &Temperature, max: f64) -> String {
    format!(
        "too hot: {serial} {} {:.1}°C (> {}°C)",
        temp.sensor,
        temp.celsius,
        short(max)
    )
}

/// A hot phone's warmest sensor, below the maximum, not yet below the exit threshold.
pub fn cooling_reason(serial: &str, warm: &Temperature, exit: f64) -> String {
    format!(
        "too hot: {serial} {} {:.1}°C (cooling to below {}°C)",
        warm.sensor,
        warm.celsius,
        short(exit)
    )
}

/// A hot phone whose temperatures were not read this round.
pub fn heat_unread_reason(serial: &str, exit: f64) -> String {
    format!(
        "too hot: {serial} (not read this round; cooling to below {}°C)",
        short(exit)
    )
}

/// A phone still too hot long after the reboot for its care.
pub fn hot_after_reboot_reason(serial: &str, hot_for_secs: f64, since_reboot_secs: f64) -> String {
    format!(
        "too hot: {serial} for {} min, {} min after a reboot: check its \
         airflow, case and charger",
        (hot_for_secs / 60.0).round(),
        (since_reboot_secs / 60.0).round()
    )
}

/// Why a hot phone is rebooted (the `Action::Reboot` it gets, and its reason after).
pub fn reboot_for_heat(hot_for_secs: f64) -> String {
    format!(
        "for its care: too hot for {} min",
        (hot_for_secs / 60.0).round()
    )
}

/// Why a phone up for too long is rebooted.
pub fn reboot_for_uptime(up_secs: f64) -> String {
    format!("for its care: up for {:.1} h", up_secs / 3600.0)
}

/// A battery health that needs a person (`overheat`, `dead`, ...).
pub fn battery_health_reason(serial: &str, health: &str) -> String {
    format!("battery {health}: {serial} (cable, port or battery)")
}

/// A phone on power whose level does not rise.
pub fn not_charging_reason(serial: &str) -> String {
    format!("not charging: {serial} (cable, port or battery)")
}

/// Less free space on `/data` than the minimum.
pub fn data_full_reason(serial: &str, free: u64, min: u64) -> String {
    format!(
        "data partition nearly full: {serial} {} MiB free (< {} MiB)",
        free >> 20,
        min >> 20
    )
}
