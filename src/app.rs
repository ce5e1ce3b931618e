//! Wiring: builds the current-thread runtime, binds the servers, starts the components
//! and runs until SIGTERM or SIGINT.
//!
//! Order matters on a Pi: the servers are bound first, so that `/healthz` answers before
//! anything slow (adb, the token, the zip) has started; that slow work then runs in the
//! background. On shutdown every component is awaited before the runtime is dropped, and
//! the reaper goes last.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::bot::token_fetch;
use crate::bot::{self, bots, supervisor};
use crate::config::swarming_settings::{self, SettingsError};
use crate::config::{BotsMode, Config};
use crate::devices;
use crate::kube;
use crate::runtime::clock::Ticker;
use crate::runtime::procs;
use crate::runtime::reaper::{self, Reaper};
use crate::runtime::shutdown;
use crate::serve::hooks::{self, Hooks};
use crate::serve::status_server;
use crate::serve::{hook_front, hook_server};
use crate::state::snapshot::Snapshot;
use crate::state::{EventReason, Liveness, Shared};

/// Why the program could not run. Each maps to exit code 1.
#[derive(Debug)]
pub enum AppError {
    /// A listening address could not be bound.
    Bind {
        flag: &'static str,
        addr: String,
        reason: String,
    },
    /// The runtime or a thread could not be created.
    Start(std::io::Error),
    /// The `--settings` file cannot be read or is invalid (the error names the file).
    Settings(SettingsError),
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Bind { flag, addr, reason } => {
                write!(f, "cannot listen on {addr} ({flag}): {reason}")
            }
            AppError::Start(e) => write!(f, "cannot start: {e}"),
            AppError::Settings(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for AppError {}

fn bind(flag: &'static str, addr: std::net::SocketAddr) -> Result<tiny_http::Server, AppError> {
    tiny_http::Server::http(addr).map_err(|e| AppError::Bind {
        flag,
        addr: addr.to_string(),
        reason: e.to_string(),
    })
}

/// The hook port (`addr`, for `hook_front`) and, behind it, the hook server's threads
/// on a loopback port of their own, with that port's address.
fn bind_hooks(
    addr: std::net::SocketAddr,
) -> Result<
    (
        tokio::net::TcpListener,
        tiny_http::Server,
        std::net::SocketAddr,
    ),
    AppError,
> {
    let bind_error = |e: &dyn fmt::Display| AppError::Bind {
        flag: "--hook-addr",
        addr: addr.to_string(),
        reason: e.to_string(),
    };
    let port = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::TcpListener::from_std)
        .map_err(|e| bind_error(&e))?;
    let server = tiny_http::Server::http("127.0.0.1:0").map_err(|e| bind_error(&e))?;
    let inner = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| bind_error(&"the hook server's own port is not an IP port"))?;
    Ok((port, server, inner))
}

pub fn run(config: Config) -> Result<(), AppError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AppError::Start)?;
    let result = runtime.block_on(main_loop(config));
    // Dropping the runtime ends the reaper last; give children a final sweep.
    drop(runtime);
    result
}

