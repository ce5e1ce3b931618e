//! The operators' maintenance notes as plain data: the Kubernetes client writes them,
//! the verdict reads them.

use std::collections::BTreeMap;

/// The operators' maintenance notes, from the node's annotations
/// (`test-machine-monitor/maintenance` and `test-machine-monitor/maintenance.<serial>`):
/// input to [`decide`] like the phones themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notes {
    /// The whole Pi's note: every bot reports maintenance with it.
    pub pi: Option<String>,
    /// One phone's note, by the serial as written in a bot id ([`sanitize`]).
    pub phones: BTreeMap<String, String>,
}

impl Notes {
    /// The note of the phone `serial`, matched as a bot id writes it.
    pub fn phone(&self, serial: &str) -> Option<&str> {
        if self.phones.is_empty() {
            return None;
        }
        self.phones.get(&sanitize(serial)).map(String::as_str)
    }
}

/// The serial as it may appear in a bot id and a directory name.
pub fn sanitize(serial: &str) -> String {
    serial
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}
