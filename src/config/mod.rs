//! Command-line and environment configuration, parsed in two stages.
//!
//! Stage one (`parse`) turns the raw arguments and the two environment twins into a
//! validated [`Config`], or into a [`UsageError`] that names the flag and what was
//! expected. It is a pure function of its inputs: nothing else in the program reads
//! `std::env` for configuration, so tests pass arguments and an environment map in.
//!
//! We do not use an argument-parsing crate: the design card keeps the dependency list
//! short, and the flag set is small and flat.

pub mod settings;

use std::collections::BTreeMap;
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
    pub hook_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub adb: PathBuf,
    pub adb_server: SocketAddr,
    pub devices: DeviceKinds,
    pub interrogate_every: Duration,
    pub grace: Duration,
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

/// How a flag takes its value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Arity {
    Switch,
    Value,
}

/// One row of the flag table: it drives parsing and `--help` alike, so they cannot drift.
struct Flag {
    name: &'static str,
    arity: Arity,
    metavar: &'static str,
    env: Option<&'static str>,
    default: &'static str,
    help: &'static str,
}

const FLAGS: &[Flag] = &[
    Flag {
        name: "--swarming-server",
        arity: Arity::Value,
        metavar: "URL",
        env: Some("SWARMING_SERVER"),
        default: "",
        help: "Swarming server base URL (http or https); required unless --no-bot",
    },
    Flag {
        name: "--bot-id",
        arity: Arity::Value,
        metavar: "ID",
        env: Some("SWARMING_BOT_ID"),
        default: "host name",
        help: "the bot's id",
    },
    Flag {
        name: "--bot-dir",
        arity: Arity::Value,
        metavar: "DIR",
        env: None,
        default: "/b/s",
        help: "the bot's own directory; the zip is DIR/swarming_bot.zip",
    },
    Flag {
        name: "--python",
        arity: Arity::Value,
        metavar: "PATH",
        env: None,
        default: "/usr/bin/python3",
        help: "the interpreter that runs the bot",
    },
    Flag {
        name: "--token-config",
        arity: Arity::Value,
        metavar: "PATH",
        env: None,
        default: "/etc/swarming_config/oauth2_access_token_config.json",
        help: "JSON {\"url\", \"headers\"} of the OAuth token endpoint",
    },
    Flag {
        name: "--hook-addr",
        arity: Arity::Value,
        metavar: "ADDR",
        env: None,
        default: "127.0.0.1:11000",
        help: "where the hook script reaches us; loopback by default",
    },
    Flag {
        name: "--metrics-addr",
        arity: Arity::Value,
        metavar: "ADDR",
        env: None,
        default: "0.0.0.0:20000",
        help: "/metrics, /healthz and /readyz, for Prometheus and kubelet probes",
    },
    Flag {
        name: "--adb",
        arity: Arity::Value,
        metavar: "PATH",
        env: None,
        default: "/usr/bin/adb",
        help: "the vendored adb binary, run as the adb server",
    },
    Flag {
        name: "--adb-server",
        arity: Arity::Value,
        metavar: "ADDR",
        env: None,
        default: "127.0.0.1:5037",
        help: "the adb server to talk to",
    },
    Flag {
        name: "--devices",
        arity: Arity::Value,
        metavar: "KINDS",
        env: None,
        default: "android",
        help: "comma list of android and ios, or none",
    },
    Flag {
        name: "--interrogate-every",
        arity: Arity::Value,
        metavar: "SECS",
        env: None,
        default: "30",
        help: "device polling period",
    },
    Flag {
        name: "--grace",
        arity: Arity::Value,
        metavar: "SECS",
        env: None,
        default: "25",
        help: "how long SIGTERM waits for the bot before killing it",
    },
    Flag {
        name: "--no-bot",
        arity: Arity::Switch,
        metavar: "",
        env: None,
        default: "off",
        help: "serve hooks and watch devices without downloading or running the bot",
    },
    Flag {
        name: "--settings",
        arity: Arity::Value,
        metavar: "PATH",
        env: None,
        default: "none",
        help: "JSON file merged over the default bot settings",
    },
    Flag {
        name: "--no-reboot-after-task",
        arity: Arity::Switch,
        metavar: "",
        env: None,
        default: "off",
        help: "do not reboot the phones after each task",
    },
    Flag {
        name: "--force-quarantine-file",
        arity: Arity::Value,
        metavar: "PATH",
        env: None,
        default: "DIR/../ID.force_quarantine",
        help: "if this file exists, report quarantined once, then delete it",
    },
    Flag {
        name: "--idevice-dir",
        arity: Arity::Value,
        metavar: "DIR",
        env: None,
        default: "/usr/bin",
        help: "where idevice_id, ideviceinfo and idevicediagnostics live",
    },
    Flag {
        name: "--usbmuxd",
        arity: Arity::Value,
        metavar: "PATH",
        env: None,
        default: "/usr/sbin/usbmuxd",
        help: "run with --devices ios unless /var/run/usbmuxd already answers",
    },
    Flag {
        name: "--min-battery",
        arity: Arity::Value,
        metavar: "PERCENT",
        env: None,
        default: "30",
        help: "battery below this puts the bot in maintenance",
    },
    Flag {
        name: "--max-temperature",
        arity: Arity::Value,
        metavar: "CELSIUS",
        env: None,
        default: "35",
        help: "a temperature above this puts the bot in maintenance",
    },
    Flag {
        name: "--temperature-hysteresis",
        arity: Arity::Value,
        metavar: "CELSIUS",
        env: None,
        default: "2",
        help: "a hot phone leaves maintenance only below --max-temperature minus this",
    },
    Flag {
        name: "--battery-hysteresis",
        arity: Arity::Value,
        metavar: "POINTS",
        env: None,
        default: "5",
        help: "a low battery leaves maintenance only at --min-battery plus this",
    },
    Flag {
        name: "--charge-stall-after",
        arity: Arity::Value,
        metavar: "SECONDS",
        env: None,
        default: "1200",
        help:
            "a phone on power whose battery has not risen for this long (below 95%) is not charging",
    },
    Flag {
        name: "--min-data-free",
        arity: Arity::Value,
        metavar: "MIB",
        env: None,
        default: "1024",
        help: "less free space than this on a phone's /data puts it in maintenance",
    },
    Flag {
        name: "--usb-reset",
        arity: Arity::Switch,
        metavar: "",
        env: None,
        default: "off",
        help: "a step of the recovery ladder: USBDEVFS_RESET of a stuck phone, at most once an hour (resets have panicked kernels)",
    },
    Flag {
        name: "--usb-power-cycle",
        arity: Arity::Switch,
        metavar: "",
        env: None,
        default: "off",
        help: "the ladder's last step: power-cycle a stuck phone's hub port (hubs with per-port power only)",
    },
    Flag {
        name: "--power-off-seconds",
        arity: Arity::Value,
        metavar: "SECONDS",
        env: None,
        default: "5",
        help: "how long --usb-power-cycle keeps a port off",
    },
    Flag {
        name: "--cooldown-reboot-after",
        arity: Arity::Value,
        metavar: "SECONDS",
        env: None,
        default: "1800",
        help: "a phone too hot this long is rebooted once while idle, and quarantined if still hot as long after",
    },
    Flag {
        name: "--max-device-uptime",
        arity: Arity::Value,
        metavar: "SECONDS",
        env: None,
        default: "90000",
        help: "a phone up for longer than this is rebooted while idle",
    },
    Flag {
        name: "--check-config",
        arity: Arity::Switch,
        metavar: "",
        env: None,
        default: "off",
        help: "parse everything, print the effective configuration (secrets redacted) and exit",
    },
    Flag {
        name: "--help",
        arity: Arity::Switch,
        metavar: "",
        env: None,
        default: "",
        help: "print this help",
    },
    Flag {
        name: "--version",
        arity: Arity::Switch,
        metavar: "",
        env: None,
        default: "",
        help: "print the version and git commit",
    },
];

