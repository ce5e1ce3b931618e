//! Parses the adb server's device list: the body of `host:devices-l`, and each frame of
//! `host:track-devices-l`.
//!
//! One line per transport, `printf("%-22s %s", serial, state)` then, each only when
//! non-empty, ` <devpath>`, ` product:<p>`, ` model:<m>`, ` device:<d>`, and last
//! ` transport_id:<n>`. `product` and `device` may contain spaces, so the key:value
//! fields are found by scanning back from the end of the line, and whatever is left
//! between the state and the first field is the devpath (`usb:1-1.4`, or a bare `1-5`).
//!
//! The state is one word except for `no permissions (<why>); see [<url>]`: the state is
//! then `no permissions` and the full phrase, which says what adb thinks is wrong with
//! the USB permissions, goes to [`Listed::state_detail`] so the watcher can show it to
//! the operator (the health rule gives its own fixed remedy). States are not checked
//! against a list: a newer adb's new state passes through unchanged, as `Link::Other`.
//!
//! Pure: no sockets, no knowledge of which server the text came from.

use super::{excerpt, ParseError};
use crate::state::snapshot::Link;

const WHAT: &str = "devices-l";

/// One transport as the adb server lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub serial: String,
    /// adb's word for the state (`device`, `offline`, `unauthorized`, `no permissions`...).
    pub state: Link,
    /// The whole multi-word state as adb printed it, for `no permissions (...); see [...]`;
    /// `None` for one-word states.
    pub state_detail: Option<String>,
    pub devpath: Option<String>,
    pub product: Option<String>,
    pub model: Option<String>,
    pub device: Option<String>,
    /// Absent only from adb servers older than 1.0.40.
    pub transport_id: Option<u64>,
}

/// Reads a whole device list. Empty text (no devices) gives an empty list; blank lines
/// are skipped; any other line that does not parse is an error quoting it.
pub fn parse(text: &str) -> Result<Vec<Listed>, ParseError> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(parse_line)
        .collect()
}

const NO_PERMISSIONS: &str = "no permissions";

fn parse_line(line: &str) -> Result<Listed, ParseError> {
    let bad = |why: &str| ParseError::new(WHAT, format!("{why} in line {}", excerpt(line)));
    let (serial, rest) = split_token(line);
    if rest.is_empty() {
        return Err(bad("no state after the serial"));
    }
    let no_permissions = rest
        .strip_prefix(NO_PERMISSIONS)
        .filter(|after| after.is_empty() || after.starts_with(char::is_whitespace));
    let (state, state_detail, fields) = if let Some(after) = no_permissions {
        let end = NO_PERMISSIONS.len() + no_permissions_tail_len(after);
        let phrase = &rest[..end];
        let detail = (phrase != NO_PERMISSIONS).then(|| phrase.to_string());
        (Link::NoPermissions, detail, &rest[end..])
    } else {
        let (state, fields) = split_token(rest);
        (Link::from_adb(state), None, fields)
    };

    let mut remaining = fields.trim();
    let transport_id = match take_field(&mut remaining, "transport_id:") {
        None => None,
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| bad(&format!("transport_id {} is not a number", excerpt(v))))?,
        ),
    };
    let device = take_field(&mut remaining, "device:").map(str::to_string);
    let model = take_field(&mut remaining, "model:").map(str::to_string);
    let product = take_field(&mut remaining, "product:").map(str::to_string);
    let devpath = match remaining {
        "" => None,
        p if p.contains(char::is_whitespace) => {
            return Err(bad(&format!(
                "unexpected words {} before the key:value fields",
                excerpt(p)
            )))
        }
        p => Some(p.to_string()),
    };

    Ok(Listed {
        serial: serial.to_string(),
        state,
        state_detail,
        devpath,
        product: product.filter(|v| !v.is_empty()),
        model: model.filter(|v| !v.is_empty()),
        device: device.filter(|v| !v.is_empty()),
        transport_id,
    })
}

