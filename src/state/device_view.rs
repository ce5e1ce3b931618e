//! The device view: what the state hook, `/status.json`, the status page's JSON and the
//! `devices` subcommand show of one phone, as one typed value serialised in one place
//! ([`DeviceView::of`] fills it, serde writes it) and read back as the same type by
//! the `devices` subcommand, so the writer and the reader cannot drift apart.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::snapshot::Device;

/// A phone's verdict reasons, as the view shows them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ViewReasons {
    pub quarantined: Vec<String>,
    pub maintenance: Vec<String>,
}

/// One phone as every reader outside the monitor sees it. The fields a reader needs
/// are required when read back; the best-effort readings may be `null`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    #[serde(default)]
    pub temperatures: BTreeMap<String, f64>,
    pub uptime_secs: Option<f64>,
    #[serde(default)]
    pub booting: bool,
    pub build: Option<String>,
    /// Why it cannot run tasks, when it cannot.
    pub unusable: Option<String>,
    #[serde(default)]
    pub verdict: String,
    pub reasons: ViewReasons,
    /// Values the monitor could not read from the phone (`battery level (...)`).
    pub missing_values: Vec<String>,
    #[serde(default)]
    pub recovery_step: u32,
    #[serde(default)]
    pub verdict_for_secs: f64,
    /// `--bots per-device` (status page only): the phone's bot (`bot <id>`), or why it
    /// has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot: Option<String>,
}

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
            reasons: ViewReasons {
                quarantined: d.reasons.quarantined.clone(),
                maintenance: d.reasons.maintenance.clone(),
            },
            missing_values: d.missing_values.clone(),
            recovery_step: d.recovery_step,
            verdict_for_secs: d.verdict_for_secs,
            bot: None,
        }
    }

    /// The view as JSON: the one place it is serialised.
    pub fn to_json(&self) -> serde_json::Value {
        // Strings, numbers (a non-finite one becomes null), lists and a map keyed by
        // strings: nothing here can fail to serialise.
        serde_json::to_value(self).expect("a device view always serialises")
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
        let back = DeviceView::deserialize(&view.to_json()).unwrap();
        assert_eq!(back, view);
    }
}