/// The `--help` text, generated from the flag table.
pub fn help_text() -> String {
    let mut out = String::from(
        "test_machine_monitor: runs a LUCI Swarming bot and answers its hooks from the attached phones\n\n\
         Usage: test_machine_monitor [FLAGS]\n       \
         test_machine_monitor bot-config      print the hook script for the Swarming server\n       \
         test_machine_monitor devices [FLAGS] list the phones the adb server at --adb-server sees,\n       \
         \x20                                    with the monitor's verdict on each, and exit\n       \
         sudo ...                             (as a link named sudo) kill the calling bot\n\nFlags:\n",
    );
    for f in FLAGS {
        let head = if f.metavar.is_empty() {
            f.name.to_string()
        } else {
            format!("{} {}", f.name, f.metavar)
        };
        out.push_str(&format!("  {head:<32} {}", f.help));
        let mut extras = Vec::new();
        if let Some(env) = f.env {
            extras.push(format!("env {env}"));
        }
        if !f.default.is_empty() {
            extras.push(format!("default {}", f.default));
        }
        if !extras.is_empty() {
            out.push_str(&format!(" [{}]", extras.join(", ")));
        }
        out.push('\n');
    }
    out.push_str(
        "\nLogs go to stderr, one line per event; RUST_LOG sets the level (default info).\n\
         Exit codes: 0 clean shutdown, 1 fatal error, 2 bad command line or configuration.\n",
    );
    out
}

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

    let mut values: BTreeMap<&'static str, String> = BTreeMap::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let flag = FLAGS.iter().find(|f| f.name == name).ok_or_else(|| {
            if name.starts_with('-') {
                usage(name, "unknown flag (see --help)")
            } else {
                usage("", format!("unexpected argument {name:?} (see --help)"))
            }
        })?;
        let value = match (flag.arity, inline) {
            (Arity::Switch, Some(_)) => return Err(usage(flag.name, "takes no value")),
            (Arity::Switch, None) => String::new(),
            (Arity::Value, Some(v)) => v,
            (Arity::Value, None) => {
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

    if values.contains_key("--help") {
        return Ok(Command::Help);
    }
    if values.contains_key("--version") {
        return Ok(Command::Version);
    }

    let get = |name: &'static str| -> Option<String> {
        values.get(name).cloned().or_else(|| {
            let flag = FLAGS.iter().find(|f| f.name == name)?;
            flag.env.and_then(env).filter(|v| !v.is_empty())
        })
    };
    let switch = |name: &'static str| values.contains_key(name);

    let no_bot = switch("--no-bot");
    let swarming_server = match get("--swarming-server") {
        Some(url) => Some(parse_server_url(&url)?),
        None if no_bot => None,
        None => {
            return Err(usage(
                "--swarming-server",
                "required unless --no-bot (or set SWARMING_SERVER)",
            ))
        }
    };
    let bot_id = get("--bot-id").unwrap_or_else(|| hostname.to_string());
    validate_bot_id(&bot_id)?;

    let bot_dir = path_flag("--bot-dir", get("--bot-dir"), "/b/s")?;
    if bot_dir.as_os_str() == "/" {
        return Err(usage(
            "--bot-dir",
            "must not be / (the bot deletes what it does not know in its directory)",
        ));
    }
    let force_quarantine_file = match get("--force-quarantine-file") {
        Some(p) => path_flag("--force-quarantine-file", Some(p), "")?,
        None => default_force_quarantine_file(&bot_dir, &bot_id),
    };
    let min_battery_percent = number_flag("--min-battery", get("--min-battery"), 30.0, 0.0, 100.0)?;
    let max_temperature_celsius = number_flag(
        "--max-temperature",
        get("--max-temperature"),
        35.0,
        -40.0,
        150.0,
    )?;
    let temperature_hysteresis = number_flag(
        "--temperature-hysteresis",
        get("--temperature-hysteresis"),
        2.0,
        0.0,
        50.0,
    )?;
    let battery_hysteresis = number_flag(
        "--battery-hysteresis",
        get("--battery-hysteresis"),
        5.0,
        0.0,
        100.0,
    )?;
    let charge_stall_after = Duration::from_secs_f64(number_flag(
        "--charge-stall-after",
        get("--charge-stall-after"),
        1200.0,
        1.0,
        86_400.0,
    )?);
    let power_off = Duration::from_secs_f64(number_flag(
        "--power-off-seconds",
        get("--power-off-seconds"),
        5.0,
        0.5,
        120.0,
    )?);
    let cooldown_reboot_after = Duration::from_secs_f64(number_flag(
        "--cooldown-reboot-after",
        get("--cooldown-reboot-after"),
        1800.0,
        1.0,
        86_400.0,
    )?);
    let max_device_uptime = Duration::from_secs_f64(number_flag(
        "--max-device-uptime",
        get("--max-device-uptime"),
        90_000.0,
        60.0,
        31_536_000.0,
    )?);
    let min_data_free_bytes = (number_flag(
        "--min-data-free",
        get("--min-data-free"),
        1024.0,
        0.0,
        1_048_576.0,
    )? * 1_048_576.0) as u64;

    let config = Config {
        swarming_server,
        bot_id,
        bot_dir,
        python: path_flag("--python", get("--python"), "/usr/bin/python3")?,
        token_config: path_flag(
            "--token-config",
            get("--token-config"),
            "/etc/swarming_config/oauth2_access_token_config.json",
        )?,
        hook_addr: addr_flag("--hook-addr", get("--hook-addr"), "127.0.0.1:11000")?,
        metrics_addr: addr_flag("--metrics-addr", get("--metrics-addr"), "0.0.0.0:20000")?,
        adb: path_flag("--adb", get("--adb"), "/usr/bin/adb")?,
        adb_server: addr_flag("--adb-server", get("--adb-server"), "127.0.0.1:5037")?,
        devices: parse_device_kinds(get("--devices").as_deref().unwrap_or("android"))?,
        interrogate_every: seconds_flag("--interrogate-every", get("--interrogate-every"), 30, 1)?,
        grace: seconds_flag("--grace", get("--grace"), 25, 0)?,
        no_bot,
        settings: match get("--settings") {
            Some(p) => Some(path_flag("--settings", Some(p), "")?),
            None => None,
        },
        no_reboot_after_task: switch("--no-reboot-after-task"),
        force_quarantine_file,
        idevice_dir: path_flag("--idevice-dir", get("--idevice-dir"), "/usr/bin")?,
        usbmuxd: path_flag("--usbmuxd", get("--usbmuxd"), "/usr/sbin/usbmuxd")?,
        min_battery_percent,
        max_temperature_celsius,
        temperature_hysteresis,
        battery_hysteresis,
        charge_stall_after,
        min_data_free_bytes,
        cooldown_reboot_after,
        max_device_uptime,
        usb_reset: switch("--usb-reset"),
        usb_power_cycle: switch("--usb-power-cycle"),
        power_off,
    };
    if devices {
        if switch("--check-config") {
            return Err(usage("--check-config", "cannot be combined with devices"));
        }
        Ok(Command::Devices(Box::new(config)))
    } else if switch("--check-config") {
        Ok(Command::CheckConfig(Box::new(config)))
    } else {
        Ok(Command::Run(Box::new(config)))
    }
}

