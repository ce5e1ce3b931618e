//! Which bot a hook call comes from. With `--bots one` every call is the Pi's one bot;
//! with `--bots per-device` the hook script names its bot in the [`BOT_HEADER`] header
//! and the call is answered for that bot's phone alone. A per-device call that names no
//! bot, or one that does not run here, is refused with the reason (the script turns it
//! into a quarantine), never answered for the whole Pi.

use std::sync::Arc;

use crate::config::BotsMode;
use crate::state::{BotStatusCell, HookCalls, PerDeviceBots};

/// The header in which `bot_config.py` sends its bot's id.
pub const BOT_HEADER: &str = "X-Swarming-Bot-Id";

/// The bot a call is answered for.
pub enum Caller {
    /// `--bots one`: the Pi's bot, with every phone.
    Pi,
    /// `--bots per-device`: the bot of one phone.
    Phone {
        id: String,
        serial: String,
        status: Arc<BotStatusCell>,
        calls: Arc<HookCalls>,
    },
}

/// The caller of a call that named `named` (the header's value, if any).
pub fn resolve(
    mode: BotsMode,
    fleet: &PerDeviceBots,
    named: Option<&str>,
) -> Result<Caller, String> {
    if mode == BotsMode::One {
        return Ok(Caller::Pi);
    }
    let Some(id) = named else {
        return Err(format!(
            "--bots per-device: this call names no bot; the hook script sends its bot id in {BOT_HEADER} (an old copy of bot_config.py?)"
        ));
    };
    match fleet.bot(id) {
        Some(bot) => Ok(Caller::Phone {
            id: id.to_string(),
            serial: bot.serial,
            status: bot.status,
            calls: bot.calls,
        }),
        None => {
            let ids: Vec<String> = fleet.bots().into_keys().collect();
            Err(format!(
                "no bot {id} runs here; the bots of this Pi are: {}",
                if ids.is_empty() {
                    "none".to_string()
                } else {
                    ids.join(", ")
                }
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::PerDeviceBot;
    use std::collections::BTreeMap;

    fn fleet() -> PerDeviceBots {
        let f = PerDeviceBots::default();
        let bot = PerDeviceBot {
            serial: "127.0.0.1:5555".into(),
            status: Arc::default(),
            calls: Arc::default(),
        };
        f.set(
            BTreeMap::from([("pi--127.0.0.1-5555".to_string(), bot)]),
            BTreeMap::new(),
        );
        f
    }

    #[test]
    fn one_bot_answers_for_the_pi_whatever_the_header() {
        let f = fleet();
        assert!(matches!(resolve(BotsMode::One, &f, None), Ok(Caller::Pi)));
        assert!(matches!(
            resolve(BotsMode::One, &f, Some("x")),
            Ok(Caller::Pi)
        ));
    }

    #[test]
    fn per_device_finds_the_phone_of_the_named_bot() {
        let Ok(Caller::Phone { id, serial, .. }) =
            resolve(BotsMode::PerDevice, &fleet(), Some("pi--127.0.0.1-5555"))
        else {
            panic!("not found")
        };
        assert_eq!(
            (id.as_str(), serial.as_str()),
            ("pi--127.0.0.1-5555", "127.0.0.1:5555")
        );
    }

    #[test]
    fn per_device_refuses_an_anonymous_or_unknown_bot() {
        let Err(why) = resolve(BotsMode::PerDevice, &fleet(), None) else {
            panic!("an anonymous call was answered")
        };
        assert!(why.contains("X-Swarming-Bot-Id"), "{why}");
        let Err(why) = resolve(BotsMode::PerDevice, &fleet(), Some("pi--gone")) else {
            panic!("an unknown bot was answered")
        };
        assert_eq!(
            why,
            "no bot pi--gone runs here; the bots of this Pi are: pi--127.0.0.1-5555"
        );
    }
}
