//! One round: every phone's interrogation at once, each under its own deadline, with
//! the iPhones' round beside them. A phone that overruns costs only its own result (a
//! failure saying so), never the others' or the next round's start.
//!
//! The adb server is probed (`host:version`, one more connection) only when no phone's
//! requests showed that it answers: with no phone online, with every phone failing
//! before the server spoke, or with no phone's answer by half the round's deadline. A
//! connection a round does not need was a fifth of its CPU.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;

use super::phones::{BoxFuture, PhoneRound};
use crate::devices::ios;
use crate::state::metrics::{InterrogationErrorKind, Metrics};
use crate::state::snapshot::Device;

/// A finished round: what each phone said, and how long the round took.
pub struct RoundDone {
    pub results: BTreeMap<String, PhoneRound>,
    /// The iPhones' round, when they are watched.
    pub ios: Option<Result<Vec<Device>, ios::IosError>>,
    /// Whether the adb server answered, when the Android phones are watched.
    pub server: Option<Result<(), String>>,
    pub took: Duration,
}

/// Runs `phones` (serial and interrogation) in parallel, each cut at `deadline`, and
/// `iphones` beside them. The `server` probe is spared as soon as a phone shows the
/// server answering; it runs once every phone has ended without showing it (at once
/// with no phone), or at half of `deadline`, so that a silent server still ends the
/// round by its deadline.
pub async fn run(
    phones: Vec<(String, BoxFuture<PhoneRound>)>,
    iphones: Option<BoxFuture<Result<Vec<Device>, ios::IosError>>>,
    server: Option<BoxFuture<Result<(), String>>>,
    deadline: Duration,
    metrics: &Metrics,
) -> RoundDone {
    let began = tokio::time::Instant::now();
    let iphones = iphones.map(tokio::spawn);
    // Told when a phone shows the server answering, or when the last phone ends.
    let settled = Arc::new(Notify::new());
    let answered = Arc::new(AtomicBool::new(false));
    let pending = Arc::new(AtomicUsize::new(phones.len()));
    if phones.is_empty() {
        settled.notify_one();
    }
    let server = server.map(|probe| {
        let (settled, answered) = (settled.clone(), answered.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = settled.notified() => {}
                _ = tokio::time::sleep(deadline / 2) => {}
            }
            if answered.load(Ordering::SeqCst) {
                return None;
            }
            let within = deadline.saturating_sub(began.elapsed());
            Some(
                tokio::time::timeout(within, probe)
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer within {within:?}"))),
            )
        })
    });
    let handles: Vec<_> = phones
        .into_iter()
        .map(|(serial, round)| {
            let (settled, answered, pending) = (settled.clone(), answered.clone(), pending.clone());
            tokio::spawn(async move {
                let round = tokio::time::timeout(deadline, round).await;
                let showed = round.as_ref().is_ok_and(|r| r.server_answered);
                if showed {
                    answered.store(true, Ordering::SeqCst);
                }
                // A permit if the probe is not waiting yet.
                if pending.fetch_sub(1, Ordering::SeqCst) == 1 || showed {
                    settled.notify_one();
                }
                (serial, round)
            })
        })
        .collect();
    let mut results = BTreeMap::new();
    for h in handles {
        let Ok((serial, round)) = h.await else {
            continue;
        };
        let round = round.unwrap_or_else(|_| {
            metrics
                .interrogation_errors_total
                .inc(InterrogationErrorKind::Timeout);
            PhoneRound {
                failure: Some(format!("round took longer than {deadline:?}")),
                ..PhoneRound::default()
            }
        });
        results.insert(serial, round);
    }
    let probed = match server {
        Some(probe) => probe.await.ok(),
        None => None,
    };
    // A phone's answer counts even when it came after the probe had started.
    let server = probed.map(|probed| match probed {
        Some(_) | None if results.values().any(|r| r.server_answered) => Ok(()),
        Some(answer) => answer,
        None => Ok(()),
    });
    let ios = match iphones {
        Some(round) => round.await.ok(),
        None => None,
    };
    RoundDone {
        results,
        ios,
        server,
        took: began.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A probe that notes being run and answers `answer`.
    fn probe(ran: &Arc<AtomicBool>, answer: Result<(), String>) -> BoxFuture<Result<(), String>> {
        let ran = ran.clone();
        Box::pin(async move {
            ran.store(true, Ordering::SeqCst);
            answer
        })
    }

    fn phone(serial: &str, server_answered: bool) -> (String, BoxFuture<PhoneRound>) {
        let round = PhoneRound {
            server_answered,
            ..PhoneRound::default()
        };
        (serial.to_string(), Box::pin(async move { round }))
    }

    async fn round(
        phones: Vec<(String, BoxFuture<PhoneRound>)>,
        answer: Result<(), String>,
    ) -> (Option<Result<(), String>>, bool) {
        let ran = Arc::new(AtomicBool::new(false));
        let done = run(
            phones,
            None,
            Some(probe(&ran, answer)),
            Duration::from_secs(1),
            &Metrics::default(),
        )
        .await;
        (done.server, ran.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn a_phone_the_server_answered_for_spares_the_probe() {
        let phones = vec![phone("a", false), phone("b", true)];
        assert_eq!(
            round(phones, Err("down".into())).await,
            (Some(Ok(())), false)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_probe_decides_when_no_phone_showed_the_server_answering() {
        let phones = vec![phone("a", false)];
        let down = Err("down".to_string());
        assert_eq!(round(phones, down.clone()).await, (Some(down), true));
        assert_eq!(round(Vec::new(), Ok(())).await, (Some(Ok(())), true));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_server_with_silent_phones_still_ends_the_round_by_its_deadline() {
        let hung: BoxFuture<PhoneRound> = Box::pin(std::future::pending());
        let done = run(
            vec![("a".to_string(), hung)],
            None,
            Some(Box::pin(std::future::pending())),
            Duration::from_secs(1),
            &Metrics::default(),
        )
        .await;
        assert_eq!(done.server, Some(Err("no answer within 500ms".into())));
        assert!(done.took <= Duration::from_millis(1010), "{:?}", done.took);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_probe_is_cut_at_the_deadline() {
        let done = run(
            Vec::new(),
            None,
            Some(Box::pin(std::future::pending())),
            Duration::from_secs(1),
            &Metrics::default(),
        )
        .await;
        assert_eq!(done.server, Some(Err("no answer within 1s".into())));
    }
}
