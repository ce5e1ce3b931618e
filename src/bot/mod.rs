//! The Swarming bot: its OAuth token (`token_fetch`, into `state::token`), the checked download of
//! `swarming_bot.zip` (`bot_zip`), the supervised `python3 swarming_bot.zip start_bot`
//! (`supervisor`), and the two applets the bot runs as host commands: `sudo` (`shim`,
//! which kills the bot) and `/bin/df` (`df`). The hook script it is given is
//! `bot_config.py`, beside them.

pub mod bot_zip;
pub mod bots;
pub mod df;
pub mod fleet;
pub mod shim;
pub mod supervisor;
pub mod token_fetch;
pub mod zip_check;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The slice of the configuration the bots' side reads (the supervisor and, with
/// `--bots per-device`, the fleet's manager).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `--swarming-server`; without one no bot starts.
    pub swarming_server: Option<String>,
    /// The Pi's id: its one bot's, the stem of the phones' bots'.
    pub bot_id: String,
    pub bot_dir: PathBuf,
    pub python: PathBuf,
    pub ca_bundle: PathBuf,
    /// Given to the bot, so that its hooks find ours.
    pub hook_addr: SocketAddr,
    pub grace: Duration,
    pub drain_limit: Duration,
    pub bot_silence_limit: Duration,
    pub max_bots: usize,
    pub gone_bot_grace: Duration,
}
