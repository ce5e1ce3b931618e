//! The pure half of an Android phone's round: from what the round's script printed (its
//! sections and how its reading ended) and, when the phone's shell refused the script,
//! from each command run alone, to a [`PhoneRound`]; and the memory that names a phone
//! whose shell refuses the script once, not every round.
//!
//! `android` makes the adb calls and hands their results here.
//!
//! Must not: talk to the adb server, count or log: [`fill`] returns the error kinds to
//! count and the lines to log at debug, for the caller at the edge.

use std::collections::BTreeMap;

use super::dimensions;
use super::phones::PhoneRound;
use crate::devices::adb::client::{End, ShellOutput, ShellProtocol, MAX_OUTPUT};
use crate::devices::parse::{self, batch::Section, thermal::Thermal};
use crate::state::metrics::InterrogationErrorKind;

/// A round's commands (name, command), least likely to hang first: the kernel answers
/// `/proc/uptime` and `df`, init answers `getprop`, and the dumpsys calls need system_server
/// (battery, then the package manager) and then the thermal HAL. Thermal's stderr is
/// kept: `Can't find service` goes there.
pub const ROUND_COMMANDS: [(&str, &str); 6] = [
    ("uptime", "cat /proc/uptime"),
    ("getprop", "getprop"),
    ("data", "df /data"),
    ("battery", "dumpsys battery"),
    ("packages", parse::packages::COMMAND),
    ("thermal", "dumpsys thermalservice 2>&1"),
];

/// The name of the command whose output was cut when `finished` sections were read:
/// the one after the last finished section (empty when all finished).
pub fn cut(finished: usize) -> &'static str {
    ROUND_COMMANDS.get(finished).map_or("", |(name, _)| *name)
}

/// The shell's words when it refused the script: the script ran to its end but left
/// sections out. `None` when it was not refused.
pub fn refusal(end: End, sections: &[Section], output: &ShellOutput) -> Option<String> {
    (end == End::Finished && sections.len() < ROUND_COMMANDS.len())
        .then(|| parse::batch::shell_words(&output.stdout, &output.stderr, output.exit_code))
        .flatten()
}

/// The commands of the round that left no section, in the round's order: those the
/// fallback runs alone.
pub fn missing(sections: &[Section]) -> Vec<&'static (&'static str, &'static str)> {
    ROUND_COMMANDS
        .iter()
        .filter(|(name, _)| !sections.iter().any(|s| s.name == *name))
        .collect()
}

/// How one command went when it ran alone, after the phone's shell refused the script.
#[derive(Debug, Clone, PartialEq)]
pub enum Alone {
    /// Its output.
    Read(Section),
    /// The shell refused it too, with these words.
    Refused(String),
    /// No answer: the adb server's error, or the round's deadline.
    Unanswered(String),
}

/// What the round's script gave, and what the fallback added.
#[derive(Debug, Clone)]
pub struct Script {
    pub sections: Vec<Section>,
    pub end: End,
    /// `Some` when the phone's shell refused the script: each command it left out, run
    /// alone, in order (those after one that met the round's deadline are not there).
    pub alone: Option<Vec<(&'static str, Alone)>>,
}

impl Script {
    fn section(&self, name: &str) -> Option<&Section> {
        let alone = self.alone.iter().flatten().filter_map(|(_, a)| match a {
            Alone::Read(s) => Some(s),
            _ => None,
        });
        self.sections.iter().chain(alone).find(|s| s.name == name)
    }

    fn alone_of(&self, name: &str) -> Option<&Alone> {
        let mut alone = self.alone.iter().flatten();
        alone.find(|(n, _)| *n == name).map(|(_, a)| a)
    }

