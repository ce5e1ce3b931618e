//! The one shutdown signal every loop selects on.
//!
//! SIGTERM and SIGINT are counted, not handled in place: the first asks for a graceful
//! stop (the bot gets `--grace` seconds), the second skips the wait. Components hold a
//! [`Shutdown`] and await [`Shutdown::requested`] or [`Shutdown::hurried`].

use tokio::sync::watch;

/// Receiving side: cheap to clone.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<u32>);

/// Sending side, owned by the signal loop in `app` (and by tests).
pub struct Trigger(watch::Sender<u32>);

pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(0);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    /// Records one more termination request.
    pub fn fire(&self) {
        self.0.send_modify(|n| *n += 1);
    }
}

impl Shutdown {
    /// How many termination requests have arrived.
    pub fn count(&self) -> u32 {
        *self.0.borrow()
    }

    pub fn is_requested(&self) -> bool {
        self.count() >= 1
    }

    /// Resolves once at least `n` requests have arrived (or the trigger is gone).
    async fn at_least(&mut self, n: u32) {
        // An error means the Trigger was dropped: treat it as a request, never hang.
        let _ = self.0.wait_for(|c| *c >= n).await;
    }

    /// The first request: stop gracefully.
    pub async fn requested(&mut self) {
        self.at_least(1).await
    }

    /// The second request: stop now.
    pub async fn hurried(&mut self) {
        self.at_least(2).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn first_request_then_hurry() {
        let (trigger, mut shutdown) = channel();
        assert!(!shutdown.is_requested());
        trigger.fire();
        shutdown.requested().await;
        assert_eq!(shutdown.count(), 1);
        trigger.fire();
        shutdown.hurried().await;
        assert_eq!(shutdown.count(), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dropped_trigger_never_hangs_a_waiter() {
        let (trigger, mut shutdown) = channel();
        drop(trigger);
        shutdown.hurried().await;
    }
}
