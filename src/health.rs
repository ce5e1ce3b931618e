//! Health rules: from the phones of one round to the reasons the bot reports to
//! Swarming, and the few actions that may fix a phone by themselves.
//!
//! [`assess`] is a pure function of the previous round's [`Memory`], this round's
//! devices, the serials being rebooted after a task, and the [`Thresholds`]. The watcher
//! keeps the returned memory for the next round, runs the actions, and adds the
//! `missing` devices to the snapshot. Rules (texts exact, thresholds from flags):
//!
//! | condition | reason |
//! |---|---|
//! | battery below the minimum | maintenance `battery low: <serial> 12% (< 30%)` |
//! | any temperature above the maximum | maintenance `too hot: <serial> <sensor> 44.5°C (> 35°C)` |
//! | state `device`, `sys.boot_completed` not 1, not being rebooted | maintenance `booting: <serial>` |
//! | a serial being rebooted after a task | maintenance `rebooting <serial> after task` |
//! | seen before, absent now, not being rebooted | quarantined `device <serial> (<type>) has gone missing` |
//! | `unauthorized` | quarantined, with the adb key remedy |
//! | `no permissions` | quarantined, with the USB remedy |
//! | `offline`, first round | maintenance `device <serial> offline, reconnecting` and [`Action::ReconnectOffline`] |
//! | `offline` for 2 consecutive rounds or more | quarantined `device <serial> has been offline for 2 rounds` |
//!
//! Every reason is recomputed each round, so it clears as soon as its condition does. A
//! phone that has gone missing stays reported until it comes back: someone has to plug
//! it in again (the memory only lives as long as the process). A phone being rebooted is
//! expected to vanish or show `offline` for a while, so neither counts against it.
//! Every rule reads the [`Device`] fields only, so the iOS watcher can use it as well.
//!
//! Must not: do I/O, log, or read the clock; the rules are tested as plain data.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::Config;
use crate::snapshot::{Device, DeviceKind, Reasons};

/// The state word of a phone that was seen and is gone.
pub const MISSING: &str = "missing";

/// Consecutive offline rounds after which reconnecting is given up and a person is needed.
const OFFLINE_ROUNDS_TO_QUARANTINE: u32 = 2;

/// The limits from `--min-battery` and `--max-temperature`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// A battery strictly below this percentage puts the bot in maintenance.
    pub min_battery_percent: f64,
    /// A temperature strictly above this (°C) puts the bot in maintenance.
    pub max_temperature_celsius: f64,
}

impl Thresholds {
    pub fn from_config(config: &Config) -> Thresholds {
        Thresholds {
            min_battery_percent: config.min_battery_percent,
            max_temperature_celsius: config.max_temperature_celsius,
        }
    }
}

/// What one round remembers for the next.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Memory {
    /// Every phone seen since the program started, with what it last said it was; the
    /// source of "gone missing".
    seen: BTreeMap<String, Seen>,
    /// Consecutive rounds each serial has been `offline`; absent when it is not.
    offline_rounds: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, PartialEq)]
struct Seen {
    kind: DeviceKind,
    device_type: Option<String>,
}

/// Something the watcher should do for the phones to recover by themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `host:reconnect-offline`: once per round at most, it resets every offline
    /// transport of the server.
    ReconnectOffline,
}

/// The outcome of one round.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// Sorted and distinct.
    pub reasons: Reasons,
    /// To pass to the next round's [`assess`].
    pub memory: Memory,
    pub actions: Vec<Action>,
    /// Phones seen before and absent now (not being rebooted), in state [`MISSING`] with
    /// their last known kind and type, sorted by serial, for the snapshot to show.
    pub missing: Vec<Device>,
}

