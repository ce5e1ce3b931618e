//! The OAuth access token that the bot bootstrap and the hook server share.
//!
//! [`TokenCache`] is only the shared slot: the fetcher (in the bot module) fills it and
//! the hook server reads it. It never holds its lock across I/O.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// A bearer token and when it stops being valid. `Debug` never prints the token.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub value: String,
    pub expires_at: SystemTime,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("value", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl AccessToken {
    /// How long the token has left at `now` (zero once expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.expires_at.duration_since(now).unwrap_or_default()
    }
}

#[derive(Default)]
pub struct TokenCache {
    current: Mutex<Option<AccessToken>>,
}

impl TokenCache {
    /// The cached token, if it has not expired at `now`.
    pub fn get(&self, now: SystemTime) -> Option<AccessToken> {
        let guard = self.current.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()
            .filter(|t| t.remaining(now) > Duration::ZERO)
            .cloned()
    }

    pub fn set(&self, token: AccessToken) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_tokens_are_not_handed_out() {
        let cache = TokenCache::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(cache.get(t0), None);
        cache.set(AccessToken {
            value: "abc".into(),
            expires_at: t0 + Duration::from_secs(60),
        });
        assert_eq!(cache.get(t0).map(|t| t.value), Some("abc".to_string()));
        assert_eq!(cache.get(t0 + Duration::from_secs(60)), None);
    }

    #[test]
    fn debug_redacts_the_value() {
        let t = AccessToken {
            value: "ya29.secret".into(),
            expires_at: SystemTime::UNIX_EPOCH,
        };
        assert!(!format!("{t:?}").contains("ya29"));
    }
}
