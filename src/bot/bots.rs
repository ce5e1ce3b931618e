//! `--bots per-device`: one supervised bot per phone, started and stopped as the phones
//! come and go. Which bots should run is `fleet::plan`'s pure decision; this module does
//! it, once a second, from the latest snapshot: each bot is a `supervisor::run` of its
//! own (its restart backoff and crash-loop detection are its own, so one bot's failure
//! changes nothing for the others), with a shutdown of its own, so that a bot whose
//! phone has been gone past the grace is drained alone.
//!
//! A bot being drained keeps its place: its phone's new bot starts only once the old one
//! is gone, so two bots never share a directory. On shutdown every bot is told to stop at
//! once and each drains on its own (a bot running a task gets `--drain-limit` to finish
//! it, an idle one stops within `--grace`); every further signal reaches them all.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::bot::fleet::{self, BotSpec, Running};
use crate::bot::supervisor::{self, Context, Which};
use crate::bot::token_fetch::TokenWatch;
use crate::runtime::reaper::Reaper;
use crate::runtime::shutdown::{self, Shutdown, Trigger};
use crate::state::snapshot::State;
use crate::state::{BotStatusCell, HookCalls, PerDeviceBot, PerDeviceBots, SnapshotCell};

/// How often the fleet is brought in line with the phones.
const EVERY: Duration = Duration::from_secs(1);

/// One running bot.
struct Bot {
    spec: BotSpec,
    status: Arc<BotStatusCell>,
    calls: Arc<HookCalls>,
    trigger: Trigger,
    task: JoinHandle<()>,
    /// When (on the fleet's clock) its phone was last seen leaving the list.
    gone_since: Option<f64>,
}

/// Runs the fleet until shutdown, then drains every bot.
pub async fn run(
    ctx: Context,
    snapshot: Arc<SnapshotCell>,
    registry: Arc<PerDeviceBots>,
    reaper: Reaper,
    tokens: TokenWatch,
    mut shutdown: Shutdown,
) {
    let config = ctx.settings.clone();
    let rules = fleet::Rules {
        host_id: &config.bot_id,
        bot_dir: &config.bot_dir,
        max_bots: config.max_bots,
        gone_grace: config.gone_bot_grace,
    };
    let origin = tokio::time::Instant::now();
    let mut bots: BTreeMap<String, Bot> = BTreeMap::new();
    let mut draining: Vec<(String, Trigger, JoinHandle<()>)> = Vec::new();
    let mut refused_logged: BTreeSet<(String, String)> = BTreeSet::new();
    let zip_turn = Arc::new(tokio::sync::Mutex::new(()));
    let mut every = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.requested() => break,
        }
        let now = origin.elapsed().as_secs_f64();
        let snap = snapshot.get();
        let listed: Vec<_> = snap
            .devices
            .iter()
            .filter(|d| d.state != State::Missing)
            .map(|d| (d.kind, d.serial.clone()))
            .collect();
        let present: BTreeSet<&str> = listed.iter().map(|(_, s)| s.as_str()).collect();
        for (serial, bot) in bots.iter_mut() {
            if present.contains(serial.as_str()) {
                bot.gone_since = None;
            } else {
                bot.gone_since.get_or_insert(now);
            }
        }
        let running: BTreeMap<String, Running> = bots
            .iter()
            .map(|(serial, b)| {
                let r = Running {
                    spec: b.spec.clone(),
                    gone_since: b.gone_since,
                    task_running: snap.busy_phones.contains(serial),
                };
                (serial.clone(), r)
            })
            .collect();
        let plan = fleet::plan(&rules, &listed, &running, now);
        draining.retain(|(_, _, task)| !task.is_finished());
        let stop: Vec<String> = bots
            .keys()
            .filter(|s| !plan.bots.contains_key(*s))
            .cloned()
            .collect();
        for serial in stop {
            let Some(bot) = bots.remove(&serial) else {
                continue;
            };
            match plan.refused.get(&serial) {
                // Still listed, but refused now (a new phone's serial gives its id).
                Some(why) => log::warn!("stopping bot {}: {why}", bot.spec.id),
                None => log::info!(
                    "stopping bot {}: its phone {serial} has been gone for {:.0}s (--gone-bot-grace {}s)",
                    bot.spec.id,
                    bot.gone_since.map_or(0.0, |t| now - t),
                    config.gone_bot_grace.as_secs()
                ),
            }
            bot.trigger.fire();
            draining.push((serial, bot.trigger, bot.task));
        }
        for (serial, spec) in &plan.bots {
            if bots.contains_key(serial) || draining.iter().any(|(s, _, _)| s == serial) {
                continue;
            }
            log::info!(
                "phone {serial} gets bot {} in {}",
                spec.id,
                spec.dir.display()
            );
            bots.insert(
                serial.clone(),
                start(&ctx, spec, &reaper, &tokens, &zip_turn),
            );
        }
        for (serial, why) in &plan.refused {
            if refused_logged.insert((serial.clone(), why.clone())) {
                log::warn!("{why}");
            }
        }
        refused_logged.retain(|(s, why)| plan.refused.get(s) == Some(why));
        let view = bots
            .values()
            .map(|b| {
                let bot = PerDeviceBot {
                    serial: b.spec.serial.clone(),
                    status: b.status.clone(),
                    calls: b.calls.clone(),
                };
                (b.spec.id.clone(), bot)
            })
            .collect();
        registry.set(view, plan.refused);
    }
    drain(bots, draining, shutdown).await;
}

