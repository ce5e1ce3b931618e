//! The Kubernetes API from inside the pod (`--kubernetes auto`): the operators'
//! maintenance notes from the node's annotations (`node`), and the phones' story as
//! Events on the node (`events`), over a small client of our own (`client`: ureq and
//! serde_json, the in-cluster configuration). Each runs on a thread of its own: a slow
//! or absent API server never holds up a round, a hook or the runtime. Every failure is
//! one line and a counter (`kubernetes_errors_total`); the last known notes stay.

pub mod client;
mod events;
pub mod node;

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::config::KubeMode;
use crate::serve::metrics::{KubeErrorLabel, KubeEventResult, Metrics};
use crate::state::{KubeStatus, Shared};
use client::{Client, KubeError, KubeErrorKind};

/// What the client's threads report: counters, the status page's view, one line per
/// outage.
pub struct Report {
    api: String,
    status: Arc<KubeStatus>,
    metrics: Arc<Metrics>,
    /// Since when, and with what kind of failure, the API server has not answered.
    outage: Mutex<Option<(Instant, KubeErrorKind)>>,
}

impl Report {
    fn set_node_uid(&self, uid: &str) {
        self.status.update(|s| {
            if s.node_uid.as_deref() != Some(uid) {
                s.node_uid = Some(uid.to_string());
            }
        });
    }

    /// The node's uid, once it has been read.
    fn node_uid(&self) -> Option<String> {
        self.status.get().node_uid
    }

    /// The API server answered: an outage ends.
    fn answered(&self) {
        let ended = self.outage.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((since, _)) = ended {
            log::info!(
                "kubernetes API {} answers again after {}s",
                self.api,
                since.elapsed().as_secs()
            );
            self.status.update(|s| {
                s.unreachable_since_unix = None;
                s.last_error = None;
            });
        }
    }

    /// A failure of the node's read or watch: counted; logged when an outage starts or
    /// its kind changes.
    fn failed(&self, e: &KubeError, notes: &str) {
        self.count_error(e);
        let mut outage = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        let new = match *outage {
            Some((_, kind)) => kind != e.kind,
            None => true,
        };
        let since = outage.map_or_else(Instant::now, |(since, _)| since);
        *outage = Some((since, e.kind));
        drop(outage);
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        self.status.update(|s| {
            s.unreachable_since_unix.get_or_insert(now_unix);
            s.last_error = Some(e.to_string());
        });
        if new {
            let since_text = self
                .status
                .get()
                .unreachable_since_unix
                .map(|t| crate::runtime::logging::utc_timestamp((t * 1000.0) as u128))
                .unwrap_or_default();
            log::warn!(
                "kubernetes: {e}; keeping the last known maintenance notes ({notes}) since {since_text}, retrying with backoff"
            );
        }
    }

    fn count_error(&self, e: &KubeError) {
        self.metrics.kubernetes_errors_total.inc(match e.kind {
            KubeErrorKind::Unreachable => KubeErrorLabel::Unreachable,
            KubeErrorKind::Unauthorized => KubeErrorLabel::Unauthorized,
            KubeErrorKind::Forbidden => KubeErrorLabel::Forbidden,
            KubeErrorKind::Files => KubeErrorLabel::Files,
            KubeErrorKind::Gone
            | KubeErrorKind::NotFound
            | KubeErrorKind::Http(_)
            | KubeErrorKind::BadAnswer => KubeErrorLabel::BadAnswer,
        });
    }

    fn bad_annotation(&self) {
        self.metrics
            .kubernetes_errors_total
            .inc(KubeErrorLabel::BadAnnotation);
    }

    fn event(&self, result: KubeEventResult) {
        self.metrics.kubernetes_events_total.inc(result);
    }
}

/// Starts the client when `--kubernetes auto` finds a cluster; otherwise one line says
/// why not, and nothing else changes (the force-quarantine file still works).
pub fn start(shared: &Shared) {
    let config = &shared.config;
    let dir = &config.kube_service_account_dir;
    let token = dir.join("token");
    let off = |why: String| {
        log::info!("kubernetes: off ({why}): no maintenance notes from the node, no node events");
        shared.kube.update(|s| s.state = format!("off: {why}"));
    };
    let api = match (config.kubernetes, &config.kube_api) {
        (KubeMode::Off, _) => return off("--kubernetes off".into()),
        (KubeMode::Auto, None) => return off("not in a cluster: KUBERNETES_SERVICE_HOST is not set".into()),
        (KubeMode::Auto, Some(_)) if !token.exists() => {
            return off(format!(
                "no service account token at {} (automountServiceAccountToken, or --kube-service-account-dir)",
                token.display()
            ))
        }
        (KubeMode::Auto, Some(api)) => api.clone(),
    };
    let Some(node) = config.node_name.clone() else {
        log::error!("kubernetes: NODE_NAME is not set (give the pod env NODE_NAME from fieldRef spec.nodeName, as manifests/base/daemonset.yaml does): no maintenance notes, no node events");
        shared
            .kube
            .update(|s| s.state = "off: NODE_NAME is not set".into());
        return;
    };
    let client = match Client::new(&api, &node, dir) {
        Ok(c) => c,
        Err(e) => {
            log::error!("kubernetes: {e}: no maintenance notes, no node events");
            shared.kube.update(|s| s.state = format!("off: {e}"));
            return;
        }
    };
    log::info!(
        "kubernetes: watching node {node} at {api} for maintenance notes; node events to namespace {}",
        client.namespace
    );
    shared.kube.update(|s| {
        s.state = format!(
            "watching node {node} at {api}; events in namespace {}",
            client.namespace
        )
    });
    let report = Arc::new(Report {
        api,
        status: shared.kube.clone(),
        metrics: shared.metrics.clone(),
        outage: Mutex::new(None),
    });
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        if let Err(e) = std::thread::Builder::new().name(name.into()).spawn(f) {
            log::error!("kubernetes: cannot start the {name} thread: {e}");
        }
    };
    let (c, notes, r) = (client.clone(), shared.notes.clone(), report.clone());
    spawn("kube-node", Box::new(move || node::run(c, notes, r)));
    if let Some(queue) = shared.events.queue_for_node() {
        let handled = shared.events.clone();
        spawn(
            "kube-events",
            Box::new(move || events::run(client, queue, handled, report)),
        );
    }
}
