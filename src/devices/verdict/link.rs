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

#[cfg(test)]
mod tests {
    use super::super::testing::One;
    use super::super::Memory;
    use super::*;
    use crate::state::snapshot::{Device, ListingFailure};

    const S: &str = "S1";

    fn listed(kind: DeviceKind, link: &str, fault: Option<Fault>) -> Device {
        let mut d = Device::listed(kind, S, Link::from_adb(link));
        d.fault = fault;
        d
    }

    fn android(link: &str, fault: Option<Fault>) -> Device {
        listed(DeviceKind::Android, link, fault)
    }

    fn not_answering(offline: bool) -> Option<Fault> {
        Some(Fault::NotAnswering {
            why: "timed out".into(),
            offline,
        })
    }

    /// The round after `rounds` failed ones in a row.
    fn failed_for(rounds: u32) -> Memory {
        let mut m = Memory::default();
        if rounds > 0 {
            m.failed_rounds.insert(S.into(), rounds);
        }
        m
    }

    #[test]
    fn a_phone_whose_link_needs_a_person_is_quarantined_at_once() {
        let unlisted = |needs_person| {
            Some(Fault::Unlisted(ListingFailure {
                error: "idevice_id -l: no answer".into(),
                needs_person,
            }))
        };
        // (the phone, quarantined, maintenance)
        let cases: [(Device, Vec<String>, Vec<&str>); 6] = [
            (android("unauthorized", Some(Fault::LinkNotReady)), vec![unauthorized_reason(S)], vec![]),
            (android("no permissions", Some(Fault::LinkNotReady)), vec![no_permissions_reason(S)], vec![]),
            (
                android("bootloader", Some(Fault::LinkNotReady)),
                vec!["device S1 is in adb state bootloader, not Android: reboot it (adb -s S1 reboot) or replug it".into()],
                vec![],
            ),
            (
                android("device", Some(Fault::Unreadable("getprop: not found".into()))),
                vec!["device S1 answers, but its properties cannot be read: getprop: not found".into()],
                vec![],
            ),
            (
                listed(DeviceKind::Ios, "device", unlisted(true)),
                vec!["cannot list the iPhones: idevice_id -l: no answer".into()],
                vec![],
            ),
            (
                listed(DeviceKind::Ios, "device", unlisted(false)),
                vec![],
                vec!["cannot list the iPhones: idevice_id -l: no answer"],
            ),
        ];
        for (d, quarantined, maintenance) in cases {
            let case = format!("{d:?}");
            let a = One::of(d).apply(&[rebooting, link]);
            assert_eq!(a.r.quarantined, quarantined, "{case}");
            assert_eq!(a.r.maintenance, maintenance, "{case}");
            assert!(a.actions.is_empty(), "{case}");
        }
    }

    #[test]
    fn a_booting_phone_is_in_maintenance() {
        let mut d = android("device", Some(Fault::Booting));
        d.booting = true;
        assert_eq!(One::of(d).apply(&[link]).r.maintenance, vec!["booting: S1"]);
    }

    #[test]
    fn a_phone_being_rebooted_says_what_for_and_nothing_counts_against_it() {
        let d = android(
            "offline",
            Some(Fault::Rebooting("for its care: up for 25.1 h".into())),
        );
        let a = One {
            being_rebooted: true,
            ..One::of(d)
        }
        .apply(&[rebooting, link]);
        assert_eq!(
            a.r.maintenance,
            vec!["rebooting S1 for its care: up for 25.1 h"]
        );
        assert!(a.r.quarantined.is_empty() && a.actions.is_empty());
        assert!(a.next.failed_rounds.is_empty());
    }

