//! Parses phone temperatures: `dumpsys thermalservice` (Android 10+), or the sysfs
//! thermal zones where that service does not exist.
//!
//! thermalservice: only the block after `Current temperatures from HAL:` counts (the
//! cached block above it may be stale), up to the next non-indented line. Each line is
//! `Temperature{mValue=<v>, mType=<t>, mName=<name>, mStatus=<s>}`; `mType` is a number
//! or an OEM's `TYPE_*` name. Dropped: the BCL types 6/7/8 (`TYPE_BCL_*`), which are
//! voltage, current and charge, not temperatures; `-99.9`, which marks an unused sensor;
//! non-finite values. A value above 1000 comes from a HAL that reports milli-°C and is
//! divided by 1000. `Can't find service: thermalservice` is [`Thermal::NoService`]: the
//! caller then runs [`SYSFS_COMMAND`] and reads it with [`parse_sysfs`].
//!
//! sysfs: one `<type> <temp>` line per zone. Rules kept deliberately simple (see
//! [`parse_sysfs`]). Pure: the shell command is a constant, nothing here runs it.

use super::{excerpt, ParseError};
use crate::state::snapshot::Temperature;

const WHAT_SERVICE: &str = "dumpsys thermalservice";
const WHAT_SYSFS: &str = "thermal zones";
const HAL_HEADER: &str = "Current temperatures from HAL:";
const NO_SERVICE: &str = "Can't find service: thermalservice";
const UNUSED_SENSOR: f64 = -99.9;

/// What `dumpsys thermalservice` gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Thermal {
    /// The HAL's current temperatures, possibly none.
    Readings(Vec<Temperature>),
    /// The phone has no thermalservice (before Android 10): use the sysfs fallback.
    NoService,
}

/// Whether `dumpsys thermalservice` said the phone has no thermal service: what
/// [`parse_thermalservice`] reads as [`Thermal::NoService`], without the rest of the
/// parse.
pub fn says_no_service(text: &str) -> bool {
    // One search of the whole text first: most phones have the service.
    text.contains(NO_SERVICE) && text.lines().any(|l| l.trim() == NO_SERVICE)
}

pub fn parse_thermalservice(text: &str) -> Result<Thermal, ParseError> {
    if says_no_service(text) {
        return Ok(Thermal::NoService);
    }
    let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
    if !lines.by_ref().any(|l| l.trim() == HAL_HEADER) {
        return Err(ParseError::new(
            WHAT_SERVICE,
            format!("no {HAL_HEADER:?} block in {}", excerpt(text)),
        ));
    }
    let mut readings = Vec::new();
    for line in lines {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            break;
        }
        if let Some(t) = hal_temperature(line.trim())? {
            readings.push(t);
        }
    }
    Ok(Thermal::Readings(readings))
}

/// One `Temperature{...}` line: `Some` when it is a real temperature to count.
fn hal_temperature(line: &str) -> Result<Option<Temperature>, ParseError> {
    let bad = |why: &str| ParseError::new(WHAT_SERVICE, format!("{why} in line {}", excerpt(line)));
    let body = line
        .strip_prefix("Temperature{")
        .and_then(|b| b.strip_suffix('}'))
        .ok_or_else(|| bad("expected `Temperature{...}`"))?;
    let fields = fields(body);
    let field = |name: &str| fields.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    let value = field("mValue").ok_or_else(|| bad("no mValue"))?;
    let value: f64 = value
        .parse()
        .map_err(|_| bad(&format!("mValue {} is not a number", excerpt(value))))?;
    let kind = field("mType").ok_or_else(|| bad("no mType"))?;
    if is_bcl(kind) {
        return Ok(None);
    }
    if !value.is_finite() || (value - UNUSED_SENSOR).abs() < 1e-6 {
        return Ok(None);
    }
    let celsius = if value > 1000.0 {
        value / 1000.0
    } else {
        value
    };
    let sensor = field("mName").filter(|n| !n.is_empty()).unwrap_or(kind);
    Ok(Some(Temperature {
        sensor: sensor.to_string(),
        celsius,
    }))
}