async fn main_loop(config: Config) -> Result<(), AppError> {
    // Read first: a bad --settings file stops the program before anything starts.
    let swarming_settings =
        swarming_settings::load(config.settings.as_deref()).map_err(AppError::Settings)?;
    // Before anything else: a SIGTERM that arrives while we start must count. As PID 1
    // without a handler the kernel would drop it, and elsewhere it would kill us outright.
    let (trigger, mut shutdown) = shutdown::channel();
    listen_for_signals(trigger);
    reaper::become_subreaper();
    let (shared, device_commands) = Shared::new(config.bots);
    shared.liveness.tick();

    let status = status_server::start(
        status_server::Context {
            shared: shared.clone(),
            settings: status_settings(&config),
        },
        bind("--metrics-addr", config.metrics_addr)?,
    )
    .map_err(AppError::Start)?;
    log::info!(
        "serving /healthz and /readyz on {} (bot id {})",
        config.metrics_addr,
        config.bot_id
    );

    let hook_addr = config.hook_addr;
    let (hook_port, hook_threads, inner) = bind_hooks(hook_addr)?;
    let hooks = hook_server::start(
        Arc::new(hooks::Context::of(&shared, hook_settings(&config))),
        Hooks::new(&swarming_settings),
        hook_threads,
    )
    .map_err(AppError::Start)?;
    tokio::spawn(hook_front::run(hook_port, inner, shared.metrics.clone()));
    shared.liveness.set_hooks_serving();
    log::info!("serving the bot's hooks on {hook_addr}");
    crate::kube::start(&shared, &kube_settings(&config));

    let reaper = Reaper::new();
    tokio::spawn(reaper.clone().run());

    // The phones outlive the bot at shutdown: a task still running during the bot's
    // --grace may need adb. The watcher (and the adb server) stop once the bot is gone.
    let (devices_trigger, devices_shutdown) = shutdown::channel();
    let watch_devices = config.devices.android || config.devices.ios;
    let watcher = if watch_devices {
        let ticker = Ticker::new(config.interrogate_every).map_err(AppError::Start)?;
        Some(tokio::spawn(devices::run(
            devices::Context::of(&shared, device_settings(&config)),
            device_commands,
            reaper.clone(),
            ticker,
            devices_shutdown,
        )))
    } else {
        None
    };
    if !watch_devices {
        // No phones to watch: the empty picture is already complete, but for the
        // operators' notes, which the verdict turns into the bot's reasons.
        shared.snapshot.publish(Snapshot::default());
        shared.snapshot.mark_first_round_done();
        tokio::spawn(notes_without_phones(shared.clone(), thresholds(&config)));
        tokio::spawn(tick_loop(shared.liveness.clone(), config.interrogate_every));
    }

    // The token outlives the first signal too: a bot that drains for up to an hour
    // reports its task with it. It stops once the bots are gone.
    let (tokens_trigger, tokens_shutdown) = shutdown::channel();
    let bot = if config.no_bot {
        log::info!("--no-bot: not running the Swarming bot");
        None
    } else {
        let tokens = token_fetch::spawn_refresher(
            shared.token.clone(),
            shared.metrics.clone(),
            config.token_config.clone(),
            config.ca_bundle.clone(),
            tokens_shutdown,
        );
        let ctx = supervisor::Context::of(&shared, bot_settings(&config));
        Some(match config.bots {
            BotsMode::One => {
                let which = supervisor::Which {
                    id: config.bot_id.clone(),
                    dir: config.bot_dir.clone(),
                    phone_env: None,
                    zip_seed: None,
                    zip_turn: None,
                    status: shared.bot.clone(),
                    calls: shared.calls.clone(),
                };
                tokio::spawn(supervisor::run(
                    ctx,
                    which,
                    false,
                    reaper.clone(),
                    tokens,
                    shutdown.clone(),
                ))
            }
            BotsMode::PerDevice => tokio::spawn(bots::run(
                ctx,
                shared.snapshot.clone(),
                shared.per_device_bots.clone(),
                reaper.clone(),
                tokens,
                shutdown.clone(),
            )),
        })
    };

    shutdown.requested().await;
    shared.draining.start();
    // The drain is one line, and the node's event too (posted while the bots drain).
    let tasks = shared.tasks_running();
    let draining = if bot.is_some() {
        format!(
            "draining for shutdown: {tasks} task{} running; a bot running a task gets up to {}s (--drain-limit) to finish it, an idle bot stops now; a second signal cuts the drain short",
            if tasks == 1 { "" } else { "s" },
            config.drain_limit.as_secs()
        )
    } else {
        "draining for shutdown: no bot (--no-bot); stopping the phones' watch".to_string()
    };
    log::info!("{draining}");
    shared.events.report(EventReason::Draining, draining);

    // The bots drain first (a bot running a task has --drain-limit to finish it; then
    // SIGTERM, --grace, SIGKILL of it and its task), while the phones and their daemons
    // stay up: a task talks to its phone. Then whatever they left behind is killed, so
    // that nothing outlives us.
    if let Some(bot) = bot {
        if let Err(e) = bot.await {
            log::error!("the bot supervisor failed: {e}");
        }
    }
    tokens_trigger.fire();
    devices_trigger.fire();
    if let Some(watcher) = watcher {
        // It stops the adb server child before returning.
        if let Err(e) = watcher.await {
            log::error!("the device watcher failed: {e}");
        }
        // The watcher ticked for the watchdog; the rest of the shutdown still may not
        // look stalled to it.
        tokio::spawn(tick_loop(shared.liveness.clone(), config.interrogate_every));
    }
    let killed = procs::kill_descendants(Duration::from_secs(5)).await;
    if killed > 0 {
        log::info!("killed {killed} leftover processes");
    }

    // The node's last events (the drain's) go out before we do, within a bound: an
    // API server that does not answer costs the exit at most this.
    let flush_until = tokio::time::Instant::now() + Duration::from_secs(3);
    while shared.events.node_pending() > 0 && tokio::time::Instant::now() < flush_until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    hooks.stop();
    status.stop();
    reaper.reap_now();
    log::info!("stopped");
    Ok(())
}

/// The status server's slice of the configuration.
fn status_settings(c: &Config) -> status_server::Settings {
    status_server::Settings {
        bot_id: c.bot_id.clone(),
        no_bot: c.no_bot,
        interrogate_every: c.interrogate_every,
        max_temperature_celsius: c.max_temperature_celsius,
        min_battery_percent: c.min_battery_percent,
    }
}

/// The hooks' slice of the configuration.
pub(crate) fn hook_settings(c: &Config) -> hooks::Settings {
    hooks::Settings {
        bots: c.bots,
        bot_id: c.bot_id.clone(),
        force_quarantine_file: c.force_quarantine_file.clone(),
    }
}

