//! The process's plumbing, which knows nothing of bots or phones: the only `waitpid`
//! (`reaper`), finding leftover descendants (`procs`), the counted SIGTERM
//! (`shutdown`), the round clock and the round's read moment (`clock`), backoff with
//! jitter (`backoff`), retrying until shutdown (`retry`), the one way to run a child
//! (`child`), the supervised loop of the bot and the daemons (`supervise`), a helper
//! daemon kept running (`daemon`), the one-line log format (`logging`) and every
//! HTTP(S) agent with the roots it trusts (`https`).

pub mod backoff;
pub mod child;
pub mod clock;
pub mod daemon;
pub mod https;
pub mod logging;
pub mod procs;
pub mod reaper;
pub mod retry;
pub mod shutdown;
pub mod supervise;