/// `<bot dir>/../<bot id>.force_quarantine`, outside the directory the bot cleans.
fn default_force_quarantine_file(bot_dir: &std::path::Path, bot_id: &str) -> PathBuf {
    let parent = bot_dir.parent().unwrap_or(bot_dir);
    parent.join(format!("{bot_id}.force_quarantine"))
}

fn parse_server_url(raw: &str) -> Result<String, UsageError> {
    let flag = "--swarming-server";
    let rest = raw
        .strip_prefix("https://")
        .or_else(|| raw.strip_prefix("http://"))
        .ok_or_else(|| {
            usage(
                flag,
                format!("expected an http:// or https:// URL, got {raw:?}"),
            )
        })?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() {
        return Err(usage(
            flag,
            format!("expected a host name in the URL, got {raw:?}"),
        ));
    }
    if raw.contains(char::is_whitespace) || raw.contains('?') || raw.contains('#') {
        return Err(usage(
            flag,
            format!("expected a base URL without spaces, query or fragment, got {raw:?}"),
        ));
    }
    Ok(raw.trim_end_matches('/').to_string())
}

/// Swarming's dimension rules for `id`: one non-empty value, at most 256 characters,
/// no surrounding spaces and no `:`.
fn validate_bot_id(id: &str) -> Result<(), UsageError> {
    let flag = "--bot-id";
    if id.is_empty() {
        return Err(usage(flag, "must not be empty"));
    }
    if id.len() > 256 {
        return Err(usage(
            flag,
            format!("at most 256 characters, got {}", id.len()),
        ));
    }
    if id.trim() != id || id.contains(':') || id.contains('/') || id.chars().any(char::is_control) {
        return Err(usage(
            flag,
            format!(
                "expected no spaces at the ends, no ':', '/' or control characters, got {id:?}"
            ),
        ));
    }
    Ok(())
}

