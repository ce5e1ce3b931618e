//! The device view: what the state hook, `/status.json`, the status page's JSON and the
//! `devices` subcommand show of one phone, as one typed value written in one place
//! ([`DeviceView::of`] fills it, [`DeviceView::to_json`] writes it) and read back as the
//! same type ([`DeviceView::from_json`]), so the writer and the reader cannot drift apart.
//! Written by hand with `serde_json`: a serde derive would be a new dependency for one
//! struct, in a binary with 24 KB of room left (`ci/size-budget`).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::snapshot::{Device, Reasons};

/// One phone as every reader outside the monitor sees it. Reading it back, the fields a
/// reader shows are required; the best-effort readings may be `null` or absent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceView {
    pub kind: String,
    pub serial: String,
    /// The monitor's word for its state (`device`, `missing`, `rebooting`...).
    pub state: String,
    pub device_type: Option<String>,
    pub model: Option<String>,
    pub read_at_unix: Option<f64>,
    pub battery_percent: Option<f64>,
    /// Sensor name to degrees Celsius.
    pub temperatures: BTreeMap<String, f64>,
    pub uptime_secs: Option<f64>,
    pub booting: bool,
    pub build: Option<String>,
    /// Why it cannot run tasks, when it cannot.
    pub unusable: Option<String>,
    pub verdict: String,
    pub reasons: Reasons,
    /// Values the monitor could not read from the phone (`battery level (...)`).
    pub missing_values: Vec<String>,
    pub recovery_step: u32,
    pub verdict_for_secs: f64,
    /// `--bots per-device` (status page only): the phone's bot (`bot <id>`), or why it
    /// has none.
    pub bot: Option<String>,
}

/// What a device must hold to be read back, for the error that names a field.
const SHAPE: &str = "a device needs \"serial\", \"kind\", \"state\" and \"verdict\" strings, \
                     \"booting\" (true or false), a whole \"recovery_step\", a \"verdict_for_secs\", \
                     \"reasons\" with \"quarantined\" and \"maintenance\" lists of strings, \
                     and a \"missing_values\" list of strings";

impl DeviceView {
    /// `d` as the view shows it, without a bot.
    pub fn of(d: &Device) -> DeviceView {
        DeviceView {
            kind: d.kind.as_str().to_string(),
            serial: d.serial.clone(),
            state: d.state_word().to_string(),
            device_type: d.device_type.clone(),
            model: d.model.clone(),
            read_at_unix: d.read_at_unix,
            battery_percent: d.battery_percent,
            temperatures: d
                .temperatures
                .iter()
                .map(|t| (t.sensor.clone(), t.celsius))
                .collect(),
            uptime_secs: d.uptime_secs,
            booting: d.booting,
            build: d.build.clone(),
            unusable: d.unusable(),
            verdict: d.verdict_word().to_string(),
            reasons: d.reasons.clone(),
            missing_values: d.missing_values.clone(),
            recovery_step: d.recovery_step,
            verdict_for_secs: d.verdict_for_secs,
            bot: None,
        }
    }

    /// The view as JSON: the one place it is written. `bot` only when there is one.
    pub fn to_json(&self) -> Value {
        let temperatures: Map<String, Value> = self
            .temperatures
            .iter()
            .map(|(sensor, celsius)| (sensor.clone(), json!(celsius)))
            .collect();
        let mut v = json!({
            "kind": self.kind,
            "serial": self.serial,
            "state": self.state,
            "device_type": self.device_type,
            "model": self.model,
            "read_at_unix": self.read_at_unix,
            "battery_percent": self.battery_percent,
            "temperatures": temperatures,
            "uptime_secs": self.uptime_secs,
            "booting": self.booting,
            "build": self.build,
            "unusable": self.unusable,
            "verdict": self.verdict,
            "reasons": {
                "quarantined": self.reasons.quarantined,
                "maintenance": self.reasons.maintenance,
            },
            "missing_values": self.missing_values,
            "recovery_step": self.recovery_step,
            "verdict_for_secs": self.verdict_for_secs,
        });
        if let Some(bot) = &self.bot {
            v["bot"] = json!(bot);
        }
        v
    }

