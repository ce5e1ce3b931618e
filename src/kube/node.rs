//! The pod's node, watched for the operators' maintenance notes: its annotations
//! `test-machine-monitor/maintenance` (the whole Pi) and
//! `test-machine-monitor/maintenance.<serial>` (one phone, the serial as a bot id writes
//! it). GET the node, then watch it from its resource version; a watch that ends
//! normally is opened again from the last version seen, a 410 Gone lists again, and
//! any failure backs off, keeping the last known notes. The notes go to the device
//! watcher, which decides again at once.

use std::collections::BTreeSet;
use std::io::{BufRead, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::client::{Client, KubeError, KubeErrorKind, Method, Needs};
use super::Report;
use crate::runtime::backoff::Backoff;
use crate::state::notes::Notes;
use crate::state::NodeNotes;

/// The whole Pi's note.
pub const PI_KEY: &str = "test-machine-monitor/maintenance";
/// One phone's note: this, then the serial.
pub const PHONE_PREFIX: &str = "test-machine-monitor/maintenance.";
/// A longer note is cut: it becomes a Swarming reason and a status page line.
pub const MAX_NOTE_CHARS: usize = 200;
/// One watch event (a whole Node) longer than this is not read.
const MAX_LINE_BYTES: u64 = 1 << 20;

const NEEDS_GET: Needs = Needs {
    verb: "get",
    resource: "nodes",
};

/// What one Node says that we use.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFacts {
    pub uid: String,
    pub resource_version: String,
    pub annotations: Map<String, Value>,
}

/// The facts of a Node object.
pub fn node_facts(v: &Value) -> Option<NodeFacts> {
    let meta = v.get("metadata")?;
    Some(NodeFacts {
        uid: meta.get("uid")?.as_str()?.to_string(),
        resource_version: meta.get("resourceVersion")?.as_str()?.to_string(),
        annotations: meta
            .get("annotations")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
    })
}

/// The notes in a node's annotations, and a problem line for each bad value. A bad
/// value still puts its Pi or phone in maintenance, with the note cleaned: the
/// operator asked for maintenance, and dropping the note would silently undo that.
pub fn notes_of(annotations: &Map<String, Value>) -> (Notes, Vec<String>) {
    let mut notes = Notes::default();
    let mut problems = Vec::new();
    for (key, value) in annotations {
        if key == PI_KEY {
            notes.pi = Some(clean(key, value, &mut problems));
        } else if let Some(serial) = key.strip_prefix(PHONE_PREFIX) {
            let note = clean(key, value, &mut problems);
            notes.phones.insert(serial.to_string(), note);
        }
    }
    (notes, problems)
}

/// The note of one annotation, one line, at most [`MAX_NOTE_CHARS`]; a problem line
/// for each change made.
fn clean(key: &str, value: &Value, problems: &mut Vec<String>) -> String {
    let Some(text) = value.as_str() else {
        problems.push(format!(
            "annotation {key}: not a string; using it as \"(unreadable note)\""
        ));
        return "(unreadable note)".to_string();
    };
    if text.contains('\u{FFFD}') {
        // The API server replaces bytes that are not UTF-8 with U+FFFD.
        problems.push(format!(
            "annotation {key}: not valid UTF-8 (bytes replaced by U+FFFD); rewrite it with kubectl annotate --overwrite"
        ));
    }
    let mut note: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if note != text {
        problems.push(format!(
            "annotation {key}: control characters (line breaks) replaced by spaces"
        ));
    }
    let chars = note.chars().count();
    if chars > MAX_NOTE_CHARS {
        problems.push(format!(
            "annotation {key}: {chars} characters, at most {MAX_NOTE_CHARS}: cut; shorten it"
        ));
        note = note.chars().take(MAX_NOTE_CHARS).collect::<String>() + "…";
    }
    let note = note.trim().to_string();
    if note.is_empty() {
        "(no note given)".to_string()
    } else {
        note
    }
}

/// One line of a watch: its type and object.
#[derive(Debug, PartialEq)]
pub enum WatchLine {
    /// ADDED, MODIFIED: the node as it is now.
    Node(NodeFacts),
    /// BOOKMARK: only the resource version moved.
    Bookmark(String),
    /// ERROR with a 410 Status: list again.
    Gone,
    /// DELETED, or an ERROR other than 410: said in words.
    Other(String),
}

