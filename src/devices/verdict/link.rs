//! The rules of a phone's link: being rebooted, what adb lists it as, and whether its
//! round could read it. A phone that is offline or does not answer climbs the recovery
//! ladder, one step per round that did not help, then needs a person.

use super::reasons::{
    booting_reason, handshake_reason, no_permissions_reason, not_answering_reason,
    not_answering_reconnecting_reason, not_answering_recovering_reason,
    not_answering_too_long_reason, offline_reconnecting_reason, offline_recovering_reason,
    offline_too_long_reason, rebooting_reason, unauthorized_reason, unreadable_reason,
    unready_link_reason,
};
use super::{Action, Turn, FAILED_ROUNDS_TO_QUARANTINE};
use crate::state::snapshot::{DeviceKind, Fault, Link};

/// A phone is reset over USB at most this often: resets have panicked kernels.
const USB_RESET_EVERY: f64 = 3600.0;

/// The recovery ladder of a phone that is offline (or answers `device offline`), or
/// listed online and not answering: one step per round that did not help, then a person.
/// `host:reconnect-offline` cannot help a transport the server lists as online, so a
/// phone that is not answering starts at its own reconnect. Restarting the adb server
/// drops every phone's transport, so it is a step only when every phone is stuck and no
/// task runs.
fn ladder(offline: bool, serial: &str, opts: &LadderOptions) -> Vec<(String, Action)> {
    let mut steps = Vec::new();
    if offline {
        steps.push(("reconnect-offline".to_string(), Action::ReconnectOffline));
    }
    steps.push((
        format!("reconnect {serial}"),
        Action::Reconnect(serial.to_string()),
    ));
    if let (true, Some(path)) = (opts.usb_reset, &opts.usb_path) {
        steps.push((
            format!("USB reset of {path}"),
            Action::UsbReset {
                serial: serial.to_string(),
                devpath: path.clone(),
            },
        ));
    }
    if opts.restart_server {
        steps.push((
            "restart the adb server".to_string(),
            Action::RestartAdbServer,
        ));
    }
    if let (true, Some(path)) = (opts.usb_power_cycle, &opts.usb_path) {
        steps.push((
            format!("power cycle of {path}'s hub port"),
            Action::PowerCycle {
                serial: serial.to_string(),
                devpath: path.clone(),
            },
        ));
    }
    steps
}

/// What a phone's ladder may hold this round.
struct LadderOptions {
    /// Every phone is stuck and no task runs.
    restart_server: bool,
    /// `--usb-reset`, the phone was not reset within the hour, and no task runs.
    usb_reset: bool,
    /// `--usb-power-cycle`, and no task runs.
    usb_power_cycle: bool,
    /// `usb:<path>` as adb lists it; a phone without one (TCP) has no USB steps.
    usb_path: Option<String>,
}

/// A phone being rebooted is expected to vanish or show `offline` for a while: it is in
/// maintenance for that, and no link rule counts against it.
pub(super) fn rebooting(turn: &mut Turn) {
    if !turn.being_rebooted {
        return;
    }
    let what_for = match &turn.d.fault {
        Some(Fault::Rebooting(what_for)) => what_for.as_str(),
        _ => "after task",
    };
    turn.r
        .maintenance
        .insert(rebooting_reason(&turn.d.serial, what_for));
}

