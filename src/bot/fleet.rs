//! `--bots per-device`: which bots should run, one per listed phone. Pure: the phones
//! listed, the bots running and the clock in; the bots to start, those to keep and those
//! to stop, and the phones refused a bot (with the reason), out. The supervisors that
//! run them live in `bots`.
//!
//! Why one bot per phone: a bot runs one task at a time, so a Pi with N phones behind
//! one bot uses one phone at a time, and a task that asks for one model could land on a
//! bot whose other phone it cannot choose. Swarming's composite bot ids (`host--suffix`,
//! the server authenticates the part before `--`) let one host run many bots.
//!
//! The rules:
//! - The id is `<--bot-id>--<serial>`, each character of the serial outside
//!   `[A-Za-z0-9_.-]` replaced by `-`; the directory is `<--bot-dir>/<that suffix>`.
//! - Two phones whose serials give one id both get no bot: merging them would put two
//!   phones behind one bot again, and picking one would depend on listing order.
//! - A phone that has a bot keeps it; new phones get bots in serial order up to
//!   `--max-bots`; the others are refused with the cap in the reason.
//! - A bot whose phone is no longer listed stays, quarantined by its phone's verdict,
//!   for `--gone-bot-grace`; then it is stopped, but never while it runs a task.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::state::notes::sanitize;
use crate::state::snapshot::DeviceKind;

/// Swarming's longest bot id.
const MAX_ID_LEN: usize = 256;

/// One bot of the fleet: its phone, its id and its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotSpec {
    pub kind: DeviceKind,
    pub serial: String,
    pub id: String,
    pub dir: PathBuf,
}

impl BotSpec {
    /// The variables a bot of this phone gets on top of the common ones: adb's own
    /// `ANDROID_SERIAL`, so that a task's `adb` talks to this phone; `IOS_UDID` for an
    /// iPhone, for a task's libimobiledevice tools (`-u "$IOS_UDID"`).
    pub fn phone_env(&self) -> (&'static str, &str) {
        match self.kind {
            DeviceKind::Android => ("ANDROID_SERIAL", &self.serial),
            DeviceKind::Ios => ("IOS_UDID", &self.serial),
        }
    }
}

/// What the fleet should be now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Every bot that should be running, by serial: the listed phones' and the gone
    /// phones' still within their grace (or running a task).
    pub bots: BTreeMap<String, BotSpec>,
    /// Phones without a bot, each with the reason, by serial.
    pub refused: BTreeMap<String, String>,
}

/// The fleet's inputs that do not change while it runs.
#[derive(Debug, Clone)]
pub struct Rules<'a> {
    pub host_id: &'a str,
    pub bot_dir: &'a Path,
    pub max_bots: usize,
    pub gone_grace: Duration,
}

/// A bot that runs now, as the fleet's supervisor knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Running {
    pub spec: BotSpec,
    /// Seconds (on the caller's clock) since which its phone has not been listed.
    pub gone_since: Option<f64>,
    pub task_running: bool,
}

