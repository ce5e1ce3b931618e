//! Trying again after a failure: the wait of a [`Backoff`] that shutdown cuts short, the
//! one log line that says when the next attempt comes, and blocking work moved off the
//! runtime. Used by the token refresher, the bot zip, the bot directory's preparation
//! and the adb device-list tracker.

use std::fmt::Display;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::runtime::backoff::Backoff;
use crate::runtime::shutdown::Shutdown;

/// Sleeps; true when shutdown came first.
pub async fn sleep_or_shutdown(d: Duration, shutdown: &mut Shutdown) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.requested() => true,
    }
}

/// Runs `f` on a detached thread. Detached on purpose: the runtime never waits for it, so
/// a request stuck until its timeout cannot delay shutdown.
pub fn run_detached<T, F>(name: &str, f: F) -> std::io::Result<oneshot::Receiver<T>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let _ = tx.send(f());
        })?;
    Ok(rx)
}

/// The attempts of one thing that is tried until it works: a [`Backoff`] between
/// failures, back to its first delay after a success.
pub struct Retry {
    backoff: Backoff,
}

impl Retry {
    /// Jittered, so that a rack of Pis does not retry in step.
    pub fn new(base: Duration, cap: Duration) -> Retry {
        Retry {
            backoff: Backoff::with_entropy(base, cap),
        }
    }

    /// The token refresher, the bot zip and the bot directory: 1 s doubling to 5 minutes.
    pub fn slow() -> Retry {
        Retry::new(Duration::from_secs(1), Duration::from_secs(300))
    }

    pub fn succeeded(&mut self) {
        self.backoff.reset();
    }

    /// Waits out the next delay; true when shutdown came first.
    pub async fn wait(&mut self, shutdown: &mut Shutdown) -> bool {
        sleep_or_shutdown(self.backoff.next_delay(), shutdown).await
    }

    /// Logs `{failure}; retrying in N s` under the caller's `target` (its
    /// `module_path!()`, so the line names the module that failed), then waits out the
    /// next delay; true when shutdown came first.
    pub async fn failed(
        &mut self,
        target: &str,
        level: log::Level,
        failure: impl Display,
        shutdown: &mut Shutdown,
    ) -> bool {
        let delay = self.backoff.next_delay();
        log::log!(target: target, level, "{failure}; retrying in {:.1}s", delay.as_secs_f64());
        sleep_or_shutdown(delay, shutdown).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::shutdown;

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn delays_double_and_a_success_starts_over() {
        let (_trigger, mut shutdown) = shutdown::channel();
        let mut retry = Retry::new(Duration::from_secs(1), Duration::from_secs(4));
        let mut waited = Vec::new();
        for i in 0..5 {
            if i == 3 {
                retry.succeeded();
            }
            let t = tokio::time::Instant::now();
            assert!(!retry.wait(&mut shutdown).await);
            waited.push(t.elapsed().as_secs_f64());
        }
        let nominal = [1.0, 2.0, 4.0, 1.0, 2.0];
        for (w, n) in waited.iter().zip(nominal) {
            assert!(*w >= n / 2.0 && *w <= n, "{waited:?}");
        }
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn shutdown_cuts_the_wait_short() {
        let (trigger, mut shutdown) = shutdown::channel();
        let mut retry = Retry::slow();
        trigger.fire();
        let t = tokio::time::Instant::now();
        assert!(
            retry
                .failed("test", log::Level::Warn, "x", &mut shutdown)
                .await
        );
        assert_eq!(t.elapsed(), Duration::ZERO);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn detached_work_answers_through_its_channel() {
        let rx = run_detached("test", || 6 * 7).unwrap();
        assert_eq!(rx.await.unwrap(), 42);
    }
}
