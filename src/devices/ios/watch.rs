//! What the device watcher remembers of the iPhones between rounds, and what it shows
//! of them: the devices for the snapshot, the bot's iOS dimensions, and the failed
//! listing, which the verdict turns into a reason for the bot.
//!
//! The iPhones have no event stream like adb's device list: they are known only through
//! the rounds. So a round whose listing failed (no `idevice_id`, usbmuxd down, a hung
//! tool) must not read as "no phone", or every known iPhone would be quarantined as gone
//! missing: the last known phones stay, unusable with the error as their reason, and the
//! failure itself becomes a reason. A tool that is missing, cannot run, fails or prints
//! nonsense needs a person (quarantined); one that timed out may recover by itself
//! (maintenance).
//!
//! Must not: run tools, log, or decide a phone's fate (`verdict` does, for both kinds at
//! once).

use std::collections::BTreeSet;

use super::{ios_dimensions, IosError, IosErrorKind};
use crate::state::snapshot::{Device, Dimensions, Fault, ListingFailure};

/// The iPhones as of the last round.
#[derive(Debug, Default)]
pub struct Iphones {
    /// The phones of the last listing that worked, sorted by UDID, each as its last round
    /// read it; a phone being rebooted keeps what it said before the reboot.
    known: Vec<Device>,
    /// Why the latest listing failed; `None` once one works again.
    list_error: Option<IosError>,
}

impl Iphones {
    /// Takes in a round's outcome (`ios::interrogate`). `rebooting` holds the UDIDs
    /// restarted after a task that are not back yet: what a round reads of them
    /// mid-restart would only say they are away.
    pub fn round_done(
        &mut self,
        outcome: Result<Vec<Device>, IosError>,
        rebooting: &BTreeSet<String>,
    ) {
        match outcome {
            Ok(mut devices) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64();
                for d in &mut devices {
                    d.read_at_unix = Some(now);
                }
                devices.retain(|d| !rebooting.contains(&d.serial));
                devices.extend(
                    self.known
                        .iter()
                        .filter(|d| rebooting.contains(&d.serial))
                        .cloned(),
                );
                devices.sort_by(|a, b| a.serial.cmp(&b.serial));
                self.known = devices;
                self.list_error = None;
            }
            Err(e) => self.list_error = Some(e),
        }
    }

    /// The iPhones for the snapshot: unusable because they cannot be listed (the verdict
    /// gives each the listing's reason), or as their last round found them. The watcher
    /// marks the ones it is rebooting.
    pub fn devices(&self) -> Vec<Device> {
        self.known
            .iter()
            .map(|d| {
                let mut d = d.clone();
                if let Some(failure) = self.listing_failure() {
                    d.fault = Some(Fault::Unlisted(failure));
                    d.dimensions.clear();
                }
                d
            })
            .collect()
    }

    /// The bot's iOS dimensions: the usable phones, plus the phones being rebooted with
    /// their last values, so that the dimensions do not flap after every task.
    pub fn dimensions(&self, rebooting: &BTreeSet<String>) -> Dimensions {
        ios_dimensions(&self.counted(rebooting))
    }

    /// By UDID, what [`Iphones::dimensions`] would be with that phone alone.
    pub fn each(&self, rebooting: &BTreeSet<String>) -> Vec<(String, Dimensions)> {
        self.counted(rebooting)
            .into_iter()
            .map(|d| (d.serial.clone(), ios_dimensions(&[d])))
            .collect()
    }

    fn counted(&self, rebooting: &BTreeSet<String>) -> Vec<&Device> {
        self.known
            .iter()
            .filter(|d| {
                rebooting.contains(&d.serial) || (d.reachable() && self.list_error.is_none())
            })
            .collect()
    }

    /// Why the latest listing failed, if it did: for the verdict, which gives the bot
    /// (and every known iPhone) its reason.
    pub fn listing_failure(&self) -> Option<ListingFailure> {
        self.list_error.as_ref().map(|e| ListingFailure {
            error: e.to_string(),
            needs_person: needs_a_person(e),
        })
    }
}

/// Whether a failed listing needs someone to act: everything but a timeout, which a
/// slow usbmuxd may get over by the next round.
fn needs_a_person(e: &IosError) -> bool {
    !matches!(e.kind, IosErrorKind::Timeout { .. })
}

#[cfg(test)]
mod tests {
    use super::super::{ios_device, Step};
    use super::*;
    use crate::state::snapshot::{usable_device, DeviceKind};
    use std::time::Duration;

    const A: &str = "00008030-001A2D3E0E38802E";
    const B: &str = "00008101-000C19A82E10001E";

    fn phone(udid: &str, version: &str, battery: f64) -> Device {
        let mut d = usable_device(DeviceKind::Ios, udid);
        d.device_type = Some("iPhone14,2".into());
        d.build = Some(version.into());
        d.battery_percent = Some(battery);
        d.dimensions = ios_device("iPhone14,2", version);
        d
    }

