//! One shell script per phone per round, and the split of its output back into the
//! commands' own outputs.
//!
//! Why: every adb request is a new connection to the server, a transport switch and a
//! shell session on the phone, and on a Pi each of those costs wake-ups on both sides.
//! Running a round's commands as one script costs one of each instead of four, and a
//! shell kept open between rounds ([`session_input`]) none. The
//! script ends each command's output with a marker line that carries the command's
//! name and exit code, so the outputs come back exactly, and a command that hangs costs
//! only its own output and those after it: the caller reads until its deadline and
//! keeps every section that was finished. Order the commands from least to most likely
//! to hang.
//!
//! Pure: building the text and splitting it; running it is the adb client's job.

/// Starts every marker line. Command output never contains it in practice; one that
/// did could only end its own section early, which the parsers then reject.
const MARK: &str = "@@tmm-end";

/// The script that runs `commands` (name, shell command) one after the other, in any
/// POSIX shell (mksh on the phones). Names must be single words.
pub fn script(commands: &[(&str, &str)]) -> String {
    commands
        .iter()
        .map(|(name, cmd)| {
            // `echo` first: the marker must start a line even after output without a
            // final newline; the split removes exactly that newline again.
            format!("{cmd}; c=$?; echo; echo \"{MARK} {name} $c\"")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The line a kept-open shell prints after a round's script (see [`session_input`]).
pub const DONE: &str = "@@tmm-round-done\n";

/// `script` as one round's input to a shell kept open between rounds
/// (`client::Session`): one line, its commands reading /dev/null (the shell's own
/// stdin carries the next rounds, which a command reading stdin would swallow), then
/// [`DONE`], so that the reader knows the round is over without the shell exiting.
pub fn session_input(script: &str) -> String {
    format!("{{ {script}; }} </dev/null; echo {DONE}")
}

/// One finished command's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub text: String,
    pub exit_code: Option<i32>,
}

/// The finished sections of a script's output (stdout, with CRLF already normalised),
/// in order. Output after the last marker (a command cut off by the deadline) is not a
/// section.
pub fn split(output: &str) -> Vec<Section> {
    let mut sections = Vec::new();
    let mut rest = output;
    let needle = format!("\n{MARK} ");
    while let Some(at) = rest.find(&needle) {
        let text = &rest[..at];
        let after = &rest[at + needle.len()..];
        let Some(end) = after.find('\n') else {
            // The marker line itself is cut off: its command may not have finished.
            break;
        };
        let mut words = after[..end].split(' ');
        let name = words.next().unwrap_or_default().to_string();
        let exit_code = words.next().and_then(|c| c.parse().ok());
        sections.push(Section {
            name,
            text: text.to_string(),
            exit_code,
        });
        rest = &after[end + 1..];
    }
    sections
}

/// What the shell itself said when a script stopped before its last command: the first
/// line of its stderr, else the first line printed after the last finished section (a
/// shell without the v2 protocol merges stderr into stdout), else its exit code if it
/// failed. `None` when it said nothing at all: a stream closed early (a phone going
/// down, without the v2 protocol) is no answer.
pub fn shell_words(stdout: &str, stderr: &str, exit_code: Option<u8>) -> Option<String> {
    let first_line = |t: &str| {
        t.lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(|l| l.chars().take(WORDS_MAX).collect::<String>())
    };
    let needle = format!("{MARK} ");
    let after_sections = match stdout.rfind(&needle) {
        Some(at) => stdout[at..].split_once('\n').map_or("", |(_, rest)| rest),
        None => stdout,
    };
    first_line(stderr)
        .or_else(|| first_line(after_sections))
        .or_else(|| {
            exit_code
                .filter(|c| *c != 0)
                .map(|code| format!("it exited with {code} and printed nothing"))
        })
}

/// How much of a shell's message [`shell_words`] keeps: a line for a log.
const WORDS_MAX: usize = 200;

/// `name`'s output when it ran alone (outside a script), or the shell's words when the
/// shell refused it: it printed nothing on stdout and exited non-zero (with the v2
/// protocol; without it a refusal reaches the parser, which rejects it).
pub fn alone(
    name: &str,
    stdout: &str,
    stderr: &str,
    exit_code: Option<u8>,
) -> Result<Section, String> {
    match exit_code {
        Some(code) if code != 0 && stdout.trim().is_empty() => {
            Err(shell_words(stdout, stderr, Some(code))
                .unwrap_or_else(|| format!("it exited with {code}")))
        }
        _ => Ok(Section {
            name: name.to_string(),
            text: stdout.to_string(),
            exit_code: exit_code.map(i32::from),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(sections: &[Section]) -> Vec<(&str, &str, Option<i32>)> {
        sections
            .iter()
            .map(|s| (s.name.as_str(), s.text.as_str(), s.exit_code))
            .collect()
    }

    #[test]
    fn script_runs_each_command_then_its_marker() {
        assert_eq!(
            script(&[("a", "getprop"), ("b", "dumpsys battery 2>&1")]),
            "getprop; c=$?; echo; echo \"@@tmm-end a $c\"; \
             dumpsys battery 2>&1; c=$?; echo; echo \"@@tmm-end b $c\""
        );
    }

    #[test]
    fn outputs_come_back_exactly_with_exit_codes() {
        let out = "1.5 2.5\n\n@@tmm-end uptime 0\n[a]: [b]\n\n@@tmm-end getprop 0\n\
                   no newline\n@@tmm-end battery 0\n\n@@tmm-end thermal 127\n";
        let s = split(out);
        assert_eq!(
            fields(&s),
            vec![
                ("uptime", "1.5 2.5\n", Some(0)),
                ("getprop", "[a]: [b]\n", Some(0)),
                ("battery", "no newline", Some(0)),
                ("thermal", "", Some(127)),
            ]
        );
    }

    #[test]
    fn a_command_cut_off_is_not_a_section() {
        let s = split("1.5 2.5\n\n@@tmm-end uptime 0\n[a]: [b");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].name, "uptime");
        // Even when its marker line has started.
        assert_eq!(
            split("x\n\n@@tmm-end uptime 0\ny\n\n@@tmm-end get").len(),
            1
        );
        assert!(split("").is_empty());
    }

    #[test]
    fn output_that_only_looks_like_a_marker_midline_is_kept() {
        let s = split("value @@tmm-end x 1\n\n@@tmm-end getprop 0\n");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].text, "value @@tmm-end x 1\n");
    }

    #[test]
    fn a_real_posix_shell_runs_the_script() {
        let _turn = crate::runtime::reaper::children_lock();
        let text = script(&[
            ("one", "printf 'no newline'"),
            ("two", "echo out; echo err >&2"),
            ("three", "false"),
            ("four", "printf 'a\\n\\n'"),
        ]);
        let out = std::process::Command::new("sh")
            .args(["-c", &text])
            .output()
            .unwrap();
        let s = split(&String::from_utf8(out.stdout).unwrap());
        assert_eq!(
            fields(&s),
            vec![
                ("one", "no newline", Some(0)),
                ("two", "out\n", Some(0)),
                ("three", "", Some(1)),
                ("four", "a\n\n", Some(0)),
            ]
        );
    }

    #[test]
    fn the_shell_s_words_come_from_stderr_then_after_the_sections_then_the_code() {
        let syntax = "/system/bin/sh: syntax error: 'case' unexpected";
        let words = |out: &str, err: &str, code| shell_words(out, err, code);
        let said = Some(syntax.to_string());
        assert_eq!(words("", &format!("\n{syntax}\nmore\n"), Some(1)), said);
        // Without shell v2 the message is in stdout, after what did finish.
        let v1 = format!("1.5 2.5\n\n@@tmm-end uptime 0\n{syntax}\n");
        assert_eq!(words(&v1, "", None), said);
        assert_eq!(words(&format!("{syntax}\n"), "", None), said);
        assert_eq!(
            words("", "", Some(2)).as_deref(),
            Some("it exited with 2 and printed nothing")
        );
        // Nothing said: a stream that closed early, not a shell's refusal.
        assert_eq!(words("x\n\n@@tmm-end a 0\n", " \n", None), None);
        assert_eq!(words("", "", Some(0)), None);
        let long = words("", &"e".repeat(1000), Some(1)).unwrap_or_default();
        assert_eq!(long.len(), WORDS_MAX);
    }

    #[test]
    fn a_command_alone_is_refused_only_when_it_printed_nothing_and_failed() {
        let refused = alone("packages", "", "/system/bin/sh: syntax error\n", Some(1));
        assert_eq!(refused, Err("/system/bin/sh: syntax error".to_string()));
        // dumpsys exits non-zero on some OEMs with its output intact.
        let kept = alone("battery", "level: 50\n", "", Some(1)).unwrap();
        assert_eq!(
            (kept.text.as_str(), kept.exit_code),
            ("level: 50\n", Some(1))
        );
        assert!(alone("packages", "", "", Some(0)).is_ok());
        assert!(alone("getprop", "", "", None).is_ok());
    }

    #[test]
    fn mksh_the_phones_shell_runs_the_script() {
        let _turn = crate::runtime::reaper::children_lock();
        let text = script(&[("one", "echo a"), ("two", "false")]);
        let out = std::process::Command::new("mksh")
            .args(["-c", &text])
            .output()
            .expect("mksh (Debian package mksh, installed by ci/deps)");
        let s = split(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(
            fields(&s),
            vec![("one", "a\n", Some(0)), ("two", "", Some(1))]
        );
    }

    #[test]
    fn a_marker_without_a_code_has_none() {
        assert_eq!(split("\n@@tmm-end uptime\n")[0].exit_code, None);
    }
}
