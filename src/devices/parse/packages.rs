//! Parses the round's package query: the `versionName` of a few packages.
//!
//! `dumpsys package <name>` prints hundreds of lines per package (permissions, activities,
//! every user's state), so the phone filters them itself: [`COMMAND`] prints a
//! `package <name>` line, then only the `versionName=` lines of that package's dump, for
//! each package in turn. A package that is not installed prints none (`dumpsys` says
//! `Unable to find package`). The first `versionName=` of a package is the installed
//! one: an updated system app lists its factory version after it.
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
            let version = version.trim();
            if !version.is_empty() {
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
        assert_eq!(v["com.google.android.gms"], "24.08.12 (190400-1)");
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
