//! The node's Kubernetes Events: each operator event that [`crate::state::Events::report`]
//! queues becomes a core/v1 Event whose involved object is the node, so that `kubectl
//! describe node` tells the phones' story. Drained on a thread of its own.
//!
//! Repeats are aggregated as the kubelet does: an event with the reason and message of
//! one posted before is not created again; its `count` and `lastTimestamp` are patched.
//! The rate is capped ([`RateCap`]): a burst of [`BURST`] API calls, then one per
//! [`REFILL`]; what is over the cap is dropped and counted, with one line per burst.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::client::{Client, KubeErrorKind, Method, Needs};
use super::Report;
use crate::runtime::logging::utc_timestamp;
use crate::state::metrics::KubeEventResult;
use crate::state::{Events, NodeEvent};

/// API calls (creates and patches) allowed at once.
pub const BURST: u32 = 25;
/// Then one more per this.
pub const REFILL: Duration = Duration::from_secs(30);
/// Distinct events remembered for aggregation (the oldest is forgotten first).
const REMEMBERED: usize = 256;
/// The `source.component` and `reportingComponent` of our events.
pub const COMPONENT: &str = "test-machine-monitor";

const NEEDS_CREATE: Needs = Needs {
    verb: "create",
    resource: "events",
};
const NEEDS_PATCH: Needs = Needs {
    verb: "patch",
    resource: "events",
};

/// A token bucket: [`BURST`] calls, refilled one per [`REFILL`]. Pure: the caller
/// gives the time.
#[derive(Debug)]
pub struct RateCap {
    tokens: f64,
    at: Instant,
}

impl RateCap {
    pub fn new(now: Instant) -> RateCap {
        RateCap {
            tokens: f64::from(BURST),
            at: now,
        }
    }

    /// Whether one more call may go now; takes its token if so.
    pub fn allow(&mut self, now: Instant) -> bool {
        let refilled = now.saturating_duration_since(self.at).as_secs_f64() / REFILL.as_secs_f64();
        self.tokens = (self.tokens + refilled).min(f64::from(BURST));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// An event posted before: its object's name and its count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub name: String,
    pub count: u64,
}

/// What to do with an event: create it, or patch the count of the same one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Create { name: String },
    Patch { name: String, count: u64 },
}

/// The events posted, by reason and message, the oldest forgotten past [`REMEMBERED`].
/// A list searched in order: a few hundred entries, and far less code than a map.
#[derive(Debug, Default)]
pub struct Aggregator {
    posted: VecDeque<(&'static str, String, Posted)>,
}

impl Aggregator {
    fn find(&self, reason: &str, message: &str) -> Option<&Posted> {
        self.posted
            .iter()
            .find(|(r, m, _)| *r == reason && m == message)
            .map(|(_, _, p)| p)
    }

    /// The plan for one event; `fresh_name` names a new object.
    pub fn plan(&self, reason: &'static str, message: &str, fresh_name: String) -> Plan {
        match self.find(reason, message) {
            Some(p) => Plan::Patch {
                name: p.name.clone(),
                count: p.count + 1,
            },
            None => Plan::Create { name: fresh_name },
        }
    }

    /// Remembers what the API server now holds.
    pub fn done(&mut self, reason: &'static str, message: &str, posted: Posted) {
        self.forget(reason, message);
        self.posted.push_back((reason, message.to_string(), posted));
        if self.posted.len() > REMEMBERED {
            self.posted.pop_front();
        }
    }

    /// Forgets an event the API server no longer has (events expire after an hour).
    pub fn forget(&mut self, reason: &'static str, message: &str) {
        self.posted
            .retain(|(r, m, _)| !(*r == reason && m == message));
    }
}

fn now_rfc3339() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    // Events' timestamps are whole seconds (metav1.Time).
    let t = utc_timestamp(millis);
    format!("{}Z", &t[..t.len().saturating_sub(5)])
}

/// The body of a new Event about the node.
pub fn event_body(
    client_node: &str,
    node_uid: &str,
    namespace: &str,
    name: &str,
    event: &NodeEvent,
    now: &str,
) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": namespace},
        "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": client_node, "uid": node_uid},
        "reason": event.reason.as_str(),
        "message": event.message,
        "type": if event.reason.is_warning() { "Warning" } else { "Normal" },
        "source": {"component": COMPONENT, "host": client_node},
        "reportingComponent": COMPONENT,
        "reportingInstance": client_node,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    })
}

