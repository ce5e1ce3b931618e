//! The `sudo` shim: what runs when the binary is started under the name `sudo`.
//!
//! The Swarming bot reboots "the machine" with `sudo -n /sbin/shutdown -r now` when it
//! is told to, or when it gives up on something. In a pod that must not touch the Pi; the
//! right answer is for the bot to die so that the supervisor starts it again. The image has
//! no shell, so the shim is this binary behind a link named `sudo`: it reports its
//! arguments and SIGKILLs its parent (the bot), which the supervisor then logs as
//! "bot requested a host reboot" and restarts.

use std::ffi::OsStr;
use std::path::Path;

/// True when argv\[0\] names the shim.
pub fn invoked_as_sudo(argv0: &OsStr) -> bool {
    Path::new(argv0).file_name() == Some(OsStr::new("sudo"))
}

/// The line the shim prints to stderr; the supervisor looks for it in the bot's output.
pub fn message(args: &[String]) -> String {
    format!("sudo shim: {}", args.join(" "))
}

/// Prints the message, kills the parent and returns the exit code (1).
pub fn run(args: &[String]) -> i32 {
    eprintln!("{}", message(args));
    // SAFETY: getppid and kill have no memory-safety preconditions.
    let parent = unsafe { libc::getppid() };
    // Never signal PID 1 or "every process": a shim run straight from a container's init
    // (parent 1) or an orphan must not take the whole pod down.
    if parent > 1 {
        // SAFETY: as above.
        let rc = unsafe { libc::kill(parent, libc::SIGKILL) };
        if rc != 0 {
            eprintln!(
                "sudo shim: could not kill parent process {parent}: {}",
                std::io::Error::last_os_error()
            );
        }
    } else {
        eprintln!("sudo shim: parent process is {parent}; refusing to kill it");
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_links_named_sudo() {
        assert!(invoked_as_sudo(OsStr::new("sudo")));
        assert!(invoked_as_sudo(OsStr::new("/usr/bin/sudo")));
        assert!(!invoked_as_sudo(OsStr::new(
            "/usr/bin/test_machine_monitor"
        )));
        assert!(!invoked_as_sudo(OsStr::new("sudoers")));
    }

    #[test]
    fn message_lists_the_arguments() {
        let args = ["-n", "/sbin/shutdown", "-r", "now"].map(String::from);
        assert_eq!(message(&args), "sudo shim: -n /sbin/shutdown -r now");
    }
}
