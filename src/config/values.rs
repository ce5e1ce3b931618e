//! Checking one flag's value against its row's kind and storing it in the [`Config`]:
//! the rules and error messages for URLs, bot ids, paths, addresses and numbers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::flags::Kind;
use super::{usage, BotsMode, Config, DeviceKinds, KubeMode, UsageError};

/// What some kinds need beyond their own value.
pub(super) struct Context<'a> {
    /// The bot id when `--bot-id` and its twin are absent.
    pub(super) hostname: &'a str,
    /// Whether `--no-bot` was given, which makes the server optional.
    pub(super) no_bot: bool,
    /// `KUBERNETES_SERVICE_HOST`, `KUBERNETES_SERVICE_PORT` and `NODE_NAME`, non-empty.
    pub(super) kube_host: Option<String>,
    pub(super) kube_port: Option<String>,
    pub(super) node_name: Option<String>,
}

impl Kind {
    /// Checks `raw` and stores it in `config`. `raw` is the flag's value (empty for a
    /// given switch), else its environment twin, else its literal default; `None` when
    /// there is none of these, which the kinds with an implied default handle.
    pub(super) fn fill(
        &self,
        flag: &str,
        raw: Option<&str>,
        context: &Context,
        config: &mut Config,
    ) -> Result<(), UsageError> {
        // Kinds that always need a value get one from a literal default; were a row to
        // lack it, the empty string fails their check and names the flag.
        let value = raw.unwrap_or_default();
        match self {
            Kind::Action => {}
            Kind::Switch(f) => *(f.slot)(config) = raw.is_some(),
            Kind::Path(f) => *(f.slot)(config) = path(flag, value)?,
            Kind::OptionalPath(f) => {
                *(f.slot)(config) = raw.map(|p| path(flag, p)).transpose()?;
            }
            Kind::Addr(f) => *(f.slot)(config) = addr(flag, value)?,
            Kind::Seconds { min, field } => *(field.slot)(config) = seconds(flag, value, *min)?,
            Kind::Number {
                min, max, field, ..
            } => *(field.slot)(config) = number(flag, value, *min, *max)?,
            Kind::FractionalSeconds { min, max, field } => {
                *(field.slot)(config) = Duration::from_secs_f64(number(flag, value, *min, *max)?);
            }
            Kind::Mebibytes { min, max, field } => {
                *(field.slot)(config) = (number(flag, value, *min, *max)? * 1_048_576.0) as u64;
            }
            Kind::Devices(f) => *(f.slot)(config) = device_kinds(flag, value)?,
            Kind::Bots(f) => {
                *(f.slot)(config) = match value {
                    "one" => BotsMode::One,
                    "per-device" => BotsMode::PerDevice,
                    other => {
                        return Err(usage(
                            flag,
                            format!("expected one or per-device, got {other:?}"),
                        ))
                    }
                }
            }
            Kind::Kubernetes(f) => {
                let mode = match value {
                    "auto" => KubeMode::Auto,
                    "off" => KubeMode::Off,
                    other => {
                        return Err(usage(flag, format!("expected auto or off, got {other:?}")))
                    }
                };
                *(f.slot)(config) = mode;
                // Off, the pod's API server variables are not ours to judge.
                config.kube_api = match mode {
                    KubeMode::Auto => {
                        kube_api(context.kube_host.as_deref(), context.kube_port.as_deref())?
                    }
                    KubeMode::Off => None,
                };
                config.node_name.clone_from(&context.node_name);
            }
            Kind::Count { min, max, field } => {
                *(field.slot)(config) = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (*min..=*max).contains(n))
                    .ok_or_else(|| {
                        usage(
                            flag,
                            format!("expected a whole number from {min} to {max}, got {value:?}"),
                        )
                    })?;
            }
            Kind::Server(f) => {
                *(f.slot)(config) = match raw {
                    Some(url) => Some(server_url(flag, url)?),
                    None if context.no_bot => None,
                    None => {
                        return Err(usage(
                            flag,
                            "required unless --no-bot (or set SWARMING_SERVER)",
                        ))
                    }
                };
            }
            Kind::BotId(f) => {
                let id = raw.unwrap_or(context.hostname);
                validate_bot_id(flag, id)?;
                *(f.slot)(config) = id.to_string();
            }
            Kind::BotDir(f) => {
                let dir = path(flag, value)?;
                if dir.as_os_str() == "/" {
                    return Err(usage(
                        flag,
                        "must not be / (the bot deletes what it does not know in its directory)",
                    ));
                }
                *(f.slot)(config) = dir;
            }
            Kind::QuarantineFile(f) => {
                let file = match raw {
                    Some(p) => path(flag, p)?,
                    None => default_force_quarantine_file(&config.bot_dir, &config.bot_id),
                };
                *(f.slot)(config) = file;
            }
        }
        Ok(())
    }
}

/// The API server's URL from the pod's service variables; an IPv6 host is bracketed.
fn kube_api(host: Option<&str>, port: Option<&str>) -> Result<Option<String>, UsageError> {
    let Some(host) = host else {
        return Ok(None);
    };
    let port = port.unwrap_or("443");
    if port.parse::<u16>().is_err() {
        return Err(usage(
            "KUBERNETES_SERVICE_PORT",
            format!("expected a port number, got {port:?}"),
        ));
    }
    if host.contains(['/', ' ', '@']) {
        return Err(usage(
            "KUBERNETES_SERVICE_HOST",
            format!("expected a host name or address, got {host:?}"),
        ));
    }
    Ok(Some(if host.contains(':') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    }))
}

/// `<bot dir>/../<bot id>.force_quarantine`, outside the directory the bot cleans.
fn default_force_quarantine_file(bot_dir: &Path, bot_id: &str) -> PathBuf {
    let parent = bot_dir.parent().unwrap_or(bot_dir);
    parent.join(format!("{bot_id}.force_quarantine"))
}

fn server_url(flag: &str, raw: &str) -> Result<String, UsageError> {
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
fn validate_bot_id(flag: &str, id: &str) -> Result<(), UsageError> {
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

fn path(flag: &str, v: &str) -> Result<PathBuf, UsageError> {
    if v.is_empty() {
        return Err(usage(flag, "expected a path, got an empty string"));
    }
    if v.contains('\0') {
        return Err(usage(flag, "expected a path without NUL bytes"));
    }
    Ok(PathBuf::from(v))
}

fn addr(flag: &str, v: &str) -> Result<SocketAddr, UsageError> {
    v.parse().map_err(|_| {
        usage(
            flag,
            format!("expected IP:PORT such as 127.0.0.1:11000, got {v:?}"),
        )
    })
}

fn seconds(flag: &str, v: &str, min: u64) -> Result<Duration, UsageError> {
    v.parse::<u64>()
        .ok()
        .filter(|s| *s >= min && *s <= 86_400)
        .map(Duration::from_secs)
        .ok_or_else(|| {
            usage(
                flag,
                format!("expected whole seconds from {min} to 86400, got {v:?}"),
            )
        })
}

fn number(flag: &str, v: &str, min: f64, max: f64) -> Result<f64, UsageError> {
    v.parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n >= min && *n <= max)
        .ok_or_else(|| {
            usage(
                flag,
                format!("expected a number from {min} to {max}, got {v:?}"),
            )
        })
}

fn device_kinds(flag: &str, raw: &str) -> Result<DeviceKinds, UsageError> {
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
