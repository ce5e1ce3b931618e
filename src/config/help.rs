//! The `--help` text: usage lines, then one line per row of the flag table.

use super::flags::FLAGS;

/// The `--help` text, generated from the flag table.
pub fn help_text() -> String {
    let mut out = String::from(
        "test_machine_monitor: runs a LUCI Swarming bot and answers its hooks from the attached phones\n\n\
         Usage: test_machine_monitor [FLAGS]\n       \
         test_machine_monitor bot-config      print the hook script for the Swarming server\n       \
         test_machine_monitor devices [FLAGS] list the phones the adb server at --adb-server sees,\n       \
         \x20                                    with the monitor's verdict on each, and exit\n       \
         sudo ...                             (as a link named sudo) kill the calling bot\n\nFlags:\n",
    );
    for f in FLAGS {
        let head = if f.metavar.is_empty() {
            f.name.to_string()
        } else {
            format!("{} {}", f.name, f.metavar)
        };
        out.push_str(&format!("  {head:<32} {}", f.help));
        let mut extras = Vec::new();
        if let Some(env) = f.env {
            extras.push(format!("env {env}"));
        }
        if let Some(default) = f.shown_default() {
            extras.push(format!("default {default}"));
        }
        if !extras.is_empty() {
            out.push_str(&format!(" [{}]", extras.join(", ")));
        }
        out.push('\n');
    }
    out.push_str(
        "\nLogs go to stderr, one line per event; RUST_LOG sets the level (default info).\n\
         Exit codes: 0 clean shutdown, 1 fatal error, 2 bad command line or configuration.\n",
    );
    out
}
