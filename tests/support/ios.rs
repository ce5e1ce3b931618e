//! Stand-ins for libimobiledevice's tools, shared by the unit tests of `src/ios` (which
//! include this file by path) and the integration tests: shell scripts that print what
//! the real tools print, errors included, driven by files in their directory (a "lab"
//! used as `--idevice-dir`). Standard library only, so that both can use it.

use std::path::PathBuf;

/// Stand-in for `idevice_id`: lists `phones`, hiding a phone whose `<udid>.away` holds
/// a time (milliseconds since the epoch) not yet reached (a restarting phone: away for
/// a while, whoever lists meanwhile, as a real phone is), and fails as the real tool does when
/// usbmuxd cannot be reached, or hangs while `list-hangs` exists (a stuck usbmuxd).
pub const IDEVICE_ID: &str = r#"#!/bin/sh
d=$(dirname "$0")
if [ -e "$d/usbmuxd-down" ]; then
  echo "ERROR: Unable to retrieve device list!" >&2
  exit 255
fi
[ "$1" = "-l" ] || { echo "usage: idevice_id -l" >&2; exit 2; }
if [ -e "$d/list-hangs" ]; then
  sleep 1000 &
  echo $! >> "$d/sleepers"
  wait
fi
for u in $(cat "$d/phones"); do
  if [ -e "$d/$u.away" ]; then
    back=$(cat "$d/$u.away")
    now=$(($(date +%s%N) / 1000000))
    if [ "$now" -lt "$back" ]; then continue; fi
    rm -f "$d/$u.away"
  fi
  echo "$u"
done
"#;

/// Stand-in for `ideviceinfo`: values from `<udid>.info` (type, version, battery, one
/// a line; an empty line is a value lockdownd does not have, printed as nothing). The
/// error texts are the real tool's, on the same streams.
pub const IDEVICEINFO: &str = r#"#!/bin/sh
d=$(dirname "$0")
udid=; domain=; key=
while [ $# -gt 0 ]; do
  case "$1" in
    -u) udid=$2; shift 2;;
    -q) domain=$2; shift 2;;
    -k) key=$2; shift 2;;
    *) echo "ERROR: unknown option $1" >&2; exit 2;;
  esac
done
if ! grep -qx "$udid" "$d/phones" || [ -e "$d/$udid.away" ] || [ -e "$d/$udid.gone" ]; then
  echo "ERROR: Device $udid not found!"
  exit 255
fi
if [ -e "$d/$udid.hang" ]; then
  sleep 1000 &
  echo $! >> "$d/sleepers"
  wait
fi
if [ -e "$d/$udid.locked" ]; then
  echo "ERROR: Could not connect to lockdownd: Password protected (-17)" >&2
  exit 255
fi
case "$domain/$key" in
  /ProductType) v=$(sed -n 1p "$d/$udid.info");;
  /ProductVersion) v=$(sed -n 2p "$d/$udid.info");;
  com.apple.mobile.battery/BatteryCurrentCapacity) v=$(sed -n 3p "$d/$udid.info");;
  *) v=;;
esac
[ -z "$v" ] || echo "$v"
exit 0
"#;

/// Stand-in for `idevicediagnostics -u <udid> restart`: the phone leaves the list for
/// 2.5 s (longer than the return check's poll), unless `<udid>.stays` says the restart
/// does nothing.
pub const IDEVICEDIAGNOSTICS: &str = r#"#!/bin/sh
d=$(dirname "$0")
[ "$1" = "-u" ] && [ "$3" = "restart" ] || { echo "usage: idevicediagnostics -u UDID restart" >&2; exit 2; }
if ! grep -qx "$2" "$d/phones"; then
  echo "ERROR: Device $2 not found!"
  exit 1
fi
[ -e "$d/$2.stays" ] || echo $(($(date +%s%N) / 1000000 + 2500)) > "$d/$2.away"
echo "Restarting device."
"#;

/// Stand-in for `usbmuxd --foreground`: says it started, as the real one does, and runs
/// until signalled. The tools above do not need its socket.
pub const USBMUXD: &str = r#"#!/bin/sh
echo "[00:00:00.000][3] usbmuxd stand-in starting up $*" >&2
exec sleep 100000
"#;

/// A directory of stand-in tools and their state, used as `--idevice-dir`.
pub struct Lab {
    pub dir: PathBuf,
}

impl Lab {
    /// A fresh lab named `name` (unique within one test binary).
    pub fn new(name: &str) -> Lab {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("tmm-ios-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let lab = Lab { dir };
        for (tool, text) in [
            ("idevice_id", IDEVICE_ID),
            ("ideviceinfo", IDEVICEINFO),
            ("idevicediagnostics", IDEVICEDIAGNOSTICS),
            ("usbmuxd", USBMUXD),
        ] {
            lab.write(tool, text);
            std::fs::set_permissions(lab.dir.join(tool), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        lab.phones(&[]);
        lab
    }

    /// Replaces `file` at once (write then rename): the tools may be reading it while a
    /// running monitor polls them, and must never see it half written.
    pub fn write(&self, file: &str, text: &str) {
        let tmp = self.dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.dir.join(file)).unwrap();
    }

    /// The UDIDs `idevice_id -l` lists.
    pub fn phones(&self, udids: &[&str]) {
        self.write(
            "phones",
            &udids.iter().map(|u| format!("{u}\n")).collect::<String>(),
        );
    }

    /// What `ideviceinfo` says of `udid`; an empty value is one lockdownd does not have.
    pub fn phone(&self, udid: &str, product_type: &str, version: &str, battery: &str) {
        self.write(
            &format!("{udid}.info"),
            &format!("{product_type}\n{version}\n{battery}\n"),
        );
    }

    /// Marks `udid` with `what`: `hang`, `locked`, `gone`, `away`, `stays`.
    pub fn mark(&self, udid: &str, what: &str) {
        self.write(&format!("{udid}.{what}"), "");
    }

    /// The pids of the `sleep`s started by hung tools.
    pub fn sleepers(&self) -> Vec<i32> {
        std::fs::read_to_string(self.dir.join("sleepers"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a process has ended (gone, or a zombie waiting for its parent).
pub fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}
