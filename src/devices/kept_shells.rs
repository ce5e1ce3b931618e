//! The Android phones' shells kept open between rounds (`client::Session`): each
//! phone's round script goes in on its shell's stdin instead of a new connection, a
//! transport switch and a new shell on the phone, which were most of a round's CPU.
//!
//! A shell is taken out for its phone's round and put back only whole (the round ended
//! on its line); one the phone or the server closed since is noticed before use and
//! replaced, and so is one a minute old, so that a phone that can no longer start a
//! shell, as each task does, is found within a minute. Shells of phones no longer
//! online are closed at the next round's start ([`Shells::keep_only`]), so a phone that
//! left holds no socket.
//! Phones without shell v2 (Android 6 and older) have no stdin stream of their own:
//! each of their rounds opens a connection of its own (`Client::shell_until`).

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::time::Instant;

use crate::devices::adb::client::{Client, Error, Partial, Session};
use crate::devices::parse::batch;

/// The kept-open shells, by serial.
#[derive(Default)]
pub struct Shells(Mutex<HashMap<String, Session>>);

impl Shells {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes the shells of the phones not in `online`.
    pub fn keep_only(&self, online: &[&str]) {
        self.lock()
            .retain(|serial, _| online.contains(&serial.as_str()));
    }

    /// Runs `script` (`batch::script`) on `serial`'s kept-open shell, opening one
    /// first when it has none or the one it had has ended; whatever came before
    /// `until` counts, as for `Client::shell_until`.
    pub async fn round(
        &self,
        client: &Client,
        serial: &str,
        script: &str,
        until: Instant,
    ) -> Result<Partial, Error> {
        let kept = self.lock().remove(serial);
        let now = Instant::now();
        let session = match kept.map(|mut s| (s.usable(now), s)) {
            Some((true, s)) => s,
            _ => client.open_session(serial).await?,
        };
        let input = batch::session_input(script);
        let (ran, back) = session.run(&input, batch::DONE, until).await;
        if let Some(s) = back {
            self.lock().insert(serial.to_string(), s);
        }
        ran
    }
}