/// Applies the rules to this round's `devices` (the phones listed now; a device already
/// in state [`MISSING`] is treated as absent). `rebooting` holds the serials the watcher
/// rebooted after a task and has not yet seen come back.
pub fn assess(
    memory: &Memory,
    devices: &[Device],
    rebooting: &BTreeSet<String>,
    t: &Thresholds,
) -> Assessment {
    let mut quarantined = BTreeSet::new();
    let mut maintenance = BTreeSet::new();
    let mut actions = Vec::new();
    let mut next = Memory {
        seen: memory.seen.clone(),
        offline_rounds: BTreeMap::new(),
    };

    let present: Vec<&Device> = devices.iter().filter(|d| d.state != MISSING).collect();
    for d in &present {
        let serial = &d.serial;
        let seen = next.seen.entry(serial.clone()).or_insert(Seen {
            kind: d.kind,
            device_type: None,
        });
        seen.kind = d.kind;
        if d.device_type.is_some() {
            seen.device_type.clone_from(&d.device_type);
        }
        let being_rebooted = rebooting.contains(serial);

        match d.state.as_str() {
            "unauthorized" => {
                quarantined.insert(unauthorized_reason(serial));
            }
            "no permissions" => {
                quarantined.insert(no_permissions_reason(serial));
            }
            "offline" if !being_rebooted => {
                let rounds = memory.offline_rounds.get(serial).copied().unwrap_or(0) + 1;
                next.offline_rounds.insert(serial.clone(), rounds);
                if rounds >= OFFLINE_ROUNDS_TO_QUARANTINE {
                    quarantined.insert(offline_too_long_reason(serial));
                } else {
                    maintenance.insert(offline_reconnecting_reason(serial));
                    if !actions.contains(&Action::ReconnectOffline) {
                        actions.push(Action::ReconnectOffline);
                    }
                }
            }
            "device" if d.booting && !being_rebooted => {
                maintenance.insert(format!("booting: {serial}"));
            }
            _ => {}
        }

        if let Some(percent) = d.battery_percent {
            if percent < t.min_battery_percent {
                maintenance.insert(format!(
                    "battery low: {serial} {}% (< {}%)",
                    short(percent),
                    short(t.min_battery_percent)
                ));
            }
        }
        for temp in &d.temperatures {
            if temp.celsius > t.max_temperature_celsius {
                maintenance.insert(format!(
                    "too hot: {serial} {} {:.1}°C (> {}°C)",
                    temp.sensor,
                    temp.celsius,
                    short(t.max_temperature_celsius)
                ));
            }
        }
    }

    for serial in rebooting {
        maintenance.insert(format!("rebooting {serial} after task"));
    }

    let present_serials: BTreeSet<&str> = present.iter().map(|d| d.serial.as_str()).collect();
    let mut missing = Vec::new();
    for (serial, seen) in &next.seen {
        if present_serials.contains(serial.as_str()) || rebooting.contains(serial) {
            continue;
        }
        let type_name = seen.device_type.as_deref().unwrap_or("unknown type");
        quarantined.insert(format!("device {serial} ({type_name}) has gone missing"));
        let mut device = Device::listed(seen.kind, serial, MISSING);
        device.device_type.clone_from(&seen.device_type);
        missing.push(device);
    }

    Assessment {
        reasons: Reasons {
            quarantined: quarantined.into_iter().collect(),
            maintenance: maintenance.into_iter().collect(),
        },
        memory: next,
        actions,
        missing,
    }
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

/// The quarantine reason of a phone still `offline` after reconnecting was tried.
pub fn offline_too_long_reason(serial: &str) -> String {
    format!("device {serial} has been offline for {OFFLINE_ROUNDS_TO_QUARANTINE} rounds")
}

/// A number for a reason text: at most one decimal, none when it is whole (`12`,
/// `12.5`), so that `100·1/3` does not print sixteen digits.
fn short(x: f64) -> String {
    let rounded = (x * 10.0).round() / 10.0;
    format!("{rounded}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Temperature;

    const T: Thresholds = Thresholds {
        min_battery_percent: 30.0,
        max_temperature_celsius: 35.0,
    };

    fn healthy(serial: &str) -> Device {
        let mut d = Device::listed(DeviceKind::Android, serial, "device");
        d.device_type = Some("husky".into());
        d.battery_percent = Some(80.0);
        d.temperatures = vec![Temperature {
            sensor: "battery".into(),
            celsius: 28.0,
        }];
        d
    }

    fn in_state(serial: &str, state: &str) -> Device {
        Device::listed(DeviceKind::Android, serial, state)
    }

    fn none() -> BTreeSet<String> {
        BTreeSet::new()
    }

    fn set(serials: &[&str]) -> BTreeSet<String> {
        serials.iter().map(|s| s.to_string()).collect()
    }

    /// Runs rounds in sequence, each from the previous memory, and returns the last.
    fn rounds(rounds: &[(Vec<Device>, BTreeSet<String>)]) -> Assessment {
        let mut memory = Memory::default();
        let mut last = None;
        for (devices, rebooting) in rounds {
            let a = assess(&memory, devices, rebooting, &T);
            memory = a.memory.clone();
            last = Some(a);
        }
        last.unwrap()
    }

    fn quarantined(a: &Assessment) -> Vec<&str> {
        a.reasons.quarantined.iter().map(String::as_str).collect()
    }

    fn maintenance(a: &Assessment) -> Vec<&str> {
        a.reasons.maintenance.iter().map(String::as_str).collect()
    }

    #[test]
    fn healthy_phones_give_no_reasons() {
        let a = assess(
            &Memory::default(),
            &[healthy("A"), healthy("B")],
            &none(),
            &T,
        );
        assert_eq!(a.reasons, Reasons::default());
        assert!(a.actions.is_empty());
        assert!(a.missing.is_empty());
    }

    #[test]
    fn battery_low_sets_and_clears() {
        let mut low = healthy("S1");
        low.battery_percent = Some(12.0);
        let a = rounds(&[(vec![low], none())]);
        assert_eq!(maintenance(&a), vec!["battery low: S1 12% (< 30%)"]);
        let a = rounds(&[(vec![healthy("S1")], none()), (vec![healthy("S1")], none())]);
        assert!(a.reasons.maintenance.is_empty());
    }

    #[test]
    fn battery_at_the_threshold_is_fine_and_fractions_are_short() {
        let mut at = healthy("S1");
        at.battery_percent = Some(30.0);
        assert!(assess(&Memory::default(), &[at], &none(), &T)
            .reasons
            .maintenance
            .is_empty());
        let mut third = healthy("S1");
        third.battery_percent = Some(100.0 / 3.0);
        let t = Thresholds {
            min_battery_percent: 40.5,
            ..T
        };
        let a = assess(&Memory::default(), &[third], &none(), &t);
        assert_eq!(maintenance(&a), vec!["battery low: S1 33.3% (< 40.5%)"]);
    }

    #[test]
    fn too_hot_names_every_hot_sensor_and_clears() {
        let mut hot = healthy("S1");
        hot.temperatures = vec![
            Temperature {
                sensor: "battery".into(),
                celsius: 44.5,
            },
            Temperature {
                sensor: "cpu0".into(),
                celsius: 35.0,
            },
            Temperature {
                sensor: "skin".into(),
                celsius: 36.04,
            },
        ];
        let a = assess(&Memory::default(), &[hot.clone()], &none(), &T);
        assert_eq!(
            maintenance(&a),
            vec![
                "too hot: S1 battery 44.5°C (> 35°C)",
                "too hot: S1 skin 36.0°C (> 35°C)",
            ]
        );
        let a = rounds(&[(vec![hot], none()), (vec![healthy("S1")], none())]);
        assert!(a.reasons.maintenance.is_empty());
    }

    #[test]
    fn booting_sets_and_clears() {
        let mut booting = healthy("S1");
        booting.booting = true;
        let a = assess(&Memory::default(), &[booting], &none(), &T);
        assert_eq!(maintenance(&a), vec!["booting: S1"]);
        let a = rounds(&[(vec![healthy("S1")], none())]);
        assert!(a.reasons.maintenance.is_empty());
    }

    #[test]
    fn a_phone_not_yet_interrogated_is_not_booting() {
        // Listed a moment ago: nothing known yet, so no reason that would flap.
        let fresh = Device::listed(DeviceKind::Android, "S1", "device");
        let a = assess(&Memory::default(), &[fresh], &none(), &T);
        assert!(a.reasons.maintenance.is_empty(), "{:?}", a.reasons);
        assert!(a.reasons.quarantined.is_empty(), "{:?}", a.reasons);
    }

    #[test]
    fn booting_is_not_reported_while_rebooting_after_a_task() {
        let mut booting = healthy("S1");
        booting.booting = true;
        let a = assess(&Memory::default(), &[booting], &set(&["S1"]), &T);
        assert_eq!(maintenance(&a), vec!["rebooting S1 after task"]);
    }

    #[test]
    fn rebooting_phone_that_vanished_is_not_missing() {
        let a = rounds(&[(vec![healthy("S1")], none()), (vec![], set(&["S1"]))]);
        assert_eq!(maintenance(&a), vec!["rebooting S1 after task"]);
        assert!(a.reasons.quarantined.is_empty());
        assert!(a.missing.is_empty());
    }

    #[test]
    fn rebooting_phone_shown_offline_is_not_reconnected() {
        let a = rounds(&[
            (vec![healthy("S1")], none()),
            (vec![in_state("S1", "offline")], set(&["S1"])),
            (vec![in_state("S1", "offline")], set(&["S1"])),
        ]);
        assert_eq!(maintenance(&a), vec!["rebooting S1 after task"]);
        assert!(a.reasons.quarantined.is_empty());
        assert!(a.actions.is_empty());
    }

    #[test]
    fn rebooting_clears_when_the_watcher_drops_the_serial() {
        let a = rounds(&[
            (vec![healthy("S1")], set(&["S1"])),
            (vec![healthy("S1")], none()),
        ]);
        assert_eq!(a.reasons, Reasons::default());
    }

    #[test]
    fn gone_missing_is_reported_until_the_phone_returns() {
        let gone = rounds(&[
            (vec![healthy("S1"), healthy("S2")], none()),
            (vec![healthy("S2")], none()),
        ]);
        assert_eq!(
            quarantined(&gone),
            vec!["device S1 (husky) has gone missing"]
        );
        let mut shown = Device::listed(DeviceKind::Android, "S1", "missing");
        shown.device_type = Some("husky".into());
        assert_eq!(gone.missing, vec![shown]);

        let still = assess(&gone.memory, &[healthy("S2")], &none(), &T);
        assert_eq!(
            quarantined(&still),
            vec!["device S1 (husky) has gone missing"]
        );

        let back = assess(&still.memory, &[healthy("S1"), healthy("S2")], &none(), &T);
        assert_eq!(back.reasons, Reasons::default());
        assert!(back.missing.is_empty());
    }

    #[test]
    fn missing_phone_of_unknown_type() {
        let a = rounds(&[
            (vec![in_state("R5", "unauthorized")], none()),
            (vec![], none()),
        ]);
        assert_eq!(
            quarantined(&a),
            vec!["device R5 (unknown type) has gone missing"]
        );
    }

    #[test]
    fn known_type_is_kept_when_a_later_round_does_not_know_it() {
        let a = rounds(&[
            (vec![healthy("S1")], none()),
            (vec![in_state("S1", "offline")], none()),
            (vec![], none()),
        ]);
        assert_eq!(quarantined(&a), vec!["device S1 (husky) has gone missing"]);
    }

    #[test]
    fn devices_given_as_missing_count_as_absent() {
        let a = rounds(&[
            (vec![healthy("S1")], none()),
            (vec![in_state("S1", MISSING)], none()),
        ]);
        assert_eq!(quarantined(&a), vec!["device S1 (husky) has gone missing"]);
        assert_eq!(a.missing.len(), 1);
    }

    #[test]
    fn unauthorized_sets_and_clears() {
        let a = assess(
            &Memory::default(),
            &[in_state("R5", "unauthorized")],
            &none(),
            &T,
        );
        assert_eq!(
            quarantined(&a),
            vec!["device R5 is unauthorized: accept this host's adb key on the phone, or give the pod the adb key pair it was authorized with (Secret mounted at /root/.android)"]
        );
        let a = assess(&a.memory, &[healthy("R5")], &none(), &T);
        assert_eq!(a.reasons, Reasons::default());
    }

    #[test]
    fn no_permissions_sets_and_clears() {
        let a = assess(
            &Memory::default(),
            &[in_state("Z1", "no permissions")],
            &none(),
            &T,
        );
        assert_eq!(
            quarantined(&a),
            vec!["device Z1 has no USB permissions: run the pod privileged with /dev/bus/usb mounted, or fix the host's udev rules"]
        );
        let a = assess(&a.memory, &[healthy("Z1")], &none(), &T);
        assert_eq!(a.reasons, Reasons::default());
    }

    #[test]
    fn offline_first_reconnects_then_quarantines() {
        let offline = || vec![in_state("H1", "offline")];
        let first = assess(&Memory::default(), &offline(), &none(), &T);
        assert_eq!(maintenance(&first), vec!["device H1 offline, reconnecting"]);
        assert!(first.reasons.quarantined.is_empty());
        assert_eq!(first.actions, vec![Action::ReconnectOffline]);

        let second = assess(&first.memory, &offline(), &none(), &T);
        assert_eq!(
            quarantined(&second),
            vec!["device H1 has been offline for 2 rounds"]
        );
        assert!(second.reasons.maintenance.is_empty());
        assert!(second.actions.is_empty());

        let third = assess(&second.memory, &offline(), &none(), &T);
        assert_eq!(
            quarantined(&third),
            vec!["device H1 has been offline for 2 rounds"]
        );
    }

    #[test]
    fn offline_clears_and_counts_again_from_one() {
        let a = rounds(&[
            (vec![in_state("H1", "offline")], none()),
            (vec![in_state("H1", "offline")], none()),
            (vec![healthy("H1")], none()),
        ]);
        assert_eq!(a.reasons, Reasons::default());
        let again = assess(&a.memory, &[in_state("H1", "offline")], &none(), &T);
        assert_eq!(maintenance(&again), vec!["device H1 offline, reconnecting"]);
        assert_eq!(again.actions, vec![Action::ReconnectOffline]);
    }

    #[test]
    fn offline_rounds_must_be_consecutive() {
        let a = rounds(&[
            (vec![in_state("H1", "offline")], none()),
            (vec![healthy("H1")], none()),
            (vec![in_state("H1", "offline")], none()),
        ]);
        assert!(a.reasons.quarantined.is_empty());
        assert_eq!(maintenance(&a), vec!["device H1 offline, reconnecting"]);
    }

    #[test]
    fn several_offline_phones_share_one_reconnect() {
        let a = assess(
            &Memory::default(),
            &[in_state("H1", "offline"), in_state("H2", "offline")],
            &none(),
            &T,
        );
        assert_eq!(a.actions, vec![Action::ReconnectOffline]);
        assert_eq!(
            maintenance(&a),
            vec![
                "device H1 offline, reconnecting",
                "device H2 offline, reconnecting"
            ]
        );
    }

    #[test]
    fn several_phones_with_mixed_faults_give_sorted_reasons() {
        let mut hot_low = healthy("B2");
        hot_low.battery_percent = Some(12.0);
        hot_low.temperatures = vec![Temperature {
            sensor: "battery".into(),
            celsius: 44.5,
        }];
        let a = rounds(&[
            (vec![healthy("A1"), healthy("Z9")], none()),
            (
                vec![
                    healthy("A1"),
                    hot_low,
                    in_state("C3", "unauthorized"),
                    in_state("D4", "no permissions"),
                ],
                set(&["E5"]),
            ),
        ]);
        assert_eq!(
            quarantined(&a),
            vec![
                "device C3 is unauthorized: accept this host's adb key on the phone, or give the pod the adb key pair it was authorized with (Secret mounted at /root/.android)",
                "device D4 has no USB permissions: run the pod privileged with /dev/bus/usb mounted, or fix the host's udev rules",
                "device Z9 (husky) has gone missing",
            ]
        );
        assert_eq!(
            maintenance(&a),
            vec![
                "battery low: B2 12% (< 30%)",
                "rebooting E5 after task",
                "too hot: B2 battery 44.5°C (> 35°C)",
            ]
        );
        assert_eq!(
            a.missing
                .iter()
                .map(|d| d.serial.as_str())
                .collect::<Vec<_>>(),
            vec!["Z9"]
        );
    }

    #[test]
    fn same_reason_twice_is_listed_once() {
        let a = assess(
            &Memory::default(),
            &[
                in_state("R5", "unauthorized"),
                in_state("R5", "unauthorized"),
            ],
            &none(),
            &T,
        );
        assert_eq!(a.reasons.quarantined.len(), 1);
    }

    #[test]
    fn ios_devices_follow_the_same_rules_and_keep_their_kind_when_missing() {
        let mut phone = Device::listed(DeviceKind::Ios, "00008030-001A", "device");
        phone.device_type = Some("iPhone14,2".into());
        phone.battery_percent = Some(10.0);
        let first = assess(&Memory::default(), &[phone], &none(), &T);
        assert_eq!(
            maintenance(&first),
            vec!["battery low: 00008030-001A 10% (< 30%)"]
        );
        let gone = assess(&first.memory, &[], &none(), &T);
        assert_eq!(
            quarantined(&gone),
            vec!["device 00008030-001A (iPhone14,2) has gone missing"]
        );
        assert_eq!(gone.missing[0].kind, DeviceKind::Ios);
    }

    #[test]
    fn thresholds_come_from_the_flags() {
        let args: Vec<String> = [
            "--no-bot",
            "--min-battery",
            "45",
            "--max-temperature",
            "40.5",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let config = match crate::config::parse(&args, &|_| None, "pi") {
            Ok(crate::config::Command::Run(c)) => c,
            other => panic!("expected Run, got {other:?}"),
        };
        assert_eq!(
            Thresholds::from_config(&config),
            Thresholds {
                min_battery_percent: 45.0,
                max_temperature_celsius: 40.5
            }
        );
    }
}
