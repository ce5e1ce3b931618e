//! Derives Swarming dimensions from what the phones report, the way luci's own Android
//! support and Skia's farm name them, so existing task specs keep matching.
//!
//! Per phone ([`android_device`], from `getprop` and the round's package query):
//! - `device_type`: distinct `ro.product.device`, `ro.build.product`, `ro.product.board`;
//! - `device_os`: `ro.build.id`, its first letter when that is an upper-case letter
//!   (`N` for `NRD90M`), and Skia's `<ro.build.id>_<ro.build.version.incremental>`
//!   ([`android_build`]). A trunk build (`ro.build.id` `main` or `master`, any case)
//!   gets `ro.build.version.codename` and `ro.build.version.incremental` instead of the
//!   first letter, as luci does: `M` would claim Marshmallow;
//! - `device_os_incremental_version`: `ro.build.version.incremental`;
//! - `device_gms_core_version`, `device_playstore_version`: the first word of the
//!   installed `versionName` of `com.google.android.gms` and `com.android.vending`
//!   (`23.45.24`, as luci advertises it; see `parse::packages`), `unknown` when absent;
//! - `android_hwasan_build: ["1"]` when `ro.product.name` ends with `_hwasan` (Skia);
//! - `device_os_flavor`: `ro.product.brand` and `ro.product.system.brand`, lower-cased,
//!   with `aosp` mapped to `android`. This is Skia's mapping, not luci's (which maps the
//!   other way): the program re-creates Skia's monitor and Skia's task specs ask for
//!   `device_os_flavor:android` on AOSP builds;
//! - `device_os_type`: `ro.build.type`;
//! - `device_os_version`: `ro.build.version.release` and each dotted prefix of it
//!   (`6`, `6.0`, `6.0.1`);
//! - `device_abi`: `ro.product.cpu.abi`.
//!
//! For the bot ([`android_dimensions`]): the union of the usable phones ([`merge`]), plus
//! `android_devices` and `os: ["Android"]`. `android_devices` lists the count and each
//! smaller count, at most 4 values, as luci does, so a task that asks for one phone
//! still matches a Pi with three.
//!
//! Invariants of every map returned here: no empty key, no empty list, no empty or
//! whitespace-surrounded value, values distinct and sorted (as strings). Pure: this
//! module does not know which phones are usable; the caller decides and passes only
//! those.

use std::collections::BTreeMap;

use crate::state::snapshot::Dimensions;

/// At most this many values in `android_devices`, as luci lists them.
const DEVICE_COUNT_VALUES: usize = 4;

/// A phone's installed packages that dimensions name, to their `versionName`.
pub type Packages = BTreeMap<String, String>;

/// The packages the round asks the phone for, with the dimension each gives.
pub const PACKAGE_DIMENSIONS: [(&str, &str); 2] = [
    ("com.google.android.gms", "device_gms_core_version"),
    ("com.android.vending", "device_playstore_version"),
];

/// Every prop the program reads, here and in `android::build_device`, sorted: a round
/// keeps only these of the hundreds a phone prints (`getprop::parse`'s `keep`).
pub const READ_PROPS: [&str; 14] = [
    "ro.build.id",
    "ro.build.product",
    "ro.build.type",
    "ro.build.version.codename",
    "ro.build.version.incremental",
    "ro.build.version.release",
    "ro.product.board",
    "ro.product.brand",
    "ro.product.cpu.abi",
    "ro.product.device",
    "ro.product.model",
    "ro.product.name",
    "ro.product.system.brand",
    "sys.boot_completed",
];

/// Whether a round keeps prop `key` ([`READ_PROPS`]).
pub fn is_read_prop(key: &str) -> bool {
    READ_PROPS.binary_search(&key).is_ok()
}

/// The props that name a phone, best first.
const NAME_PROPS: [&str; 3] = ["ro.product.device", "ro.build.product", "ro.product.board"];

