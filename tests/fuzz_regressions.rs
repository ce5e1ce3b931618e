//! Every kept fuzz input through its target, on every `cargo test`: the crashes that
//! `ci/fuzz` found (`tests/fixtures/fuzz/<target>/`, each fixed in src/) and the seeds
//! (`tests/fixtures/fuzz/seeds/<target>/`). A directory that names no target fails, so
//! a renamed target cannot silently stop checking its fixtures.

use std::fs;
use std::path::{Path, PathBuf};

use test_machine_monitor::fuzzing;

/// A target's entry point.
type Target = fn(&[u8]);

/// The targets, as `tests/fuzz/Cargo.toml` lists them.
const TARGETS: &[(&str, Target)] = &[
    ("getprop", fuzzing::getprop),
    ("battery", fuzzing::battery),
    ("thermalservice", fuzzing::thermalservice),
    ("thermal_zones", fuzzing::thermal_zones),
    ("uptime", fuzzing::uptime),
    ("devices_l", fuzzing::devices_l),
    ("batch_split", fuzzing::batch_split),
    ("data_free", fuzzing::data_free),
    ("packages", fuzzing::packages),
    ("ios", fuzzing::ios),
    ("adb_host", fuzzing::adb_host),
    ("adb_shell", fuzzing::adb_shell),
    ("token_json", fuzzing::token_json),
    ("settings", fuzzing::settings),
    ("hooks", fuzzing::hooks),
    ("bot_zip", fuzzing::bot_zip),
    ("hook_front", fuzzing::hook_front),
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz")
}

fn target(name: &str) -> Target {
    match TARGETS.iter().find(|(n, _)| *n == name) {
        Some((_, f)) => *f,
        None => panic!(
            "tests/fixtures/fuzz: {name:?} is no fuzz target (known: {})",
            TARGETS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    out.sort();
    for p in &out {
        assert!(
            p.is_dir(),
            "{}: only target directories belong here",
            p.display()
        );
    }
    out
}

/// Feeds every file of `dir` (a target's directory) to its target; returns how many.
fn feed(dir: &Path) -> usize {
    let name = dir.file_name().unwrap().to_str().unwrap();
    let run = target(name);
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for file in &files {
        eprintln!("{name}: {}", file.display());
        run(&fs::read(file).unwrap());
    }
    files.len()
}

#[test]
fn kept_crashes_no_longer_crash() {
    for dir in subdirs(&fixtures()) {
        if dir.file_name() == Some("seeds".as_ref()) {
            continue;
        }
        feed(&dir);
    }
}

#[test]
fn seeds_run_clean_and_every_target_has_some() {
    let mut seeded = Vec::new();
    for dir in subdirs(&fixtures().join("seeds")) {
        assert!(feed(&dir) > 0, "{}: no seed", dir.display());
        seeded.push(dir.file_name().unwrap().to_str().unwrap().to_string());
    }
    for (name, _) in TARGETS {
        assert!(seeded.iter().any(|s| s == name), "no seeds for {name}");
    }
}

#[test]
fn an_empty_input_is_fine_everywhere() {
    for (_, run) in TARGETS {
        run(b"");
        run(b"\0");
    }
}

#[test]
fn the_fuzz_crate_lists_every_target_and_no_other() {
    let manifest =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/Cargo.toml"))
            .unwrap();
    let bins: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|n| *n != "test_machine_monitor_fuzz")
        .collect();
    let names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(bins, names);
}
