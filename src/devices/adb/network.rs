//! The network phones (`adb connect host:port`) the monitor keeps connected.
//!
//! Why: a USB phone comes back by itself when its link does; a network phone only when
//! someone connects it. The adb server forgets one when its server restarts, and when a
//! reconnect of the recovery ladder finds it down, so without this a phone that was
//! away for a while stays "gone missing" for ever although it answers again. Every
//! network phone the monitor has seen listed therefore stays wanted: while it is not
//! listed it is connected again, at most once per round and never more often than
//! every [`MIN_INTERVAL`], backing off to two rounds while it stays away.
//!
//! Pure: the plan of which phone to connect when; `android::track` does the connects.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

/// The adb server is asked to connect one phone at most this often: a connect to a
/// phone that is down costs the server a TCP timeout.
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);

/// The serials of `text`'s phones that are reached over the network: `host:port`, as
/// `adb connect` names them (USB serials have no port).
pub fn network_serials(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|s| {
            s.rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        })
        .map(str::to_string)
        .collect()
}

/// One wanted phone that is not listed: when it may be connected next, and the wait
/// after that attempt.
#[derive(Debug, Clone, Copy)]
struct Away {
    next: Instant,
    delay: Duration,
    attempts: u32,
}

/// Why a phone is to be connected, for the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// A new adb server, which knows only the USB phones.
    ServerRestarted,
    /// It left the list of a running server; `attempts` counts from 1.
    Away { attempts: u32 },
}

/// Every network phone seen listed, and the plan for those not listed now.
#[derive(Debug)]
pub struct NetworkPhones {
    listed: BTreeSet<String>,
    away: BTreeMap<String, Away>,
    /// The shortest wait between two attempts for one phone, and the longest.
    every: Duration,
    most: Duration,
}

impl NetworkPhones {
    /// The plan for rounds of `round`: one attempt per phone per round, never under
    /// [`MIN_INTERVAL`], backing off to two rounds, so that a phone that comes back is
    /// connected within two rounds and answers in the third.
    pub fn new(round: Duration) -> NetworkPhones {
        let every = round.max(MIN_INTERVAL);
        NetworkPhones {
            listed: BTreeSet::new(),
            away: BTreeMap::new(),
            every,
            most: (round * 2).max(every),
        }
    }

    /// Takes a device list at `now`, the first of a new server when `first`; returns
    /// the phones to connect at once: on a new server, every wanted phone it does not
    /// list (losing them was nobody's decision). A phone that leaves the list of a
    /// running server is connected again after one interval: the server itself may be
    /// reconnecting it.
    pub fn follow(&mut self, text: &str, first: bool, now: Instant) -> Vec<(String, Why)> {
        let listed = network_serials(text);
        for serial in &listed {
            self.away.remove(serial);
        }
        for serial in self.listed.difference(&listed) {
            self.away.entry(serial.clone()).or_insert(Away {
                next: now + self.every,
                delay: self.every,
                attempts: 0,
            });
        }
        self.listed = listed;
        if !first {
            return Vec::new();
        }
        self.away
            .iter_mut()
            .map(|(serial, away)| {
                away.next = now + self.every;
                (serial.clone(), Why::ServerRestarted)
            })
            .collect()
    }

    /// When the next attempt is due, if a phone is away.
    pub fn next_due(&self) -> Option<Instant> {
        self.away.values().map(|away| away.next).min()
    }

