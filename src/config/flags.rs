//! The flag table: one row per flag, the only place a flag's name, kind, default and
//! help are written. Parsing, `--help` and `--check-config`'s description all walk it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{BotsMode, Config, DeviceKinds, KubeMode};

/// The [`Config`] field a row fills in and describes.
pub(super) struct Field<T: 'static> {
    pub(super) get: fn(&Config) -> &T,
    pub(super) slot: fn(&mut Config) -> &mut T,
}

macro_rules! field {
    ($name:ident) => {
        Field {
            get: |c| &c.$name,
            slot: |c| &mut c.$name,
        }
    };
}

/// What a flag's value is, how it is checked and where it goes.
pub(super) enum Kind {
    /// Chooses the [`super::Command`] instead of filling in a setting.
    Action,
    /// Present or absent, no value.
    Switch(Field<bool>),
    /// A non-empty path.
    Path(Field<PathBuf>),
    /// A path, or none when the flag is absent.
    OptionalPath(Field<Option<PathBuf>>),
    /// `IP:PORT`.
    Addr(Field<SocketAddr>),
    /// Whole seconds from `min` to a day.
    Seconds { min: u64, field: Field<Duration> },
    /// A finite number from `min` to `max`; `unit` follows it in the description.
    Number {
        min: f64,
        max: f64,
        unit: &'static str,
        field: Field<f64>,
    },
    /// Seconds from `min` to `max`, fractions allowed.
    FractionalSeconds {
        min: f64,
        max: f64,
        field: Field<Duration>,
    },
    /// MiB from `min` to `max`, kept in bytes.
    Mebibytes {
        min: f64,
        max: f64,
        field: Field<u64>,
    },
    /// A comma list of android and ios, or none.
    Devices(Field<DeviceKinds>),
    /// `one` or `per-device`.
    Bots(Field<BotsMode>),
    /// `auto` or `off`; with it, the API server and the node name from the pod's
    /// environment (`KUBERNETES_SERVICE_HOST`/`_PORT`, `NODE_NAME`).
    Kubernetes(Field<KubeMode>),
    /// A whole number from `min` to `max`.
    Count {
        min: usize,
        max: usize,
        field: Field<usize>,
    },
    /// The Swarming server's base URL: none only with `--no-bot`.
    Server(Field<Option<String>>),
    /// A Swarming bot id; the host name when absent.
    BotId(Field<String>),
    /// A path other than `/`: the bot deletes what it does not know in its directory.
    BotDir(Field<PathBuf>),
    /// A path; when absent, worked out from the rows for the bot's directory and id,
    /// which come earlier in the table.
    QuarantineFile(Field<PathBuf>),
}

/// What a flag means when it is not given.
pub(super) enum Fallback {
    /// Parsed exactly as if it were given, so the value `--help` shows is the one used.
    Literal(&'static str),
    /// Worked out by the row's kind; the text says how, for `--help`.
    Implied(&'static str),
    /// No default to show.
    Unshown,
}

/// One flag.
pub(super) struct Flag {
    pub(super) name: &'static str,
    pub(super) metavar: &'static str,
    /// The environment variable read when the flag is absent.
    pub(super) env: Option<&'static str>,
    pub(super) kind: Kind,
    pub(super) default: Fallback,
    pub(super) help: &'static str,
}

impl Flag {
    /// Whether the flag takes a value (`--flag VALUE` or `--flag=VALUE`).
    pub(super) fn takes_value(&self) -> bool {
        !matches!(self.kind, Kind::Action | Kind::Switch(_))
    }

    /// The text after `default` in `--help`, if any.
    pub(super) fn shown_default(&self) -> Option<&'static str> {
        match self.default {
            Fallback::Literal(text) | Fallback::Implied(text) => Some(text),
            Fallback::Unshown => None,
        }
    }
}

/// Finds the row for a flag's name.
pub(super) fn find(name: &str) -> Option<&'static Flag> {
    FLAGS.iter().find(|f| f.name == name)
}

