//! Finds and kills our remaining descendants at shutdown: the bot's task processes run in
//! process groups of their own and outlive the bot, and as PID 1 (or a child subreaper)
//! the orphans among them become our children.
//!
//! The parsing of `/proc/<pid>/stat` and the ancestry walk are pure; only [`kill_descendants`]
//! reads `/proc` and sends signals. It never signals pid 1, our own pid, or `-1`: a
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
    Some(ProcStat { pid, state, ppid })
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
        let line = "4242 (my (weird) cmd) S 17 4242 4242 0 -1 4194560 120 0 0 0 1 0 0 0 20 0\n";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                pid: 4242,
                state: 'S',
                ppid: 17
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("12 (x)"), None);
    }

    fn p(pid: i32, state: char, ppid: i32) -> ProcStat {
        ProcStat { pid, state, ppid }
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
