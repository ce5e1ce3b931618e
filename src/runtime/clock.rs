//! The round clock: a kernel periodic timer (`timerfd`) watched by the runtime's epoll.
//!
//! Why not `tokio::time::interval`: tokio's timer wheel files a deadline a second or
//! more away on a coarse level and wakes once to move it down a level and once more to
//! fire it. A timerfd wakes the process exactly once per period, and on a Pi that sits
//! idle between rounds, wake-ups are most of what an idle process costs.
//!
//! Must not: be used for deadlines (those stay tokio timers, which are dropped before
//! they fire in the normal case and so cost nothing).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

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
        let spec = libc::itimerspec {
            it_interval: timespec(period),
            // The first expiry a nanosecond from now: "at once", since zero disarms.
            it_value: libc::timespec {
                tv_sec: 0,
                tv_nsec: 1,
            },
        };
        // SAFETY: `fd` is a timerfd; `spec` is a valid itimerspec; the old value is not
        // asked for.
        let rc = unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the OwnedFd keeps the descriptor open, and the same, for as long as the
        // AsyncFd that owns it lives.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| io::Error::other(e.to_string()))?;
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
                Ok(result) => return result,
                // Spurious readiness: wait again.
                Err(_would_block) => continue,
            }
        }
    }
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
}
