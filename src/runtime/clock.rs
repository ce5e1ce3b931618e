//! The runtime's kernel timers (`timerfd`), watched by its epoll: the round clock
//! ([`Ticker`]) and the moment a round reads its phones ([`Alarm`]).
//!
//! Why not tokio's timers: tokio's timer wheel files a deadline more than 64 ms away on
//! a coarser level and wakes once to move it down a level and once more to fire it, and
//! each task's sleep registers a timer of its own, which signals the runtime's driver
//! (an eventfd write) whenever it falls before the driver's next planned wake-up, as a
//! round's first timers do. A timerfd wakes the process exactly once, when it is due,
//! and on a Pi that sits idle between rounds, wake-ups are most of what an idle process
//! costs.
//!
//! Must not: be used for deadlines (those stay tokio timers, which are dropped before
//! they fire in the normal case and so cost no wake-up), or under tokio's paused clock
//! (the kernel's clock does not pause).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::time::Instant;

/// Ticks at once, then every period. Periods missed while the owner was busy collapse
/// into one tick, and the next keeps the original cadence.
pub struct Ticker {
    fd: AsyncFd<OwnedFd>,
    period: Duration,
    failed: bool,
}

impl Ticker {
    /// Needs a runtime with I/O enabled.
    pub fn new(period: Duration) -> io::Result<Ticker> {
        let fd = timerfd()?;
        // The first expiry a nanosecond from now: "at once", since zero disarms.
        arm(&fd, Duration::from_nanos(1), period)?;
        Ok(Ticker {
            fd,
            period,
            failed: false,
        })
    }

    /// Waits for the next tick. Should the kernel timer ever fail, it says so once and
    /// ticks on a plain sleep of one period from then on.
    pub async fn tick(&mut self) {
        if !self.failed {
            match self.wait().await {
                Ok(()) => return,
                Err(e) => {
                    log::error!("the round clock (timerfd) failed: {e}; ticking on a sleep");
                    self.failed = true;
                }
            }
        }
        tokio::time::sleep(self.period).await;
    }

