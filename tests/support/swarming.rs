//! The stand-in Swarming server (`fake_swarming.py`) as a child of the test: its URL,
//! its control and state endpoints, the zip it hands out, and the token config that
//! points the monitor at its token endpoint. [`super::Tmm::bot`] takes one.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use super::http;

/// fake_swarming.py on a free port; stopped on drop.
pub struct FakeSwarming {
    child: Child,
    /// Its plain-HTTP address, for the test's own calls.
    pub url: String,
    /// The address the monitor is given: `url`, or the HTTPS port's with `--tls`.
    pub served: String,
    port: u16,
}

impl FakeSwarming {
    pub fn start(extra: &[&str]) -> FakeSwarming {
        let args = [&["--port", "0"], extra].concat();
        // With `--tls`, the HTTPS port's line follows the plain one's.
        let tls = extra.contains(&"--tls");
        let mut plain = None;
        let (child, (port, tls_port)) =
            super::stand_in("fake_swarming.py", &args, Stdio::null(), move |line| {
                let parse = |p: &str| p.parse::<u16>().unwrap();
                match line.split_once(' ') {
                    Some(("PORT", p)) if tls => {
                        plain = Some(parse(p));
                        None
                    }
                    Some(("PORT", p)) => Some((parse(p), None)),
                    Some(("TLSPORT", p)) => Some((plain?, Some(parse(p)))),
                    _ => panic!("fake_swarming said {line:?}"),
                }
            });
        let url = format!("http://127.0.0.1:{port}");
        FakeSwarming {
            child,
            served: tls_port.map_or(url.clone(), |p| format!("https://127.0.0.1:{p}")),
            url,
            port,
        }
    }

    /// A server whose stand-in bot calls the hooks: it injects our `bot-config` script,
    /// as the real server does.
    pub fn with_hooks() -> FakeSwarming {
        let dir = super::TempDir::new("hook-script");
        let script = super::hook_script(dir.path());
        // The server has read it into its zip once it has printed its port.
        FakeSwarming::start(&["--hook-script", script.to_str().unwrap()])
    }

    pub fn control(&self, body: serde_json::Value) {
        let reply = http::request(self.port, "POST", "/_control", &body.to_string());
        assert_eq!(reply.status, 200, "{body}: {}", reply.body);
    }

    pub fn state(&self) -> serde_json::Value {
        let reply = http::get(self.port, "/_state");
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()
    }

    /// What the stand-in server last heard from bot `id`.
    pub fn bot(&self, id: &str) -> serde_json::Value {
        self.state()["bots"][id].clone()
    }

    /// The zip this server hands out, fetched from its versioned URL.
    pub fn zip_bytes(&self) -> Vec<u8> {
        let digest = self.state()["digest"].as_str().unwrap().to_string();
        let path = format!("/swarming/api/v1/bot/bot_code/{digest}");
        let reply = http::get(self.port, &path);
        assert_eq!(reply.status, 200, "{path}");
        reply.bytes
    }

    /// Writes `<dir>/token.json`, a `--token-config` for this server's token endpoint.
    pub fn write_token_config(&self, dir: &Path) -> PathBuf {
        let path = dir.join("token.json");
        fs::write(
            &path,
            format!(
                r#"{{"url": "{}/token", "headers": {{"Metadata-Flavor": "Google"}}}}"#,
                self.served
            ),
        )
        .unwrap();
        path
    }
}

impl Drop for FakeSwarming {
    fn drop(&mut self) {
        super::stop_tree(&mut self.child, Duration::from_secs(2));
    }
}