pub fn watch_line(line: &str) -> Result<WatchLine, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let kind = v.get("type").and_then(Value::as_str).unwrap_or_default();
    let object = v.get("object").cloned().unwrap_or(Value::Null);
    Ok(match kind {
        "ADDED" | "MODIFIED" => WatchLine::Node(
            node_facts(&object).ok_or("a node without metadata.uid or resourceVersion")?,
        ),
        "BOOKMARK" => WatchLine::Bookmark(
            object
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .ok_or("a bookmark without metadata.resourceVersion")?
                .to_string(),
        ),
        "ERROR" if object.get("code").and_then(Value::as_u64) == Some(410) => WatchLine::Gone,
        "ERROR" => WatchLine::Other(format!(
            "the watch reported an error: {}",
            object
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("(no message)")
        )),
        "DELETED" => WatchLine::Other("the node was deleted".to_string()),
        other => return Err(format!("an event of unknown type {other:?}")),
    })
}

/// Applies a node's notes: the uid for the events, the notes for the watcher, each
/// new bad value logged once.
struct Apply {
    notes: Arc<NodeNotes>,
    report: Arc<Report>,
    /// The problem lines of the annotations as last read: each is logged once.
    logged: BTreeSet<String>,
}

impl Apply {
    fn node(&mut self, client: &Client, facts: &NodeFacts) {
        self.report.set_node_uid(&facts.uid);
        let (notes, problems) = notes_of(&facts.annotations);
        let mut seen = BTreeSet::new();
        for p in problems {
            if !self.logged.contains(&p) {
                log::warn!("node {}: {p}", client.node);
                self.report.bad_annotation();
            }
            seen.insert(p);
        }
        self.logged = seen;
        if notes != self.notes.get() {
            log::info!(
                "node {}: maintenance notes now: {}",
                client.node,
                describe(&notes)
            );
            self.notes.set(notes);
        }
    }
}

/// The notes in words, for the log.
pub fn describe(notes: &Notes) -> String {
    let mut parts: Vec<String> = notes.pi.iter().map(|n| format!("Pi: {n}")).collect();
    parts.extend(notes.phones.iter().map(|(s, n)| format!("{s}: {n}")));
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join("; ")
    }
}

