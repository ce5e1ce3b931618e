//! The Swarming bot: its OAuth token (`token`, `token_fetch`), the checked download of
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
