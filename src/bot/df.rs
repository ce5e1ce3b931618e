//! The `df` applet: what runs when the binary is started under the name `df`.
//!
//! The Swarming bot runs `/bin/df -k -P -l` on every cycle, without a guard: with no
//! `df` in the image it dies with `FileNotFoundError`. It keeps the lines whose first
//! field starts with `/dev/`, reads the size from field 2 and `statvfs`es field 6. So
//! the image needs a `df` whose POSIX listing is exact, and this applet is that `df`
//! (linked as `/usr/bin/df`, like the `sudo` shim): no package, no shell, a few KiB.
//!
//! It follows GNU df's rules for which file systems a plain `df -l` lists, because that
//! is what the bot was written against: mounts come from `/proc/self/mountinfo` (which
//! names each mount's root within its device, needed to pick among bind mounts); remote
//! and pseudo file systems and those of zero size are left out; when one device is
//! mounted several times (a pod's hostPath and `/etc/hosts` are bind mounts of the
//! node's disk) one entry is kept, the one nearest the device's root. Sizes are 1024-byte
//! blocks rounded up, and the capacity is used / (used + available), rounded up.
//!
//! The pure part ([`parse_mountinfo`], [`select`], [`render`]) is tested on fixtures;
//! [`run`] only reads the mount table and calls `stat` and `statvfs`.

use std::ffi::CString;
use std::fmt;

/// One line of `/proc/self/mountinfo`, with the escapes (`\040` ...) decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The mount's root within its file system (field 4): `/` unless a bind mount.
    pub root: String,
    /// Where it is mounted (field 5).
    pub target: String,
    pub fstype: String,
    /// The mount source, e.g. `/dev/mmcblk0p2`, `tmpfs`, `server:/export`.
    pub source: String,
    /// `major:minor` of the file system (field 3), used when `stat` of the target fails.
    pub dev: u64,
}

/// A mountinfo line that is not in the kernel's format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub problem: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "/proc/self/mountinfo line {}: {}",
            self.line, self.problem
        )
    }
}

/// The figures of one file system, as `statvfs` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// The unit of the three counts (`f_frsize`).
    pub fragment: u64,
    pub blocks: u64,
    pub free: u64,
    /// Free blocks available to unprivileged users.
    pub available: u64,
}

/// The column titles of `df -k -P`.
const HEADER: [&str; 6] = [
    "Filesystem",
    "1024-blocks",
    "Used",
    "Available",
    "Capacity",
    "Mounted on",
];

/// Pseudo file systems: GNU df's "dummy" list (never listed without `-a`).
const PSEUDO: &[&str] = &[
    "autofs",
    "proc",
    "subfs",
    "debugfs",
    "devpts",
    "fusectl",
    "fuse.portal",
    "mqueue",
    "rpc_pipefs",
    "sysfs",
    "devfs",
    "kernfs",
    "ignore",
    "rootfs",
];

/// Network and cluster file systems, which `-l` leaves out (and never stats: a dead
/// server would hang the bot's cycle).
const REMOTE: &[&str] = &[
    "acfs",
    "afs",
    "coda",
    "auristorfs",
    "fhgfs",
    "gpfs",
    "ibrix",
    "ocfs2",
    "vxfs",
];

/// True for the file systems `df -l` leaves out as remote: `host:/path` sources, SMB
/// shares (`//host/share`) and the cluster types above.
pub fn is_remote(m: &Mount) -> bool {
    m.source.contains(':')
        || (m.source.starts_with("//") && matches!(m.fstype.as_str(), "smbfs" | "smb3" | "cifs"))
        || m.source == "-hosts"
        || REMOTE.contains(&m.fstype.as_str())
}

/// True for pseudo file systems, which hold no files of the bot's.
pub fn is_pseudo(m: &Mount) -> bool {
    PSEUDO.contains(&m.fstype.as_str()) || (m.fstype == "none" && !m.source.contains(':'))
}

