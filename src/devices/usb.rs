//! The USB steps of the recovery ladder, both opt-in: a reset of one phone
//! (`--usb-reset`), and a power cycle of its hub port (`--usb-power-cycle`).
//!
//! The phone is found from the `usb:<path>` adb lists for it (`1-1.4`: bus 1, port 4 of
//! the hub at `1-1`). A reset opens `/dev/bus/usb/BBB/DDD` (from `busnum` and `devnum` in
//! `/sys/bus/usb/devices/<path>/`) and asks `USBDEVFS_RESET`. A power cycle writes `1`,
//! then `0`, to the port's `disable` file (`/sys/bus/usb/devices/<hub>:1.0/<hub>-port<N>/
//! disable`) where the kernel has one; otherwise it sends the hub-class requests
//! CLEAR_FEATURE and SET_FEATURE(PORT_POWER) through `USBDEVFS_CONTROL` on the hub's
//! node and reads the port status back. Only hubs that switch power per port can cut one
//! phone: a Raspberry Pi 4's own ports are ganged, and a power cycle there cuts them all
//! (docs/deploy.md lists what to look for).
//!
//! The roots of `/sys` and `/dev` are parameters, so the tests resolve paths and build
//! the requests against a fake tree; nothing here has been run against real hardware in
//! this project's tests.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where sysfs and devtmpfs are (`/sys`, `/dev` on a Pi).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    pub sys: PathBuf,
    pub dev: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            sys: PathBuf::from("/sys"),
            dev: PathBuf::from("/dev"),
        }
    }
}

/// A USB step that could not be taken, with what and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbError(pub String);

impl fmt::Display for UsbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The sysfs name of a phone's USB device from adb's devpath (`usb:1-1.4` or `1-1.4`).
pub fn sysfs_name(devpath: &str) -> Result<String, UsbError> {
    let name = devpath.strip_prefix("usb:").unwrap_or(devpath);
    let valid = name.split_once('-').is_some_and(|(bus, ports)| {
        !bus.is_empty()
            && bus.bytes().all(|b| b.is_ascii_digit())
            && !ports.is_empty()
            && ports
                .split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    });
    if valid {
        Ok(name.to_string())
    } else {
        Err(UsbError(format!(
            "{devpath:?} is not a USB path like usb:1-1.4 (a phone on TCP has none)"
        )))
    }
}

/// The hub a device hangs off and its port there: `1-1.4` is port 4 of hub `1-1`; `1-4`
/// is port 4 of the root hub `usb1`.
pub fn hub_port(name: &str) -> Result<(String, u16), UsbError> {
    let bad = || UsbError(format!("cannot tell the hub port of USB device {name}"));
    let (hub, port) = match name.rsplit_once('.') {
        Some((hub, port)) => (hub.to_string(), port),
        None => {
            let (bus, port) = name.split_once('-').ok_or_else(bad)?;
            (format!("usb{bus}"), port)
        }
    };
    Ok((hub, port.parse().map_err(|_| bad())?))
}

fn read_number(path: &Path) -> Result<u32, UsbError> {
    let text = fs::read_to_string(path)
        .map_err(|e| UsbError(format!("cannot read {}: {e}", path.display())))?;
    text.trim().parse().map_err(|_| {
        UsbError(format!(
            "{} holds {:?}, not a number",
            path.display(),
            text.trim()
        ))
    })
}

/// `/dev/bus/usb/BBB/DDD` of a USB device, from its sysfs `busnum` and `devnum`.
pub fn device_node(roots: &Roots, name: &str) -> Result<PathBuf, UsbError> {
    let dir = roots.sys.join("bus/usb/devices").join(name);
    let bus = read_number(&dir.join("busnum"))?;
    let dev = read_number(&dir.join("devnum"))?;
    Ok(roots.dev.join(format!("bus/usb/{bus:03}/{dev:03}")))
}

/// The `disable` file of a hub port, where the kernel provides one (Linux 5.13+).
pub fn port_disable_file(roots: &Roots, hub: &str, port: u16) -> PathBuf {
    let interface = if let Some(bus) = hub.strip_prefix("usb") {
        format!("{bus}-0:1.0")
    } else {
        format!("{hub}:1.0")
    };
    roots
        .sys
        .join("bus/usb/devices")
        .join(interface)
        .join(format!("{hub}-port{port}"))
        .join("disable")
}

/// Linux's `_IOC` encoding for `_IO` (no data) and `_IOWR` (read and write).
const fn ioc(dir: u32, kind: u8, nr: u8, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | ((kind as u32) << 8) | nr as u32
}