    fn list_error(kind: IosErrorKind) -> IosError {
        IosError::new(Step::List, None, kind)
    }

    fn none() -> BTreeSet<String> {
        BTreeSet::new()
    }

    #[test]
    fn a_listing_replaces_the_phones() {
        let mut p = Iphones::default();
        p.round_done(
            Ok(vec![phone(B, "17.1", 90.0), phone(A, "16.6", 80.0)]),
            &none(),
        );
        let shown = p.devices();
        assert_eq!(shown.len(), 2);
        assert_eq!(shown[0].serial, A);
        assert!(shown.iter().all(|d| d.unusable().is_none()));
        assert_eq!(p.dimensions(&none())["ios_devices"], vec!["2"]);
        assert_eq!(
            p.dimensions(&none())["os"],
            vec!["iOS", "iOS-16.6", "iOS-17.1"]
        );

        p.round_done(Ok(vec![phone(A, "16.6", 80.0)]), &none());
        assert_eq!(p.devices().len(), 1);
        assert_eq!(p.listing_failure(), None);
    }

    #[test]
    fn a_failed_listing_keeps_the_phones_unusable_and_needs_a_person() {
        let mut p = Iphones::default();
        p.round_done(Ok(vec![phone(A, "17.1", 80.0)]), &none());
        let e = list_error(IosErrorKind::ToolMissing {
            path: "/opt/x/idevice_id".into(),
        });
        let why = format!("cannot list the iPhones: {e}");
        p.round_done(Err(e), &none());
        let shown = p.devices();
        assert_eq!(shown.len(), 1, "the phone must not read as gone");
        assert_eq!(shown[0].unusable().as_deref(), Some(why.as_str()));
        assert!(shown[0].dimensions.is_empty());
        assert_eq!(shown[0].battery_percent, Some(80.0));
        assert_eq!(p.dimensions(&none()), Dimensions::new());

        let failure = p.listing_failure().expect("the failure is kept");
        assert!(failure.needs_person);
        assert!(failure.error.contains("--idevice-dir"), "{failure:?}");

        // The next listing that works clears it all.
        p.round_done(Ok(vec![phone(A, "17.1", 80.0)]), &none());
        assert_eq!(p.devices()[0].unusable(), None);
        assert_eq!(p.listing_failure(), None);
    }

    #[test]
    fn a_listing_that_timed_out_is_maintenance() {
        let mut p = Iphones::default();
        p.round_done(
            Err(list_error(IosErrorKind::Timeout {
                after: Duration::from_secs(5),
            })),
            &none(),
        );
        assert!(p.devices().is_empty());
        let failure = p.listing_failure().expect("the failure is kept");
        assert!(!failure.needs_person, "a timeout is maintenance");
        assert!(
            failure.error.starts_with("idevice_id -l: no answer"),
            "{failure:?}"
        );
    }

    #[test]
    fn a_phone_being_rebooted_keeps_its_last_facts_and_dimensions() {
        let mut p = Iphones::default();
        p.round_done(
            Ok(vec![phone(A, "17.1", 80.0), phone(B, "16.6", 90.0)]),
            &none(),
        );
        let rebooting: BTreeSet<String> = [A.to_string()].into();
        // Mid-restart, the listing no longer has it (or cannot read it).
        p.round_done(Ok(vec![phone(B, "16.6", 90.0)]), &rebooting);
        let shown = p.devices();
        assert_eq!(shown.len(), 2);
        assert_eq!(shown[0].serial, A);
        // It keeps what it said before the restart (the watcher marks it rebooting).
        assert_eq!(shown[0].battery_percent, Some(80.0));
        assert_eq!(shown[0].build.as_deref(), Some("17.1"));
        assert_eq!(p.dimensions(&rebooting)["ios_devices"], vec!["2"]);
        assert_eq!(
            p.dimensions(&rebooting)["os"],
            vec!["iOS", "iOS-16.6", "iOS-17.1"]
        );

        // Back: the next round's reading replaces the old one.
        p.round_done(
            Ok(vec![phone(A, "17.2", 75.0), phone(B, "16.6", 90.0)]),
            &none(),
        );
        let shown = p.devices();
        assert_eq!(shown[0].state_word(), "device");
        assert_eq!(shown[0].battery_percent, Some(75.0));
        assert_eq!(shown[0].unusable(), None);
    }

    #[test]
    fn an_unusable_phone_is_not_counted() {
        let mut p = Iphones::default();
        let mut locked = phone(B, "16.6", 90.0);
        locked.fault = Some(Fault::NotAnswering {
            why: "locked".into(),
            offline: false,
        });
        locked.dimensions.clear();
        p.round_done(Ok(vec![phone(A, "17.1", 80.0), locked]), &none());
        assert_eq!(p.dimensions(&none())["ios_devices"], vec!["1"]);
    }
}