fn path_flag(flag: &str, value: Option<String>, default: &str) -> Result<PathBuf, UsageError> {
    let v = value.unwrap_or_else(|| default.to_string());
    if v.is_empty() {
        return Err(usage(flag, "expected a path, got an empty string"));
    }
    if v.contains('\0') {
        return Err(usage(flag, "expected a path without NUL bytes"));
    }
    Ok(PathBuf::from(v))
}

fn addr_flag(flag: &str, value: Option<String>, default: &str) -> Result<SocketAddr, UsageError> {
    let v = value.unwrap_or_else(|| default.to_string());
    v.parse().map_err(|_| {
        usage(
            flag,
            format!("expected IP:PORT such as 127.0.0.1:11000, got {v:?}"),
        )
    })
}

fn seconds_flag(
    flag: &str,
    value: Option<String>,
    default: u64,
    min: u64,
) -> Result<Duration, UsageError> {
    let secs = match value {
        None => default,
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|s| *s >= min && *s <= 86_400)
            .ok_or_else(|| {
                usage(
                    flag,
                    format!("expected whole seconds from {min} to 86400, got {v:?}"),
                )
            })?,
    };
    Ok(Duration::from_secs(secs))
}

fn number_flag(
    flag: &str,
    value: Option<String>,
    default: f64,
    min: f64,
    max: f64,
) -> Result<f64, UsageError> {
    match value {
        None => Ok(default),
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n >= min && *n <= max)
            .ok_or_else(|| {
                usage(
                    flag,
                    format!("expected a number from {min} to {max}, got {v:?}"),
                )
            }),
    }
}

