//! Finds and kills our remaining descendants at shutdown: the bot's task processes run in
//! process groups of their own and outlive the bot, and as PID 1 (or a child subreaper)
//! the orphans among them become our children. [`Tree`] is one bot's part of them, so
//! that a bot stopped at the end of its drain takes its task with it.
//!
//! The parsing of `/proc/<pid>/stat` and the ancestry walk are pure; only
//! [`kill_descendants`], [`Tree::of`] and [`Tree::signal`] read `/proc` or send signals. It never signals pid 1, our own pid, or `-1`: a
//! monitor that is not PID 1 must not kill processes it did not start. It does not reap:
//! the reaper does.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// The fields of `/proc/<pid>/stat` we need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub state: char,
    pub ppid: i32,
    /// Its process group.
    pub pgrp: i32,
}

/// Parses one `/proc/<pid>/stat` line. The command name is in parentheses and may hold
/// spaces and parentheses itself, so fields are counted from the LAST `)`.
pub fn parse_stat(line: &str) -> Option<ProcStat> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let pid = line[..open].trim().parse().ok()?;
    let mut rest = line.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgrp = rest.next()?.parse().ok()?;
    Some(ProcStat {
        pid,
        state,
        ppid,
        pgrp,
    })
}

/// Live (not zombie) descendants of `root`, from a table of every process.
pub fn descendants(procs: &[ProcStat], root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<&ProcStat>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p);
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        for c in children.get(&pid).into_iter().flatten() {
            if c.pid == root || !seen.insert(c.pid) {
                continue;
            }
            stack.push(c.pid);
            if c.state != 'Z' {
                out.push(c.pid);
            }
        }
    }
    out
}

fn read_procs() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|line| parse_stat(&line))
        .collect()
}

/// The processes below one child (the bot) and their process groups: the task runner a
/// bot starts is in a group of its own, which a signal to the bot's group misses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tree {
    pub pids: Vec<i32>,
    pub groups: Vec<i32>,
}

impl Tree {
    /// `root`'s live descendants in `procs` and their groups, leaving out `own_group`
    /// (ours: a child that did not leave it must not take us with it). Pure.
    pub fn from_table(procs: &[ProcStat], root: i32, own_group: i32) -> Tree {
        let pids = descendants(procs, root);
        let mut groups: Vec<i32> = procs
            .iter()
            .filter(|p| pids.contains(&p.pid) && p.pgrp > 1 && p.pgrp != own_group)
            .map(|p| p.pgrp)
            .collect();
        groups.sort_unstable();
        groups.dedup();
        Tree { pids, groups }
    }

    /// `root`'s tree as `/proc` shows it now.
    pub fn of(root: i32) -> Tree {
        // SAFETY: getpgrp has no preconditions.
        let own_group = unsafe { libc::getpgrp() };
        Tree::from_table(&read_procs(), root, own_group)
    }

    /// This tree and `other` together: the processes seen at either time.
    pub fn merge(mut self, other: Tree) -> Tree {
        for (mine, theirs) in [
            (&mut self.pids, other.pids),
            (&mut self.groups, other.groups),
        ] {
            mine.extend(theirs);
            mine.sort_unstable();
            mine.dedup();
        }
        self
    }

    /// Sends `sig` to every group of the tree and every process in it. A process that
    /// is gone is what was wanted; its pid is not reused within the seconds of a stop.
    pub fn signal(&self, sig: i32) {
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        for group in &self.groups {
            // SAFETY: kill has no memory-safety preconditions; a group > 1, not ours.
            unsafe { libc::kill(-group, sig) };
        }
        for pid in self.pids.iter().filter(|p| **p > 1 && **p != me) {
            // SAFETY: as above, for one process that is not pid 1 or us.
            unsafe { libc::kill(*pid, sig) };
        }
    }
}

/// SIGKILLs every live descendant, again and again until none is left (a process may fork
/// while we walk) or `deadline` passes. Returns how many were signalled.
pub async fn kill_descendants(deadline: Duration) -> usize {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let start = Instant::now();
    let mut killed = HashSet::new();
    loop {
        let live: Vec<i32> = descendants(&read_procs(), me)
            .into_iter()
            .filter(|p| *p > 1 && *p != me)
            .collect();
        if live.is_empty() || start.elapsed() > deadline {
            if !live.is_empty() {
                log::warn!(
                    "{} descendant processes still alive after SIGKILL: {live:?}",
                    live.len()
                );
            }
            return killed.len();
        }
        for pid in live {
            // SAFETY: kill has no memory-safety preconditions; pid > 1 and not us.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            if killed.insert(pid) {
                log::info!("killed leftover process {pid}");
            }
        }
        // Lets the reaper collect what died before the next walk.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_tricky_command_name() {
        let line = "4242 (my (weird) cmd) S 17 4240 4242 0 -1 4194560 120 0 0 0 1 0 0 0 20 0\n";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                pid: 4242,
                state: 'S',
                ppid: 17,
                pgrp: 4240,
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("12 (x)"), None);
    }

    fn p(pid: i32, state: char, ppid: i32) -> ProcStat {
        ProcStat {
            pid,
            state,
            ppid,
            pgrp: pid,
        }
    }

    #[test]
    fn a_bots_tree_holds_its_tasks_group_and_never_ours() {
        let g = |pid, ppid, pgrp| ProcStat {
            pid,
            state: 'S',
            ppid,
            pgrp,
        };
        let table = [
            g(10, 1, 10),  // us, group 10
            g(11, 10, 11), // the bot, its own group
            g(12, 11, 12), // its task runner, a group of its own
            g(13, 12, 12), // the task
            g(14, 11, 10), // a child that stayed in our group
            g(20, 10, 20), // another bot
        ];
        let t = Tree::from_table(&table, 11, 10);
        let mut pids = t.pids.clone();
        pids.sort();
        assert_eq!(pids, vec![12, 13, 14]);
        assert_eq!(t.groups, vec![12]);
        let later = Tree {
            pids: vec![13, 15],
            groups: vec![12, 15],
        };
        let both = t.merge(later);
        assert_eq!(both.pids, vec![12, 13, 14, 15]);
        assert_eq!(both.groups, vec![12, 15]);
    }

    #[test]
    fn descendants_follow_the_tree_and_skip_zombies() {
        let table = [
            p(1, 'S', 0),
            p(10, 'S', 1),  // us
            p(11, 'S', 10), // the bot
            p(12, 'S', 11), // a task, own group
            p(13, 'Z', 10), // a zombie orphan: the reaper's job
            p(14, 'S', 13), // cannot really happen, but its subtree still counts
            p(20, 'S', 1),  // not ours
            p(21, 'S', 20),
        ];
        let mut d = descendants(&table, 10);
        d.sort();
        assert_eq!(d, vec![11, 12, 14]);
    }

    #[test]
    fn a_cycle_in_a_racy_table_terminates() {
        let table = [p(2, 'S', 3), p(3, 'S', 2), p(4, 'S', 1)];
        assert_eq!(descendants(&table, 1), vec![4]);
        let mut d = descendants(&table, 2);
        d.sort();
        assert_eq!(d, vec![3]);
    }
}