/// Parses `/proc/self/mountinfo`: `ID PARENT MAJ:MIN ROOT TARGET OPTS [TAGS...] - TYPE
/// SOURCE SUPER_OPTS`.
pub fn parse_mountinfo(text: &str) -> Result<Vec<Mount>, ParseError> {
    let mut mounts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let err = |problem: String| ParseError {
            line: i + 1,
            problem,
        };
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields
            .iter()
            .position(|f| *f == "-")
            .ok_or_else(|| err("no ' - ' separator before the file system type".into()))?;
        if sep < 6 || fields.len() < sep + 3 {
            return Err(err(format!(
                "expected at least 6 fields, '-', type and source; got {} fields",
                fields.len()
            )));
        }
        let (major, minor) = fields[2]
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
            .ok_or_else(|| err(format!("device {:?} is not MAJOR:MINOR", fields[2])))?;
        mounts.push(Mount {
            root: unescape(fields[3]),
            target: unescape(fields[4]),
            fstype: unescape(fields[sep + 1]),
            source: unescape(fields[sep + 2]),
            dev: libc::makedev(major as u32, minor as u32),
        });
    }
    Ok(mounts)
}

/// Decodes the kernel's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134`
/// backslash); anything else is kept as it is.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts `df -l` lists, in mount-table order: no remote or pseudo file systems,
/// and one entry per device. `device_of` is `stat(target).st_dev` (`None` when `stat`
/// fails; the mountinfo device is used then), so an over-mounted target counts as the
/// device now visible there.
pub fn select<'a>(mounts: &'a [Mount], device_of: &dyn Fn(&str) -> Option<u64>) -> Vec<&'a Mount> {
    let mut kept: Vec<(u64, &Mount)> = Vec::new();
    for m in mounts {
        if is_remote(m) || is_pseudo(m) {
            continue;
        }
        let dev = device_of(&m.target).unwrap_or(m.dev);
        let Some(slot) = kept.iter_mut().find(|(d, _)| *d == dev) else {
            kept.push((dev, m));
            continue;
        };
        let seen = slot.1;
        let target_nearer_root = seen.target.len() > m.target.len();
        let source_below_root = seen.root.len() < m.root.len();
        let replace = (m.source.contains('/') && !seen.source.contains('/'))
            || (target_nearer_root && !source_below_root)
            || (seen.source != m.source && seen.target == m.target);
        if replace {
            slot.1 = m;
        }
    }
    kept.into_iter().map(|(_, m)| m).collect()
}

/// One row of the listing: source, 1024-byte blocks, used, available, capacity, target.
fn row(m: &Mount, u: &Usage) -> [String; 6] {
    let kib = |n: u64| (u128::from(n) * u128::from(u.fragment)).div_ceil(1024);
    let used = u.blocks.saturating_sub(u.free);
    let total = u128::from(used) + u128::from(u.available);
    let capacity = if total == 0 {
        "-".to_string()
    } else {
        format!("{}%", (u128::from(used) * 100).div_ceil(total))
    };
    [
        printable(&m.source),
        kib(u.blocks).to_string(),
        kib(used).to_string(),
        kib(u.available).to_string(),
        capacity,
        printable(&m.target),
    ]
}

/// Control characters (a newline in a mount point) would split a row: shown as `?`.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The listing of `df -k -P -l`: the header, then one row per mount with its usage, in
/// columns as wide as their widest cell; text left-aligned, figures right-aligned, the
/// last column unpadded. File systems of zero size are left out.
pub fn render(rows: &[(&Mount, Usage)]) -> String {
    let mut table: Vec<[String; 6]> = vec![HEADER.map(String::from)];
    table.extend(
        rows.iter()
            .filter(|(_, u)| u.blocks > 0)
            .map(|(m, u)| row(m, u)),
    );
    let mut width = [0usize; 6];
    for r in &table {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in &table {
        let mut line = String::new();
        for (j, cell) in r.iter().enumerate() {
            if j > 0 {
                line.push(' ');
            }
            match j {
                0 => line.push_str(&format!("{cell:<w$}", w = width[0])),
                5 => line.push_str(cell),
                _ => line.push_str(&format!("{cell:>w$}", w = width[j])),
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Checks the arguments: only the letters of `-k -P -l` (the bot's call), in any
/// grouping. Returns the complaint for anything else.
pub fn check_args(args: &[String]) -> Result<(), String> {
    for a in args {
        let letters = a
            .strip_prefix('-')
            .filter(|l| !l.is_empty() && !l.starts_with('-'));
        match letters {
            Some(l) if l.chars().all(|c| matches!(c, 'k' | 'P' | 'l')) => {}
            _ => {
                return Err(format!(
                    "unsupported argument {a:?}: this df prints only the listing of `df -k -P -l` \
                     (local file systems, 1024-byte blocks, POSIX format)"
                ))
            }
        }
    }
    Ok(())
}

/// Runs the applet: prints the listing to stdout and returns the exit code (0, or 1
/// when the mount table cannot be read or a file system could not be measured, as GNU
/// df does; unreadable or vanished mount points are skipped quietly, as there).
pub fn run(args: &[String]) -> i32 {
    if let Err(e) = check_args(args) {
        eprintln!("df: {e}");
        return 1;
    }
    let path = "/proc/self/mountinfo";
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("df: cannot read {path}: {e} (is /proc mounted?)");
            return 1;
        }
    };
    let mounts = match parse_mountinfo(&text) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("df: {e}");
            return 1;
        }
    };
    let mut code = 0;
    let mut rows = Vec::new();
    for m in select(&mounts, &device_of) {
        match statvfs(&m.target) {
            Ok(u) => rows.push((m, u)),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EACCES) | Some(libc::ENOENT) | Some(libc::ENOTDIR)
                ) => {}
            Err(e) => {
                eprintln!("df: {}: {e}", m.target);
                code = 1;
            }
        }
    }
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out
        .write_all(render(&rows).as_bytes())
        .and_then(|()| out.flush())
    {
        eprintln!("df: cannot write the listing: {e}");
        return 1;
    }
    code
}

