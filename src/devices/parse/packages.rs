//! Parses the round's package query: the `versionName` of a few packages.
//!
//! `dumpsys package <name>` prints hundreds of lines per package (permissions, activities,
//! every user's state), so the phone filters them itself: [`COMMAND`] prints a
//! `package <name>` line, then only the `versionName=` lines of that package's dump, for
//! each package in turn. A package that is not installed prints none (`dumpsys` says
//! `Unable to find package`). The first `versionName=` of a package is the installed
//! one: an updated system app lists its factory version after it.
//!
//! A version is luci's: the first whitespace-separated word after `versionName=`
//! (`23.45.24` of `versionName=23.45.24 (190400-583294883)`), as luci-py's
//! `GetPackageVersion` advertises it, so a task that asks luci's value for
//! `device_gms_core_version` lands on our bots as on any luci pool.
//!
//! Pure: no shell, no knowledge of the phone.

use std::collections::BTreeMap;

use super::{excerpt, ParseError};

const WHAT: &str = "dumpsys package";

/// The shell command (POSIX sh, mksh on the phones) for the packages the dimensions
/// name; built from shell built-ins only, as phones before Android 6 have no `grep`.
pub const COMMAND: &str = "for p in com.google.android.gms com.android.vending; do \
     echo \"package $p\"; dumpsys package \"$p\" | while read -r l; do \
     case \"$l\" in versionName=*) echo \"$l\";; esac; done; done";

/// Package name to `versionName`, for the packages that have one.
pub fn parse(text: &str) -> Result<BTreeMap<String, String>, ParseError> {
    let mut versions = BTreeMap::new();
    let mut current: Option<&str> = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(name) = line.strip_prefix("package ") {
            current = Some(name.trim());
        } else if let Some(version) = line.strip_prefix("versionName=") {
            let Some(name) = current else {
                return Err(ParseError::new(
                    WHAT,
                    format!("{} before any package line", excerpt(line)),
                ));
            };
            if let Some(version) = version.split_whitespace().next() {
                versions
                    .entry(name.to_string())
                    .or_insert_with(|| version.to_string());
            }
        } else {
            return Err(ParseError::new(
                WHAT,
                format!("unexpected line {}", excerpt(line)),
            ));
        }
    }
    Ok(versions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_installed_packages_the_first_one_wins() {
        let text = "package com.google.android.gms\nversionName=24.08.12 (190400-1)\n\
                    versionName=21.0.0 (factory)\npackage com.android.vending\n";
        let v = parse(text).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v["com.google.android.gms"], "24.08.12");
    }

    #[test]
    fn a_version_is_its_first_word_as_luci_has_it() {
        let text = "package com.google.android.gms\nversionName=23.45.24 (190400-583294883)\n\
                    package com.android.vending\nversionName=38.8.31-29 [0] [PR] 584247361\n\
                    package com.example.blank\nversionName=\n";
        let v = parse(text).unwrap();
        assert_eq!(v["com.google.android.gms"], "23.45.24");
        assert_eq!(v["com.android.vending"], "38.8.31-29");
        assert!(!v.contains_key("com.example.blank"), "{v:?}");
    }

    /// Runs [`COMMAND`] in mksh (Android's `/system/bin/sh`), with `dumpsys package
    /// <name>` printing the fixture named for each package, and parses what it prints.
    fn through_the_phone_shell(fixtures: &[(&str, &str)]) -> BTreeMap<String, String> {
        let _turn = crate::runtime::reaper::children_lock();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/adb");
        let cases: String = fixtures
            .iter()
            .map(|(package, file)| format!("{package}) cat '{dir}/{file}';; "))
            .collect();
        let script = format!(
            "dumpsys() {{ case \"$2\" in {cases}*) echo \"Unable to find package: $2\";; esac; }}\n{COMMAND}"
        );
        let out = std::process::Command::new("mksh")
            .args(["-c", &script])
            .output()
            .expect("mksh (Debian package mksh, installed by ci/deps)");
        assert!(out.status.success(), "{out:?}");
        parse(&String::from_utf8_lossy(&out.stdout)).unwrap()
    }

    #[test]
    fn real_dumps_give_luci_s_values() {
        let v = through_the_phone_shell(&[
            ("com.google.android.gms", "dumpsys_package_gms_updated.txt"),
            ("com.android.vending", "dumpsys_package_vending.txt"),
        ]);
        // The updated system app: the installed version, not the factory one after it.
        assert_eq!(v["com.google.android.gms"], "23.45.24");
        assert_eq!(v["com.android.vending"], "38.8.31-29");
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn a_package_that_is_not_installed_has_no_version() {
        let v = through_the_phone_shell(&[
            ("com.google.android.gms", "dumpsys_package_absent.txt"),
            ("com.android.vending", "dumpsys_package_vending.txt"),
        ]);
        assert!(!v.contains_key("com.google.android.gms"), "{v:?}");
        assert_eq!(v["com.android.vending"], "38.8.31-29");
        let d = crate::devices::dimensions::android_device(&Default::default(), &v);
        assert_eq!(d["device_gms_core_version"], vec!["unknown"]);
        assert_eq!(d["device_playstore_version"], vec!["38.8.31-29"]);
    }

    #[test]
    fn nothing_installed_is_an_empty_map() {
        let text = "package com.google.android.gms\npackage com.android.vending\n";
        assert!(parse(text).unwrap().is_empty());
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn the_command_names_the_packages_the_dimensions_use() {
        for (package, _) in crate::devices::dimensions::PACKAGE_DIMENSIONS {
            assert!(COMMAND.contains(package), "{package}");
        }
    }

    #[test]
    fn stray_lines_are_errors() {
        assert!(parse("versionName=1\n").is_err());
        let e = parse("package x\nsh: dumpsys: not found\n").unwrap_err();
        assert!(e.to_string().contains("not found"), "{e}");
    }

    #[test]
    fn hostile_inputs_give_a_value_or_an_error() {
        for text in crate::devices::parse::tests_support::hostile() {
            let _ = parse(&text);
        }
    }
}
