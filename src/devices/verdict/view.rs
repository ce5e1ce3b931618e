//! The reasons a bot reports, as the hooks, `/metrics` and the status page show them:
//! one phone's bot (`--bots per-device`) sees its phone's reasons and the host's, and
//! any bot a forced quarantine. The rules are in [`super::decide`]; this only joins its
//! results, adding the two reasons a snapshot cannot hold (a phone it does not know, a
//! forced quarantine).

use std::path::Path;

use super::reasons::{forced, not_listed};
use crate::state::snapshot::{PhoneView, Reasons, Snapshot};

/// The view of the phone `serial`; a phone the snapshot does not know is quarantined
/// with the reason, never silently usable.
pub fn phone_view(snapshot: &Snapshot, serial: &str) -> PhoneView {
    let mut reasons = snapshot.host_reasons.clone();
    match snapshot.devices.iter().find(|d| d.serial == serial) {
        Some(d) => {
            reasons
                .quarantined
                .extend(d.reasons.quarantined.iter().cloned());
            reasons
                .maintenance
                .extend(d.reasons.maintenance.iter().cloned());
        }
        None => reasons.quarantined.push(not_listed(serial)),
    }
    reasons.quarantined.sort();
    reasons.quarantined.dedup();
    reasons.maintenance.sort();
    reasons.maintenance.dedup();
    PhoneView {
        dimensions: snapshot
            .phone_dimensions
            .get(serial)
            .cloned()
            .unwrap_or_default(),
        reasons,
    }
}

/// The bot's reasons with the forced quarantine, when one is in force: `file` is the
/// request file the `get_state` hook found. What `get_state` answers and `/metrics`
/// exports.
pub fn with_forced(reasons: &Reasons, file: Option<&Path>) -> Reasons {
    let mut r = reasons.clone();
    if let Some(file) = file {
        let f = forced(file);
        if let Err(at) = r.quarantined.binary_search(&f) {
            r.quarantined.insert(at, f);
        }
    }
    r
}

/// A bot's reasons while the program drains for shutdown: maintenance, after its own
/// reasons, so that a bot that still polls takes no new task (`get_state` only: the
/// drain is the bot's state, not a phone's, and has its own gauge).
pub fn while_draining(reasons: Reasons) -> Reasons {
    let mut r = reasons;
    r.maintenance.push(super::reasons::draining());
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::snapshot::{usable_device, DeviceKind};

    fn reasons(quarantined: &[&str], maintenance: &[&str]) -> Reasons {
        Reasons {
            quarantined: quarantined.iter().map(|s| s.to_string()).collect(),
            maintenance: maintenance.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_phone_view_joins_the_phone_and_the_host_sorted_and_distinct() {
        let mut phone = usable_device(DeviceKind::Android, "S1");
        phone.reasons = reasons(&["z", "a"], &["m"]);
        let snapshot = Snapshot {
            devices: vec![phone],
            host_reasons: reasons(&["a"], &["h"]),
            ..Snapshot::default()
        };
        assert_eq!(
            phone_view(&snapshot, "S1").reasons,
            reasons(&["a", "z"], &["h", "m"])
        );
    }

    #[test]
    fn a_phone_the_snapshot_does_not_know_is_quarantined() {
        let snapshot = Snapshot {
            host_reasons: reasons(&[], &["h"]),
            ..Snapshot::default()
        };
        assert_eq!(
            phone_view(&snapshot, "gone").reasons,
            reasons(&["device gone is not listed"], &["h"])
        );
    }

    #[test]
    fn a_forced_quarantine_joins_in_order_once() {
        let file = Path::new("/b/pi.force_quarantine");
        let want = "forced quarantine (/b/pi.force_quarantine was present)";
        let bot = reasons(&["a", "z"], &["m"]);
        let joined = with_forced(&bot, Some(file));
        assert_eq!(joined, reasons(&["a", want, "z"], &["m"]));
        assert_eq!(with_forced(&joined, Some(file)), joined);
        assert_eq!(with_forced(&bot, None), bot);
    }
}