/// Every flag, in the order of `--help`, of the description, and of checking: the first
/// bad value in this order is the one reported.
pub(super) const FLAGS: &[Flag] = &[
    Flag {
        name: "--swarming-server",
        metavar: "URL",
        env: Some("SWARMING_SERVER"),
        kind: Kind::Server(field!(swarming_server)),
        default: Fallback::Unshown,
        help: "Swarming server base URL (http or https); required unless --no-bot",
    },
    Flag {
        name: "--bot-id",
        metavar: "ID",
        env: Some("SWARMING_BOT_ID"),
        kind: Kind::BotId(field!(bot_id)),
        default: Fallback::Implied("host name"),
        help: "the bot's id",
    },
    Flag {
        name: "--bot-dir",
        metavar: "DIR",
        env: None,
        kind: Kind::BotDir(field!(bot_dir)),
        default: Fallback::Literal("/b/s"),
        help: "the bot's own directory; the zip is DIR/swarming_bot.zip",
    },
    Flag {
        name: "--bots",
        metavar: "MODE",
        env: None,
        kind: Kind::Bots(field!(bots)),
        default: Fallback::Literal("one"),
        help: "one bot for the Pi, or per-device: one bot for each phone, id <bot-id>--<serial>, in DIR/<serial>",
    },
    Flag {
        name: "--gone-bot-grace",
        metavar: "SECS",
        env: None,
        kind: Kind::Seconds {
            min: 0,
            field: field!(gone_bot_grace),
        },
        default: Fallback::Literal("600"),
        help: "per-device: how long the bot of a phone that is gone stays up, quarantined",
    },
    Flag {
        name: "--max-bots",
        metavar: "N",
        env: None,
        kind: Kind::Count {
            min: 1,
            max: 64,
            field: field!(max_bots),
        },
        default: Fallback::Literal("16"),
        help: "per-device: the most bots at once (a bot is a Python process of about 55 MB)",
    },
    Flag {
        name: "--python",
        metavar: "PATH",
        env: None,
        kind: Kind::Path(field!(python)),
        default: Fallback::Literal("/usr/bin/python3"),
        help: "the interpreter that runs the bot",
    },
    Flag {
        name: "--token-config",
        metavar: "PATH",
        env: None,
        kind: Kind::Path(field!(token_config)),
        default: Fallback::Literal("/etc/swarming_config/oauth2_access_token_config.json"),
        help: "JSON {\"url\", \"headers\"} of the OAuth token endpoint",
    },
    Flag {
        name: "--ca-bundle",
        metavar: "PATH",
        env: Some("SSL_CERT_FILE"),
        kind: Kind::Path(field!(ca_bundle)),
        default: Fallback::Literal(crate::runtime::https::DEFAULT_CA_BUNDLE),
        help: "PEM file of the roots trusted for HTTPS to the token endpoint and the server",
    },
    Flag {
        name: "--hook-addr",
        metavar: "ADDR",
        env: None,
        kind: Kind::Addr(field!(hook_addr)),
        default: Fallback::Literal("127.0.0.1:11000"),
        help: "where the hook script reaches us; loopback by default",
    },
    Flag {
        name: "--metrics-addr",
        metavar: "ADDR",
        env: None,
        kind: Kind::Addr(field!(metrics_addr)),
        default: Fallback::Literal("0.0.0.0:20000"),
        help: "/metrics, /healthz and /readyz, for Prometheus and kubelet probes",
    },
    Flag {
        name: "--adb",
        metavar: "PATH",
        env: None,
        kind: Kind::Path(field!(adb)),
        default: Fallback::Literal("/usr/bin/adb"),
        help: "the vendored adb binary, run as the adb server",
    },
    Flag {
        name: "--adb-server",
        metavar: "ADDR",
        env: None,
        kind: Kind::Addr(field!(adb_server)),
        default: Fallback::Literal("127.0.0.1:5037"),
        help: "the adb server to talk to",
    },
    Flag {
        name: "--devices",
        metavar: "KINDS",
        env: None,
        kind: Kind::Devices(field!(devices)),
        default: Fallback::Literal("android"),
        help: "comma list of android and ios, or none",
    },
    Flag {
        name: "--interrogate-every",
        metavar: "SECS",
        env: None,
        kind: Kind::Seconds {
            min: 1,
            field: field!(interrogate_every),
        },
        default: Fallback::Literal("30"),
        help: "device polling period",
    },
    Flag {
        name: "--grace",
        metavar: "SECS",
        env: None,
        kind: Kind::Seconds {
            min: 0,
            field: field!(grace),
        },
        default: Fallback::Literal("25"),
        help: "how long SIGTERM waits for the bot before killing it",
    },
    Flag {
        name: "--drain-limit",
        metavar: "SECS",
        env: None,
        kind: Kind::Seconds {
            min: 0,
            field: field!(drain_limit),
        },
        default: Fallback::Literal("3600"),
        help: "at shutdown a bot running a task gets this long to finish it and exit (an idle bot stops at once); then, or at a second signal, SIGTERM to it and its task, --grace, SIGKILL",
    },
    Flag {
        name: "--bot-silence-limit",
        metavar: "SECS",
        env: None,
        kind: Kind::Seconds {
            min: 1,
            field: field!(bot_silence_limit),
        },
        default: Fallback::Literal("600"),
        help: "a running bot that calls no hook this long hangs: it is killed (SIGTERM, --grace, SIGKILL) and started again; the time within a task (on_before_task to on_after_task) does not count, the bot calls no hook then",
    },
    Flag {
        name: "--no-bot",
        metavar: "",
        env: None,
        kind: Kind::Switch(field!(no_bot)),
        default: Fallback::Implied("off"),
        help: "serve hooks and watch devices without downloading or running the bot",
    },
    Flag {
        name: "--settings",
        metavar: "PATH",
        env: None,
        kind: Kind::OptionalPath(field!(settings)),
        default: Fallback::Implied("none"),
        help: "JSON file merged over the default bot settings",
    },
    Flag {
        name: "--no-reboot-after-task",
        metavar: "",
        env: None,
        kind: Kind::Switch(field!(no_reboot_after_task)),
        default: Fallback::Implied("off"),
        help: "do not reboot the phones after each task",
    },
    Flag {
        name: "--force-quarantine-file",
        metavar: "PATH",
        env: None,
        kind: Kind::QuarantineFile(field!(force_quarantine_file)),
        default: Fallback::Implied("DIR/../ID.force_quarantine"),
        help: "if this file exists, report quarantined once, then delete it",
    },
    Flag {
        name: "--kubernetes",
        metavar: "auto|off",
        env: None,
        kind: Kind::Kubernetes(field!(kubernetes)),
        default: Fallback::Literal("auto"),
        help: "maintenance notes from the node's annotations, phone events on the node; \
               auto: when KUBERNETES_SERVICE_HOST is set and the token file exists",
    },
    Flag {
        name: "--kube-service-account-dir",
        metavar: "DIR",
        env: None,
        kind: Kind::Path(field!(kube_service_account_dir)),
        default: Fallback::Literal("/var/run/secrets/kubernetes.io/serviceaccount"),
        help: "the service account's token, ca.crt and namespace",
    },
    Flag {
        name: "--idevice-dir",
        metavar: "DIR",
        env: None,
        kind: Kind::Path(field!(idevice_dir)),
        default: Fallback::Literal("/usr/bin"),
        help: "where idevice_id, ideviceinfo and idevicediagnostics live",
    },
    Flag {
        name: "--usbmuxd",
        metavar: "PATH",
        env: None,
        kind: Kind::Path(field!(usbmuxd)),
        default: Fallback::Literal("/usr/sbin/usbmuxd"),
        help: "run with --devices ios unless /var/run/usbmuxd already answers",
    },
    Flag {
        name: "--min-battery",
        metavar: "PERCENT",
        env: None,
        kind: Kind::Number {
            min: 0.0,
            max: 100.0,
            unit: "%",
            field: field!(min_battery_percent),
        },
        default: Fallback::Literal("30"),
        help: "battery below this puts the bot in maintenance",
    },
    Flag {
        name: "--max-temperature",
        metavar: "CELSIUS",
        env: None,
        kind: Kind::Number {
            min: -40.0,
            max: 150.0,
            unit: "°C",
            field: field!(max_temperature_celsius),
        },
        default: Fallback::Literal("35"),
        help: "a temperature above this puts the bot in maintenance",
    },
    Flag {
        name: "--temperature-hysteresis",
        metavar: "CELSIUS",
        env: None,
        kind: Kind::Number {
            min: 0.0,
            max: 50.0,
            unit: "°C",
            field: field!(temperature_hysteresis),
        },
        default: Fallback::Literal("2"),
        help: "a hot phone leaves maintenance only below --max-temperature minus this",
    },
    Flag {
        name: "--battery-hysteresis",
        metavar: "POINTS",
        env: None,
        kind: Kind::Number {
            min: 0.0,
            max: 100.0,
            unit: " points",
            field: field!(battery_hysteresis),
        },
        default: Fallback::Literal("5"),
        help: "a low battery leaves maintenance only at --min-battery plus this",
    },
    Flag {
        name: "--charge-stall-after",
        metavar: "SECONDS",
        env: None,
        kind: Kind::FractionalSeconds {
            min: 1.0,
            max: 86_400.0,
            field: field!(charge_stall_after),
        },
        default: Fallback::Literal("1200"),
        help:
            "a phone on power whose battery has not risen for this long (below 95%) is not charging",
    },
    Flag {
        name: "--min-data-free",
        metavar: "MIB",
        env: None,
        kind: Kind::Mebibytes {
            min: 0.0,
            max: 1_048_576.0,
            field: field!(min_data_free_bytes),
        },
        default: Fallback::Literal("1024"),
        help: "less free space than this on a phone's /data puts it in maintenance",
    },
    Flag {
        name: "--usb-reset",
        metavar: "",
        env: None,
        kind: Kind::Switch(field!(usb_reset)),
        default: Fallback::Implied("off"),
        help: "a step of the recovery ladder: USBDEVFS_RESET of a stuck phone, at most once an hour (resets have panicked kernels)",
    },
    Flag {
        name: "--usb-power-cycle",
        metavar: "",
        env: None,
        kind: Kind::Switch(field!(usb_power_cycle)),
        default: Fallback::Implied("off"),
        help: "the ladder's last step: power-cycle a stuck phone's hub port (hubs with per-port power only)",
    },
    Flag {
        name: "--power-off-seconds",
        metavar: "SECONDS",
        env: None,
        kind: Kind::FractionalSeconds {
            min: 0.5,
            max: 120.0,
            field: field!(power_off),
        },
        default: Fallback::Literal("5"),
        help: "how long --usb-power-cycle keeps a port off",
    },
    Flag {
        name: "--cooldown-reboot-after",
        metavar: "SECONDS",
        env: None,
        kind: Kind::FractionalSeconds {
            min: 1.0,
            max: 86_400.0,
            field: field!(cooldown_reboot_after),
        },
        default: Fallback::Literal("1800"),
        help: "a phone too hot this long is rebooted once while idle, and quarantined if still hot as long after",
    },
    Flag {
        name: "--max-device-uptime",
        metavar: "SECONDS",
        env: None,
        kind: Kind::FractionalSeconds {
            min: 60.0,
            max: 31_536_000.0,
            field: field!(max_device_uptime),
        },
        default: Fallback::Literal("90000"),
        help: "a phone up for longer than this is rebooted while idle",
    },
    Flag {
        name: "--check-config",
        metavar: "",
        env: None,
        kind: Kind::Action,
        default: Fallback::Implied("off"),
        help: "parse everything, print the effective configuration (secrets redacted) and exit",
    },
    Flag {
        name: "--help",
        metavar: "",
        env: None,
        kind: Kind::Action,
        default: Fallback::Unshown,
        help: "print this help",
    },
    Flag {
        name: "--version",
        metavar: "",
        env: None,
        kind: Kind::Action,
        default: Fallback::Unshown,
        help: "print the version and git commit",
    },
];