    #[test]
    fn an_offline_phone_climbs_the_ladder_one_step_a_round() {
        // (failed rounds before, the reason, the action)
        let cases = [
            (0, "device S1 offline, reconnecting", Some(Action::ReconnectOffline)),
            (
                1,
                "device S1 offline, recovering: step 2, reconnect S1",
                Some(Action::Reconnect(S.into())),
            ),
            (
                2,
                "device S1 is still offline after every recovery step: tried reconnect-offline, reconnect S1 (last: reconnect S1); check its USB cable and hub port, or replug it",
                None,
            ),
        ];
        for (before, reason, action) in cases {
            let a = One {
                was: failed_for(before),
                ..One::of(android("offline", Some(Fault::LinkNotReady)))
            }
            .apply(&[link]);
            let said: Vec<&String> = a.r.quarantined.iter().chain(&a.r.maintenance).collect();
            assert_eq!(said, [reason], "{before}");
            assert_eq!(
                a.actions,
                action.into_iter().collect::<Vec<_>>(),
                "{before}"
            );
            assert_eq!(a.next.failed_rounds.get(S), Some(&(before + 1)));
            assert_eq!(a.next.recovery_step.get(S), Some(&(before + 1)));
        }
    }

    #[test]
    fn a_phone_listed_online_that_does_not_answer_starts_at_its_own_reconnect() {
        let cases = [
            (0, "device S1 not answering (timed out), reconnecting"),
            (
                1,
                "device S1 still does not answer after every recovery step (last: timed out): tried reconnect S1 (last: reconnect S1); its adbd may be wedged: replug it, or reboot it (adb -s S1 reboot)",
            ),
        ];
        for (before, reason) in cases {
            let a = One {
                was: failed_for(before),
                ..One::of(android("device", not_answering(false)))
            }
            .apply(&[link]);
            let said: Vec<&String> = a.r.quarantined.iter().chain(&a.r.maintenance).collect();
            assert_eq!(said, [reason], "{before}");
        }
        // `device offline` on the transport: the offline ladder.
        let a = One::of(android("device", not_answering(true))).apply(&[link]);
        assert_eq!(a.r.maintenance, vec![offline_reconnecting_reason(S)]);
    }

    #[test]
    fn the_ladder_holds_the_usb_steps_and_the_restart_only_when_allowed() {
        let opts = |restart_server, usb, path: Option<&str>| LadderOptions {
            restart_server,
            usb_reset: usb,
            usb_power_cycle: usb,
            usb_path: path.map(String::from),
        };
        let names = |offline, o: &LadderOptions| -> Vec<String> {
            ladder(offline, S, o)
                .into_iter()
                .map(|(what, _)| what)
                .collect()
        };
        assert_eq!(names(false, &opts(false, true, None)), ["reconnect S1"]);
        assert_eq!(
            names(true, &opts(true, true, Some("usb:1-1.4"))),
            [
                "reconnect-offline",
                "reconnect S1",
                "USB reset of usb:1-1.4",
                "restart the adb server",
                "power cycle of usb:1-1.4's hub port"
            ]
        );
    }

    #[test]
    fn an_iphone_that_does_not_answer_needs_a_person_after_n_rounds() {
        let d = listed(DeviceKind::Ios, "device", not_answering(false));
        let first = One::of(d.clone()).apply(&[link]);
        assert_eq!(
            first.r.maintenance,
            vec!["device S1 not answering (timed out)"]
        );
        let second = One {
            was: failed_for(1),
            ..One::of(d)
        }
        .apply(&[link]);
        assert_eq!(
            second.r.quarantined,
            vec!["device S1 has not answered for 2 rounds (last: timed out): check that it is unlocked and paired, or replug it"]
        );
    }

    #[test]
    fn a_handshake_is_reported_once_it_lasts_n_rounds() {
        let d = android("connecting", Some(Fault::LinkNotReady));
        let first = One::of(d.clone()).apply(&[link]);
        assert!(first.r.maintenance.is_empty());
        let second = One {
            was: first.next,
            ..One::of(d)
        }
        .apply(&[link]);
        assert_eq!(
            second.r.maintenance,
            vec!["device S1 has been connecting for 2 rounds"]
        );
    }
}