/// `USBDEVFS_RESET`, `_IO('U', 20)`.
pub const USBDEVFS_RESET: u32 = ioc(0, b'U', 20, 0);
/// `USBDEVFS_CONTROL`, `_IOWR('U', 0, struct usbdevfs_ctrltransfer)`.
pub const USBDEVFS_CONTROL: u32 = ioc(3, b'U', 0, std::mem::size_of::<CtrlTransfer>());

/// `struct usbdevfs_ctrltransfer` from `<linux/usbdevice_fs.h>`.
#[repr(C)]
pub struct CtrlTransfer {
    pub request_type: u8,
    pub request: u8,
    pub value: u16,
    pub index: u16,
    pub length: u16,
    /// Milliseconds.
    pub timeout: u32,
    pub data: *mut libc::c_void,
}

/// Hub-class requests on a port (USB 2.0 §11.24.2): recipient "other", class.
const TO_PORT: u8 = 0x23;
const FROM_PORT: u8 = 0xA3;
const GET_STATUS: u8 = 0;
const CLEAR_FEATURE: u8 = 1;
const SET_FEATURE: u8 = 3;
const PORT_POWER: u16 = 8;
/// `wPortStatus` bit: the port has power.
const PORT_STAT_POWER: u16 = 0x0100;

/// The setup fields of switching a port's power on or off.
pub fn port_power_request(port: u16, on: bool) -> (u8, u8, u16, u16) {
    let request = if on { SET_FEATURE } else { CLEAR_FEATURE };
    (TO_PORT, request, PORT_POWER, port)
}

fn ioctl(node: &Path, request: u32, arg: *mut libc::c_void) -> Result<i32, UsbError> {
    let c = std::ffi::CString::new(node.as_os_str().as_encoded_bytes())
        .map_err(|_| UsbError(format!("{} has a NUL in it", node.display())))?;
    // SAFETY: c is NUL-terminated; the fd is closed below on every path.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(UsbError(format!(
            "cannot open {}: {}",
            node.display(),
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: fd is open; `arg` points at what `request` expects (or is null).
    let rc = unsafe { libc::ioctl(fd, request as _, arg) };
    let err = std::io::Error::last_os_error();
    // SAFETY: fd is ours and open.
    unsafe { libc::close(fd) };
    if rc < 0 {
        return Err(UsbError(format!("ioctl on {}: {err}", node.display())));
    }
    Ok(rc)
}

/// Resets one phone (`USBDEVFS_RESET` on its node).
pub fn reset(roots: &Roots, devpath: &str) -> Result<PathBuf, UsbError> {
    let node = device_node(roots, &sysfs_name(devpath)?)?;
    ioctl(&node, USBDEVFS_RESET, std::ptr::null_mut())?;
    Ok(node)
}

fn control(node: &Path, setup: (u8, u8, u16, u16), data: &mut [u8]) -> Result<(), UsbError> {
    let (request_type, request, value, index) = setup;
    let mut t = CtrlTransfer {
        request_type,
        request,
        value,
        index,
        length: data.len() as u16,
        timeout: 1000,
        data: data.as_mut_ptr().cast(),
    };
    ioctl(node, USBDEVFS_CONTROL, (&mut t as *mut CtrlTransfer).cast()).map(drop)
}

