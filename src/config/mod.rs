//! Command-line and environment configuration, parsed in two stages.
//!
//! Stage one (`parse`) turns the raw arguments and the two environment twins into a
//! validated [`Config`], or into a [`UsageError`] that names the flag and what was
//! expected. It is a pure function of its inputs: nothing else in the program reads
//! `std::env` for configuration, so tests pass arguments and an environment map in.
//!
//! Stage two (`swarming_settings::load`) reads the file `--settings` names, once, at
//! start-up (`app`, and `--check-config` in `lib.rs`), and deep-merges it over the bot
//! settings' defaults; a bad file stops the program. It is the only I/O of this folder.
//!
//! Each flag is one row of the table in `flags`; `parse` walks the command line and
//! fills the [`Config`] row by row (`values` checks each value), `help` prints the rows
//! for `--help`, and `describe` prints the filled-in rows for `--check-config`.
//!
//! The components never see [`Config`]: `app` hands each the slice it reads (its
//! `Settings`).
//!
//! We do not use an argument-parsing crate: the design card keeps the dependency list
//! short, and the flag set is small and flat.

mod describe;
mod flags;
mod help;
mod parse;
pub mod swarming_settings;
mod values;

pub use help::help_text;
pub use parse::parse;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What the command line asks the program to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Run the monitor (the normal case).
    Run(Box<Config>),
    /// Parse everything, print the effective configuration and exit.
    CheckConfig(Box<Config>),
    /// Print what the adb server at `adb_server` lists, with a verdict per phone, and exit.
    Devices(Box<Config>),
    Help,
    Version,
    /// Print the hook script that the Swarming server hands to the bot.
    BotConfig,
}

/// How many Swarming bots run: one for the Pi, or one for each phone (`--bots`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BotsMode {
    One,
    PerDevice,
}

/// Whether to use the Kubernetes API (`--kubernetes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeMode {
    /// When in a cluster: the service host is set and the token file exists.
    Auto,
    Off,
}

/// Which kinds of phone to watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceKinds {
    pub android: bool,
    pub ios: bool,
}

/// The validated configuration, passed down to every component.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Base URL of the Swarming server, without a trailing slash. `None` only with `--no-bot`.
    pub swarming_server: Option<String>,
    pub bot_id: String,
    pub bot_dir: PathBuf,
    pub python: PathBuf,
    pub token_config: PathBuf,
    /// The roots trusted for HTTPS (`runtime::https::read_roots`).
    pub ca_bundle: PathBuf,
    pub hook_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub adb: PathBuf,
    pub adb_server: SocketAddr,
    pub devices: DeviceKinds,
    pub bots: BotsMode,
    /// How long a bot whose phone is gone stays up (`--bots per-device`).
    pub gone_bot_grace: Duration,
    /// The most bots at once (`--bots per-device`).
    pub max_bots: usize,
    pub interrogate_every: Duration,
    pub grace: Duration,
    /// At shutdown, how long a bot running a task has to finish it and exit before it
    /// and its task are stopped with `grace`.
    pub drain_limit: Duration,
    /// A running bot that calls no hook this long, outside a task, hangs: it is killed
    /// and started again.
    pub bot_silence_limit: Duration,
    pub no_bot: bool,
    /// A JSON file merged over the default bot settings.
    pub settings: Option<PathBuf>,
    pub no_reboot_after_task: bool,
    /// Where a forced quarantine is requested; defaults to `<bot dir>/../<bot id>.force_quarantine`.
    pub force_quarantine_file: PathBuf,
    pub idevice_dir: PathBuf,
    /// The usbmuxd to run for the iPhones.
    pub usbmuxd: PathBuf,
    /// Battery below this percentage puts the bot in maintenance.
    pub min_battery_percent: f64,
    /// Any real temperature above this (°C) puts the bot in maintenance.
    pub max_temperature_celsius: f64,
    /// A hot phone leaves maintenance only below `max_temperature_celsius` minus this.
    pub temperature_hysteresis: f64,
    /// A low battery leaves maintenance only at `min_battery_percent` plus this.
    pub battery_hysteresis: f64,
    /// A phone on power whose battery has not risen for this long is not charging.
    pub charge_stall_after: Duration,
    /// Less free space than this on a phone's `/data` puts it in maintenance.
    pub min_data_free_bytes: u64,
    /// A phone too hot this long is rebooted once while idle.
    pub cooldown_reboot_after: Duration,
    /// USB reset of a stuck phone as a recovery step.
    pub usb_reset: bool,
    /// Power-cycling a stuck phone's hub port as the last recovery step.
    pub usb_power_cycle: bool,
    /// How long a power cycle keeps the port off.
    pub power_off: Duration,
    /// A phone up for longer than this is rebooted while idle.
    pub max_device_uptime: Duration,
    pub kubernetes: KubeMode,
    /// The API server, `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`;
    /// `None` outside a cluster (the host unset).
    pub kube_api: Option<String>,
    /// The node this pod runs on (`NODE_NAME`, from the downward API).
    pub node_name: Option<String>,
    /// Where the service account's `token`, `ca.crt` and `namespace` are mounted.
    pub kube_service_account_dir: PathBuf,
}

