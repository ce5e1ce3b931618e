//! What of a new snapshot becomes a Kubernetes Event on the node: each phone whose
//! verdict changed, with its reasons, and each step up the recovery ladder. Pure: the
//! watcher reports what this returns (`state::Events::report`).

use crate::state::snapshot::{self, Device, Snapshot};
use crate::state::EventReason;

/// The node Events between two snapshots: each phone whose verdict changed (with its
/// reasons), and each step up the recovery ladder. A reboot after a task is routine
/// (every task ends with one), so a phone being rebooted keeps the verdict it had for
/// this purpose; the log and the status page still show it.
pub(super) fn phone_events(old: &Snapshot, new: &Snapshot) -> Vec<(EventReason, String)> {
    let verdict = |d: &Device| {
        if d.state == snapshot::State::Rebooting {
            None
        } else {
            Some(d.verdict_word())
        }
    };
    let mut out = Vec::new();
    for d in &new.devices {
        let was = old.devices.iter().find(|o| o.serial == d.serial);
        let before = was.map_or(Some("usable"), &verdict);
        let serial = &d.serial;
        let why = || {
            let r = &d.reasons;
            r.quarantined
                .iter()
                .chain(&r.maintenance)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join("; ")
        };
        // A phone that does not come back from a routine reboot (gone missing, then
        // quarantined) is no routine: that change is an event whatever it was before.
        let before = match (before, verdict(d)) {
            (None, Some("quarantined")) => Some("rebooting"),
            _ => before,
        };
        match (before, verdict(d)) {
            (Some(b), Some(now)) if b != now => out.push(match now {
                "quarantined" => (
                    EventReason::PhoneQuarantined,
                    format!("phone {serial} quarantined: {}", why()),
                ),
                "maintenance" => (
                    EventReason::PhoneMaintenance,
                    format!("phone {serial} in maintenance: {}", why()),
                ),
                _ => (
                    EventReason::PhoneUsable,
                    format!("phone {serial} usable again"),
                ),
            }),
            _ => {}
        }
        let step = was.map_or(0, |o| o.recovery_step);
        if d.recovery_step > step {
            out.push((
                EventReason::RecoveryStep,
                format!(
                    "phone {serial} recovery step {}: {}",
                    d.recovery_step,
                    why()
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::snapshot::DeviceKind;

    #[test]
    fn each_verdict_change_and_each_ladder_step_is_one_node_event() {
        let snap = |devices: Vec<Device>| Snapshot {
            devices,
            ..Snapshot::default()
        };
        let usable = snapshot::usable_device(DeviceKind::Android, "S1");
        let mut hot = usable.clone();
        hot.reasons.maintenance = vec!["too hot: S1 battery 40.0°C (> 35°C)".into()];
        let mut climbing = hot.clone();
        climbing.reasons.maintenance = vec!["device S1 offline, reconnecting".into()];
        climbing.recovery_step = 1;
        let mut rebooting = usable.clone();
        rebooting.state = snapshot::State::Rebooting;
        rebooting.reasons.maintenance = vec!["rebooting S1 after task".into()];

        assert_eq!(
            phone_events(&snap(vec![]), &snap(vec![usable.clone()])),
            vec![]
        );
        assert_eq!(
            phone_events(&snap(vec![usable.clone()]), &snap(vec![hot.clone()])),
            vec![(
                EventReason::PhoneMaintenance,
                "phone S1 in maintenance: too hot: S1 battery 40.0°C (> 35°C)".to_string()
            )]
        );
        assert_eq!(
            phone_events(&snap(vec![hot.clone()]), &snap(vec![hot.clone()])),
            vec![]
        );
        assert_eq!(
            phone_events(&snap(vec![hot.clone()]), &snap(vec![climbing])),
            vec![(
                EventReason::RecoveryStep,
                "phone S1 recovery step 1: device S1 offline, reconnecting".to_string()
            )]
        );
        assert_eq!(
            phone_events(&snap(vec![hot]), &snap(vec![usable.clone()])),
            vec![(
                EventReason::PhoneUsable,
                "phone S1 usable again".to_string()
            )]
        );
        // The reboot after a task is routine: neither way is an event.
        assert_eq!(
            phone_events(&snap(vec![usable.clone()]), &snap(vec![rebooting.clone()])),
            vec![]
        );
        assert_eq!(
            phone_events(&snap(vec![rebooting.clone()]), &snap(vec![usable])),
            vec![]
        );
        // Not coming back from it is no routine.
        let mut lost = rebooting.clone();
        lost.state = snapshot::State::Missing;
        lost.reasons.maintenance.clear();
        lost.reasons.quarantined = vec!["device S1 (redfin) has gone missing".into()];
        assert_eq!(
            phone_events(&snap(vec![rebooting]), &snap(vec![lost])),
            vec![(
                EventReason::PhoneQuarantined,
                "phone S1 quarantined: device S1 (redfin) has gone missing".to_string()
            )]
        );
    }
}
