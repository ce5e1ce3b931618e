//! The closed sets of label values, one enum per label kind: a call site names a
//! variant, so it cannot invent a series that the dashboards and the docs do not know.

/// The label values of one series, in the order its family declares its label names.
pub trait LabelValues {
    fn values(&self) -> Vec<String>;
}

/// An unlabeled family.
impl LabelValues for () {
    fn values(&self) -> Vec<String> {
        Vec::new()
    }
}

/// `route` and `code` (the HTTP status) of `hook_requests_total`.
impl LabelValues for (HookRoute, u16) {
    fn values(&self) -> Vec<String> {
        vec![self.0.as_str().to_string(), self.1.to_string()]
    }
}

/// An enum whose variants are the exported values of one label.
macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($variant,)+
        }

        impl $name {
            #[cfg(test)]
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl LabelValues for $name {
            fn values(&self) -> Vec<String> {
                vec![self.as_str().to_string()]
            }
        }
    };
}

label_enum! {
    /// `kind` of `kubernetes_errors_total`.
    KubeErrorLabel {
        Unreachable => "unreachable",
        Unauthorized => "unauthorized",
        Forbidden => "forbidden",
        BadAnswer => "bad_answer",
        Files => "files",
        BadAnnotation => "bad_annotation",
    }
}

label_enum! {
    /// `result` of `kubernetes_events_total`.
    KubeEventResult {
        Created => "created",
        Patched => "patched",
        RateLimited => "rate_limited",
        Failed => "failed",
        QueueFull => "queue_full",
    }
}

label_enum! {
    /// `result` of `bot_zip_downloads_total`.
    ZipDownloadResult {
        Ok => "ok",
        HttpError => "http_error",
        NetworkError => "network_error",
        BadZip => "bad_zip",
        IoError => "io_error",
        ConfigError => "config_error",
    }
}

label_enum! {
    /// `result` of `token_fetches_total`.
    TokenFetchResult {
        Ok => "ok",
        HttpError => "http_error",
        NetworkError => "network_error",
        BadResponse => "bad_response",
        ConfigError => "config_error",
    }
}

label_enum! {
    /// `kind` of `interrogation_errors_total`: what failed.
    InterrogationErrorKind {
        Timeout => "timeout",
        Parse => "parse",
        AdbConnect => "adb_connect",
        AdbFail => "adb_fail",
        AdbProtocol => "adb_protocol",
        AdbIo => "adb_io",
        IosTool => "ios_tool",
        RoundScript => "round_script",
    }
}

label_enum! {
    /// `route` of the hook families: the hook's path without its slash, and `unknown`
    /// for a path that is no hook.
    HookRoute {
        GetDimensions => "get_dimensions",
        GetState => "get_state",
        GetSettings => "get_settings",
        GetAuthenticationHeaders => "get_authentication_headers",
        OnBeforeTask => "on_before_task",
        OnAfterTask => "on_after_task",
        OnBotShutdown => "on_bot_shutdown",
        Unknown => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Dashboards and alert rules match these words, so they stay plain and distinct.
    #[test]
    fn closed_label_values_are_distinct_lower_case_words() {
        let kinds: [Vec<&str>; 6] = [
            ZipDownloadResult::ALL.iter().map(|v| v.as_str()).collect(),
            TokenFetchResult::ALL.iter().map(|v| v.as_str()).collect(),
            InterrogationErrorKind::ALL
                .iter()
                .map(|v| v.as_str())
                .collect(),
            HookRoute::ALL.iter().map(|v| v.as_str()).collect(),
            KubeErrorLabel::ALL.iter().map(|v| v.as_str()).collect(),
            KubeEventResult::ALL.iter().map(|v| v.as_str()).collect(),
        ];
        for values in kinds {
            let distinct: BTreeSet<&str> = values.iter().copied().collect();
            assert_eq!(distinct.len(), values.len(), "{values:?}");
            for v in values {
                assert!(
                    !v.is_empty() && v.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                    "{v}"
                );
            }
        }
    }
}
