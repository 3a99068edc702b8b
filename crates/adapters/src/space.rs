//! Free space where bpm keeps its state, and the message that says there is
//! not enough of it.
//!
//! bpm takes new work only while the disk under its state has room to
//! spare: a full disk must cost new work, never the records and output of
//! the work already running (see `FsStore`'s `room`).

use std::io;
use std::path::Path;

/// What bpm keeps free under its state before it takes new work: room for
/// the record files of what runs, and for their output to go on a while.
pub const RESERVE: u64 = 1 << 20;

/// The free space of the filesystem holding `path`, for an unprivileged
/// user, and the device it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Space {
    /// Bytes free.
    pub free: u64,
    /// The filesystem's source, as `/proc/self/mountinfo` names it
    /// (`/dev/sda1`, `tmpfs`), or the path when it cannot be told.
    pub device: String,
}

/// The space of the filesystem holding `path`.
///
/// # Errors
/// `path` cannot be examined.
pub fn space(path: &Path) -> io::Result<Space> {
    Ok(Space {
        free: free_bytes(path)?,
        device: device_of(path).unwrap_or_else(|| path.display().to_string()),
    })
}

/// The bytes an unprivileged writer may still use on the filesystem
/// holding `path`.
fn free_bytes(path: &Path) -> io::Result<u64> {
    let stat = rustix::fs::statvfs(path).map_err(io::Error::from)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// The source of the mount that holds `path`: the one with the longest
/// mount point that is a prefix of it.
fn device_of(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(usize, String)> = None;
    for line in table.lines() {
        // ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS... - TYPE SOURCE SUPER
        let mut fields = line.split(' ');
        let Some(point) = fields.nth(4).map(unescape) else {
            continue;
        };
        let Some(source) = line.split(" - ").nth(1).and_then(|t| t.split(' ').nth(1)) else {
            continue;
        };
        let depth = Path::new(&point).components().count();
        if path.starts_with(&point) && best.as_ref().is_none_or(|(d, _)| depth >= *d) {
            best = Some((depth, unescape(source)));
        }
    }
    best.map(|(_, source)| source)
}

/// Mountinfo writes space, tab, newline and backslash as octal escapes.
fn unescape(field: &str) -> String {
    let mut out = Vec::with_capacity(field.len());
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(code) = field
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What to do when new work is refused for want of space.
pub const FREE_SOME: &str =
    "free some space there (bpm takes new work again by itself once there is room)";

/// Whether `e` says the disk (or the user's quota) is full.
pub fn is_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// A size for people: bytes, KiB or MiB.
pub fn human(bytes: u64) -> String {
    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    // One decimal, rounded down, in whole numbers.
    let tenths = |unit: u64| {
        let t = bytes / (unit / 10);
        format!("{}.{}", t / 10, t % 10)
    };
    if bytes >= MIB {
        format!("{} MiB", tenths(MIB))
    } else if bytes >= KIB {
        format!("{} KiB", tenths(KIB))
    } else {
        format!("{bytes} bytes")
    }
}

/// `None` when the filesystem holding `path` has `needed` bytes free; else
/// the message that refuses `what`, naming the device, the path, and the
/// space needed, then `then` (what to do).
///
/// Only `statvfs` is asked while there is room: the device is looked up
/// (the path resolved, the mount table read) for the message alone, since
/// every start asks this.
pub fn short_of(path: &Path, needed: u64, what: &str, then: &str) -> Option<String> {
    let free = free_bytes(path).ok()?;
    (free < needed).then(|| {
        format!(
            "no space left on {} ({}): {} free, {} needed for {what}; {then}",
            device_of(path).unwrap_or_else(|| path.display().to_string()),
            path.display(),
            human(free),
            human(needed),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_read_back() {
        assert_eq!(unescape("/mnt/with\\040space"), "/mnt/with space");
        assert_eq!(unescape("plain"), "plain");
        assert_eq!(unescape("bad\\9"), "bad\\9");
    }

    #[test]
    fn the_root_filesystem_has_a_device_and_a_size() {
        let s = space(Path::new("/")).expect("statvfs of /");
        assert!(!s.device.is_empty());
        assert_eq!(human(3 << 20), "3.0 MiB");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(12), "12 bytes");
    }
}
