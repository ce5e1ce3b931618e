//! One shell script per phone per round, and the split of its output back into the
//! commands' own outputs.
//!
//! Why: every adb request is a new connection to the server, a transport switch and a
//! shell session on the phone, and on a Pi each of those costs wake-ups on both sides.
//! Running a round's commands as one script costs one of each instead of four. The
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
    fn a_marker_without_a_code_has_none() {
        assert_eq!(split("\n@@tmm-end uptime\n")[0].exit_code, None);
    }
}
