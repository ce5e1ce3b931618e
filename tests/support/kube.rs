//! The stand-in Kubernetes API server (`fake_kube.py`) as a child of the test: its
//! HTTPS port, its control port, and the service account directory it writes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{http_request, within, TempDir};

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
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/fake_kube.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--dir", sa.to_str().unwrap(), "--node", node])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (port, control) = within(
            Duration::from_secs(60),
            "the stand-in API server to print its ports",
            move || {
                let mut lines = BufReader::new(stdout).lines();
                let mut port = None;
                loop {
                    let line = lines.next().expect("fake_kube.py exited").unwrap();
                    match line.split_once(' ') {
                        Some(("PORT", p)) => port = Some(p.parse::<u16>().unwrap()),
                        Some(("CONTROL", p)) => break (port.unwrap(), p.parse::<u16>().unwrap()),
                        _ => panic!("unexpected line from fake_kube.py: {line:?}"),
                    }
                }
            },
        );
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
        let (code, body) = http_request(
            self.control,
            "POST",
            "/_control",
            ask.to_string().as_bytes(),
        )
        .unwrap_or_else(|e| panic!("the stand-in's control: {e}"));
        assert_eq!(code, 200, "{ask}: {body}");
    }

    pub fn annotate(&self, key: &str, value: Option<&str>) {
        self.control(serde_json::json!({ "annotate": { key: value } }));
    }

    pub fn state(&self) -> serde_json::Value {
        let (code, body) = http_request(self.control, "GET", "/_state", b"").unwrap();
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