/// Splits `mValue=1.0, mType=2, mName=a, b, mStatus=0` into its `mXxx=` fields; a `, `
/// not followed by another `mXxx=` stays inside the value (a name with a comma).
fn fields(body: &str) -> Vec<(&str, &str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    let mut start = 0;
    let starts_field = |s: &str| {
        s.starts_with('m')
            && s.find('=')
                .is_some_and(|eq| eq > 1 && s[1..eq].chars().all(|c| c.is_ascii_alphanumeric()))
    };
    let mut cuts: Vec<usize> = body
        .match_indices(", ")
        .map(|(i, _)| i)
        .filter(|&i| starts_field(&body[i + 2..]))
        .collect();
    cuts.push(body.len());
    for cut in cuts {
        let piece = &body[start..cut];
        if let Some((k, v)) = piece.split_once('=') {
            out.push((k.trim(), v.trim()));
        }
        start = (cut + 2).min(body.len());
    }
    out
}

/// BCL_VOLTAGE, BCL_CURRENT, BCL_PERCENTAGE: battery limits, not temperatures.
fn is_bcl(kind: &str) -> bool {
    matches!(kind, "6" | "7" | "8") || kind.to_ascii_uppercase().starts_with("TYPE_BCL")
}

/// Prints `<type> <temp>` for every readable thermal zone. POSIX sh only (Android's
/// mksh/toybox): zones whose `temp` cannot be read (disabled sensors answer EINVAL) are
/// skipped, a zone without `type` is named after its directory, stderr is discarded
/// because shell v1 merges it into the output, and the final `true` keeps the exit code
/// 0 when the last zone was skipped.
pub const SYSFS_COMMAND: &str = "for z in /sys/class/thermal/thermal_zone*; do t=$(cat \"$z/temp\" 2>/dev/null) || continue; n=$(cat \"$z/type\" 2>/dev/null); echo \"${n:-${z##*/}} $t\"; done; true";

/// Zone types that carry battery limits, not temperatures, on Qualcomm kernels (the
/// sysfs twins of the BCL types): matched as lower-case substrings, plus `soc` exactly
/// (state of charge, a percentage).
const SYSFS_NOT_TEMPERATURES: &[&str] = &["bcl", "vbat", "ibat", "vph"];

/// The hottest plausible reading; above it a zone is broken or not in °C.
const SYSFS_MAX_CELSIUS: f64 = 150.0;

