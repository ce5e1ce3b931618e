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

#[cfg(test)]
mod tests {
    use super::super::testing::One;
    use super::*;
    use crate::state::snapshot::{usable_device, DeviceKind, Temperature};

    const S: &str = "S1";

    fn phone() -> crate::state::snapshot::Device {
        usable_device(DeviceKind::Android, S)
    }

    fn memory_with(f: impl FnOnce(&mut super::super::Memory)) -> super::super::Memory {
        let mut m = super::super::Memory::default();
        f(&mut m);
        m
    }

    fn temp(celsius: f64) -> Temperature {
        Temperature {
            sensor: "battery".into(),
            celsius,
        }
    }

    #[test]
    fn battery_enters_below_the_minimum_and_leaves_at_the_hysteresis() {
        // (level, in maintenance for it before, the reason)
        let cases: [(Option<f64>, bool, Option<&str>); 7] = [
            (Some(12.0), false, Some("battery low: S1 12% (< 30%)")),
            (Some(100.0 / 3.0), false, None),
            (Some(29.95), true, Some("battery low: S1 30% (< 30%)")),
            (
                Some(32.0),
                true,
                Some("battery low: S1 32% (charging to 35%)"),
            ),
            (Some(35.0), true, None),
            (
                None,
                true,
                Some("battery low: S1 (not read this round; charging to 35%)"),
            ),
            (None, false, None),
        ];
        for (level, was_low, want) in cases {
            let mut d = phone();
            d.battery_percent = level;
            let was = memory_with(|m| {
                if was_low {
                    m.low_battery.insert(S.into());
                }
            });
            let a = One { was, ..One::of(d) }.apply(&[battery]);
            let case = format!("{level:?} {was_low}");
            assert_eq!(
                a.r.maintenance,
                want.map(String::from).into_iter().collect::<Vec<_>>(),
                "{case}"
            );
            assert_eq!(a.next.low_battery.contains(S), want.is_some(), "{case}");
        }
    }

    #[test]
    fn heat_enters_above_the_maximum_and_leaves_below_the_hysteresis() {
        // (temperatures, hot before, the reasons)
        let cases: [(Vec<f64>, bool, Vec<&str>); 6] = [
            (
                vec![36.0, 44.5],
                false,
                vec![
                    "too hot: S1 battery 36.0°C (> 35°C)",
                    "too hot: S1 battery 44.5°C (> 35°C)",
                ],
            ),
            (vec![35.0], false, vec![]),
            (
                vec![34.0],
                true,
                vec!["too hot: S1 battery 34.0°C (cooling to below 33°C)"],
            ),
            (vec![32.9], true, vec![]),
            (
                vec![],
                true,
                vec!["too hot: S1 (not read this round; cooling to below 33°C)"],
            ),
            (vec![], false, vec![]),
        ];
        for (temps, was_hot, want) in cases {
            let mut d = phone();
            d.temperatures = temps.iter().copied().map(temp).collect();
            let was = memory_with(|m| {
                if was_hot {
                    m.hot.insert(S.into());
                }
            });
            let a = One { was, ..One::of(d) }.apply(&[heat]);
            let case = format!("{temps:?} {was_hot}");
            assert_eq!(a.r.maintenance, want, "{case}");
            assert_eq!(a.next.hot.contains(S), !want.is_empty(), "{case}");
        }
    }

    #[test]
    fn care_reboots_a_phone_hot_too_long_once_then_needs_a_person() {
        let mut d = phone();
        d.temperatures = vec![temp(40.0)];
        let hot_since = |since: f64, asked: Option<f64>| {
            memory_with(|m| {
                m.hot.insert(S.into());
                m.hot_since.insert(S.into(), since);
                if let Some(at) = asked {
                    m.care_reboot_at.insert(S.into(), at);
                }
            })
        };
        // Hot for 30 min, idle: rebooted once, and the memory keeps when.
        let a = One {
            was: hot_since(0.0, None),
            now: 1800.0,
            ..One::of(d.clone())
        }
        .apply(&[heat, care]);
        assert_eq!(
            a.actions,
            vec![Action::Reboot {
                serial: S.into(),
                why: "for its care: too hot for 30 min".into()
            }]
        );
        assert_eq!(a.next.care_reboot_at.get(S), Some(&1800.0));
        // The same while a task runs: not yet.
        let busy = One {
            was: hot_since(0.0, None),
            now: 1800.0,
            idle: false,
            ..One::of(d.clone())
        }
        .apply(&[heat, care]);
        assert!(busy.actions.is_empty());
        // Still hot 30 min after that reboot: a person.
        let a = One {
            was: hot_since(0.0, Some(1800.0)),
            now: 3600.0,
            ..One::of(d)
        }
        .apply(&[heat, care]);
        assert!(a.actions.is_empty());
        assert_eq!(
            a.r.quarantined,
            vec!["too hot: S1 for 60 min, 30 min after a reboot: check its airflow, case and charger"]
        );
    }

