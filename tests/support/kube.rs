//! The stand-in Kubernetes API server (`fake_kube.py`) as a child of the test: its
//! HTTPS port, its control port, and the service account directory it writes.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use super::{http, stand_in, stop_tree, TempDir};

pub struct FakeKube {
    child: Child,
    pub port: u16,
    pub control: u16,
    pub node: String,
    dir: TempDir,
}

impl FakeKube {
    pub fn start(name: &str, node: &str) -> FakeKube {
        let dir = TempDir::new(name);
        let sa = dir.path().join("serviceaccount");
        let args = ["--dir", sa.to_str().unwrap(), "--node", node];
        let mut port = None;
        let (child, (port, control)) =
            stand_in("fake_kube.py", &args, Stdio::inherit(), move |line| {
                let parse = |p: &str| p.parse::<u16>().unwrap();
                match line.split_once(' ') {
                    Some(("PORT", p)) => {
                        port = Some(parse(p));
                        None
                    }
                    Some(("CONTROL", p)) => Some((port?, parse(p))),
                    _ => panic!("unexpected line from fake_kube.py: {line:?}"),
                }
            });
        FakeKube {
            child,
            port,
            control,
            node: node.to_string(),
            dir,
        }
    }

    /// The service account directory (`--kube-service-account-dir`).
    pub fn sa_dir(&self) -> PathBuf {
        self.dir.path().join("serviceaccount")
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.sa_dir().join("token")).unwrap()
    }

    /// The pod's environment for the monitor.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1".to_string()),
            ("KUBERNETES_SERVICE_PORT", self.port.to_string()),
            ("NODE_NAME", self.node.clone()),
        ]
    }

    pub fn control(&self, ask: serde_json::Value) {
        let reply = http::request(self.control, "POST", "/_control", &ask.to_string());
        assert_eq!(reply.status, 200, "{ask}: {}", reply.body);
    }

    pub fn annotate(&self, key: &str, value: Option<&str>) {
        self.control(serde_json::json!({ "annotate": { key: value } }));
    }

    pub fn state(&self) -> serde_json::Value {
        let reply = http::get(self.control, "/_state");
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()
    }

    /// The events posted, oldest first.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.state()["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// How many requests got `status`.
    pub fn answered(&self, status: u64) -> usize {
        self.state()["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r[2] == status)
            .count()
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        stop_tree(&mut self.child, Duration::from_secs(2));
    }
}