fn device_of(path: &str) -> Option<u64> {
    let c = CString::new(path).ok()?;
    // SAFETY: c is NUL-terminated; st is written by stat before it is read.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::stat(c.as_ptr(), &mut st) };
    (rc == 0).then_some(st.st_dev as u64)
}

fn statvfs(path: &str) -> std::io::Result<Usage> {
    let c = CString::new(path)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: c is NUL-terminated; s is written by statvfs before it is read.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Usage {
        fragment: if s.f_frsize > 0 {
            s.f_frsize as u64
        } else {
            s.f_bsize as u64
        },
        blocks: s.f_blocks as u64,
        free: s.f_bfree as u64,
        available: s.f_bavail as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pod on a Pi: the overlay root, the node's SD card bind-mounted twice (the
    /// kubelet's /etc/hosts file and the bot's hostPath), a tmpfs, pseudo and remote file
    /// systems, and a USB disk whose mount point has a space in it.
    const POD: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/df/mountinfo_pod.txt"
    ));

    fn mounts() -> Vec<Mount> {
        parse_mountinfo(POD).expect("fixture parses")
    }

    fn usage(blocks: u64, free: u64, available: u64) -> Usage {
        Usage {
            fragment: 4096,
            blocks,
            free,
            available,
        }
    }

    #[test]
    fn parses_fields_and_escapes() {
        let m = mounts();
        let usb = m
            .iter()
            .find(|m| m.source == "/dev/sda1")
            .expect("usb disk");
        assert_eq!(usb.target, "/media/usb disk");
        assert_eq!(usb.fstype, "ext4");
        assert_eq!(usb.dev, libc::makedev(8, 1));
        let hosts = m.iter().find(|m| m.target == "/etc/hosts").expect("hosts");
        assert_eq!(hosts.root, "/var/lib/kubelet/pods/1f/etc-hosts");
        assert_eq!(unescape(r"a\134b\011c\0"), "a\\b\tc\\0");
    }

    #[test]
    fn rejects_lines_not_in_the_kernel_format() {
        let e = parse_mountinfo("1 2 3:4 / /x rw\n").expect_err("no separator");
        assert_eq!(e.line, 1);
        assert!(e.to_string().contains("separator"), "{e}");
        let e = parse_mountinfo("1 2 x / /x rw - ext4 /dev/x rw\n").expect_err("bad dev");
        assert!(e.problem.contains("MAJOR:MINOR"), "{e}");
        let e = parse_mountinfo("1 2 3:4 / - ext4\n").expect_err("short");
        assert!(e.problem.contains("fields"), "{e}");
    }

    #[test]
    fn keeps_local_real_file_systems_and_one_entry_per_device() {
        let m = mounts();
        let targets: Vec<&str> = select(&m, &|_| None)
            .iter()
            .map(|m| m.target.as_str())
            .collect();
        // /etc/hosts and /etc/hostname are the same SD card as /b: /b is nearest the
        // device's root. proc, sysfs, devpts, nfs and cifs are gone.
        // /b takes the place of the first entry of its device.
        assert_eq!(
            targets,
            [
                "/",
                "/dev",
                "/sys/fs/cgroup",
                "/b",
                "/dev/shm",
                "/media/usb disk"
            ]
        );
    }

    #[test]
    fn an_over_mounted_target_counts_as_the_device_on_top() {
        let text = "1 0 0:30 / / rw - overlay overlay rw\n\
                    2 1 0:40 / /tmp rw - tmpfs tmpfs rw\n\
                    3 1 0:41 / /tmp rw - tmpfs tmpfs rw\n";
        let m = parse_mountinfo(text).expect("parses");
        // stat("/tmp") sees the top mount, so both /tmp entries are one device.
        let top = libc::makedev(0, 41);
        let kept = select(&m, &|t| {
            Some(if t == "/tmp" {
                top
            } else {
                libc::makedev(0, 30)
            })
        });
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[1].target, "/tmp");
    }

    #[test]
    fn a_device_name_with_a_slash_wins_over_a_bare_name() {
        let text = "1 0 8:2 / /a rw - ext4 rootdisk rw\n2 0 8:2 / /bb rw - ext4 /dev/sdb2 rw\n";
        let m = parse_mountinfo(text).expect("parses");
        let kept = select(&m, &|_| None);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].source, "/dev/sdb2");
    }

    #[test]
    fn renders_the_posix_listing_in_aligned_columns() {
        let m = mounts();
        let sel = select(&m, &|_| None);
        let figures = [
            usage(1000, 400, 300),                  // overlay
            usage(0, 0, 0),                         // devtmpfs of zero size: left out
            usage(0, 0, 0),                         // cgroup2: left out
            usage(7_500_000, 2_500_000, 2_200_000), // /b, the SD card
            usage(2048, 2048, 2048),                // /dev/shm, empty
            usage(3, 1, 1),                         // the USB disk
        ];
        let rows: Vec<(&Mount, Usage)> = sel.into_iter().zip(figures).collect();
        let out = render(&rows);
        let expected = "\
Filesystem     1024-blocks     Used Available Capacity Mounted on
overlay               4000     2400      1200      67% /
/dev/mmcblk0p2    30000000 20000000   8800000      70% /b
shm                   8192        0      8192       0% /dev/shm
/dev/sda1               12        8         4      67% /media/usb disk
";
        assert_eq!(out, expected);
        // What the bot does with it: lines starting /dev/, field 2 a number.
        for line in out.lines().filter(|l| l.starts_with("/dev/")) {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert!(f[1].parse::<u64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn rounds_up_and_shows_no_capacity_for_an_empty_total() {
        let m = Mount {
            root: "/".into(),
            target: "/x".into(),
            fstype: "ext4".into(),
            source: "/dev/x".into(),
            dev: 1,
        };
        // 3 blocks of 512 bytes = 1.5 KiB, shown as 2; used 1 of used+avail 3 = 33.3%, shown 34%.
        let u = Usage {
            fragment: 512,
            blocks: 3,
            free: 2,
            available: 2,
        };
        assert_eq!(row(&m, &u)[1..5], ["2", "1", "1", "34%"]);
        let full_reserved = Usage {
            fragment: 4096,
            blocks: 10,
            free: 10,
            available: 0,
        };
        assert_eq!(row(&m, &full_reserved)[4], "-");
    }

    #[test]
    fn control_characters_cannot_split_a_row() {
        let text = "1 0 8:1 / /a\\012b rw - ext4 /dev/sda1 rw\n";
        let m = parse_mountinfo(text).expect("parses");
        let out = render(&[(&m[0], usage(1, 0, 1))]);
        assert_eq!(out.lines().count(), 2, "{out}");
        assert!(out.ends_with(" /a?b\n"), "{out}");
    }

    #[test]
    fn accepts_the_bots_flags_only() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_args(&args(&["-k", "-P", "-l"])).is_ok());
        assert!(check_args(&args(&["-kPl"])).is_ok());
        assert!(check_args(&args(&[])).is_ok());
        let e = check_args(&args(&["-h"])).expect_err("-h");
        assert!(e.contains("\"-h\"") && e.contains("df -k -P -l"), "{e}");
        assert!(check_args(&args(&["/data"])).is_err());
        assert!(check_args(&args(&["--help"])).is_err());
        assert!(check_args(&args(&["-"])).is_err());
    }
}
