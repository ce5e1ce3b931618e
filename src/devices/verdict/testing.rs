//! The tests' ways into the verdict: [`Round`], one call of `decide` with the defaults
//! a test does not care about, and [`One`], one phone through some rules alone.

use std::collections::BTreeSet;

use super::{
    decide, Action, Collect, Host, Memory, Outcome, Outside, Rule, Thresholds, Turn,
    TEST_THRESHOLDS,
};
use crate::state::notes::Notes;
use crate::state::snapshot::{Device, Reasons};

/// One call of [`decide`] for the tests of every module that runs the verdict, with the
/// defaults most want (a first round, nothing being rebooted, no host facts, no notes,
/// the flags' defaults, at 0 s, idle); a test sets only what it is about.
pub struct Round {
    memory: Memory,
    devices: Vec<Device>,
    rebooting: BTreeSet<String>,
    host: Host,
    notes: Notes,
    t: Thresholds,
    now: f64,
    idle: bool,
}

impl Round {
    pub fn of(devices: &[Device]) -> Round {
        Round {
            memory: Memory::default(),
            devices: devices.to_vec(),
            rebooting: BTreeSet::new(),
            host: Host::default(),
            notes: Notes::default(),
            t: TEST_THRESHOLDS,
            now: 0.0,
            idle: true,
        }
    }

    /// The round after the one that left `memory`.
    pub fn after(mut self, memory: &Memory) -> Round {
        self.memory = memory.clone();
        self
    }

    pub fn rebooting(mut self, serials: &BTreeSet<String>) -> Round {
        self.rebooting = serials.clone();
        self
    }

    pub fn host(mut self, host: Host) -> Round {
        self.host = host;
        self
    }

    pub fn notes(mut self, notes: Notes) -> Round {
        self.notes = notes;
        self
    }

    pub fn thresholds(mut self, t: Thresholds) -> Round {
        self.t = t;
        self
    }

    /// The watcher's clock, in seconds.
    pub fn at(mut self, now: f64) -> Round {
        self.now = now;
        self
    }

    /// False while a task runs.
    pub fn idle(mut self, idle: bool) -> Round {
        self.idle = idle;
        self
    }

    pub fn decide(&self) -> Outcome {
        decide(
            &self.memory,
            &self.devices,
            &self.rebooting,
            Outside {
                host: &self.host,
                notes: &self.notes,
            },
            &self.t,
            self.now,
            self.idle,
        )
    }
}

/// One phone through some rules alone, for each rule's own tests: the phone, the memory
/// of earlier rounds and the round's settings (the flags' defaults, at 0 s, idle); a
/// test sets the fields it is about (`One { now: 60.0, ..One::of(phone) }`).
pub(super) struct One {
    pub(super) d: Device,
    pub(super) was: Memory,
    pub(super) t: Thresholds,
    pub(super) notes: Notes,
    pub(super) now: f64,
    pub(super) idle: bool,
    pub(super) all_stuck: bool,
    pub(super) being_rebooted: bool,
}

/// What [`One::apply`] gives: the phone's reasons, the memory left, the actions.
pub(super) struct Applied {
    pub(super) r: Reasons,
    pub(super) next: Memory,
    pub(super) actions: Vec<Action>,
}

impl One {
    pub(super) fn of(d: Device) -> One {
        One {
            d,
            was: Memory::default(),
            t: TEST_THRESHOLDS,
            notes: Notes::default(),
            now: 0.0,
            idle: true,
            all_stuck: false,
            being_rebooted: false,
        }
    }

    pub(super) fn apply(&self, rules: &[Rule]) -> Applied {
        let mut next = Memory::default();
        let mut actions = Vec::new();
        let mut turn = Turn {
            d: &self.d,
            was: &self.was,
            next: &mut next,
            r: Collect::default(),
            actions: &mut actions,
            t: &self.t,
            notes: &self.notes,
            now: self.now,
            idle: self.idle,
            all_stuck: self.all_stuck,
            being_rebooted: self.being_rebooted,
        };
        for rule in rules {
            rule(&mut turn);
        }
        Applied {
            r: turn.r.into_reasons(),
            next,
            actions,
        }
    }
}
