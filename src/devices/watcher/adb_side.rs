//! The watcher's dealings with the adb server itself: a new device list (from the
//! tracker, or asked once because the tracker misses some changes) and the server's
//! answer to each round's probe, with the kill of a server silent for
//! [`SERVER_SILENT_ROUNDS`] rounds in a row.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::Watcher;
use crate::devices::android;
use crate::devices::budget::SERVER_SILENT_ROUNDS;
use crate::devices::parse::{self, devices_l::Listed};
use crate::state::metrics::InterrogationErrorKind;
use crate::state::snapshot::Link;

/// The adb server's silence: the failed probes in a row, since when, and the first
/// failure (the reason shown, stable while it lasts).
pub(super) struct Silence {
    pub(super) rounds: u32,
    pub(super) since: tokio::time::Instant,
    pub(super) first: String,
}

impl Watcher {
    /// A new device list, from the tracker or asked once (`polled`).
    pub(super) fn listing(&mut self, text: &str, polled: bool) {
        match parse::devices_l::parse(text) {
            Ok(listing) => {
                if polled {
                    self.log_untracked_changes(&listing);
                }
                let present: BTreeSet<&str> = listing.iter().map(|l| l.serial.as_str()).collect();
                // Interrogate at once the phones that just became reachable;
                // other changes (a phone going offline or away) need no round.
                let was_device: BTreeSet<&str> = self
                    .listing
                    .iter()
                    .flatten()
                    .filter(|l| l.state == Link::Device)
                    .map(|l| l.serial.as_str())
                    .collect();
                let newly_online = listing
                    .iter()
                    .any(|l| l.state == Link::Device && !was_device.contains(l.serial.as_str()));
                let rebooting = &self.rebooting;
                self.rounds
                    .retain(|s, _| present.contains(s.as_str()) || rebooting.contains(s));
                self.protocols
                    .retain(|(s, _), _| present.contains(s.as_str()));
                let now = tokio::time::Instant::now();
                let mut offline_since = BTreeMap::new();
                for l in listing.iter().filter(|l| l.state == Link::Offline) {
                    let since = self.offline_since.get(&l.serial).copied().unwrap_or(now);
                    offline_since.insert(l.serial.clone(), since);
                }
                self.offline_since = offline_since;
                self.listing = Some(listing);
                self.publish(false);
                if newly_online {
                    self.want_round();
                }
            }
            Err(e) => {
                self.ctx
                    .metrics
                    .interrogation_errors_total
                    .inc(InterrogationErrorKind::Parse);
                log::warn!("cannot read the adb server's device list: {e}");
            }
        }
    }

    /// Follows the adb server's answer to a round's probe; kills it after
    /// [`SERVER_SILENT_ROUNDS`] silent rounds in a row, and again after as many more.
    pub(super) fn server_probed(&mut self, answered: Result<(), String>, took: Duration) {
        match answered {
            Ok(()) => {
                if let Some(s) = self.server_silent.take() {
                    log::info!(
                        "the adb server answers again, after {} silent rounds",
                        s.rounds
                    );
                }
            }
            Err(e) => {
                let began = tokio::time::Instant::now() - took;
                let s = self.server_silent.get_or_insert_with(|| {
                    log::warn!("the adb server does not answer: {e}");
                    Silence {
                        rounds: 0,
                        since: began,
                        first: e.clone(),
                    }
                });
                s.rounds += 1;
                if s.rounds.is_multiple_of(SERVER_SILENT_ROUNDS) {
                    self.android.kill_server(format!(
                        "has not answered for {:.1}s ({} rounds in a row; last: {e})",
                        s.since.elapsed().as_secs_f64(),
                        s.rounds
                    ));
                }
            }
        }
    }

    /// Logs each phone whose state in a list asked once is not what the tracker said.
    fn log_untracked_changes(&self, polled: &[Listed]) {
        let tracked = self.listing.as_deref().unwrap_or_default();
        for line in android::untracked_changes(tracked, polled) {
            log::info!("{line}");
        }
    }
}
