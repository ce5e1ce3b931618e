//! Derives Swarming dimensions from what the phones report, the way luci's own Android
//! support and Skia's farm name them, so existing task specs keep matching.
//!
//! Per phone ([`android_device`], from `getprop`):
//! - `device_type`: distinct `ro.product.device`, `ro.build.product`, `ro.product.board`;
//! - `device_os`: `ro.build.id`, its first letter when that is an upper-case letter
//!   (`N` for `NRD90M`), and Skia's `<ro.build.id>_<ro.build.version.incremental>`
//!   ([`android_build`]);
//! - `device_os_flavor`: `ro.product.brand` and `ro.product.system.brand`, lower-cased,
//!   with `aosp` mapped to `android`. This is Skia's mapping, not luci's (which maps the
//!   other way): the program re-creates Skia's monitor and Skia's task specs ask for
//!   `device_os_flavor:android` on AOSP builds;
//! - `device_os_type`: `ro.build.type`;
//! - `device_os_version`: `ro.build.version.release` and each dotted prefix of it
//!   (`6`, `6.0`, `6.0.1`);
//! - `device_abi`: `ro.product.cpu.abi`.
//!
//! For the bot ([`android_fleet`]): the union of the usable phones ([`merge`]), plus
//! `android_devices` and `os: ["Android"]`. `android_devices` lists the count and each
//! smaller count, at most 4 values, as luci does, so a task that asks for one phone
//! still matches a Pi with three.
//!
//! Invariants of every map returned here: no empty key, no empty list, no empty or
//! whitespace-surrounded value, values distinct and sorted (as strings). Pure: this
//! module does not know which phones are usable; the caller decides and passes only
//! those.

use std::collections::{BTreeMap, BTreeSet};

use crate::snapshot::Dimensions;

/// At most this many values in `android_devices`, as luci lists them.
const DEVICE_COUNT_VALUES: usize = 4;

/// One phone's contribution to the dimensions.
pub fn android_device(props: &BTreeMap<String, String>) -> Dimensions {
    let get = |key: &str| props.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());
    let mut d = Dimensions::new();
    let mut put = |key: &str, values: Vec<String>| {
        d.insert(key.to_string(), values);
    };

    put(
        "device_type",
        ["ro.product.device", "ro.build.product", "ro.product.board"]
            .into_iter()
            .filter_map(get)
            .map(str::to_string)
            .collect(),
    );

    let mut os = Vec::new();
    if let Some(id) = get("ro.build.id") {
        if let Some(first) = id.chars().next().filter(char::is_ascii_uppercase) {
            os.push(first.to_string());
        }
        os.push(id.to_string());
    }
    os.extend(android_build(props));
    put("device_os", os);

    put(
        "device_os_flavor",
        ["ro.product.brand", "ro.product.system.brand"]
            .into_iter()
            .filter_map(get)
            .map(|brand| match brand.to_lowercase().as_str() {
                "aosp" => "android".to_string(),
                other => other.to_string(),
            })
            .collect(),
    );

    put(
        "device_os_type",
        get("ro.build.type")
            .map(str::to_string)
            .into_iter()
            .collect(),
    );

    let mut versions = Vec::new();
    if let Some(release) = get("ro.build.version.release") {
        let mut prefix = String::new();
        for part in release.split('.') {
            if !prefix.is_empty() {
                prefix.push('.');
            }
            prefix.push_str(part);
            versions.push(prefix.clone());
        }
    }
    put("device_os_version", versions);

    put(
        "device_abi",
        get("ro.product.cpu.abi")
            .map(str::to_string)
            .into_iter()
            .collect(),
    );

    merge(&[&d])
}

/// Skia's one-word build description, `<ro.build.id>_<ro.build.version.incremental>`,
/// when the phone reports both.
pub fn android_build(props: &BTreeMap<String, String>) -> Option<String> {
    let id = props.get("ro.build.id")?.trim();
    let incremental = props.get("ro.build.version.incremental")?.trim();
    (!id.is_empty() && !incremental.is_empty()).then(|| format!("{id}_{incremental}"))
}

/// The union of several dimension maps: per key, the distinct values of all parts,
/// sorted. Values are trimmed and empty ones dropped, so a key whose values are all empty
/// disappears. Not Android-specific.
pub fn merge(parts: &[&Dimensions]) -> Dimensions {
    let mut union: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for part in parts {
        for (key, values) in part.iter() {
            let key = key.trim();
            if key.is_empty() {
                continue;
            }
            for value in values.iter().map(|v| v.trim()).filter(|v| !v.is_empty()) {
                union
                    .entry(key.to_string())
                    .or_default()
                    .insert(value.to_string());
            }
        }
    }
    union
        .into_iter()
        .map(|(key, values)| (key, values.into_iter().collect()))
        .collect()
}

