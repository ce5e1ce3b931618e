//! One round: every phone's interrogation at once, each under its own deadline, with
//! the iPhones' round and a probe of the adb server beside them. A phone that overruns costs only its own result (a
//! failure saying so), never the others' or the next round's start.

use std::collections::BTreeMap;
use std::time::Duration;

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
/// `iphones` and the `server` probe beside them.
pub async fn run(
    phones: Vec<(String, BoxFuture<PhoneRound>)>,
    iphones: Option<BoxFuture<Result<Vec<Device>, ios::IosError>>>,
    server: Option<BoxFuture<Result<(), String>>>,
    deadline: Duration,
    metrics: &Metrics,
) -> RoundDone {
    let began = tokio::time::Instant::now();
    let iphones = iphones.map(tokio::spawn);
    let server = server.map(|probe| {
        tokio::spawn(async move {
            tokio::time::timeout(deadline, probe)
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {deadline:?}")))
        })
    });
    let handles: Vec<_> = phones
        .into_iter()
        .map(|(serial, round)| {
            tokio::spawn(async move { (serial, tokio::time::timeout(deadline, round).await) })
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
    let ios = match iphones {
        Some(round) => round.await.ok(),
        None => None,
    };
    let server = match server {
        Some(probe) => probe.await.ok(),
        None => None,
    };
    RoundDone {
        results,
        ios,
        server,
        took: began.elapsed(),
    }
}