/// Runs on its own thread for the life of the process, draining `queue`.
pub fn run(
    client: Arc<Client>,
    queue: Receiver<NodeEvent>,
    handled: Arc<Events>,
    report: Arc<Report>,
) {
    let mut state = PostState {
        cap: RateCap::new(Instant::now()),
        aggregate: Aggregator::default(),
        capped_since: None,
        failing: false,
    };
    let events = format!("/api/v1/namespaces/{}/events", client.namespace);
    loop {
        // The node's uid comes with its first read: `kubectl describe node` matches
        // events by it, so none is posted before.
        let Some(uid) = report.node_uid() else {
            std::thread::sleep(Duration::from_secs(1));
            continue;
        };
        let event = match queue.recv_timeout(Duration::from_secs(60)) {
            Ok(e) => e,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        post(&client, &events, &uid, event, &mut state, &report);
        handled.node_handled();
    }
}

/// The poster's memory between events.
struct PostState {
    cap: RateCap,
    aggregate: Aggregator,
    capped_since: Option<Instant>,
    failing: bool,
}

/// Posts one event, or patches the count of its earlier twin, within the cap.
fn post(
    client: &Client,
    events: &str,
    uid: &str,
    event: NodeEvent,
    state: &mut PostState,
    report: &Report,
) {
    if !state.cap.allow(Instant::now()) {
        report.event(KubeEventResult::RateLimited);
        if state.capped_since.is_none() {
            log::warn!(
                "node events over the cap of {BURST} at once, then one per {}s: dropping them until the rate falls (the log keeps them)",
                REFILL.as_secs()
            );
            state.capped_since = Some(Instant::now());
        }
        return;
    }
    state.capped_since = None;
    let reason = event.reason.as_str();
    let now = now_rfc3339();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let fresh = format!("{}.{nanos:x}", client.node);
    let mut plan = state.aggregate.plan(reason, &event.message, fresh.clone());
    let result = loop {
        let (patched, path, needs, name, count, body) = match &plan {
            Plan::Create { name } => (
                false,
                events.to_string(),
                NEEDS_CREATE,
                name.clone(),
                1,
                event_body(&client.node, uid, &client.namespace, name, &event, &now),
            ),
            Plan::Patch { name, count } => (
                true,
                format!("{events}/{name}"),
                NEEDS_PATCH,
                name.clone(),
                *count,
                json!({"count": count, "lastTimestamp": now}),
            ),
        };
        let body = body.to_string();
        let method = if patched {
            Method::Patch(&body)
        } else {
            Method::Post(&body)
        };
        match client.call(&path, method, needs) {
            // The event expired on the server (after an hour): create it again.
            Err(e) if e.kind == KubeErrorKind::NotFound && patched => {
                state.aggregate.forget(reason, &event.message);
                plan = Plan::Create {
                    name: fresh.clone(),
                };
            }
            Err(e) => break Err(e),
            Ok(_) => {
                state
                    .aggregate
                    .done(reason, &event.message, Posted { name, count });
                break Ok(patched);
            }
        }
    };
    match result {
        Ok(patched) => {
            report.event(if patched {
                KubeEventResult::Patched
            } else {
                KubeEventResult::Created
            });
            if state.failing {
                log::info!("node events are posted again");
                state.failing = false;
            }
        }
        Err(e) => {
            report.event(KubeEventResult::Failed);
            report.count_error(&e);
            // One line per outage, not one per event.
            if !state.failing {
                log::warn!(
                    "cannot post node event {reason} ({e}); dropping events until it works again"
                );
                state.failing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::EventReason;

    #[test]
    fn the_cap_allows_a_burst_then_one_per_refill() {
        let t0 = Instant::now();
        let mut cap = RateCap::new(t0);
        for _ in 0..BURST {
            assert!(cap.allow(t0));
        }
        assert!(!cap.allow(t0));
        assert!(!cap.allow(t0 + REFILL / 2));
        assert!(cap.allow(t0 + REFILL));
        assert!(!cap.allow(t0 + REFILL));
        // A long quiet spell refills the burst, no more.
        let later = t0 + REFILL * 1000;
        for _ in 0..BURST {
            assert!(cap.allow(later));
        }
        assert!(!cap.allow(later));
    }

    #[test]
    fn a_repeat_patches_the_count_of_the_same_event() {
        let mut a = Aggregator::default();
        let hot = "phone S1 in maintenance: too hot: S1 battery 40.0°C (> 35°C)";
        assert_eq!(
            a.plan("PhoneMaintenance", hot, "pi.1".into()),
            Plan::Create {
                name: "pi.1".into()
            }
        );
        a.done(
            "PhoneMaintenance",
            hot,
            Posted {
                name: "pi.1".into(),
                count: 1,
            },
        );
        assert_eq!(
            a.plan("PhoneMaintenance", hot, "pi.2".into()),
            Plan::Patch {
                name: "pi.1".into(),
                count: 2
            }
        );
        // Another message or reason is another event.
        assert!(matches!(
            a.plan("PhoneMaintenance", "other", "pi.3".into()),
            Plan::Create { .. }
        ));
        assert!(matches!(
            a.plan("PhoneUsable", hot, "pi.4".into()),
            Plan::Create { .. }
        ));
        a.forget("PhoneMaintenance", hot);
        assert!(matches!(
            a.plan("PhoneMaintenance", hot, "pi.5".into()),
            Plan::Create { .. }
        ));
    }

    #[test]
    fn the_aggregator_forgets_the_oldest_past_its_size() {
        let mut a = Aggregator::default();
        for i in 0..=REMEMBERED {
            a.done(
                "RecoveryStep",
                &format!("m{i}"),
                Posted {
                    name: format!("n{i}"),
                    count: 1,
                },
            );
        }
        assert!(matches!(
            a.plan("RecoveryStep", "m0", "x".into()),
            Plan::Create { .. }
        ));
        assert!(matches!(
            a.plan("RecoveryStep", "m1", "x".into()),
            Plan::Patch { .. }
        ));
    }

    #[test]
    fn an_event_names_the_node_by_name_and_uid() {
        let e = NodeEvent {
            reason: EventReason::PhoneQuarantined,
            message: "phone S1 quarantined: device S1 is unauthorized".into(),
        };
        let b = event_body("pi-1", "u-1", "lab", "pi-1.17", &e, "2026-12-06T22:00:00Z");
        assert_eq!(b["involvedObject"]["kind"], "Node");
        assert_eq!(b["involvedObject"]["uid"], "u-1");
        assert_eq!(b["reason"], "PhoneQuarantined");
        assert_eq!(b["type"], "Warning");
        assert_eq!(b["count"], 1);
        assert_eq!(b["metadata"]["namespace"], "lab");
        assert_eq!(now_rfc3339().len(), "2026-12-06T22:00:00Z".len());
    }
}