/// The bot's Android dimensions from the `getprop` maps of its usable phones; an empty
/// map when there are none (the bot then offers no Android dimension at all).
pub fn android_fleet(usable: &[&BTreeMap<String, String>]) -> Dimensions {
    if usable.is_empty() {
        return Dimensions::new();
    }
    let phones: Vec<Dimensions> = usable.iter().map(|p| android_device(p)).collect();
    let mut fleet = merge(&phones.iter().collect::<Vec<_>>());
    let count = usable.len();
    let smallest = count.saturating_sub(DEVICE_COUNT_VALUES - 1).max(1);
    let counts: BTreeSet<String> = (smallest..=count).map(|n| n.to_string()).collect();
    fleet.insert("android_devices".to_string(), counts.into_iter().collect());
    fleet.insert("os".to_string(), vec!["Android".to_string()]);
    fleet
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::getprop;

    fn pixel() -> BTreeMap<String, String> {
        getprop::parse(include_str!(
            "../tests/fixtures/adb/getprop_pixel_android14.txt"
        ))
        .unwrap()
    }

    fn samsung6() -> BTreeMap<String, String> {
        getprop::parse(include_str!("../tests/fixtures/adb/getprop_android6.txt")).unwrap()
    }

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn dims(pairs: &[(&str, &[&str])]) -> Dimensions {
        pairs
            .iter()
            .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect()))
            .collect()
    }

    #[test]
    fn modern_pixel_on_android_14() {
        assert_eq!(
            android_device(&pixel()),
            dims(&[
                ("device_abi", &["arm64-v8a"]),
                (
                    "device_os",
                    &["U", "UQ1A.240205.004", "UQ1A.240205.004_11269751"]
                ),
                ("device_os_flavor", &["google"]),
                ("device_os_type", &["user"]),
                ("device_os_version", &["14"]),
                ("device_type", &["husky"]),
            ])
        );
    }

    #[test]
    fn samsung_on_android_6() {
        assert_eq!(
            android_device(&samsung6()),
            dims(&[
                ("device_abi", &["arm64-v8a"]),
                ("device_os", &["M", "MMB29K", "MMB29K_G930FXXU1APB4"]),
                ("device_os_flavor", &["samsung"]),
                ("device_os_type", &["user"]),
                ("device_os_version", &["6", "6.0", "6.0.1"]),
                ("device_type", &["herolte", "universal8890"]),
            ])
        );
    }

    #[test]
    fn aosp_brand_is_android_and_brands_are_lower_cased() {
        let d = android_device(&props(&[
            ("ro.product.brand", "AOSP"),
            ("ro.product.system.brand", "Android"),
        ]));
        assert_eq!(d["device_os_flavor"], vec!["android"]);
    }

    #[test]
    fn lower_case_build_id_has_no_letter_value() {
        let d = android_device(&props(&[("ro.build.id", "eng.ci")]));
        assert_eq!(d["device_os"], vec!["eng.ci"]);
    }

    #[test]
    fn build_word_needs_both_parts() {
        assert_eq!(
            android_build(&pixel()).as_deref(),
            Some("UQ1A.240205.004_11269751")
        );
        assert_eq!(android_build(&props(&[("ro.build.id", "X1")])), None);
        assert_eq!(
            android_build(&props(&[
                ("ro.build.id", "X1"),
                ("ro.build.version.incremental", " ")
            ])),
            None
        );
    }

    #[test]
    fn empty_and_blank_values_never_appear() {
        let d = android_device(&props(&[
            ("ro.product.device", "  "),
            ("ro.build.product", " sailfish "),
            ("ro.product.board", ""),
            ("ro.build.type", ""),
            ("ro.product.cpu.abi", "\n"),
        ]));
        assert_eq!(d, dims(&[("device_type", &["sailfish"])]));
        assert!(android_device(&BTreeMap::new()).is_empty());
    }

    #[test]
    fn merge_is_a_sorted_distinct_union() {
        let a = dims(&[("device_type", &["walleye", "husky"]), ("os", &["Android"])]);
        let b = dims(&[
            ("device_type", &["husky", " bullhead "]),
            ("pool", &["", " "]),
        ]);
        let c = dims(&[("", &["x"])]);
        assert_eq!(
            merge(&[&a, &b, &c]),
            dims(&[
                ("device_type", &["bullhead", "husky", "walleye"]),
                ("os", &["Android"]),
            ])
        );
        assert!(merge(&[]).is_empty());
    }

    #[test]
    fn fleet_of_none_is_empty() {
        assert!(android_fleet(&[]).is_empty());
    }

    #[test]
    fn fleet_of_one() {
        let p = pixel();
        let d = android_fleet(&[&p]);
        assert_eq!(d["android_devices"], vec!["1"]);
        assert_eq!(d["os"], vec!["Android"]);
        assert_eq!(d["device_type"], vec!["husky"]);
    }

    #[test]
    fn fleet_of_two_different_phones_merges_them() {
        let (p, s) = (pixel(), samsung6());
        let d = android_fleet(&[&p, &s]);
        assert_eq!(d["android_devices"], vec!["1", "2"]);
        assert_eq!(d["device_type"], vec!["herolte", "husky", "universal8890"]);
        assert_eq!(d["device_os_version"], vec!["14", "6", "6.0", "6.0.1"]);
        assert_eq!(d["device_os_flavor"], vec!["google", "samsung"]);
        assert_eq!(
            d["device_os"],
            vec![
                "M",
                "MMB29K",
                "MMB29K_G930FXXU1APB4",
                "U",
                "UQ1A.240205.004",
                "UQ1A.240205.004_11269751"
            ]
        );
        assert_eq!(d["device_abi"], vec!["arm64-v8a"]);
    }

    #[test]
    fn fleet_counts_list_at_most_four_values() {
        let p = pixel();
        let six = vec![&p; 6];
        assert_eq!(
            android_fleet(&six)["android_devices"],
            vec!["3", "4", "5", "6"]
        );
        let sixteen = vec![&p; 16];
        assert_eq!(
            android_fleet(&sixteen)["android_devices"],
            vec!["13", "14", "15", "16"]
        );
    }

    #[test]
    fn fleet_values_are_never_empty() {
        let (p, s) = (pixel(), samsung6());
        let d = android_fleet(&[&p, &s]);
        for (k, vs) in &d {
            assert!(!vs.is_empty(), "{k}");
            for v in vs {
                assert_eq!(v.trim(), v, "{k}");
                assert!(!v.is_empty(), "{k}");
            }
        }
    }
}