/// The first whitespace-separated token, and the rest with its leading space removed.
fn split_token(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

/// How much of what follows `no permissions` belongs to the state: up to the `]` that
/// closes `see [<url>]`, or the `(<why>)` alone when there is no URL, or nothing.
fn no_permissions_tail_len(after: &str) -> usize {
    if !after.starts_with(" (") {
        return 0;
    }
    if let Some(i) = after.find(']') {
        return i + 1;
    }
    after.find(')').map_or(0, |i| i + 1)
}

/// Removes the last ` key<value>` from the end of `remaining` and returns the value.
/// The key only counts at the start of a word, so `model:x` inside `product:` does
/// not match a `device:` scan.
fn take_field<'a>(remaining: &mut &'a str, key: &str) -> Option<&'a str> {
    let s = *remaining;
    let at = s
        .rmatch_indices(key)
        .map(|(i, _)| i)
        .find(|&i| i == 0 || s[..i].ends_with(char::is_whitespace))?;
    let value = s[at + key.len()..].trim();
    *remaining = s[..at].trim_end();
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Listed {
        let mut all = parse(line).unwrap();
        assert_eq!(all.len(), 1, "{all:?}");
        all.remove(0)
    }

    #[test]
    fn modern_phone_over_usb() {
        let l = one("0A1B2C3D4E5F           device usb:1-1.4 product:husky model:Pixel_8_Pro device:husky transport_id:3\n");
        assert_eq!(
            l,
            Listed {
                serial: "0A1B2C3D4E5F".into(),
                state: Link::Device,
                state_detail: None,
                devpath: Some("usb:1-1.4".into()),
                product: Some("husky".into()),
                model: Some("Pixel_8_Pro".into()),
                device: Some("husky".into()),
                transport_id: Some(3),
            }
        );
    }

    #[test]
    fn empty_text_is_no_devices() {
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(parse("\n\n").unwrap(), vec![]);
    }

    #[test]
    fn bare_devpath() {
        let l = one("HT4A1JT00123           offline 1-5 transport_id:5");
        assert_eq!(l.state.as_str(), "offline");
        assert_eq!(l.devpath.as_deref(), Some("1-5"));
        assert_eq!(l.product, None);
        assert_eq!(l.transport_id, Some(5));
    }

    #[test]
    fn tcp_device_without_devpath() {
        let l = one("127.0.0.1:40123        device product:p model:m device:d transport_id:8");
        assert_eq!(l.serial, "127.0.0.1:40123");
        assert_eq!(l.devpath, None);
        assert_eq!(l.product.as_deref(), Some("p"));
    }

    #[test]
    fn product_and_device_with_spaces() {
        let l = one("emulator-5554 device product:sdk gphone64 arm64 model:sdk_gphone64_arm64 device:emu 64 a transport_id:7");
        assert_eq!(l.product.as_deref(), Some("sdk gphone64 arm64"));
        assert_eq!(l.model.as_deref(), Some("sdk_gphone64_arm64"));
        assert_eq!(l.device.as_deref(), Some("emu 64 a"));
        assert_eq!(l.devpath, None);
    }

    #[test]
    fn device_value_that_looks_like_a_key_inside_a_word() {
        let l = one("S1 device product:mydevice:x model:M device:d transport_id:1");
        assert_eq!(l.product.as_deref(), Some("mydevice:x"));
        assert_eq!(l.device.as_deref(), Some("d"));
    }

    #[test]
    fn no_permissions_phrase_with_url() {
        let l = one("ZY2233445566           no permissions (user in plugdev group; are your udev rules wrong?); see [http://developer.android.com/tools/device.html] usb:1-1.2 transport_id:6");
        assert_eq!(l.state.as_str(), "no permissions");
        assert_eq!(
            l.state_detail.as_deref(),
            Some("no permissions (user in plugdev group; are your udev rules wrong?); see [http://developer.android.com/tools/device.html]")
        );
        assert_eq!(l.devpath.as_deref(), Some("usb:1-1.2"));
        assert_eq!(l.transport_id, Some(6));
    }

    #[test]
    fn no_permissions_without_url() {
        let l = one("ZY1 no permissions (missing udev rules? user is in the plugdev group) usb:1-2 transport_id:2");
        assert_eq!(l.state.as_str(), "no permissions");
        assert_eq!(
            l.state_detail.as_deref(),
            Some("no permissions (missing udev rules? user is in the plugdev group)")
        );
        assert_eq!(l.devpath.as_deref(), Some("usb:1-2"));
    }

    #[test]
    fn no_permissions_bare_as_very_old_adb_printed_it() {
        let l = one("ZY1 no permissions usb:1-2 transport_id:2");
        assert_eq!(l.state.as_str(), "no permissions");
        assert_eq!(l.state_detail, None);
        assert_eq!(l.devpath.as_deref(), Some("usb:1-2"));
    }

    #[test]
    fn unauthorized_has_no_product_fields() {
        let l = one("R58M12ABCDE            unauthorized usb:1-1.3 transport_id:4");
        assert_eq!(l.state.as_str(), "unauthorized");
        assert_eq!((l.product, l.model, l.device), (None, None, None));
    }

    #[test]
    fn state_only_from_an_old_server() {
        let l = one("0123456789 offline");
        assert_eq!(l.state.as_str(), "offline");
        assert_eq!(l.transport_id, None);
        assert_eq!(l.devpath, None);
    }

    #[test]
    fn state_that_only_starts_like_no_permissions() {
        assert_eq!(
            one("S1 no permissionsx transport_id:9").state.as_str(),
            "no"
        );
    }

    #[test]
    fn unknown_new_state_passes_through() {
        assert_eq!(one("S1 detached transport_id:9").state.as_str(), "detached");
    }

    #[test]
    fn crlf_lines_are_tolerated() {
        let all = parse("A device transport_id:1\r\nB offline transport_id:2\r\n").unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].transport_id, Some(1));
        assert_eq!(all[1].state.as_str(), "offline");
    }

    #[test]
    fn several_phones_in_order_with_blank_lines_skipped() {
        let all = parse(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/adb/devices_l_mixed.txt"
        )))
        .unwrap();
        let got: Vec<(&str, &str)> = all
            .iter()
            .map(|l| (l.serial.as_str(), l.state.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("0A1B2C3D4E5F", "device"),
                ("R58M12ABCDE", "unauthorized"),
                ("HT4A1JT00123", "offline"),
                ("ZY2233445566", "no permissions"),
                ("emulator-5554", "device"),
                ("127.0.0.1:40123", "device"),
            ]
        );
        assert_eq!(all[5].product.as_deref(), Some("sim phone"));
        assert_eq!(all[5].device.as_deref(), Some("sim device"));
        assert_eq!(all[5].transport_id, Some(8));
    }

    #[test]
    fn serial_without_state_is_an_error_naming_the_line() {
        let e = parse("A device transport_id:1\nlonely\n").unwrap_err();
        assert_eq!(e.what, "devices-l");
        assert!(e.detail.contains("no state"), "{e}");
        assert!(e.detail.contains("\"lonely\""), "{e}");
    }

    #[test]
    fn bad_transport_id_is_an_error() {
        let e = parse("A device transport_id:x1").unwrap_err();
        assert!(e.detail.contains("transport_id \"x1\""), "{e}");
    }

    #[test]
    fn stray_words_before_the_fields_are_an_error() {
        let e = parse("List of devices attached").unwrap_err();
        assert!(e.detail.contains("unexpected words"), "{e}");
    }

    #[test]
    fn garbage_never_panics() {
        for text in &crate::devices::parse::tests_support::hostile() {
            let _ = parse(text);
        }
    }
}