    /// A view written by [`DeviceView::to_json`], read back. The error names the field
    /// and what it should hold.
    pub fn from_json(v: &Value) -> Result<DeviceView, String> {
        let field = |path: &str| -> Option<&Value> {
            path.split('.')
                .try_fold(v, |v, key| v.get(key))
                .filter(|v| !v.is_null())
        };
        let wrong = |path: &str, what: &str| format!("{path:?} is not {what}; {SHAPE}");
        let text = |path: &str| -> Result<Option<String>, String> {
            field(path)
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| wrong(path, "a string"))
                })
                .transpose()
        };
        let number = |path: &str| -> Result<Option<f64>, String> {
            field(path)
                .map(|x| x.as_f64().ok_or_else(|| wrong(path, "a number")))
                .transpose()
        };
        let list = |path: &str| -> Result<Vec<String>, String> {
            let items = field(path).ok_or_else(|| format!("no {path:?}; {SHAPE}"))?;
            let items = items.as_array().ok_or_else(|| wrong(path, "a list"))?;
            items
                .iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| wrong(path, "a list of strings"))
        };
        let required = |path: &str| -> Result<String, String> {
            text(path)?.ok_or_else(|| format!("no {path:?}; {SHAPE}"))
        };
        let temperatures = match field("temperatures") {
            None => BTreeMap::new(),
            Some(t) => t
                .as_object()
                .and_then(|t| {
                    t.iter()
                        .map(|(sensor, c)| Some((sensor.clone(), c.as_f64()?)))
                        .collect::<Option<_>>()
                })
                .ok_or_else(|| wrong("temperatures", "a map of sensor to degrees"))?,
        };
        Ok(DeviceView {
            kind: required("kind")?,
            serial: required("serial")?,
            state: required("state")?,
            device_type: text("device_type")?,
            model: text("model")?,
            read_at_unix: number("read_at_unix")?,
            battery_percent: number("battery_percent")?,
            temperatures,
            uptime_secs: number("uptime_secs")?,
            booting: field("booting")
                .ok_or_else(|| format!("no \"booting\"; {SHAPE}"))?
                .as_bool()
                .ok_or_else(|| wrong("booting", "true or false"))?,
            build: text("build")?,
            unusable: text("unusable")?,
            verdict: required("verdict")?,
            reasons: Reasons {
                quarantined: list("reasons.quarantined")?,
                maintenance: list("reasons.maintenance")?,
            },
            missing_values: list("missing_values")?,
            recovery_step: field("recovery_step")
                .ok_or_else(|| format!("no \"recovery_step\"; {SHAPE}"))?
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| wrong("recovery_step", "a whole number"))?,
            verdict_for_secs: number("verdict_for_secs")?
                .ok_or_else(|| format!("no \"verdict_for_secs\"; {SHAPE}"))?,
            bot: text("bot")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::snapshot::{DeviceKind, Link, Reasons, Temperature};
    use serde_json::json;

    fn phone() -> Device {
        let mut d = Device::listed(DeviceKind::Android, "S1", Link::Device);
        d.device_type = Some("redfin".into());
        d.battery_percent = Some(81.0);
        d.temperatures = vec![Temperature {
            sensor: "cpu0".into(),
            celsius: 41.5,
        }];
        d.missing_values = vec!["battery level (no line)".into()];
        d.recovery_step = 2;
        d.verdict_for_secs = 30.0;
        d.reasons = Reasons {
            quarantined: vec![],
            maintenance: vec!["too hot: S1".into()],
        };
        d
    }

    #[test]
    fn the_view_is_written_as_the_hooks_and_status_json_always_wrote_it() {
        let d = phone();
        assert_eq!(
            DeviceView::of(&d).to_json(),
            json!({
                "kind": "android",
                "serial": "S1",
                "state": d.state_word(),
                "device_type": "redfin",
                "model": null,
                "read_at_unix": null,
                "battery_percent": 81.0,
                "temperatures": {"cpu0": 41.5},
                "uptime_secs": null,
                "booting": false,
                "build": null,
                "unusable": d.unusable(),
                "verdict": d.verdict_word(),
                "reasons": {"quarantined": [], "maintenance": ["too hot: S1"]},
                "missing_values": ["battery level (no line)"],
                "recovery_step": 2,
                "verdict_for_secs": 30.0,
            })
        );
    }

    #[test]
    fn the_view_reads_back_as_the_same_value() {
        let view = DeviceView {
            bot: Some("bot pi-9--S1".into()),
            ..DeviceView::of(&phone())
        };
        let back = DeviceView::from_json(&view.to_json()).unwrap();
        assert_eq!(back, view);
    }
}
