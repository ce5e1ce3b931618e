//! `--check-config`'s description of the effective configuration: one `key = value`
//! line per setting row of the flag table, the key being the flag's name in snake case.

use std::path::Path;

use super::flags::{Flag, Kind, FLAGS};
use super::{BotsMode, Config, KubeMode};

impl Config {
    /// The effective configuration, one `key = value` per line, for `--check-config`.
    /// Nothing here is secret: the token lives in the file that `token_config` names,
    /// and that file is never printed.
    pub fn describe(&self) -> String {
        FLAGS
            .iter()
            .filter_map(|flag| {
                let value = flag.kind.describe(self)?;
                Some(format!("{} = {value}\n", key(flag)))
            })
            .collect()
    }
}

/// `--min-battery` is described as `min_battery`.
pub(super) fn key(flag: &Flag) -> String {
    flag.name.trim_start_matches("--").replace('-', "_")
}

impl Kind {
    /// The row's value in `config`; `None` for the rows that are not settings.
    fn describe(&self, config: &Config) -> Option<String> {
        let path = |p: &Path| p.display().to_string();
        Some(match self {
            Kind::Action => return None,
            Kind::Switch(f) => (f.get)(config).to_string(),
            Kind::Path(f) | Kind::BotDir(f) | Kind::QuarantineFile(f) => path((f.get)(config)),
            Kind::OptionalPath(f) => (f.get)(config).as_deref().map_or("none".to_string(), path),
            Kind::Addr(f) => (f.get)(config).to_string(),
            Kind::Seconds { field, .. } => format!("{}s", (field.get)(config).as_secs()),
            Kind::Number { unit, field, .. } => format!("{}{unit}", (field.get)(config)),
            Kind::FractionalSeconds { field, .. } => {
                format!("{}s", (field.get)(config).as_secs_f64())
            }
            Kind::Mebibytes { field, .. } => {
                format!("{} MiB", *(field.get)(config) as f64 / 1_048_576.0)
            }
            Kind::Devices(f) => {
                let kinds = (f.get)(config);
                match (kinds.android, kinds.ios) {
                    (false, false) => "none",
                    (true, false) => "android",
                    (false, true) => "ios",
                    (true, true) => "android,ios",
                }
                .to_string()
            }
            Kind::Bots(f) => match (f.get)(config) {
                BotsMode::One => "one".to_string(),
                BotsMode::PerDevice => "per-device".to_string(),
            },
            Kind::Kubernetes(f) => match (f.get)(config) {
                KubeMode::Auto => "auto".to_string(),
                KubeMode::Off => "off".to_string(),
            },
            Kind::Count { field, .. } => (field.get)(config).to_string(),
            Kind::Server(f) => (f.get)(config).clone().unwrap_or_else(|| "none".into()),
            Kind::BotId(f) => (f.get)(config).clone(),
        })
    }
}