/// Power-cycles the hub port a phone is on, off for `off`; returns how it was done.
pub fn power_cycle(roots: &Roots, devpath: &str, off: Duration) -> Result<String, UsbError> {
    let name = sysfs_name(devpath)?;
    let (hub, port) = hub_port(&name)?;
    let disable = port_disable_file(roots, &hub, port);
    if disable.exists() {
        let write = |v: &str| {
            fs::write(&disable, v)
                .map_err(|e| UsbError(format!("cannot write {v} to {}: {e}", disable.display())))
        };
        write("1")?;
        std::thread::sleep(off);
        write("0")?;
        return Ok(format!("{} 1, then 0", disable.display()));
    }
    let node = device_node(roots, &hub)?;
    control(&node, port_power_request(port, false), &mut [])?;
    std::thread::sleep(off);
    control(&node, port_power_request(port, true), &mut [])?;
    let mut status = [0u8; 4];
    control(&node, (FROM_PORT, GET_STATUS, 0, port), &mut status)?;
    if u16::from_le_bytes([status[0], status[1]]) & PORT_STAT_POWER == 0 {
        return Err(UsbError(format!(
            "port {port} of hub {hub} has no power after SET_FEATURE(PORT_POWER): \\
             does the hub switch power per port?"
        )));
    }
    Ok(format!(
        "PORT_POWER off and on, port {port} of hub {hub} ({})",
        node.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake /sys and /dev: the phone 1-1.4 (bus 1, device 7) on the hub 1-1
    /// (device 3), the hub's port 4 with a `disable` file when `with_disable`.
    fn tree(name: &str, with_disable: bool) -> (std::path::PathBuf, Roots) {
        let base = std::env::temp_dir().join(format!("tmm-usb-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let roots = Roots {
            sys: base.join("sys"),
            dev: base.join("dev"),
        };
        for (dev, bus, num) in [("1-1.4", 1, 7), ("1-1", 1, 3)] {
            let d = roots.sys.join("bus/usb/devices").join(dev);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("busnum"), format!("{bus}\n")).unwrap();
            fs::write(d.join("devnum"), format!("{num}\n")).unwrap();
        }
        fs::create_dir_all(roots.dev.join("bus/usb/001")).unwrap();
        fs::write(roots.dev.join("bus/usb/001/007"), "").unwrap();
        fs::write(roots.dev.join("bus/usb/001/003"), "").unwrap();
        if with_disable {
            let port = roots.sys.join("bus/usb/devices/1-1:1.0/1-1-port4");
            fs::create_dir_all(&port).unwrap();
            fs::write(port.join("disable"), "0\n").unwrap();
        }
        (base, roots)
    }

    #[test]
    fn paths_from_adbs_devpath() {
        assert_eq!(sysfs_name("usb:1-1.4").unwrap(), "1-1.4");
        assert_eq!(sysfs_name("3-2").unwrap(), "3-2");
        assert!(sysfs_name("127.0.0.1:5555").is_err());
        assert!(sysfs_name("usb:1-").is_err());
        assert_eq!(hub_port("1-1.4").unwrap(), ("1-1".to_string(), 4));
        assert_eq!(hub_port("1-1.2.3").unwrap(), ("1-1.2".to_string(), 3));
        assert_eq!(hub_port("2-4").unwrap(), ("usb2".to_string(), 4));
        let roots = Roots::default();
        assert_eq!(
            port_disable_file(&roots, "1-1", 4),
            Path::new("/sys/bus/usb/devices/1-1:1.0/1-1-port4/disable")
        );
        assert_eq!(
            port_disable_file(&roots, "usb2", 4),
            Path::new("/sys/bus/usb/devices/2-0:1.0/usb2-port4/disable")
        );
    }

    #[test]
    fn the_device_node_comes_from_busnum_and_devnum() {
        let (base, roots) = tree("node", false);
        assert_eq!(
            device_node(&roots, "1-1.4").unwrap(),
            roots.dev.join("bus/usb/001/007")
        );
        let e = device_node(&roots, "1-9").unwrap_err();
        assert!(e.0.contains("1-9/busnum"), "{e}");
        // A regular file is no usbfs node: the ioctl fails and says on which file.
        let e = reset(&roots, "usb:1-1.4").unwrap_err();
        assert!(
            e.0.starts_with("ioctl on ") && e.0.contains("bus/usb/001/007"),
            "{e}"
        );
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn a_power_cycle_writes_the_ports_disable_file_where_there_is_one() {
        let (base, roots) = tree("disable", true);
        let how = power_cycle(&roots, "usb:1-1.4", Duration::from_millis(1)).unwrap();
        assert!(how.ends_with("1-1-port4/disable 1, then 0"), "{how}");
        let file = roots.sys.join("bus/usb/devices/1-1:1.0/1-1-port4/disable");
        assert_eq!(fs::read_to_string(file).unwrap(), "0");
        fs::remove_dir_all(base).unwrap();
        // Without one, the hub's node gets the control request (here a regular file).
        let (base, roots) = tree("control", false);
        let e = power_cycle(&roots, "usb:1-1.4", Duration::from_millis(1)).unwrap_err();
        assert!(
            e.0.contains("bus/usb/001/003"),
            "the hub's node, not the phone's: {e}"
        );
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn request_numbers_and_layout_are_linuxs() {
        assert_eq!(USBDEVFS_RESET, 0x5514);
        #[cfg(target_pointer_width = "64")]
        {
            assert_eq!(std::mem::size_of::<CtrlTransfer>(), 24);
            assert_eq!(USBDEVFS_CONTROL, 0xC018_5500);
        }
        #[cfg(target_pointer_width = "32")]
        {
            assert_eq!(std::mem::size_of::<CtrlTransfer>(), 16);
            assert_eq!(USBDEVFS_CONTROL, 0xC010_5500);
        }
        assert_eq!(port_power_request(4, false), (0x23, 1, 8, 4));
        assert_eq!(port_power_request(4, true), (0x23, 3, 8, 4));
    }
}