/// The phone's name: the first of `ro.product.device`, `ro.build.product` and
/// `ro.product.board` it reports (what a phone that has gone missing is called).
pub fn device_name(props: &BTreeMap<String, String>) -> Option<String> {
    NAME_PROPS
        .iter()
        .filter_map(|k| props.get(*k).map(|v| v.trim()))
        .find(|v| !v.is_empty())
        .map(str::to_string)
}

/// One phone's contribution to the dimensions, already in [`merge`]'s form (each key's
/// values trimmed, distinct and sorted, no empty key or list), so it is built once and
/// copied no more.
pub fn android_device(props: &BTreeMap<String, String>, packages: &Packages) -> Dimensions {
    let get = |key: &str| props.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());
    let mut d = Dimensions::new();
    let mut put = |key: &str, mut values: Vec<String>| {
        for v in &mut values {
            if v.trim().len() != v.len() {
                *v = v.trim().to_string();
            }
        }
        values.retain(|v| !v.is_empty());
        values.sort_unstable();
        values.dedup();
        if !values.is_empty() {
            d.insert(key.to_string(), values);
        }
    };

    put(
        "device_type",
        NAME_PROPS
            .into_iter()
            .filter_map(get)
            .map(str::to_string)
            .collect(),
    );

    let mut os = Vec::new();
    if let Some(id) = get("ro.build.id") {
        if id.eq_ignore_ascii_case("main") || id.eq_ignore_ascii_case("master") {
            os.extend(get("ro.build.version.codename").map(str::to_string));
            os.extend(get("ro.build.version.incremental").map(str::to_string));
        } else if let Some(first) = id.chars().next().filter(char::is_ascii_uppercase) {
            os.push(first.to_string());
        }
        os.push(id.to_string());
    }
    os.extend(android_build(props));
    put("device_os", os);
    put(
        "device_os_incremental_version",
        get("ro.build.version.incremental")
            .map(str::to_string)
            .into_iter()
            .collect(),
    );
    for (package, key) in PACKAGE_DIMENSIONS {
        let version = packages
            .get(package)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .unwrap_or("unknown");
        put(key, vec![version.to_string()]);
    }
    if get("ro.product.name").is_some_and(|n| n.ends_with("_hwasan")) {
        put("android_hwasan_build", vec!["1".to_string()]);
    }

    put(
        "device_os_flavor",
        ["ro.product.brand", "ro.product.system.brand"]
            .into_iter()
            .filter_map(get)
            // Brands are ASCII: std's Unicode lowering would link an 11 KB table for nothing.
            .map(|brand| match brand.to_ascii_lowercase().as_str() {
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
    d
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
    let mut union = Dimensions::new();
    for part in parts {
        merge_into(&mut union, part);
    }
    union
}

/// Adds `part` to `union`, which is a [`merge`] already (its values distinct and sorted)
/// and stays one. Only the values `union` lacks are copied, into their sorted place:
/// alike phones share most of theirs, and a copy of each, sorted out afterwards, cost a
/// fleet's round more than reading the phones did.
pub fn merge_into(union: &mut Dimensions, part: &Dimensions) {
    for (key, values) in part {
        let key = key.trim();
        let mut values = values.iter().map(|v| v.trim()).filter(|v| !v.is_empty());
        let Some(first) = values.next() else { continue };
        if key.is_empty() {
            continue;
        }
        let known = match union.get_mut(key) {
            Some(known) => known,
            None => union.entry(key.to_string()).or_default(),
        };
        for v in std::iter::once(first).chain(values) {
            if let Err(at) = known.binary_search_by(|k| k.as_str().cmp(v)) {
                known.insert(at, v.to_string());
            }
        }
    }
}

/// The bot's Android dimensions from its usable phones' own ([`android_device`]); an
/// empty map when there are none (the bot then offers no Android dimension at all).
pub fn android_dimensions(usable: &[&Dimensions]) -> Dimensions {
    if usable.is_empty() {
        return Dimensions::new();
    }
    let mut fleet = merge(usable);
    let count = usable.len();
    let smallest = count.saturating_sub(DEVICE_COUNT_VALUES - 1).max(1);
    let mut counts: Vec<String> = (smallest..=count).map(|n| n.to_string()).collect();
    // Sorted as strings, as every value list is ("10" before "9").
    counts.sort_unstable();
    fleet.insert("android_devices".to_string(), counts);
    fleet.insert("os".to_string(), vec!["Android".to_string()]);
    fleet
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::parse::getprop;

    const PIXEL: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/adb/getprop_pixel_android14.txt"
    ));
    const SAMSUNG6: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/adb/getprop_android6.txt"
    ));

    fn pixel() -> BTreeMap<String, String> {
        getprop::parse(PIXEL, is_read_prop).unwrap()
    }

    fn samsung6() -> BTreeMap<String, String> {
        getprop::parse(SAMSUNG6, is_read_prop).unwrap()
    }

    #[test]
    fn the_kept_props_are_all_the_dimensions_read() {
        assert!(
            READ_PROPS.windows(2).all(|w| w[0] < w[1]),
            "sorted, for the search"
        );
        let packages = no_packages();
        for text in [PIXEL, SAMSUNG6] {
            let all = getprop::parse(text, |_| true).unwrap();
            let kept = getprop::parse(text, is_read_prop).unwrap();
            assert!(
                kept.len() < all.len(),
                "the fixture has props no rule reads"
            );
            assert_eq!(
                android_device(&kept, &packages),
                android_device(&all, &packages)
            );
            assert_eq!(device_name(&kept), device_name(&all));
            assert_eq!(android_build(&kept), android_build(&all));
        }
    }

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn no_packages() -> Packages {
        Packages::new()
    }

    /// What every phone without the two packages adds.
    const UNKNOWN_PACKAGES: [(&str, &[&str]); 2] = [
        ("device_gms_core_version", &["unknown"]),
        ("device_playstore_version", &["unknown"]),
    ];

    fn dims(pairs: &[(&str, &[&str])]) -> Dimensions {
        pairs
            .iter()
            .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect()))
            .collect()
    }

    #[test]
    fn modern_pixel_on_android_14() {
        assert_eq!(
            android_device(&pixel(), &no_packages()),
            dims(&[
                ("device_abi", &["arm64-v8a"]),
                ("device_gms_core_version", &["unknown"]),
                (
                    "device_os",
                    &["U", "UQ1A.240205.004", "UQ1A.240205.004_11269751"]
                ),
                ("device_os_flavor", &["google"]),
                ("device_os_incremental_version", &["11269751"]),
                ("device_os_type", &["user"]),
                ("device_os_version", &["14"]),
                ("device_playstore_version", &["unknown"]),
                ("device_type", &["husky"]),
            ])
        );
    }

    #[test]
    fn samsung_on_android_6() {
        assert_eq!(
            android_device(&samsung6(), &no_packages()),
            dims(&[
                ("device_abi", &["arm64-v8a"]),
                ("device_gms_core_version", &["unknown"]),
                ("device_os", &["M", "MMB29K", "MMB29K_G930FXXU1APB4"]),
                ("device_os_flavor", &["samsung"]),
                ("device_os_incremental_version", &["G930FXXU1APB4"]),
                ("device_os_type", &["user"]),
                ("device_os_version", &["6", "6.0", "6.0.1"]),
                ("device_playstore_version", &["unknown"]),
                ("device_type", &["herolte", "universal8890"]),
            ])
        );
    }

    #[test]
    fn aosp_brand_is_android_and_brands_are_lower_cased() {
        let d = android_device(
            &props(&[
                ("ro.product.brand", "AOSP"),
                ("ro.product.system.brand", "Android"),
            ]),
            &no_packages(),
        );
        assert_eq!(d["device_os_flavor"], vec!["android"]);
    }

    #[test]
    fn lower_case_build_id_has_no_letter_value() {
        let d = android_device(&props(&[("ro.build.id", "eng.ci")]), &no_packages());
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
        let d = android_device(
            &props(&[
                ("ro.product.device", "  "),
                ("ro.build.product", " sailfish "),
                ("ro.product.board", ""),
                ("ro.build.type", ""),
                ("ro.product.cpu.abi", "\n"),
            ]),
            &no_packages(),
        );
        let mut expected = dims(&[("device_type", &["sailfish"])]);
        expected.extend(dims(&UNKNOWN_PACKAGES));
        assert_eq!(d, expected);
        assert_eq!(
            android_device(&BTreeMap::new(), &no_packages()),
            dims(&UNKNOWN_PACKAGES)
        );
    }

    #[test]
    fn a_trunk_build_gets_codename_and_incremental_not_a_letter() {
        for id in ["MASTER", "main", "Master"] {
            let d = android_device(
                &props(&[
                    ("ro.build.id", id),
                    ("ro.build.version.codename", "VanillaIceCream"),
                    ("ro.build.version.incremental", "12345"),
                ]),
                &no_packages(),
            );
            let mut want = vec![
                "12345".to_string(),
                format!("{id}_12345"),
                "VanillaIceCream".to_string(),
                id.to_string(),
            ];
            want.sort();
            assert_eq!(d["device_os"], want, "{id}");
            assert!(!d["device_os"].contains(&"M".to_string()), "{id}");
        }
    }

    #[test]
    fn the_name_comes_from_the_first_prop_a_phone_has() {
        assert_eq!(
            device_name(&props(&[
                ("ro.build.product", "sailfish"),
                ("ro.product.board", "msm")
            ]))
            .as_deref(),
            Some("sailfish")
        );
        assert_eq!(
            device_name(&props(&[
                ("ro.product.device", " "),
                ("ro.product.board", "msm")
            ]))
            .as_deref(),
            Some("msm")
        );
        assert_eq!(device_name(&props(&[])), None);
    }

    #[test]
    fn package_versions_and_hwasan() {
        let packages: Packages = [
            ("com.google.android.gms".to_string(), "24.08.12".to_string()),
            ("com.android.vending".to_string(), "39.9.20-21".to_string()),
        ]
        .into();
        let d = android_device(&props(&[("ro.product.name", "husky_hwasan")]), &packages);
        assert_eq!(d["device_gms_core_version"], vec!["24.08.12"]);
        assert_eq!(d["device_playstore_version"], vec!["39.9.20-21"]);
        assert_eq!(d["android_hwasan_build"], vec!["1"]);
        let d = android_device(&props(&[("ro.product.name", "husky")]), &no_packages());
        assert!(!d.contains_key("android_hwasan_build"));
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
    fn dimensions_of_none_is_empty() {
        assert!(android_dimensions(&[]).is_empty());
    }

    #[test]
    fn dimensions_of_one() {
        let p = pixel();
        let d = android_dimensions(&[&android_device(&p, &no_packages())]);
        assert_eq!(d["android_devices"], vec!["1"]);
        assert_eq!(d["os"], vec!["Android"]);
        assert_eq!(d["device_type"], vec!["husky"]);
    }

    #[test]
    fn dimensions_of_two_different_phones_merges_them() {
        let (p, s) = (pixel(), samsung6());
        let (p, s) = (
            android_device(&p, &no_packages()),
            android_device(&s, &no_packages()),
        );
        let d = android_dimensions(&[&p, &s]);
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
    fn dimensions_counts_list_at_most_four_values() {
        let p = android_device(&pixel(), &no_packages());
        let six = vec![&p; 6];
        assert_eq!(
            android_dimensions(&six)["android_devices"],
            vec!["3", "4", "5", "6"]
        );
        let sixteen = vec![&p; 16];
        assert_eq!(
            android_dimensions(&sixteen)["android_devices"],
            vec!["13", "14", "15", "16"]
        );
    }

    #[test]
    fn dimensions_values_are_never_empty() {
        let (p, s) = (pixel(), samsung6());
        let (p, s) = (
            android_device(&p, &no_packages()),
            android_device(&s, &no_packages()),
        );
        let d = android_dimensions(&[&p, &s]);
        for (k, vs) in &d {
            assert!(!vs.is_empty(), "{k}");
            for v in vs {
                assert_eq!(v.trim(), v, "{k}");
                assert!(!v.is_empty(), "{k}");
            }
        }
    }
}
