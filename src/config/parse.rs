//! The command line's walk: subcommands, `--flag VALUE` and `--flag=VALUE`, repeats and
//! strays, then every row of the flag table filled in from the arguments, the
//! environment twins or the row's default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::flags::{self, Fallback, FLAGS};
use super::values::Context;
use super::{usage, BotsMode, Command, Config, DeviceKinds, KubeMode, UsageError};

/// Parses the arguments (without argv\[0\]) and the environment twins into a [`Command`].
///
/// `env` looks up an environment variable; `hostname` is the default bot id.
pub fn parse(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
    hostname: &str,
) -> Result<Command, UsageError> {
    if args.first().map(String::as_str) == Some("bot-config") {
        if let Some(extra) = args.get(1) {
            return Err(usage(
                "bot-config",
                format!("takes no arguments, got {extra:?}"),
            ));
        }
        return Ok(Command::BotConfig);
    }

    // `devices` takes the flags of a normal run, so the pod's environment applies.
    let devices = args.first().map(String::as_str) == Some("devices");
    let args = if devices { &args[1..] } else { args };

    let values = given_values(args)?;
    if values.contains_key("--help") {
        return Ok(Command::Help);
    }
    if values.contains_key("--version") {
        return Ok(Command::Version);
    }

    let set = |name: &str| env(name).filter(|v| !v.is_empty());
    let context = Context {
        hostname,
        no_bot: values.contains_key("--no-bot"),
        kube_host: set("KUBERNETES_SERVICE_HOST"),
        kube_port: set("KUBERNETES_SERVICE_PORT"),
        node_name: set("NODE_NAME"),
    };
    let mut config = unfilled();
    for flag in FLAGS {
        let raw = values
            .get(flag.name)
            .cloned()
            .or_else(|| flag.env.and_then(env).filter(|v| !v.is_empty()))
            .or_else(|| match flag.default {
                Fallback::Literal(text) => Some(text.to_string()),
                Fallback::Implied(_) | Fallback::Unshown => None,
            });
        flag.kind
            .fill(flag.name, raw.as_deref(), &context, &mut config)?;
    }

    let check_config = values.contains_key("--check-config");
    if devices {
        if check_config {
            return Err(usage("--check-config", "cannot be combined with devices"));
        }
        Ok(Command::Devices(Box::new(config)))
    } else if check_config {
        Ok(Command::CheckConfig(Box::new(config)))
    } else {
        Ok(Command::Run(Box::new(config)))
    }
}

/// The flags on the command line with their values, empty for a switch.
fn given_values(args: &[String]) -> Result<BTreeMap<&'static str, String>, UsageError> {
    let mut values = BTreeMap::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let flag = flags::find(name).ok_or_else(|| {
            if name.starts_with('-') {
                usage(name, "unknown flag (see --help)")
            } else {
                usage("", format!("unexpected argument {name:?} (see --help)"))
            }
        })?;
        let value = match (flag.takes_value(), inline) {
            (false, Some(_)) => return Err(usage(flag.name, "takes no value")),
            (false, None) => String::new(),
            (true, Some(v)) => v,
            (true, None) => {
                let v = args.get(i).ok_or_else(|| {
                    usage(flag.name, format!("expects a value ({})", flag.metavar))
                })?;
                i += 1;
                v.clone()
            }
        };
        if values.insert(flag.name, value).is_some() {
            return Err(usage(flag.name, "given more than once"));
        }
    }
    Ok(values)
}

/// The configuration before the rows fill it in: every field is overwritten by its row
/// in [`FLAGS`], so a new field needs a row there, or it keeps this placeholder.
fn unfilled() -> Config {
    Config {
        swarming_server: None,
        bot_id: String::new(),
        bot_dir: PathBuf::new(),
        python: PathBuf::new(),
        token_config: PathBuf::new(),
        ca_bundle: PathBuf::new(),
        hook_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        metrics_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        adb: PathBuf::new(),
        adb_server: SocketAddr::from(([0, 0, 0, 0], 0)),
        devices: DeviceKinds {
            android: false,
            ios: false,
        },
        bots: BotsMode::One,
        gone_bot_grace: Duration::ZERO,
        bot_silence_limit: Duration::ZERO,
        max_bots: 0,
        interrogate_every: Duration::ZERO,
        grace: Duration::ZERO,
        drain_limit: Duration::ZERO,
        no_bot: false,
        settings: None,
        no_reboot_after_task: false,
        force_quarantine_file: PathBuf::new(),
        idevice_dir: PathBuf::new(),
        usbmuxd: PathBuf::new(),
        min_battery_percent: 0.0,
        max_temperature_celsius: 0.0,
        temperature_hysteresis: 0.0,
        battery_hysteresis: 0.0,
        charge_stall_after: Duration::ZERO,
        min_data_free_bytes: 0,
        cooldown_reboot_after: Duration::ZERO,
        usb_reset: false,
        usb_power_cycle: false,
        power_off: Duration::ZERO,
        max_device_uptime: Duration::ZERO,
        kubernetes: KubeMode::Off,
        kube_api: None,
        node_name: None,
        kube_service_account_dir: PathBuf::new(),
    }
}