    /// Whether the thermal section says the phone has no thermal service: old phones,
    /// whose zones are read from sysfs, one more request, only for them.
    pub fn needs_sysfs_thermal(&self) -> bool {
        self.section("thermal")
            .is_some_and(|s| parse::thermal::says_no_service(&s.text))
    }
}

/// A filled round, with what the caller counts in `interrogation_errors_total` and
/// logs at debug.
#[derive(Debug, Default, PartialEq)]
pub struct Filled {
    pub round: PhoneRound,
    pub count: Vec<InterrogationErrorKind>,
    pub debug: Vec<String>,
}

/// `serial`'s round from its script (`protocol`, the one it ran under); `sysfs` is the
/// output of `parse::thermal::SYSFS_COMMAND` (or why there is none) when
/// [`Script::needs_sysfs_thermal`] asked for it.
pub fn fill(
    serial: &str,
    protocol: ShellProtocol,
    script: &Script,
    sysfs: Option<Result<String, String>>,
) -> Filled {
    let mut filled = Filled::default();
    let cut = cut(script.sections.len());
    for s in script.sections.iter().filter(|s| s.exit_code != Some(0)) {
        // The output still counts if it parses: `dumpsys` exits non-zero on some OEMs.
        filled.debug.push(format!(
            "{serial}: {} exited with {:?}",
            s.name, s.exit_code
        ));
    }
    let mut section = |name: &str| -> Result<&str, String> {
        match script.section(name) {
            Some(s) => Ok(s.text.as_str()),
            None if script.alone.is_some() => Err(match script.alone_of(name) {
                Some(Alone::Refused(words)) => {
                    format!("{serial}: {name}: the phone's shell said {words:?}")
                }
                Some(Alone::Unanswered(why)) => format!("{serial}: {name}: run alone: {why}"),
                _ => format!("{serial}: {name}: not run: the round's deadline came first"),
            }),
            None if script.end == End::OverLimit && name == cut => {
                Err(format!("{name} output over {MAX_OUTPUT} bytes"))
            }
            None if script.end == End::OverLimit => Err(format!(
                "{serial}: {name}: not read, {cut} printed over {MAX_OUTPUT} bytes before it"
            )),
            None if script.end == End::Deadline => Err(format!(
                "{serial}: {name}: no answer before the round's deadline"
            )),
            None => {
                // The script ran to its end: the phone's shell mangled it.
                filled.count.push(InterrogationErrorKind::Parse);
                Err(format!(
                    "{serial}: {name}: the round's script ended without this output"
                ))
            }
        }
    };
    let thermal = match section("thermal") {
        Err(why) => Err(why),
        Ok(text) => match parse::thermal::parse_thermalservice(text) {
            Ok(Thermal::Readings(t)) => Ok(Ok(t)),
            Ok(Thermal::NoService) => match sysfs {
                Some(Ok(out)) => Ok(parse::thermal::parse_sysfs(&out)),
                Some(Err(why)) => Err(why),
                None => Err(format!(
                    "{serial}: thermal: no thermal service, and its sysfs zones were not read"
                )),
            },
            Err(e) => Ok(Err(e)),
        },
    };
    let getprop = section("getprop");
    let battery = section("battery");
    let data = section("data");
    let packages = section("packages");
    let uptime = section("uptime");
    let refused_getprop = matches!(script.alone_of("getprop"), Some(Alone::Refused(_)));
    let mut parse_failed = |what: &str, e: &dyn std::fmt::Display| {
        filled.count.push(InterrogationErrorKind::Parse);
        filled.debug.push(format!("{serial}: {what}: {e}"));
    };
    let mut round = PhoneRound {
        protocol: Some(protocol),
        ..PhoneRound::default()
    };
    let mut skipped = Vec::new();
    match getprop.map(|t| parse::getprop::parse(t, dimensions::is_read_prop)) {
        Ok(Ok(p)) => round.props = Some(p),
        Ok(Err(e)) => {
            // Its shell answered with something else than properties.
            parse_failed("getprop", &e);
            round.failure = Some(e.to_string());
            round.answered = true;
        }
        Err(why) => {
            round.answered = refused_getprop;
            round.failure = Some(why);
        }
    }
    match battery.map(parse::battery::parse) {
        Ok(Ok(b)) => round.battery = Some(b),
        Ok(Err(e)) => {
            // Every phone has a battery level: without it the battery rule cannot run.
            parse_failed("dumpsys battery", &e);
            round.missing_values.push(format!("battery level ({e})"));
        }
        Err(why) => skipped.push(why),
    }
    match data.map(parse::data_free::parse) {
        Ok(Ok(free)) => round.data_free = Some(free),
        Ok(Err(e)) => parse_failed("df /data", &e),
        Err(why) => skipped.push(why),
    }
    match packages.map(parse::packages::parse) {
        Ok(Ok(p)) => round.packages = p,
        Ok(Err(e)) => parse_failed("package versions", &e),
        Err(why) => skipped.push(why),
    }
    match thermal {
        Ok(Ok(t)) => round.thermal = t,
        Ok(Err(e)) => parse_failed("temperatures", &e),
        Err(why) => skipped.push(why),
    }
    match uptime.map(parse::uptime::parse) {
        Ok(Ok(u)) => round.uptime = Some(u),
        Ok(Err(e)) => parse_failed("uptime", &e),
        Err(why) => skipped.push(why),
    }
    filled.debug.extend(skipped);
    filled.round = round;
    filled
}

/// The phones whose shell refused the round's script, and what it said: each refusal is
/// logged when it starts or its words change, and its end once, so that a phone whose
/// shell lacks a construct is named once, not every round.
#[derive(Debug, Default)]
pub struct ScriptRefusals(BTreeMap<String, String>);

impl ScriptRefusals {
    /// Notes how `serial`'s round script went (`Some(words)`: refused, with the shell's
    /// words); returns the line to log at `warn`, if any.
    pub fn note(&mut self, serial: &str, refused: Option<&str>) -> Option<String> {
        match refused {
            Some(words) if self.0.get(serial).map(String::as_str) != Some(words) => {
                self.0.insert(serial.to_string(), words.to_string());
                Some(format!(
                    "round script failed on {serial}: {words}; reading it one command at a time"
                ))
            }
            Some(_) => None,
            None => self.0.remove(serial).map(|_| {
                format!("round script runs again on {serial}: back to one query per round")
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GETPROP: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/adb/getprop_pixel_android14.txt"
    ));
    const BATTERY: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/adb/battery_android14.txt"
    ));
    const THERMAL: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/adb/thermalservice_android14.txt"
    ));
    const SYSFS: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/adb/sysfs_thermal_zones.txt"
    ));
    /// What `parse::packages::COMMAND` prints.
    const PACKAGES: &str = "package com.google.android.gms\nversionName=24.08.12\n\
                            package com.android.vending\nversionName=39.5.24\n";
    const DF: &str = "Filesystem 1K-blocks Used Available Use% Mounted on\n\
                      /dev/block/dm-5 100000 60000 40000 60% /data\n";

    fn section(name: &str, text: &str) -> Section {
        Section {
            name: name.into(),
            text: text.into(),
            exit_code: Some(0),
        }
    }

    /// The sections of a whole round, in order, minus those named in `without`.
    fn sections(without: &[&str]) -> Vec<Section> {
        let texts = [
            ("uptime", "123.45 456.78\n"),
            ("getprop", GETPROP),
            ("data", DF),
            ("battery", BATTERY),
            ("packages", PACKAGES),
            ("thermal", THERMAL),
        ];
        texts
            .iter()
            .filter(|(n, _)| !without.contains(n))
            .map(|(n, t)| section(n, t))
            .collect()
    }

    fn script(sections: Vec<Section>, end: End) -> Script {
        Script {
            sections,
            end,
            alone: None,
        }
    }

    fn output(stdout: &str, stderr: &str, exit_code: Option<u8>) -> ShellOutput {
        ShellOutput {
            stdout: stdout.into(),
            stderr: stderr.into(),
            exit_code,
        }
    }

    #[test]
    fn a_whole_round_fills_every_value_with_nothing_to_count() {
        let f = fill(
            "S1",
            ShellProtocol::V2,
            &script(sections(&[]), End::Finished),
            None,
        );
        assert_eq!(f.count, vec![]);
        assert_eq!(f.debug, Vec::<String>::new());
        let r = &f.round;
        assert!(r
            .props
            .as_ref()
            .is_some_and(|p| p.contains_key("ro.build.id")));
        assert_eq!(r.uptime, Some(123.45));
        assert_eq!(r.data_free, Some(40000 * 1024));
        assert!(r.battery.as_ref().is_some_and(|b| b.percent.is_some()));
        assert!(!r.thermal.is_empty());
        assert!(!r.packages.is_empty());
        assert_eq!(r.protocol, Some(ShellProtocol::V2));
        assert_eq!(r.failure, None);
    }

    #[test]
    fn a_script_that_ended_without_a_section_counts_a_parse_error() {
        let f = fill(
            "S1",
            ShellProtocol::V1,
            &script(sections(&["getprop"]), End::Finished),
            None,
        );
        assert_eq!(f.count, vec![InterrogationErrorKind::Parse]);
        assert_eq!(
            f.round.failure.as_deref(),
            Some("S1: getprop: the round's script ended without this output")
        );
        assert!(!f.round.answered);
    }

    #[test]
    fn a_deadline_or_an_overlong_output_says_which_command_and_why() {
        let cut = sections(&["battery", "packages", "thermal"]);
        let f = fill(
            "S1",
            ShellProtocol::V2,
            &script(cut.clone(), End::Deadline),
            None,
        );
        assert_eq!(f.count, vec![]);
        assert!(f
            .debug
            .contains(&"S1: thermal: no answer before the round's deadline".into()));
        assert!(f.round.props.is_some() && f.round.battery.is_none());
        let f = fill("S1", ShellProtocol::V2, &script(cut, End::OverLimit), None);
        assert!(f
            .debug
            .contains(&format!("battery output over {MAX_OUTPUT} bytes")));
        assert!(f.debug.contains(&format!(
            "S1: thermal: not read, battery printed over {MAX_OUTPUT} bytes before it"
        )));
    }

    #[test]
    fn a_refused_script_is_filled_from_the_commands_run_alone() {
        let mut s = script(
            sections(&["getprop", "battery", "thermal", "packages"]),
            End::Finished,
        );
        assert_eq!(
            missing(&s.sections)
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>(),
            ["getprop", "battery", "packages", "thermal"]
        );
        s.alone = Some(vec![
            ("getprop", Alone::Refused("getprop: inaccessible".into())),
            ("battery", Alone::Read(section("battery", BATTERY))),
            ("packages", Alone::Unanswered("timed out".into())),
        ]);
        let f = fill("S1", ShellProtocol::V2, &s, None);
        assert_eq!(f.count, vec![]);
        assert!(f.round.battery.is_some());
        // The shell answered: the link works, no reconnect.
        assert!(f.round.answered);
        assert_eq!(
            f.round.failure.as_deref(),
            Some("S1: getprop: the phone's shell said \"getprop: inaccessible\"")
        );
        assert!(f
            .debug
            .contains(&"S1: packages: run alone: timed out".into()));
        assert!(f
            .debug
            .contains(&"S1: thermal: not run: the round's deadline came first".into()));
    }

    #[test]
    fn a_phone_without_thermal_service_reads_its_sysfs_zones() {
        let mut all = sections(&["thermal"]);
        all.push(section("thermal", "Can't find service: thermalservice\n"));
        let s = script(all, End::Finished);
        assert!(s.needs_sysfs_thermal());
        assert!(!script(sections(&[]), End::Finished).needs_sysfs_thermal());
        let f = fill("S1", ShellProtocol::V2, &s, Some(Ok(SYSFS.into())));
        assert!(!f.round.thermal.is_empty());
        let f = fill("S1", ShellProtocol::V2, &s, Some(Err("timed out".into())));
        assert!(f.round.thermal.is_empty());
        assert_eq!(f.debug, ["timed out"]);
        let f = fill("S1", ShellProtocol::V2, &s, None);
        assert_eq!(
            f.debug,
            ["S1: thermal: no thermal service, and its sysfs zones were not read"]
        );
    }

    #[test]
    fn unparsable_values_are_counted_and_a_lost_battery_level_is_missing() {
        let mut all = sections(&["battery", "uptime"]);
        all.push(section("battery", "Current Battery Service state:\n"));
        let mut uptime = section("uptime", "not a number\n");
        uptime.exit_code = Some(1);
        all.push(uptime);
        let f = fill("S1", ShellProtocol::V2, &script(all, End::Finished), None);
        assert_eq!(
            f.count,
            [InterrogationErrorKind::Parse, InterrogationErrorKind::Parse]
        );
        assert_eq!(f.round.missing_values.len(), 1);
        assert!(f.round.missing_values[0].starts_with("battery level ("));
        assert!(f.debug.contains(&"S1: uptime exited with Some(1)".into()));
    }

    #[test]
    fn a_refusal_is_a_finished_script_that_left_sections_out() {
        let refused = output("", "/system/bin/sh: syntax error: 'fi' unexpected", Some(2));
        let short = sections(&["thermal"]);
        assert!(refusal(End::Finished, &short, &refused).is_some());
        assert_eq!(refusal(End::Deadline, &short, &refused), None);
        assert_eq!(refusal(End::Finished, &sections(&[]), &refused), None);
        assert_eq!(cut(short.len()), "thermal");
        assert_eq!(cut(ROUND_COMMANDS.len()), "");
    }

    #[test]
    fn a_refusal_is_named_once_again_when_its_words_change_and_its_end_once() {
        let mut r = ScriptRefusals::default();
        assert_eq!(
            r.note("S1", Some("syntax error")).as_deref(),
            Some("round script failed on S1: syntax error; reading it one command at a time")
        );
        assert_eq!(r.note("S1", Some("syntax error")), None);
        assert!(r.note("S2", Some("syntax error")).is_some());
        assert_eq!(
            r.note("S1", Some("not found")).as_deref(),
            Some("round script failed on S1: not found; reading it one command at a time")
        );
        assert_eq!(
            r.note("S1", None).as_deref(),
            Some("round script runs again on S1: back to one query per round")
        );
        assert_eq!(r.note("S1", None), None);
        assert_eq!(r.note("S3", None), None);
    }
}
