//! The watcher's reboots: after a task (every usable phone, or the task's own phone with
//! one bot per phone) and for a phone's care. Each runs as a task of its own under
//! [`REBOOT_DEADLINE`] and reports back as an [`Event::RebootDone`].

use std::time::Duration;

use super::{Event, Watcher};
use crate::devices::adb::client::ShellProtocol;
use crate::state::snapshot::{Device, DeviceKind};

/// From `reboot:` to `sys.boot_completed=1`, or from `idevicediagnostics restart` to
/// the iPhone listed again. Phones take one to two minutes.
const REBOOT_DEADLINE: Duration = Duration::from_secs(240);

impl Watcher {
    /// Reboots every usable phone, or `only` that one (Android `reboot:`, iPhone
    /// `idevicediagnostics restart`), each on its own deadline.
    pub(super) fn reboot_usable(&mut self, only: Option<&str>) {
        let snapshot = self.ctx.snapshot.get();
        let usable: Vec<&Device> = snapshot
            .devices
            .iter()
            .filter(|d| d.reachable() && only.is_none_or(|s| s == d.serial))
            .collect();
        if usable.is_empty() {
            self.want_round();
            return;
        }
        for d in usable {
            log::info!("rebooting {} after the task", d.serial);
            self.reboot(d, "after task");
        }
        // Show the rebooting state now, not at the next round.
        self.publish(false);
    }

    /// Starts one phone's reboot (Android `reboot:`, iPhone `idevicediagnostics
    /// restart`) on its own deadline; it reports back as [`Event::RebootDone`].
    pub(super) fn reboot(&mut self, d: &Device, what_for: &str) {
        let serial = d.serial.clone();
        self.rebooting.insert(serial.clone());
        self.reboot_for.insert(serial.clone(), what_for.to_string());
        let events = self.events.clone();
        if d.kind == DeviceKind::Ios {
            let done = self.ios.reboot(&serial, REBOOT_DEADLINE);
            tokio::spawn(async move {
                let outcome = done.await;
                let _ = events.send(Event::RebootDone { serial, outcome });
            });
            return;
        }
        let protocol = self
            .listing
            .iter()
            .flatten()
            .find(|l| l.serial == serial)
            .and_then(|l| self.protocols.get(&(serial.clone(), l.transport_id)))
            .copied()
            .unwrap_or(ShellProtocol::V1);
        let done = self.android.reboot(&serial, protocol);
        tokio::spawn(async move {
            let outcome = match tokio::time::timeout(REBOOT_DEADLINE, done).await {
                Ok(r) => r,
                Err(_) => Err(format!("not booted after {}s", REBOOT_DEADLINE.as_secs())),
            };
            let _ = events.send(Event::RebootDone { serial, outcome });
        });
    }
}
