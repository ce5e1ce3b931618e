//! test_machine_monitor: keeps a LUCI Swarming bot running on a Raspberry Pi and answers
//! its hooks from what it knows of the attached phones.
//!
//! The library is the whole program; `src/main.rs` only hands it the process's argv.
//! [`cli`] dispatches: the applets (`sudo`, `df`), then the command line, then
//! [`app::run`].
//! Exit codes: 0 clean shutdown, 1 fatal error, 2 bad command line or configuration.
//! ARCHITECTURE.md maps the modules.
//!
//! Nothing but [`cli`] and [`fuzzing`] is public: the modules keep their visibilities
//! (and the dead-code lint its reach) as they had them in a binary-only crate.

mod app;
mod bot;
mod config;
mod devices;
mod devices_cmd;
mod kube;
mod runtime;
mod serve;
mod state;

pub mod fuzzing;

use std::ffi::OsStr;
use std::process::ExitCode;

use bot::{df, shim, token_fetch};
use config::{settings, Command};
use runtime::logging;

/// The hook script the Swarming server hands to the bot (bots.cfg `bot_config_script`),
/// raw deflate from build.rs: `bot-config` is its only reader.
const BOT_CONFIG_DEFLATED: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/bot_config.py.deflate"));

/// `test_machine_monitor <version> (<commit>)`.
fn version_line() -> String {
    format!(
        "test_machine_monitor {} ({})",
        env!("CARGO_PKG_VERSION"),
        env!("TMM_COMMIT")
    )
}

/// Runs the program as `argv0` with `args` (the arguments after it): what `main` does.
pub fn cli(argv0: &OsStr, args: &[String]) -> ExitCode {
    if shim::invoked_as_sudo(argv0) {
        return ExitCode::from(shim::run(args) as u8);
    }
    if std::path::Path::new(argv0).file_name() == Some(OsStr::new("df")) {
        return ExitCode::from(df::run(args) as u8);
    }

    let hostname = hostname();
    let command = match config::parse(args, &|k| std::env::var(k).ok(), &hostname) {
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
            use std::io::{Read, Write};
            let mut script = Vec::new();
            // The bytes are build.rs's own deflate: inflating them cannot fail but by a
            // bug, which the error below would name like any write error.
            let mut out = std::io::stdout().lock();
            match flate2::read::DeflateDecoder::new(BOT_CONFIG_DEFLATED)
                .read_to_end(&mut script)
                .and_then(|_| out.write_all(&script))
                .and_then(|()| out.flush())
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("test_machine_monitor: bot-config: cannot write the script: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::CheckConfig(config) => match check_config(&config) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("test_machine_monitor: {e}");
                ExitCode::from(2)
            }
        },
        Command::Devices(config) => {
            let out = devices_cmd::run(config.adb_server, config.metrics_addr);
            print!("{}", out.text);
            match out.error {
                None => ExitCode::SUCCESS,
                Some(e) => {
                    eprintln!("test_machine_monitor: {e}");
                    ExitCode::from(1)
                }
            }
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

/// Parses every input the configuration names (the token config unless `--no-bot`, and
/// the settings file) and describes the result. Header values of the token config are
/// redacted: they can be credentials.
fn check_config(config: &config::Config) -> Result<String, String> {
    let mut text = config.describe();
    if !config.no_bot {
        let token =
            token_fetch::read_token_config(&config.token_config).map_err(|e| e.to_string())?;
        text.push_str(&format!("token_url = {}\n", token.url));
        let names: Vec<String> = token
            .headers
            .iter()
            .map(|(name, _)| format!("{name}: <redacted>"))
            .collect();
        text.push_str(&format!("token_headers = {}\n", names.join(", ")));
    }
    let settings = settings::load(config.settings.as_deref()).map_err(|e| e.to_string())?;
    text.push_str(&format!("bot_settings = {settings}\n"));
    Ok(text)
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