/// What adb lists the phone as, and whether its round could read it.
pub(super) fn link(turn: &mut Turn) {
    let serial = turn.d.serial.clone();
    if let Some(at) = turn.was.usb_reset_at.get(&serial) {
        turn.next.usb_reset_at.insert(serial.clone(), *at);
    }
    if turn.being_rebooted {
        return;
    }
    let d = turn.d;
    let link = d.link().cloned().unwrap_or(Link::Device);
    let not_answering = match &d.fault {
        Some(Fault::NotAnswering { why, offline }) => Some((why.as_str(), *offline)),
        _ => None,
    };
    match (&link, not_answering) {
        (Link::Unauthorized, _) => {
            turn.r.quarantined.insert(unauthorized_reason(&serial));
        }
        (Link::NoPermissions, _) => {
            turn.r.quarantined.insert(no_permissions_reason(&serial));
        }
        (Link::Offline, _) | (Link::Device, Some((_, true))) => climb(turn, None),
        (Link::Device, Some((why, false))) if d.kind == DeviceKind::Android => {
            climb(turn, Some(why))
        }
        (Link::Device, Some((why, false))) => {
            // An iPhone: no adb step can help; a person after N rounds.
            if turn.failed() >= FAILED_ROUNDS_TO_QUARANTINE {
                turn.r
                    .quarantined
                    .insert(not_answering_too_long_reason(d.kind, &serial, why, &[]));
            } else {
                turn.r
                    .maintenance
                    .insert(not_answering_reason(&serial, why));
            }
        }
        (Link::Device, None) => {
            if d.booting {
                turn.r.maintenance.insert(booting_reason(&serial));
            }
            match &d.fault {
                // Its shell answered: the transport ladder cannot help.
                Some(Fault::Unreadable(why)) => {
                    turn.r.quarantined.insert(unreadable_reason(&serial, why));
                }
                Some(Fault::Unlisted(failure)) => turn.r.listing_failed(failure),
                _ => {}
            }
        }
        (Link::Connecting | Link::Authorizing, _) => {
            // A reconnect brings a phone back through a handshake: its climb goes on
            // from where it was.
            if let Some(step) = turn.was.failed_rounds.get(&serial) {
                turn.next.failed_rounds.insert(serial.clone(), *step);
            }
            let rounds = turn.was.handshake_rounds.get(&serial).copied().unwrap_or(0) + 1;
            turn.next.handshake_rounds.insert(serial.clone(), rounds);
            if rounds >= FAILED_ROUNDS_TO_QUARANTINE {
                turn.r
                    .maintenance
                    .insert(handshake_reason(&serial, &link, rounds));
            }
        }
        (other, _) => {
            turn.r
                .quarantined
                .insert(unready_link_reason(&serial, other));
        }
    }
}

/// One step up the ladder of a phone that is offline (`why` is `None`) or listed online
/// and not answering; quarantined once the steps are used up.
fn climb(turn: &mut Turn, why: Option<&str>) {
    let serial = turn.d.serial.clone();
    let was = turn.was;
    let usb_reset = match was.climb_usb_reset.get(&serial) {
        Some(allowed) if was.failed_rounds.contains_key(&serial) => *allowed,
        _ => {
            turn.t.usb_reset
                && was
                    .usb_reset_at
                    .get(&serial)
                    .is_none_or(|at| turn.now - at >= USB_RESET_EVERY)
        }
    };
    // The steps that disturb more than the phone's dead transport wait for no task.
    let opts = LadderOptions {
        restart_server: turn.all_stuck && turn.idle,
        usb_reset: usb_reset && turn.idle,
        usb_power_cycle: turn.t.usb_power_cycle && turn.idle,
        usb_path: turn.d.usb_path.clone(),
    };
    let rounds = turn.failed();
    turn.next
        .climb_usb_reset
        .insert(serial.clone(), opts.usb_reset);
    let ladder = ladder(why.is_none(), &serial, &opts);
    match ladder.get(rounds as usize - 1) {
        Some((what, action)) => {
            turn.r.maintenance.insert(match (why, rounds) {
                (None, 1) => offline_reconnecting_reason(&serial),
                (None, _) => offline_recovering_reason(&serial, rounds, what),
                (Some(why), 1) => not_answering_reconnecting_reason(&serial, why),
                (Some(why), _) => not_answering_recovering_reason(&serial, why, rounds, what),
            });
            if matches!(action, Action::UsbReset { .. }) {
                turn.next.usb_reset_at.insert(serial.clone(), turn.now);
            }
            if !turn.actions.contains(action) {
                turn.actions.push(action.clone());
            }
        }
        None => {
            turn.r.quarantined.insert(match why {
                None => offline_too_long_reason(&serial, &ladder),
                Some(why) => {
                    not_answering_too_long_reason(DeviceKind::Android, &serial, why, &ladder)
                }
            });
        }
    }
    turn.next.recovery_step.insert(serial, rounds);
}