    /// The phones not listed whose next attempt is due at `now`; each attempt puts the
    /// next one further off, up to the longest wait.
    pub fn due(&mut self, now: Instant) -> Vec<(String, Why)> {
        let most = self.most;
        self.away
            .iter_mut()
            .filter(|(_, away)| away.next <= now)
            .map(|(serial, away)| {
                away.attempts += 1;
                away.next = now + away.delay;
                away.delay = (away.delay * 2).min(most);
                (
                    serial.clone(),
                    Why::Away {
                        attempts: away.attempts,
                    },
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: &str = "10.0.0.5:5555\tdevice\nSERIAL1\tdevice\n";
    const USB_ONLY: &str = "SERIAL1\tdevice\n";

    fn serials(plan: &[(String, Why)]) -> Vec<&str> {
        plan.iter().map(|(s, _)| s.as_str()).collect()
    }

    #[test]
    fn network_phones_are_the_host_port_serials() {
        let text = "127.0.0.1:5555         device transport_id:1\n\
                    0A1B2C3D               device usb:1-1.4 transport_id:2\n\
                    emulator-5554          offline transport_id:3\n\
                    pixel.lab:40001        offline transport_id:4\n\
                    odd:serial             device transport_id:5\n";
        let got: Vec<String> = network_serials(text).into_iter().collect();
        assert_eq!(got, ["127.0.0.1:5555", "pixel.lab:40001"]);
    }

    #[test]
    fn a_new_server_is_asked_at_once_for_every_phone_it_does_not_list() {
        let t0 = Instant::now();
        let mut n = NetworkPhones::new(Duration::from_secs(30));
        assert!(n.follow(BOTH, true, t0).is_empty());
        let plan = n.follow(USB_ONLY, true, t0);
        assert_eq!(plan, [("10.0.0.5:5555".to_string(), Why::ServerRestarted)]);
        // That server goes away before the phone is in: the next one is asked again.
        assert_eq!(serials(&n.follow("", true, t0)), ["10.0.0.5:5555"]);
        assert!(n.follow(BOTH, false, t0).is_empty());
        assert!(n.due(t0 + Duration::from_secs(3600)).is_empty());
    }

    #[test]
    fn a_timer_is_wanted_only_while_a_phone_is_away_and_for_its_next_attempt() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut n = NetworkPhones::new(s(30));
        n.follow(BOTH, false, t0);
        assert_eq!(n.next_due(), None, "every phone is listed");
        n.follow(USB_ONLY, false, t0);
        assert_eq!(n.next_due(), Some(t0 + s(30)));
        n.due(t0 + s(30));
        assert_eq!(n.next_due(), Some(t0 + s(60)));
        n.follow(BOTH, false, t0 + s(40));
        assert_eq!(n.next_due(), None, "back in the list");
    }

    #[test]
    fn a_phone_that_leaves_the_list_is_connected_again_once_per_round_backing_off_to_two() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut n = NetworkPhones::new(s(30));
        n.follow(BOTH, false, t0);
        // The ladder's reconnect drops it from a running server's list.
        assert!(n.follow(USB_ONLY, false, t0).is_empty());
        assert!(n.due(t0 + s(29)).is_empty());
        let first = n.due(t0 + s(30));
        assert_eq!(
            first,
            [("10.0.0.5:5555".to_string(), Why::Away { attempts: 1 })]
        );
        // Not again in the same round; then 30 s, then 60 s, and 60 s from then on.
        assert!(n.due(t0 + s(59)).is_empty());
        assert_eq!(serials(&n.due(t0 + s(60))), ["10.0.0.5:5555"]);
        assert!(n.due(t0 + s(119)).is_empty());
        assert_eq!(serials(&n.due(t0 + s(120))), ["10.0.0.5:5555"]);
        assert!(n.due(t0 + s(179)).is_empty());
        assert_eq!(serials(&n.due(t0 + s(180))), ["10.0.0.5:5555"]);
        // Listed again: nothing more to do, and the next absence starts from one round.
        assert!(n.follow(BOTH, false, t0 + s(200)).is_empty());
        assert!(n.due(t0 + s(1000)).is_empty());
        n.follow(USB_ONLY, false, t0 + s(1000));
        assert_eq!(
            n.due(t0 + s(1030)),
            [("10.0.0.5:5555".to_string(), Why::Away { attempts: 1 })]
        );
    }

    #[test]
    fn short_rounds_never_ask_more_often_than_the_minimum_interval() {
        let t0 = Instant::now();
        let mut n = NetworkPhones::new(Duration::from_secs(2));
        n.follow(BOTH, false, t0);
        n.follow(USB_ONLY, false, t0);
        let mut attempts = Vec::new();
        for second in 0..=60 {
            let at = t0 + Duration::from_secs(second);
            if !n.due(at).is_empty() {
                attempts.push(second);
            }
        }
        assert_eq!(attempts, [10, 20, 30, 40, 50, 60]);
    }

    #[test]
    fn usb_phones_are_never_connected() {
        let t0 = Instant::now();
        let mut n = NetworkPhones::new(Duration::from_secs(30));
        n.follow(USB_ONLY, false, t0);
        n.follow("", false, t0);
        assert!(n.follow("", true, t0).is_empty());
        assert!(n.due(t0 + Duration::from_secs(3600)).is_empty());
    }
}