/// The bots' slice of the configuration.
fn bot_settings(c: &Config) -> bot::Settings {
    bot::Settings {
        swarming_server: c.swarming_server.clone(),
        bot_id: c.bot_id.clone(),
        bot_dir: c.bot_dir.clone(),
        python: c.python.clone(),
        ca_bundle: c.ca_bundle.clone(),
        hook_addr: c.hook_addr,
        grace: c.grace,
        drain_limit: c.drain_limit,
        bot_silence_limit: c.bot_silence_limit,
        max_bots: c.max_bots,
        gone_bot_grace: c.gone_bot_grace,
    }
}

/// The Kubernetes client's slice of the configuration.
fn kube_settings(c: &Config) -> kube::Settings {
    kube::Settings {
        kubernetes: c.kubernetes,
        kube_api: c.kube_api.clone(),
        node_name: c.node_name.clone(),
        kube_service_account_dir: c.kube_service_account_dir.clone(),
    }
}

/// The phones' slice of the configuration.
fn device_settings(c: &Config) -> devices::Settings {
    devices::Settings {
        devices: c.devices,
        interrogate_every: c.interrogate_every,
        no_reboot_after_task: c.no_reboot_after_task,
        power_off: c.power_off,
        adb: c.adb.clone(),
        adb_server: c.adb_server,
        usbmuxd: c.usbmuxd.clone(),
        ios: devices::ios::Tools {
            dir: c.idevice_dir.clone(),
            interrogate_every: c.interrogate_every,
        },
        thresholds: thresholds(c),
    }
}

/// The verdict's thresholds.
fn thresholds(c: &Config) -> devices::verdict::Thresholds {
    devices::verdict::Thresholds {
        min_battery_percent: c.min_battery_percent,
        max_temperature_celsius: c.max_temperature_celsius,
        temperature_hysteresis: c.temperature_hysteresis,
        battery_hysteresis: c.battery_hysteresis,
        charge_stall_secs: c.charge_stall_after.as_secs_f64(),
        min_data_free_bytes: c.min_data_free_bytes,
        cooldown_reboot_after_secs: c.cooldown_reboot_after.as_secs_f64(),
        max_device_uptime_secs: c.max_device_uptime.as_secs_f64(),
        usb_reset: c.usb_reset,
        usb_power_cycle: c.usb_power_cycle,
    }
}

/// Without phones, the snapshot's writer: each change of the operators' notes is
/// decided (for no phone) and published, so the Pi's note reaches `get_state`.
async fn notes_without_phones(shared: Arc<Shared>, thresholds: devices::verdict::Thresholds) {
    let mut notes = shared.notes.subscribe();
    while notes.changed().await.is_ok() {
        let now = notes.borrow_and_update().clone();
        let outcome = devices::verdict::decide(
            &devices::verdict::Memory::default(),
            &[],
            &std::collections::BTreeSet::new(),
            devices::verdict::Outside {
                host: &Default::default(),
                notes: &now,
            },
            &thresholds,
            0.0,
            true,
        );
        shared.snapshot.publish(Snapshot {
            reasons: outcome.reasons,
            host_reasons: outcome.host_reasons,
            ..Snapshot::default()
        });
    }
}

/// Proves to the watchdog behind `/healthz` that the runtime is not stuck, while the
/// device watcher, which ticks on its own timer, does not run. One timer per
/// `--interrogate-every` rather than one per component: on a Pi every wake-up costs.
/// Runs until the runtime is dropped.
async fn tick_loop(liveness: Arc<Liveness>, period: Duration) {
    let mut every = tokio::time::interval(period);
    loop {
        every.tick().await;
        liveness.tick();
    }
}

/// Turns every SIGTERM and SIGINT into a shutdown request, from a background task: the
/// first starts the drain, the second hurries it. The handlers are installed before this
/// returns.
fn listen_for_signals(trigger: shutdown::Trigger) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            log::error!("cannot listen for SIGTERM/SIGINT ({e}); running until killed");
            // Keep the trigger alive: dropping it would read as a shutdown request.
            std::mem::forget(trigger);
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            trigger.fire();
            log::info!("received {name}: shutting down");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_come_from_the_flags() {
        let args: Vec<String> = [
            "--no-bot",
            "--min-battery",
            "45",
            "--max-temperature",
            "40.5",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let config = match crate::config::parse(&args, &|_| None, "pi") {
            Ok(crate::config::Command::Run(c)) => c,
            other => panic!("expected Run, got {other:?}"),
        };
        assert_eq!(
            thresholds(&config),
            devices::verdict::Thresholds {
                min_battery_percent: 45.0,
                max_temperature_celsius: 40.5,
                // The rest are the flags' defaults, which the verdict's tests use too.
                ..devices::verdict::TEST_THRESHOLDS
            }
        );
    }
}
