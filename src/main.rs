//! test_machine_monitor: keeps a LUCI Swarming bot running on a Raspberry Pi and answers
//! its hooks from what it knows of the attached phones.
//!
//! `main` only dispatches: the sudo shim, then the command line, then [`app::run`].
//! Exit codes: 0 clean shutdown, 1 fatal error, 2 bad command line or configuration.
//! ARCHITECTURE.md maps the modules.

mod adb;
mod app;
mod config;
mod devices;
mod dimensions;
mod health;
mod logging;
mod metrics;
mod parse;
mod reaper;
mod shim;
mod shutdown;
mod snapshot;
mod state;
mod status_server;
mod token;

use std::process::ExitCode;

use config::Command;

/// `test_machine_monitor <version> (<commit>)`.
fn version_line() -> String {
    format!(
        "test_machine_monitor {} ({})",
        env!("CARGO_PKG_VERSION"),
        env!("TMM_COMMIT")
    )
}

fn main() -> ExitCode {
    let mut argv = std::env::args_os();
    let argv0 = argv.next().unwrap_or_default();
    let args: Vec<String> = argv.map(|a| a.to_string_lossy().into_owned()).collect();

    if shim::invoked_as_sudo(&argv0) {
        return ExitCode::from(shim::run(&args) as u8);
    }

    let hostname = hostname();
    let command = match config::parse(&args, &|k| std::env::var(k).ok(), &hostname) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("test_machine_monitor: {e}");
            return ExitCode::from(2);
        }
    };

    match command {
        Command::Help => {
            print!("{}", config::help_text());
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("{}", version_line());
            ExitCode::SUCCESS
        }
        Command::BotConfig => {
            eprintln!("test_machine_monitor: bot-config: the hook script is not yet built (see the hooks issue)");
            ExitCode::from(1)
        }
        Command::CheckConfig(config) => {
            print!("{}", config.describe());
            ExitCode::SUCCESS
        }
        Command::Run(config) => {
            logging::init();
            log::info!("{} starting", version_line());
            match app::run(*config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    log::error!("{e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// The short host name: the default bot id, as the Swarming bot itself would choose.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its full length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let full = String::from_utf8_lossy(&buf[..end]).into_owned();
    full.split('.').next().unwrap_or_default().to_string()
}