fn parse_device_kinds(raw: &str) -> Result<DeviceKinds, UsageError> {
    let flag = "--devices";
    let mut kinds = DeviceKinds {
        android: false,
        ios: false,
    };
    if raw == "none" {
        return Ok(kinds);
    }
    for part in raw.split(',') {
        match part.trim() {
            "android" => kinds.android = true,
            "ios" => kinds.ios = true,
            other => {
                return Err(usage(
                    flag,
                    format!("expected a comma list of android and ios, or none; got {other:?}"),
                ))
            }
        }
    }
    Ok(kinds)
}

impl Config {
    /// The effective configuration, one `key = value` per line, for `--check-config`.
    /// Nothing here is secret: the token lives in the file that `token_config` names,
    /// and that file is never printed.
    pub fn describe(&self) -> String {
        let kinds = match (self.devices.android, self.devices.ios) {
            (false, false) => "none",
            (true, false) => "android",
            (false, true) => "ios",
            (true, true) => "android,ios",
        };
        let opt_path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or("none".to_string(), |p| p.display().to_string())
        };
        [
            (
                "swarming_server",
                self.swarming_server
                    .clone()
                    .unwrap_or_else(|| "none".into()),
            ),
            ("bot_id", self.bot_id.clone()),
            ("bot_dir", self.bot_dir.display().to_string()),
            ("python", self.python.display().to_string()),
            ("token_config", self.token_config.display().to_string()),
            ("hook_addr", self.hook_addr.to_string()),
            ("metrics_addr", self.metrics_addr.to_string()),
            ("adb", self.adb.display().to_string()),
            ("adb_server", self.adb_server.to_string()),
            ("devices", kinds.to_string()),
            (
                "interrogate_every",
                format!("{}s", self.interrogate_every.as_secs()),
            ),
            ("grace", format!("{}s", self.grace.as_secs())),
            ("no_bot", self.no_bot.to_string()),
            ("settings", opt_path(&self.settings)),
            (
                "no_reboot_after_task",
                self.no_reboot_after_task.to_string(),
            ),
            (
                "force_quarantine_file",
                self.force_quarantine_file.display().to_string(),
            ),
            ("idevice_dir", self.idevice_dir.display().to_string()),
            ("usbmuxd", self.usbmuxd.display().to_string()),
            ("min_battery", format!("{}%", self.min_battery_percent)),
            (
                "max_temperature",
                format!("{}°C", self.max_temperature_celsius),
            ),
            (
                "temperature_hysteresis",
                format!("{}°C", self.temperature_hysteresis),
            ),
            (
                "battery_hysteresis",
                format!("{} points", self.battery_hysteresis),
            ),
        ]
        .iter()
        .map(|(k, v)| format!("{k} = {v}\n"))
        .collect()
    }
}

#[cfg(test)]
mod tests {
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
}