/// Runs on its own thread for the life of the process.
pub fn run(client: Arc<Client>, notes: Arc<NodeNotes>, report: Arc<Report>) {
    let mut apply = Apply {
        notes,
        report: report.clone(),
        logged: BTreeSet::new(),
    };
    let mut backoff = Backoff::with_entropy(Duration::from_secs(1), Duration::from_secs(30));
    let path = format!("/api/v1/nodes/{}", client.node);
    loop {
        let listed = client.call(&path, Method::Get, NEEDS_GET).and_then(|body| {
            let bad = |problem: String| KubeError {
                kind: KubeErrorKind::BadAnswer,
                what: format!("GET {}{path}", client.api),
                problem,
            };
            let v: Value =
                serde_json::from_str(&body).map_err(|e| bad(format!("not JSON: {e}")))?;
            node_facts(&v)
                .ok_or_else(|| bad("not a Node (no metadata.uid or resourceVersion)".into()))
        });
        let mut version = match listed {
            Ok(facts) => {
                report.answered();
                apply.node(&client, &facts);
                facts.resource_version
            }
            Err(e) => {
                report.failed(&e, &describe(&apply.notes.get()));
                std::thread::sleep(backoff.next_delay());
                continue;
            }
        };
        // Watch from the version listed until the watch fails or is too old.
        loop {
            let opened = Instant::now();
            match watch_once(&client, &mut version, &mut apply) {
                Ok(()) => {
                    backoff.reset();
                    // A server that ends watches at once is not hammered.
                    if opened.elapsed() < Duration::from_secs(1) {
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
                Err(e) if e.kind == KubeErrorKind::Gone => {
                    log::info!(
                        "node {}: resource version {version} is too old (410 Gone): reading the node again",
                        client.node
                    );
                    break;
                }
                Err(e) => {
                    report.failed(&e, &describe(&apply.notes.get()));
                    std::thread::sleep(backoff.next_delay());
                    break;
                }
            }
        }
    }
}

/// One watch, to its end: `Ok` when the server ended it normally, the version moved
/// to the last one seen.
fn watch_once(client: &Client, version: &mut String, apply: &mut Apply) -> Result<(), KubeError> {
    let mut lines = client.watch_node(version)?;
    apply.report.answered();
    let what = || format!("the watch of node {}", client.node);
    loop {
        let mut line = String::new();
        let read = (&mut lines)
            .take(MAX_LINE_BYTES)
            .read_line(&mut line)
            .map_err(|e| KubeError {
                kind: KubeErrorKind::Unreachable,
                what: what(),
                problem: format!("broken off: {e}"),
            })?;
        if read == 0 {
            return Ok(());
        }
        if line.trim().is_empty() {
            continue;
        }
        match watch_line(&line) {
            Ok(WatchLine::Node(facts)) => {
                *version = facts.resource_version.clone();
                apply.node(client, &facts);
            }
            Ok(WatchLine::Bookmark(v)) => *version = v,
            Ok(WatchLine::Gone) => {
                return Err(KubeError {
                    kind: KubeErrorKind::Gone,
                    what: what(),
                    problem: "410 Gone".to_string(),
                })
            }
            Ok(WatchLine::Other(why)) => log::warn!("{}: {why}", what()),
            Err(why) => {
                return Err(KubeError {
                    kind: KubeErrorKind::BadAnswer,
                    what: what(),
                    problem: why,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn annotations(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn the_pi_and_phone_notes_are_read_and_other_annotations_ignored() {
        let (notes, problems) = notes_of(&annotations(json!({
            "test-machine-monitor/maintenance": "new USB hub (ana)",
            "test-machine-monitor/maintenance.10.0.0.7-5555": "cracked screen",
            "node.alpha.kubernetes.io/ttl": "0",
            "test-machine-monitor/other": "x",
        })));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(notes.pi.as_deref(), Some("new USB hub (ana)"));
        assert_eq!(
            notes.phones,
            std::collections::BTreeMap::from([(
                "10.0.0.7-5555".to_string(),
                "cracked screen".to_string()
            )])
        );
        assert_eq!(notes_of(&Map::new()), (Notes::default(), vec![]));
    }

    #[test]
    fn bad_values_keep_the_maintenance_and_name_the_key() {
        let long = "x".repeat(300);
        let (notes, problems) = notes_of(&annotations(json!({
            "test-machine-monitor/maintenance": long,
            "test-machine-monitor/maintenance.S1": "bad \u{FFFD} bytes",
            "test-machine-monitor/maintenance.S2": "two\nlines",
            "test-machine-monitor/maintenance.S3": "",
        })));
        assert_eq!(notes.pi.as_ref().map(|n| n.chars().count()), Some(201));
        assert_eq!(notes.phones["S2"], "two lines");
        assert_eq!(notes.phones["S3"], "(no note given)");
        assert!(notes.phones.contains_key("S1"));
        assert_eq!(
            problems,
            vec![
                "annotation test-machine-monitor/maintenance: 300 characters, at most 200: cut; shorten it",
                "annotation test-machine-monitor/maintenance.S1: not valid UTF-8 (bytes replaced by U+FFFD); rewrite it with kubectl annotate --overwrite",
                "annotation test-machine-monitor/maintenance.S2: control characters (line breaks) replaced by spaces",
            ]
        );
    }

    #[test]
    fn watch_lines() {
        let node = r#"{"type":"MODIFIED","object":{"kind":"Node","metadata":{"name":"pi","uid":"u-1","resourceVersion":"42","annotations":{"a":"b"}}}}"#;
        match watch_line(node) {
            Ok(WatchLine::Node(f)) => {
                assert_eq!((f.uid.as_str(), f.resource_version.as_str()), ("u-1", "42"));
                assert_eq!(f.annotations["a"], "b");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            watch_line(r#"{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"50"}}}"#),
            Ok(WatchLine::Bookmark("50".into()))
        );
        assert_eq!(
            watch_line(
                r#"{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired","message":"too old resource version"}}"#
            ),
            Ok(WatchLine::Gone)
        );
        assert!(matches!(
            watch_line(r#"{"type":"DELETED","object":{}}"#),
            Ok(WatchLine::Other(_))
        ));
        assert!(watch_line("{").is_err());
        assert!(watch_line(r#"{"type":"ADDED","object":{}}"#).is_err());
    }
}
