//! The rules of a phone's own condition, one function each: its battery, its heat, the
//! reboots for its care, its charging, its storage, and the operator's note. Each reads
//! the phone and the memory of earlier rounds, and adds to the phone's reasons.

use super::reasons::{
    battery_charging_reason, battery_health_reason, battery_low_reason, battery_unread_reason,
    cooling_reason, data_full_reason, heat_unread_reason, hot_after_reboot_reason,
    not_charging_reason, phone_note_reason, reboot_for_heat, reboot_for_uptime, too_hot_reason,
};
use super::{Action, Turn};

/// A phone is rebooted for its own care at most this often.
const CARE_REBOOT_EVERY: f64 = 3600.0;

/// What the charge watchdog remembers of a phone on power.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Charge {
    /// The best level seen while on power.
    best: f64,
    /// When the level last rose (or the phone was plugged, or was full enough).
    since: f64,
}

/// Above this level a phone on power need not rise any more.
const CHARGED_ENOUGH: f64 = 95.0;
/// A fall of this many points while on power means the charger does not keep up.
const CHARGE_FALL: f64 = 5.0;

/// BatteryManager's health codes that need a person, with their names.
fn bad_battery_health(code: u8) -> Option<&'static str> {
    match code {
        3 => Some("overheat"),
        4 => Some("dead"),
        5 => Some("over voltage"),
        6 => Some("failure"),
        _ => None,
    }
}

/// Battery with hysteresis: a phone enters maintenance below the minimum and leaves it
/// only at the minimum plus the hysteresis, so a level hovering at the threshold does
/// not flap. Between the two it stays as it was, with a reason that says what it waits
/// for.
pub(super) fn battery(turn: &mut Turn) {
    let serial = &turn.d.serial;
    let t = turn.t;
    let exit = t.min_battery_percent + t.battery_hysteresis;
    let was_low = turn.was.low_battery.contains(serial);
    let reason = match turn.d.battery_percent {
        Some(percent) if percent < t.min_battery_percent => {
            battery_low_reason(serial, percent, t.min_battery_percent)
        }
        Some(percent) if percent < exit && was_low => {
            battery_charging_reason(serial, percent, exit)
        }
        Some(_) => return,
        // No reading this round (a timed-out dumpsys): it stays as it was.
        None if was_low => battery_unread_reason(serial, exit),
        None => return,
    };
    turn.r.maintenance.insert(reason);
    turn.next.low_battery.insert(serial.clone());
}

/// Heat with hysteresis, as the battery: any sensor above the maximum enters
/// maintenance; it is left once every sensor is below the maximum minus the hysteresis.
pub(super) fn heat(turn: &mut Turn) {
    let d = turn.d;
    let serial = &d.serial;
    let t = turn.t;
    let exit = t.max_temperature_celsius - t.temperature_hysteresis;
    let mut hot = d
        .temperatures
        .iter()
        .filter(|temp| temp.celsius > t.max_temperature_celsius)
        .peekable();
    if hot.peek().is_some() {
        for temp in hot {
            turn.r
                .maintenance
                .insert(too_hot_reason(serial, temp, t.max_temperature_celsius));
        }
    } else if turn.was.hot.contains(serial) {
        match d.hottest() {
            Some(warm) if warm.celsius >= exit => {
                turn.r
                    .maintenance
                    .insert(cooling_reason(serial, warm, exit));
            }
            Some(_) => return,
            None => {
                turn.r.maintenance.insert(heat_unread_reason(serial, exit));
            }
        }
    } else {
        return;
    }
    turn.next.hot.insert(serial.clone());
}

/// Care that needs a reboot: a phone that does not cool down, or has been up for too
/// long. One reboot per phone per hour at most, only while idle, and the memory keeps
/// when it was asked so the escalation can follow: still hot as long again after the
/// reboot, it needs a person. Reads what [`heat`] decided this round.
pub(super) fn care(turn: &mut Turn) {
    let d = turn.d;
    let serial = &d.serial;
    let (was, now, t) = (turn.was, turn.now, turn.t);
    let asked_at = was.care_reboot_at.get(serial).copied();
    if let Some(at) = asked_at {
        turn.next.care_reboot_at.insert(serial.clone(), at);
    }
    let may_reboot = turn.idle
        && !turn.being_rebooted
        && asked_at.is_none_or(|at| now - at >= CARE_REBOOT_EVERY);
    let why = if turn.next.hot.contains(serial) {
        let since = was.hot_since.get(serial).copied().unwrap_or(now);
        turn.next.hot_since.insert(serial.clone(), since);
        let hot_for = now - since;
        match asked_at.filter(|at| *at >= since) {
            Some(at) if now - at >= t.cooldown_reboot_after_secs => {
                turn.r
                    .quarantined
                    .insert(hot_after_reboot_reason(serial, hot_for, now - at));
                return;
            }
            None if hot_for >= t.cooldown_reboot_after_secs && may_reboot => {
                reboot_for_heat(hot_for)
            }
            _ => return,
        }
    } else {
        match d.uptime_secs {
            Some(up) if up > t.max_device_uptime_secs && may_reboot && !d.booting => {
                reboot_for_uptime(up)
            }
            _ => return,
        }
    };
    turn.actions.push(Action::Reboot {
        serial: serial.clone(),
        why,
    });
    turn.next.care_reboot_at.insert(serial.clone(), now);
}

/// A battery health code that needs a person.
pub(super) fn battery_health(turn: &mut Turn) {
    if let Some(name) = turn.d.battery_health.and_then(bad_battery_health) {
        turn.r
            .maintenance
            .insert(battery_health_reason(&turn.d.serial, name));
    }
}

/// The charge watchdog: a phone on power, below 95 %, whose level has not risen for
/// `--charge-stall-after`, or has fallen 5 points, is not charging.
pub(super) fn charge(turn: &mut Turn) {
    let serial = &turn.d.serial;
    let now = turn.now;
    match (turn.d.powered, turn.d.battery_percent) {
        (Some(true), Some(level)) => {
            let mut c = turn.was.charge.get(serial).copied().unwrap_or(Charge {
                best: level,
                since: now,
            });
            if level > c.best {
                c = Charge {
                    best: level,
                    since: now,
                };
            }
            if level >= CHARGED_ENOUGH {
                c.since = now;
            }
            let stalled = now - c.since >= turn.t.charge_stall_secs;
            if stalled || c.best - level >= CHARGE_FALL {
                turn.r.maintenance.insert(not_charging_reason(serial));
            }
            turn.next.charge.insert(serial.clone(), c);
        }
        // Unplugged: the watchdog starts over when it is plugged again.
        (Some(false), _) => {}
        // Not read this round: it goes on from what it knew.
        _ => {
            if let Some(c) = turn.was.charge.get(serial) {
                turn.next.charge.insert(serial.clone(), *c);
            }
        }
    }
}

/// Less free on `/data` than `--min-data-free`.
pub(super) fn data_free(turn: &mut Turn) {
    let min = turn.t.min_data_free_bytes;
    if let Some(free) = turn.d.data_free_bytes.filter(|free| *free < min) {
        turn.r
            .maintenance
            .insert(data_full_reason(&turn.d.serial, free, min));
    }
}

/// The operator's note on this phone (the node's annotation).
pub(super) fn note(turn: &mut Turn) {
    if let Some(note) = turn.notes.phone(&turn.d.serial) {
        turn.r
            .maintenance
            .insert(phone_note_reason(&turn.d.serial, note));
    }
}
