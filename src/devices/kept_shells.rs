//! The Android phones' shells kept open between rounds (`client::Session`): each
//! phone's round script goes in on its shell's stdin instead of a new connection, a
//! transport switch and a new shell on the phone, which were most of a round's CPU.
//!
//! A shell is taken out for its phone's round and put back only whole (the round ended
//! on its line); one the phone or the server closed since is noticed before use and
//! replaced, and so is one a minute old, so that a phone that can no longer start a
//! shell, as each task does, is found within a minute. Shells of phones no longer
//! online are closed at the next round's start ([`Shells::start_round`]), so a phone
//! that left holds no socket.
//!
//! All shells of a round are read at one moment, the longest of their waits after the
//! round's start, on one kernel timer (`clock::Alarm`): the round ends with its slowest
//! phone anyway, and a read per phone was a wake-up per phone.
//!
//! Phones without shell v2 (Android 6 and older) have no stdin stream of their own:
//! each of their rounds opens a connection of its own (`Client::shell_until`).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use tokio::time::Instant;

use crate::devices::adb::client::{Client, Error, Partial, Session};
use crate::devices::parse::batch;
use crate::runtime::clock::Alarm;

/// The kept-open shells, by serial, and when this round reads them.
#[derive(Default)]
pub struct Shells {
    sessions: Mutex<HashMap<String, Session>>,
    /// When the round that started last reads its shells' output: made at the first
    /// round (in the runtime, which it needs); unset when no shell has run a round yet
    /// (each is then read as soon as it is written to).
    read: OnceLock<Alarm>,
}

impl Shells {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A round starts for the phones in `online`: the shells of the others are closed,
    /// and the round's read moment is set from the kept shells' waits.
    pub fn start_round(&self, online: &[&str]) {
        let mut kept = self.lock();
        kept.retain(|serial, _| online.contains(&serial.as_str()));
        let longest = kept.values().filter_map(Session::wait).max();
        let read = self.read.get_or_init(Alarm::new);
        read.set(longest.map(|wait| Instant::now() + wait));
    }

    /// Writes `input` (`batch::session_input`) to `serial`'s kept-open shell, opening
    /// one first when it has none or the one it had has ended; whatever came before
    /// `until` counts, as for `Client::shell_until`.
    pub async fn round(
        &self,
        client: &Client,
        serial: &str,
        input: &str,
        until: Instant,
    ) -> Result<Partial, Error> {
        let kept = self.lock().remove(serial);
        let now = Instant::now();
        let session = match kept.map(|mut s| (s.usable(now), s)) {
            Some((true, s)) => s,
            _ => client.open_session(serial).await?,
        };
        let (ran, back) = session
            .run(input, batch::DONE, self.read.get(), until)
            .await;
        if let Some(s) = back {
            self.lock().insert(serial.to_string(), s);
        }
        ran
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::devices::adb::client::fake::{packet, serve};

    fn answer(_: &str) -> Option<Vec<u8>> {
        Some(packet(1, format!("out\n{}", batch::DONE).as_bytes()))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn shells_are_kept_read_at_the_longest_wait_and_closed_when_their_phone_left() {
        let fake = serve(answer, 2).await;
        let client = Client::new(fake.addr, Duration::from_secs(5));
        let shells = Shells::default();
        let until = || Instant::now() + Duration::from_secs(5);
        // No shell has run a round: nothing to wait for, each is read as it is written.
        shells.start_round(&["A", "B"]);
        assert_eq!(shells.read.get().and_then(Alarm::at), None);
        for serial in ["A", "B"] {
            let ran = shells.round(&client, serial, "x\n", until()).await;
            assert_eq!(ran.unwrap().output.stdout, "out\n");
        }
        assert_eq!(fake.opened(), 2);

        // B has left: its shell is closed; A's round is read at the longest kept wait.
        let longest = shells
            .lock()
            .values()
            .filter_map(Session::wait)
            .max()
            .unwrap();
        let before = Instant::now();
        shells.start_round(&["A"]);
        let at = shells.read.get().and_then(Alarm::at).unwrap();
        assert!(at >= before + longest && at <= Instant::now() + longest);
        assert_eq!(fake.closed(1).await, 1, "B's shell is closed");
        let ran = shells.round(&client, "A", "x\n", until()).await;
        assert_eq!(ran.unwrap().output.stdout, "out\n");
        assert!(Instant::now() >= at, "read at the round's moment");
        assert_eq!(fake.opened(), 2, "A's shell served again");

        // No phone online: every shell is closed.
        shells.start_round(&[]);
        assert_eq!(fake.closed(2).await, 2);
    }
}