/// A bad command line: the flag concerned and what was expected. Exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError {
    pub flag: String,
    pub problem: String,
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.flag.is_empty() {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "{}: {}", self.flag, self.problem)
        }
    }
}

impl std::error::Error for UsageError {}

fn usage(flag: &str, problem: impl Into<String>) -> UsageError {
    UsageError {
        flag: flag.to_string(),
        problem: problem.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::flags::{Fallback, Kind, FLAGS};
    use super::*;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Command, UsageError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(&args, &|k| env.get(k).cloned(), "pi-7")
    }

    fn config(args: &[&str]) -> Config {
        match run(args, &[]) {
            Ok(Command::Run(c)) => *c,
            other => panic!("expected Run, got {other:?}"),
        }
    }

    #[test]
    fn the_kubernetes_api_and_node_come_from_the_pods_environment() {
        let with = |env: &[(&str, &str)]| match run(&["--no-bot"], env) {
            Ok(Command::Run(c)) => Ok((c.kubernetes, c.kube_api, c.node_name)),
            Ok(other) => panic!("expected Run, got {other:?}"),
            Err(e) => Err(e.to_string()),
        };
        assert_eq!(with(&[]), Ok((KubeMode::Auto, None, None)));
        assert_eq!(
            with(&[
                ("KUBERNETES_SERVICE_HOST", "10.43.0.1"),
                ("KUBERNETES_SERVICE_PORT", "443"),
                ("NODE_NAME", "pi-rack-a-01"),
            ]),
            Ok((
                KubeMode::Auto,
                Some("https://10.43.0.1:443".to_string()),
                Some("pi-rack-a-01".to_string())
            ))
        );
        assert_eq!(
            with(&[
                ("KUBERNETES_SERVICE_HOST", "fd00::1"),
                ("KUBERNETES_SERVICE_PORT", "6443")
            ]),
            Ok((
                KubeMode::Auto,
                Some("https://[fd00::1]:6443".to_string()),
                None
            ))
        );
        assert_eq!(
            with(&[
                ("KUBERNETES_SERVICE_HOST", "h"),
                ("KUBERNETES_SERVICE_PORT", "https")
            ]),
            Err("KUBERNETES_SERVICE_PORT: expected a port number, got \"https\"".to_string())
        );
        // Off, nothing of the pod's API server variables is judged or kept.
        match run(
            &["--no-bot", "--kubernetes", "off"],
            &[
                ("KUBERNETES_SERVICE_HOST", "h"),
                ("KUBERNETES_SERVICE_PORT", "https"),
            ],
        ) {
            Ok(Command::Run(c)) => assert_eq!((c.kubernetes, c.kube_api), (KubeMode::Off, None)),
            other => panic!("expected Run, got {other:?}"),
        }
        match run(&["--no-bot", "--kubernetes", "maybe"], &[]) {
            Err(e) => assert_eq!(
                e.to_string(),
                "--kubernetes: expected auto or off, got \"maybe\""
            ),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_match_the_documented_table() {
        let c = config(&["--no-bot"]);
        assert_eq!(c.swarming_server, None);
        assert_eq!(c.bot_id, "pi-7");
        assert_eq!(c.bot_dir, PathBuf::from("/b/s"));
        assert_eq!(c.python, PathBuf::from("/usr/bin/python3"));
        assert_eq!(c.hook_addr.to_string(), "127.0.0.1:11000");
        assert_eq!(c.metrics_addr.to_string(), "0.0.0.0:20000");
        assert_eq!(c.adb_server.to_string(), "127.0.0.1:5037");
        assert_eq!(
            c.devices,
            DeviceKinds {
                android: true,
                ios: false
            }
        );
        assert_eq!(c.interrogate_every, Duration::from_secs(30));
        assert_eq!(c.grace, Duration::from_secs(25));
        assert_eq!(c.drain_limit, Duration::from_secs(3600));
        assert_eq!(
            c.force_quarantine_file,
            PathBuf::from("/b/pi-7.force_quarantine")
        );
        assert_eq!(c.min_battery_percent, 30.0);
        assert_eq!(c.max_temperature_celsius, 35.0);
    }

    #[test]
    fn server_is_required_without_no_bot() {
        let e = run(&[], &[]).unwrap_err();
        assert_eq!(e.flag, "--swarming-server");
    }

    #[test]
    fn env_twins_fill_in_and_flags_win() {
        let c = match run(
            &[],
            &[
                ("SWARMING_SERVER", "https://s.example.com/"),
                ("SWARMING_BOT_ID", "rpi-3"),
            ],
        ) {
            Ok(Command::Run(c)) => c,
            other => panic!("{other:?}"),
        };
        assert_eq!(c.swarming_server.as_deref(), Some("https://s.example.com"));
        assert_eq!(c.bot_id, "rpi-3");
        let c = match run(
            &["--bot-id=x1", "--swarming-server", "http://h:8080"],
            &[("SWARMING_BOT_ID", "rpi-3")],
        ) {
            Ok(Command::Run(c)) => c,
            other => panic!("{other:?}"),
        };
        assert_eq!(c.bot_id, "x1");
        assert_eq!(c.swarming_server.as_deref(), Some("http://h:8080"));
    }

    #[test]
    fn unknown_flag_names_itself() {
        let e = run(&["--no-bot", "--frobnicate"], &[]).unwrap_err();
        assert_eq!(e.to_string(), "--frobnicate: unknown flag (see --help)");
    }

    #[test]
    fn bad_values_name_the_flag_and_the_expectation() {
        for (args, flag) in [
            (vec!["--no-bot", "--hook-addr", "localhost"], "--hook-addr"),
            (vec!["--no-bot", "--grace", "-1"], "--grace"),
            (
                vec!["--no-bot", "--interrogate-every", "0"],
                "--interrogate-every",
            ),
            (
                vec!["--no-bot", "--devices", "android,blackberry"],
                "--devices",
            ),
            (vec!["--swarming-server", "ftp://x"], "--swarming-server"),
            (vec!["--no-bot", "--bot-id", "a:b"], "--bot-id"),
            (vec!["--no-bot", "--min-battery", "120"], "--min-battery"),
            (
                vec!["--no-bot", "--max-temperature", "hot"],
                "--max-temperature",
            ),
            (vec!["--no-bot", "--bot-dir", "/"], "--bot-dir"),
            (vec!["--no-bot", "--grace"], "--grace"),
            (vec!["--no-bot", "--no-bot"], "--no-bot"),
            (vec!["--no-bot=yes"], "--no-bot"),
        ] {
            let e = run(&args, &[]).unwrap_err();
            assert_eq!(e.flag, flag, "{args:?} gave {e}");
            assert!(!e.problem.is_empty());
        }
    }

    #[test]
    fn device_kinds() {
        assert_eq!(
            config(&["--no-bot", "--devices", "none"]).devices,
            DeviceKinds {
                android: false,
                ios: false
            }
        );
        assert_eq!(
            config(&["--no-bot", "--devices", "ios,android"]).devices,
            DeviceKinds {
                android: true,
                ios: true
            }
        );
    }

    #[test]
    fn subcommands_and_info_flags() {
        assert_eq!(run(&["bot-config"], &[]), Ok(Command::BotConfig));
        assert!(run(&["bot-config", "x"], &[]).is_err());
        assert_eq!(run(&["--help"], &[]), Ok(Command::Help));
        assert_eq!(run(&["--version"], &[]), Ok(Command::Version));
        assert!(matches!(
            run(&["--no-bot", "--check-config"], &[]),
            Ok(Command::CheckConfig(_))
        ));
        match run(
            &["devices", "--no-bot", "--adb-server", "127.0.0.1:6037"],
            &[],
        ) {
            Ok(Command::Devices(c)) => assert_eq!(c.adb_server.to_string(), "127.0.0.1:6037"),
            other => panic!("expected Devices, got {other:?}"),
        }
        // The pod's environment is enough, as for a normal run.
        assert!(matches!(
            run(
                &["devices"],
                &[("SWARMING_SERVER", "https://s.example.com")]
            ),
            Ok(Command::Devices(_))
        ));
        let e = run(&["devices", "--no-bot", "--check-config"], &[]).unwrap_err();
        assert_eq!(e.flag, "--check-config");
        assert!(run(&["--no-bot", "devices"], &[]).is_err());
    }

    #[test]
    fn help_lists_every_flag_with_its_default() {
        let help = help_text();
        for f in FLAGS {
            assert!(help.contains(f.name), "{} missing from help", f.name);
        }
        assert!(help.contains("env SWARMING_SERVER"));
        assert!(help.contains("default 127.0.0.1:11000"));
    }

    #[test]
    fn describe_names_every_setting() {
        let text = config(&["--no-bot"]).describe();
        assert!(text.contains("bot_id = pi-7\n"));
        assert!(text.contains("swarming_server = none\n"));
    }

    /// Every row must reach `--help`, the parsed [`Config`] and `--check-config`'s
    /// description, and a literal default must be what an absent flag means.
    #[test]
    fn every_row_is_shown_parsed_and_described() {
        // The server comes from its twin so that every row, `--no-bot` and
        // `--swarming-server` included, can be added to this command line.
        let env = [("SWARMING_SERVER", "https://base.example.com")];
        let parsed = |extra: &[&str]| match run(extra, &env) {
            Ok(Command::Run(c)) => *c,
            other => panic!("{extra:?}: expected Run, got {other:?}"),
        };
        let base = parsed(&[]);
        let base_text = base.describe();
        let help = help_text();
        let line_of = |text: &str, key: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{key} = ")))
                .map(str::to_string)
        };
        let mut settings = 0;
        for flag in FLAGS {
            let line = help
                .lines()
                .find(|l| l.split_whitespace().next() == Some(flag.name))
                .unwrap_or_else(|| panic!("{} missing from --help", flag.name));
            assert!(line.contains(flag.help), "{line}");
            if let Some(default) = flag.shown_default() {
                assert!(line.contains(&format!("default {default}")), "{line}");
            }
            if let Fallback::Literal(default) = flag.default {
                assert_eq!(
                    parsed(&[flag.name, default]),
                    base,
                    "{} {default} is not what its absence means",
                    flag.name
                );
            }

            let other = match &flag.kind {
                Kind::Action => continue,
                Kind::Switch(_) => None,
                Kind::Path(_)
                | Kind::OptionalPath(_)
                | Kind::BotDir(_)
                | Kind::QuarantineFile(_) => Some("/elsewhere/x".to_string()),
                Kind::Addr(_) => Some("127.0.0.9:9".to_string()),
                Kind::Seconds { min, .. } => Some(min.to_string()),
                Kind::Number { min, .. }
                | Kind::FractionalSeconds { min, .. }
                | Kind::Mebibytes { min, .. } => Some(min.to_string()),
                Kind::Devices(_) => Some("android,ios".to_string()),
                Kind::Bots(_) => Some("per-device".to_string()),
                Kind::Kubernetes(_) => Some("off".to_string()),
                Kind::Count { min, .. } => Some(min.to_string()),
                Kind::Server(_) => Some("https://other.example.com".to_string()),
                Kind::BotId(_) => Some("other-id".to_string()),
            };
            let mut args = vec![flag.name];
            args.extend(other.as_deref());
            let changed = parsed(&args);
            assert_ne!(changed, base, "{args:?} changed nothing");
            let key = describe::key(flag);
            let before = line_of(&base_text, &key)
                .unwrap_or_else(|| panic!("{key} missing from the description"));
            if let Fallback::Literal(default) = flag.default {
                let unit = before.strip_prefix(&format!("{key} = {default}"));
                assert!(
                    matches!(unit, Some("" | "s" | "%" | "°C" | " points" | " MiB")),
                    "{} defaults to {default} in the table, parse gives {before:?}",
                    flag.name
                );
            }
            assert_ne!(
                line_of(&changed.describe(), &key),
                Some(before),
                "{args:?} did not change the description"
            );
            settings += 1;
        }
        assert_eq!(base_text.lines().count(), settings, "{base_text}");
    }
}