/// Reads [`SYSFS_COMMAND`]'s output. The temperature is the last word of a line, the
/// zone type everything before it. Values whose magnitude is above 1000 are milli-°C
/// (the kernel's unit), smaller ones °C. Skipped without error, because disabled or
/// non-temperature zones are normal on phones: battery-limit zones (see
/// [`SYSFS_NOT_TEMPERATURES`]), values at or below 0 °C (disabled sensors report 0,
/// -40 or -273) and values above [`SYSFS_MAX_CELSIUS`] (tenths, or broken). A line that
/// does not end in a number is an error.
pub fn parse_sysfs(text: &str) -> Result<Vec<Temperature>, ParseError> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let bad =
            |why: &str| ParseError::new(WHAT_SYSFS, format!("{why} in line {}", excerpt(line)));
        let (zone, raw) = line
            .rsplit_once(char::is_whitespace)
            .ok_or_else(|| bad("expected `<type> <temp>`"))?;
        let zone = zone.trim();
        let raw: f64 = raw
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| bad(&format!("temperature {} is not a number", excerpt(raw))))?;
        let lower = zone.to_ascii_lowercase();
        if lower == "soc" || SYSFS_NOT_TEMPERATURES.iter().any(|k| lower.contains(k)) {
            continue;
        }
        let celsius = if raw.abs() > 1000.0 {
            raw / 1000.0
        } else {
            raw
        };
        if celsius <= 0.0 || celsius > SYSFS_MAX_CELSIUS {
            continue;
        }
        out.push(Temperature {
            sensor: zone.to_string(),
            celsius,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(sensor: &str, celsius: f64) -> Temperature {
        Temperature {
            sensor: sensor.into(),
            celsius,
        }
    }

    fn readings(text: &str) -> Vec<Temperature> {
        match parse_thermalservice(text).unwrap() {
            Thermal::Readings(r) => r,
            Thermal::NoService => panic!("expected readings"),
        }
    }

    #[test]
    fn only_the_hal_block_counts_and_bcl_unused_and_milli_are_handled() {
        let r = readings(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/adb/thermalservice_android14.txt"
        )));
        assert_eq!(
            r,
            vec![
                t("battery", 28.000002),
                t("VIRTUAL-SKIN", 31.5),
                t("cpu0-silver-usr", 41.2),
                t("gpu", 38.0),
                t("soc_therm", 36.25),
            ]
        );
    }

    #[test]
    fn no_service_means_fallback() {
        assert_eq!(
            parse_thermalservice("Can't find service: thermalservice\n").unwrap(),
            Thermal::NoService
        );
        assert_eq!(
            parse_thermalservice("Can't find service: thermalservice\r\n").unwrap(),
            Thermal::NoService
        );
    }

    #[test]
    fn type_names_from_oem_hals() {
        let r = readings(
            "Current temperatures from HAL:\n\
             \tTemperature{mValue=40.0, mType=TYPE_CPU, mName=cpu-big, mStatus=0}\n\
             \tTemperature{mValue=4100.0, mType=TYPE_BCL_VOLTAGE, mName=vbat, mStatus=0}\n\
             \tTemperature{mValue=30.0, mType=TYPE_SKIN, mName=skin, mStatus=0}\n",
        );
        assert_eq!(r, vec![t("cpu-big", 40.0), t("skin", 30.0)]);
    }

    #[test]
    fn block_ends_at_the_next_section() {
        let r = readings(
            "Current temperatures from HAL:\n\
             \tTemperature{mValue=30.0, mType=0, mName=cpu, mStatus=0}\n\
             Current cooling devices from HAL:\n\
             \tCoolingDevice{mValue=0, mType=2, mName=battery}\n",
        );
        assert_eq!(r, vec![t("cpu", 30.0)]);
    }

    #[test]
    fn empty_block_is_no_readings() {
        assert_eq!(
            readings("HAL Ready: true\nCurrent temperatures from HAL:\n"),
            vec![]
        );
    }

    #[test]
    fn fields_without_status_and_names_with_commas() {
        let r = readings(
            "Current temperatures from HAL:\n\
             \tTemperature{mValue=33.0, mType=3, mName=skin, left side}\n\
             \tTemperature{mValue=34.0, mType=1}\n",
        );
        assert_eq!(r, vec![t("skin, left side", 33.0), t("1", 34.0)]);
    }

    #[test]
    fn crlf_output() {
        let r = readings("Current temperatures from HAL:\r\n\tTemperature{mValue=30.0, mType=0, mName=cpu, mStatus=0}\r\n");
        assert_eq!(r, vec![t("cpu", 30.0)]);
    }

    #[test]
    fn missing_block_is_an_error() {
        let e = parse_thermalservice("HAL Ready: false\n").unwrap_err();
        assert_eq!(e.what, "dumpsys thermalservice");
        assert!(
            e.detail
                .contains("no \"Current temperatures from HAL:\" block"),
            "{e}"
        );
    }

    #[test]
    fn strange_line_in_the_block_is_an_error_naming_it() {
        let e =
            parse_thermalservice("Current temperatures from HAL:\n\tsomething else\n").unwrap_err();
        assert!(e.detail.contains("\"something else\""), "{e}");
        let e = parse_thermalservice(
            "Current temperatures from HAL:\n\tTemperature{mValue=hot, mType=0, mName=cpu}\n",
        )
        .unwrap_err();
        assert!(e.detail.contains("mValue \"hot\""), "{e}");
    }

    #[test]
    fn sysfs_milli_degrees_and_skips() {
        let r = parse_sysfs(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/adb/sysfs_thermal_zones.txt"
        )))
        .unwrap();
        assert_eq!(
            r,
            vec![
                t("tsens_tz_sensor0", 38.5),
                t("battery", 29.0),
                t("xo therm", 31.0),
                t("thermal_zone7", 42.0),
            ]
        );
    }

    #[test]
    fn sysfs_empty_output_is_no_readings() {
        assert_eq!(parse_sysfs("").unwrap(), vec![]);
    }

    #[test]
    fn sysfs_line_without_number_is_an_error() {
        let e = parse_sysfs("battery\n").unwrap_err();
        assert_eq!(e.what, "thermal zones");
        let e = parse_sysfs("battery warm\n").unwrap_err();
        assert!(e.detail.contains("\"warm\""), "{e}");
    }

    #[test]
    fn sysfs_command_is_one_posix_line() {
        assert!(!SYSFS_COMMAND.contains('\n'));
        for bashism in ["[[", "$'", "<(", "function ", "local ", "echo -e"] {
            assert!(!SYSFS_COMMAND.contains(bashism), "{bashism}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        for text in &crate::devices::parse::tests_support::hostile() {
            let _ = parse_thermalservice(text);
            let _ = parse_sysfs(text);
        }
    }
}
