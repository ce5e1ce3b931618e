//! The process's plumbing, which knows nothing of bots or phones: the only `waitpid`
//! (`reaper`), finding leftover descendants (`procs`), the counted SIGTERM (`shutdown`),
//! the round clock (`clock`), backoff with jitter (`backoff`), a helper daemon kept
//! running (`daemon`) and the one-line log format (`logging`).

pub mod backoff;
pub mod clock;
pub mod daemon;
pub mod logging;
pub mod procs;
pub mod reaper;
pub mod shutdown;