    async fn wait(&mut self) -> io::Result<()> {
        loop {
            let mut ready = self.fd.readable().await?;
            let read = ready.try_io(|fd| {
                // The count of expiries since the last read; any count is one tick.
                let mut expiries = [0u8; 8];
                // SAFETY: the buffer is valid for 8 bytes, the size a timerfd reads.
                let n = unsafe { libc::read(fd.as_raw_fd(), expiries.as_mut_ptr().cast(), 8) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match read {
                Ok(result) => {
                    // The read took every expiry: the timer is not readable until the
                    // next, and saying so spares a read that would only find that out.
                    ready.clear_ready();
                    return result;
                }
                // Spurious readiness: wait again.
                Err(_would_block) => continue,
            }
        }
    }
}

/// One moment that many tasks wait for, set anew each round: a round reads all its
/// phones' shells at once, one wake-up for all of them.
///
/// Should the kernel timer fail, it says so once and the waits are tokio sleeps from then
/// on.
pub struct Alarm {
    fd: Option<AsyncFd<OwnedFd>>,
    at: Mutex<Option<Instant>>,
    failed: AtomicBool,
}

impl Alarm {
    /// Unset. Needs a runtime with I/O enabled.
    pub fn new() -> Alarm {
        let alarm = Alarm {
            fd: None,
            at: Mutex::new(None),
            failed: AtomicBool::new(false),
        };
        match timerfd() {
            Ok(fd) => Alarm {
                fd: Some(fd),
                ..alarm
            },
            Err(e) => {
                alarm.fail(e);
                alarm
            }
        }
    }

    /// The moment set last, if any.
    pub fn at(&self) -> Option<Instant> {
        *self.at.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the moment (`None` unsets it), in place of the one before: a task still
    /// waiting for the one before is woken at this one.
    pub fn set(&self, at: Option<Instant>) {
        *self.at.lock().unwrap_or_else(|p| p.into_inner()) = at;
        let Some(fd) = self.live() else { return };
        // Relative to a reading of the clock taken before the kernel's: the kernel's
        // expiry is never before `at`. Zero disarms, so an `at` now past is a nanosecond.
        let first = at.map_or(Duration::ZERO, |at| {
            at.saturating_duration_since(Instant::now())
                .max(Duration::from_nanos(1))
        });
        if let Err(e) = arm(fd, first, Duration::ZERO) {
            self.fail(e);
        }
    }

    /// Returns at `at` or after it: on the kernel timer when `at` is the moment set,
    /// else on a tokio sleep.
    pub async fn until(&self, at: Instant) {
        let fd = match self.live() {
            Some(fd) if self.at() == Some(at) => fd,
            _ => return tokio::time::sleep_until(at).await,
        };
        while Instant::now() < at {
            match fd.readable().await {
                // Readiness left from an earlier moment (nothing reads an alarm's
                // expiry, so that every waiter sees it): forgotten, and the timer,
                // since re-armed, is waited for.
                Ok(mut ready) if Instant::now() < at => ready.clear_ready(),
                Ok(_) => return,
                Err(e) => {
                    self.fail(e);
                    return tokio::time::sleep_until(at).await;
                }
            }
        }
    }

    fn live(&self) -> Option<&AsyncFd<OwnedFd>> {
        self.fd
            .as_ref()
            .filter(|_| !self.failed.load(Ordering::Relaxed))
    }

    fn fail(&self, e: io::Error) {
        if !self.failed.swap(true, Ordering::Relaxed) {
            log::error!(
                "the round's read alarm (timerfd) failed: {e}; the phones' reads wait on \
                 tokio sleeps from now on (a wake-up more a round)"
            );
        }
    }
}

/// A new monotonic timerfd on the runtime's poll, disarmed.
fn timerfd() -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: plain syscall; the flags are valid for timerfd_create.
    let raw = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: the OwnedFd keeps the descriptor open, and the same, for as long as the
    // AsyncFd that owns it lives.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
        .map_err(|e| io::Error::other(e.to_string()))
}

/// Arms `fd` to expire `first` from now (zero disarms), then every `period` (zero: once).
/// Arming also forgets expiries not yet read.
fn arm(fd: &AsyncFd<OwnedFd>, first: Duration, period: Duration) -> io::Result<()> {
    let spec = libc::itimerspec {
        it_interval: timespec(period),
        it_value: timespec(first),
    };
    // SAFETY: `fd` is a timerfd; `spec` is a valid itimerspec; the old value is not
    // asked for.
    let rc = unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs() as _,
        tv_nsec: d.subsec_nanos() as _,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test(flavor = "current_thread")]
    async fn ticks_at_once_then_every_period() {
        let period = Duration::from_millis(50);
        // Before arming: the periods count from the arming, a little after `start`.
        let start = Instant::now();
        let mut t = Ticker::new(period).unwrap();
        t.tick().await;
        assert!(start.elapsed() < period, "the first tick comes at once");
        for _ in 0..3 {
            t.tick().await;
        }
        assert!(start.elapsed() >= period * 3);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn missed_periods_collapse_into_one_tick() {
        let period = Duration::from_millis(20);
        let mut t = Ticker::new(period).unwrap();
        t.tick().await;
        std::thread::sleep(period * 5);
        let before = Instant::now();
        t.tick().await;
        assert!(
            before.elapsed() < period,
            "the missed periods are one tick now"
        );
    }

    /// This thread's CPU time so far.
    fn cpu() -> Duration {
        // SAFETY: getrusage fills the zeroed struct it is given.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: RUSAGE_THREAD is valid; `usage` is writable.
        assert_eq!(
            unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) },
            0
        );
        let time = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        time(usage.ru_utime) + time(usage.ru_stime)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_alarm_wakes_every_waiter_at_its_moment() {
        let alarm = Alarm::new();
        let at = tokio::time::Instant::now() + Duration::from_millis(50);
        alarm.set(Some(at));
        let wait = || async {
            alarm.until(at).await;
            tokio::time::Instant::now()
        };
        let (a, b, c) = tokio::join!(wait(), wait(), wait());
        assert!(a >= at && b >= at && c >= at);
        assert!(!alarm.failed.load(Ordering::Relaxed));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_alarm_set_anew_waits_for_its_new_moment_without_spinning() {
        let alarm = Alarm::new();
        let first = tokio::time::Instant::now() + Duration::from_millis(10);
        alarm.set(Some(first));
        alarm.until(first).await;
        // The first expiry left the timer's readiness set; the new moment is still
        // waited for, asleep.
        let cpu_before = cpu();
        let next = tokio::time::Instant::now() + Duration::from_millis(300);
        alarm.set(Some(next));
        alarm.until(next).await;
        assert!(tokio::time::Instant::now() >= next);
        let spent = cpu() - cpu_before;
        assert!(spent < Duration::from_millis(100), "{spent:?} on CPU");
        assert!(!alarm.failed.load(Ordering::Relaxed));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_moment_other_than_the_one_set_or_past_is_still_kept() {
        let alarm = Alarm::new();
        let later = tokio::time::Instant::now() + Duration::from_secs(30);
        alarm.set(Some(later));
        // Sooner than the moment set (a deadline cut it): a sleep, not the alarm.
        let sooner = tokio::time::Instant::now() + Duration::from_millis(20);
        alarm.until(sooner).await;
        assert!(tokio::time::Instant::now() >= sooner);
        assert!(tokio::time::Instant::now() < later);
        // A moment already past, and an alarm unset.
        let past = tokio::time::Instant::now() - Duration::from_millis(5);
        alarm.set(Some(past));
        alarm.until(past).await;
        alarm.set(None);
        assert_eq!(alarm.at(), None);
        alarm.until(past).await;
    }
}