    #[test]
    fn care_reboots_a_phone_up_too_long_while_idle_once_an_hour() {
        // (idle, booting, asked a reboot this long ago, rebooted)
        let cases = [
            (true, false, None, true),
            (false, false, None, false),
            (true, true, None, false),
            (true, false, Some(600.0), false),
            (true, false, Some(3600.0), true),
        ];
        for (idle, booting, asked_ago, rebooted) in cases {
            let mut d = phone();
            d.uptime_secs = Some(90_360.0);
            d.booting = booting;
            let now = 10_000.0;
            let was = memory_with(|m| {
                if let Some(ago) = asked_ago {
                    m.care_reboot_at.insert(S.into(), now - ago);
                }
            });
            let a = One {
                was,
                now,
                idle,
                ..One::of(d)
            }
            .apply(&[care]);
            let want: Vec<Action> = rebooted
                .then(|| Action::Reboot {
                    serial: S.into(),
                    why: "for its care: up for 25.1 h".into(),
                })
                .into_iter()
                .collect();
            assert_eq!(a.actions, want, "{idle} {booting} {asked_ago:?}");
        }
    }

    #[test]
    fn a_bad_battery_health_needs_maintenance() {
        let cases = [
            (2, None),
            (3, Some("battery overheat: S1 (cable, port or battery)")),
            (4, Some("battery dead: S1 (cable, port or battery)")),
            (5, Some("battery over voltage: S1 (cable, port or battery)")),
            (6, Some("battery failure: S1 (cable, port or battery)")),
            (7, None),
        ];
        for (code, want) in cases {
            let mut d = phone();
            d.battery_health = Some(code);
            let a = One::of(d).apply(&[battery_health]);
            assert_eq!(
                a.r.maintenance,
                want.into_iter().collect::<Vec<_>>(),
                "{code}"
            );
        }
    }

    #[test]
    fn a_phone_on_power_that_does_not_charge_is_reported() {
        let stall = TEST_STALL;
        // (on power, level, best level seen and since when, now, not charging)
        let cases = [
            (Some(true), Some(80.0), Some((80.0, 0.0)), stall, true),
            (
                Some(true),
                Some(80.0),
                Some((80.0, 0.0)),
                stall - 1.0,
                false,
            ),
            (Some(true), Some(81.0), Some((80.0, 0.0)), stall, false),
            (Some(true), Some(74.0), Some((80.0, 10.0)), 20.0, true),
            (Some(true), Some(96.0), Some((96.0, 0.0)), stall, false),
            (Some(true), Some(80.0), None, stall, false),
            (Some(false), Some(50.0), Some((80.0, 0.0)), stall, false),
        ];
        for (powered, level, charge_was, now, want) in cases {
            let mut d = phone();
            d.powered = powered;
            d.battery_percent = level;
            let was = memory_with(|m| {
                if let Some((best, since)) = charge_was {
                    m.charge.insert(S.into(), Charge { best, since });
                }
            });
            let a = One {
                was,
                now,
                ..One::of(d)
            }
            .apply(&[charge]);
            let said: Vec<&str> = a.r.maintenance.iter().map(String::as_str).collect();
            let case = format!("{powered:?} {level:?} {charge_was:?} {now}");
            assert_eq!(
                said == ["not charging: S1 (cable, port or battery)"],
                want,
                "{case}"
            );
            // Unplugged, the watchdog starts over.
            assert_eq!(
                a.next.charge.contains_key(S),
                powered == Some(true),
                "{case}"
            );
        }
        // Not read this round: it goes on from what it knew.
        let was = memory_with(|m| {
            m.charge.insert(
                S.into(),
                Charge {
                    best: 80.0,
                    since: 0.0,
                },
            );
        });
        let a = One {
            was: was.clone(),
            ..One::of(phone())
        }
        .apply(&[charge]);
        assert_eq!(a.next.charge, was.charge);
    }

    /// `--charge-stall-after`'s default in the tests.
    const TEST_STALL: f64 = super::super::TEST_THRESHOLDS.charge_stall_secs;

    #[test]
    fn a_nearly_full_data_partition_needs_maintenance() {
        let cases = [
            (
                Some(512 << 20),
                Some("data partition nearly full: S1 512 MiB free (< 1024 MiB)"),
            ),
            (Some(1 << 30), None),
            (None, None),
        ];
        for (free, want) in cases {
            let mut d = phone();
            d.data_free_bytes = free;
            let a = One::of(d).apply(&[data_free]);
            assert_eq!(
                a.r.maintenance,
                want.into_iter().collect::<Vec<_>>(),
                "{free:?}"
            );
        }
    }

    #[test]
    fn the_operators_note_on_a_phone_is_its_maintenance() {
        let mut notes = crate::state::notes::Notes::default();
        notes.phones.insert(S.into(), "swap the cable".into());
        let a = One {
            notes,
            ..One::of(phone())
        }
        .apply(&[note]);
        assert_eq!(a.r.maintenance, vec!["maintenance: S1: swap the cable"]);
        assert_eq!(
            One::of(phone()).apply(&[note]).r.maintenance,
            Vec::<String>::new()
        );
    }
}
