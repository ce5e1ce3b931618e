//! The one shutdown signal every loop selects on.
//!
//! SIGTERM and SIGINT are counted, not handled in place: the first asks for a graceful
//! stop (a bot running a task gets `--drain-limit` to finish it, any other child
//! `--grace`), each further one moves a stop on to its next, harder step. Components
//! hold a [`Shutdown`] and await [`Shutdown::requested`] or [`Shutdown::beyond`].

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

    /// Resolves once more than `n` requests have arrived: the next signal after a
    /// stop's step began (that step having seen `n`).
    pub async fn beyond(&mut self, n: u32) {
        self.at_least(n.saturating_add(1)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn first_request_then_each_further_one() {
        let (trigger, mut shutdown) = channel();
        assert!(!shutdown.is_requested());
        trigger.fire();
        shutdown.requested().await;
        assert_eq!(shutdown.count(), 1);
        trigger.fire();
        shutdown.beyond(1).await;
        assert_eq!(shutdown.count(), 2);
        let third = tokio::time::timeout(std::time::Duration::from_millis(20), shutdown.beyond(2));
        assert!(third.await.is_err(), "a third request had not come");
        trigger.fire();
        shutdown.beyond(2).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dropped_trigger_never_hangs_a_waiter() {
        let (trigger, mut shutdown) = channel();
        drop(trigger);
        shutdown.beyond(5).await;
    }
}