/// Starts the bot `spec` under a shutdown of its own.
fn start(
    ctx: &Context,
    spec: &BotSpec,
    reaper: &Reaper,
    tokens: &TokenWatch,
    zip_turn: &Arc<tokio::sync::Mutex<()>>,
) -> Bot {
    let (trigger, own) = shutdown::channel();
    let status = Arc::new(BotStatusCell::default());
    let calls = Arc::new(HookCalls::default());
    let (variable, serial) = spec.phone_env();
    let which = Which {
        id: spec.id.clone(),
        dir: spec.dir.clone(),
        phone_env: Some((variable, serial.to_string())),
        zip_seed: Some(PathBuf::from(&ctx.settings.bot_dir)),
        zip_turn: Some(zip_turn.clone()),
        status: status.clone(),
        calls: calls.clone(),
    };
    let task = tokio::spawn(supervisor::run(
        ctx.clone(),
        which,
        true,
        reaper.clone(),
        tokens.clone(),
        own,
    ));
    Bot {
        spec: spec.clone(),
        status,
        calls,
        trigger,
        task,
        gone_since: None,
    }
}

/// Drains every bot at once: each is told to stop (a bot running a task then has
/// `--drain-limit` to finish it), and each further termination signal is passed on to
/// every bot, the ones already drained alone (their phone gone) among them: those had
/// their first signal already, so they are not passed the first.
async fn drain(
    bots: BTreeMap<String, Bot>,
    draining: Vec<(String, Trigger, JoinHandle<()>)>,
    mut shutdown: Shutdown,
) {
    for bot in bots.values() {
        bot.trigger.fire();
    }
    let (triggers, tasks): (Vec<Trigger>, Vec<JoinHandle<()>>) = bots
        .into_values()
        .map(|b| (b.trigger, b.task))
        .chain(draining.into_iter().map(|(_, t, task)| (t, task)))
        .unzip();
    if tasks.is_empty() {
        return;
    }
    log::info!("draining {} bots", tasks.len());
    let tasks = async {
        for task in tasks {
            let _ = task.await;
        }
    };
    tokio::pin!(tasks);
    // The fire above passed the first signal; any later one, even one that came before
    // this line, is passed below.
    let mut passed = 1;
    loop {
        tokio::select! {
            _ = &mut tasks => return,
            _ = shutdown.beyond(passed) => {
                let now = shutdown.count();
                for _ in passed..now {
                    for trigger in &triggers {
                        trigger.fire();
                    }
                }
                passed = now;
            }
        }
    }
}