/// The fleet for the phones `listed` now, given the bots `running`, at `now` (seconds
/// on the same clock as [`Running::gone_since`]).
pub fn plan(
    rules: &Rules,
    listed: &[(DeviceKind, String)],
    running: &BTreeMap<String, Running>,
    now: f64,
) -> Plan {
    let mut out = Plan::default();
    let listed_serials: BTreeSet<&str> = listed.iter().map(|(_, s)| s.as_str()).collect();
    let mut by_id: BTreeMap<String, Vec<BotSpec>> = BTreeMap::new();
    for (kind, serial) in listed {
        let suffix = sanitize(serial);
        let id = format!("{}--{suffix}", rules.host_id);
        if id.len() > MAX_ID_LEN {
            out.refused.insert(
                serial.clone(),
                format!(
                    "no bot for {serial}: its bot id would be {} characters, over Swarming's {MAX_ID_LEN}",
                    id.len()
                ),
            );
            continue;
        }
        let spec = BotSpec {
            kind: *kind,
            serial: serial.clone(),
            dir: rules.bot_dir.join(&suffix),
            id: id.clone(),
        };
        by_id.entry(id).or_default().push(spec);
    }
    let mut wanted = Vec::new();
    for (id, specs) in by_id {
        if specs.len() > 1 {
            let mut serials: Vec<&str> = specs.iter().map(|s| s.serial.as_str()).collect();
            serials.sort_unstable();
            for spec in &specs {
                out.refused.insert(
                    spec.serial.clone(),
                    format!(
                        "no bot for {}: serials {} all give the bot id {id}; give one of these phones another serial (a TCP phone: connect it on another port)",
                        spec.serial,
                        serials.join(", ")
                    ),
                );
            }
        } else {
            wanted.extend(specs);
        }
    }
    // Gone phones' bots first: they hold their place within the cap.
    for (serial, r) in running {
        if listed_serials.contains(serial.as_str()) {
            continue;
        }
        let gone_for = r.gone_since.map_or(0.0, |t| (now - t).max(0.0));
        if r.task_running || gone_for < rules.gone_grace.as_secs_f64() {
            out.bots.insert(serial.clone(), r.spec.clone());
        }
    }
    let (kept, new): (Vec<BotSpec>, Vec<BotSpec>) = wanted
        .into_iter()
        .partition(|s| running.get(&s.serial).is_some_and(|r| r.spec == *s));
    for spec in kept {
        out.bots.insert(spec.serial.clone(), spec);
    }
    for spec in new {
        if out.bots.len() >= rules.max_bots {
            out.refused.insert(
                spec.serial.clone(),
                format!(
                    "no bot for {}: --max-bots {} bots run already",
                    spec.serial, rules.max_bots
                ),
            );
        } else {
            out.bots.insert(spec.serial.clone(), spec);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(max_bots: usize) -> Rules<'static> {
        Rules {
            host_id: "pi-01",
            bot_dir: Path::new("/b/s"),
            max_bots,
            gone_grace: Duration::from_secs(600),
        }
    }

    fn android(serials: &[&str]) -> Vec<(DeviceKind, String)> {
        serials
            .iter()
            .map(|s| (DeviceKind::Android, s.to_string()))
            .collect()
    }

    fn running(p: &Plan, gone: &[(&str, f64)], tasks: &[&str]) -> BTreeMap<String, Running> {
        p.bots
            .iter()
            .map(|(serial, spec)| {
                let gone_since = gone.iter().find(|(s, _)| s == serial).map(|(_, t)| *t);
                let task_running = tasks.contains(&serial.as_str());
                let r = Running {
                    spec: spec.clone(),
                    gone_since,
                    task_running,
                };
                (serial.clone(), r)
            })
            .collect()
    }

    #[test]
    fn a_tcp_serial_gives_the_documented_id_and_directory() {
        let p = plan(
            &rules(8),
            &android(&["127.0.0.1:5555"]),
            &BTreeMap::new(),
            0.0,
        );
        let spec = &p.bots["127.0.0.1:5555"];
        assert_eq!(spec.id, "pi-01--127.0.0.1-5555");
        assert_eq!(spec.dir, PathBuf::from("/b/s/127.0.0.1-5555"));
        assert_eq!(spec.phone_env(), ("ANDROID_SERIAL", "127.0.0.1:5555"));
        assert!(p.refused.is_empty());
    }

    #[test]
    fn sanitize_keeps_only_the_allowed_characters() {
        assert_eq!(sanitize("R58M12ABCDE"), "R58M12ABCDE");
        assert_eq!(sanitize("a b/c:d_e.f-g"), "a-b-c-d_e.f-g");
        assert_eq!(sanitize("é"), "-");
        assert_eq!(
            sanitize("00008030-001A2B3C4D5E802E"),
            "00008030-001A2B3C4D5E802E"
        );
    }

    #[test]
    fn two_serials_with_one_id_are_both_refused() {
        let p = plan(
            &rules(8),
            &android(&["10.0.0.1:5555", "10.0.0.1-5555", "S1"]),
            &BTreeMap::new(),
            0.0,
        );
        assert_eq!(p.bots.keys().collect::<Vec<_>>(), ["S1"]);
        let why = &p.refused["10.0.0.1:5555"];
        assert!(
            why.contains(
                "serials 10.0.0.1-5555, 10.0.0.1:5555 all give the bot id pi-01--10.0.0.1-5555"
            ),
            "{why}"
        );
        assert!(p.refused.contains_key("10.0.0.1-5555"));
    }

    #[test]
    fn an_iphone_gets_its_udid_variable() {
        let p = plan(
            &rules(8),
            &[(DeviceKind::Ios, "00008030-001A".to_string())],
            &BTreeMap::new(),
            0.0,
        );
        assert_eq!(
            p.bots["00008030-001A"].phone_env(),
            ("IOS_UDID", "00008030-001A")
        );
    }

    #[test]
    fn the_cap_keeps_running_bots_and_refuses_the_newest() {
        let first = plan(&rules(2), &android(&["B", "C"]), &BTreeMap::new(), 0.0);
        assert_eq!(first.bots.len(), 2);
        // A sorts before B and C, but B and C have their bots already.
        let now = running(&first, &[], &[]);
        let p = plan(&rules(2), &android(&["A", "B", "C"]), &now, 1.0);
        assert_eq!(p.bots.keys().collect::<Vec<_>>(), ["B", "C"]);
        assert_eq!(
            p.refused["A"],
            "no bot for A: --max-bots 2 bots run already"
        );
    }

    #[test]
    fn a_gone_phone_keeps_its_bot_for_the_grace_and_while_its_task_runs() {
        let first = plan(&rules(8), &android(&["A", "B"]), &BTreeMap::new(), 0.0);
        let gone = running(&first, &[("A", 100.0)], &[]);
        let within = plan(&rules(8), &android(&["B"]), &gone, 699.0);
        assert!(within.bots.contains_key("A"), "{within:?}");
        let after = plan(&rules(8), &android(&["B"]), &gone, 700.0);
        assert_eq!(after.bots.keys().collect::<Vec<_>>(), ["B"]);
        let busy = running(&first, &[("A", 100.0)], &["A"]);
        let busy = plan(&rules(8), &android(&["B"]), &busy, 5000.0);
        assert!(
            busy.bots.contains_key("A"),
            "a bot was stopped during its task"
        );
        // Back within its grace: the same bot, the same directory.
        let back = plan(&rules(8), &android(&["A", "B"]), &gone, 300.0);
        assert_eq!(back.bots["A"], first.bots["A"]);
    }

    #[test]
    fn a_running_bot_whose_id_a_new_phone_also_gives_is_refused_too() {
        let first = plan(
            &rules(8),
            &android(&["10.0.0.1:5555"]),
            &BTreeMap::new(),
            0.0,
        );
        let now = running(&first, &[], &[]);
        let p = plan(
            &rules(8),
            &android(&["10.0.0.1:5555", "10.0.0.1-5555"]),
            &now,
            1.0,
        );
        assert!(p.bots.is_empty(), "{p:?}");
        assert_eq!(p.refused.len(), 2);
    }

    #[test]
    fn an_id_over_swarmings_limit_is_refused() {
        let long = "x".repeat(300);
        let p = plan(&rules(8), &android(&[&long]), &BTreeMap::new(), 0.0);
        assert!(p.bots.is_empty());
        assert!(
            p.refused[&long].contains("over Swarming's 256"),
            "{:?}",
            p.refused
        );
    }
}
