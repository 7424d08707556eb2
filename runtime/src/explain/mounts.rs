//! The mounts a process sees (/proc/PID/mountinfo): its root, what is masked, what is read-only.

use std::fs;
use std::path::Path;

use super::{ExplainError, Mount, Mounts, read};

/// One line of /proc/PID/mountinfo.
pub(super) struct MountInfo {
    pub root: String,
    pub mount_point: String,
    options: String,
    pub fs_type: String,
    source: String,
    pub super_options: String,
}

impl MountInfo {
    pub(super) fn parse(line: &str) -> Option<Self> {
        let (before, after) = line.split_once(" - ")?;
        let fields: Vec<&str> = before.split(' ').collect();
        let tail: Vec<&str> = after.split(' ').collect();
        Some(Self {
            root: unescape(fields.get(3)?),
            mount_point: unescape(fields.get(4)?),
            options: fields.get(5)?.to_string(),
            fs_type: tail.first()?.to_string(),
            source: unescape(tail.get(1).copied().unwrap_or("")),
            super_options: tail.get(2).copied().unwrap_or("").to_string(),
        })
    }

    fn read_only(&self) -> bool {
        self.options.split(',').any(|o| o == "ro")
    }
}

/// mountinfo writes space, tab, newline and backslash as \ooo.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let digit = |k: usize| u32::from(bytes[i + k] - b'0');
            match u8::try_from(digit(1) * 64 + digit(2) * 8 + digit(3)) {
                Ok(v) => {
                    out.push(v);
                    i += 4;
                }
                Err(_) => {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn mounts(proc_dir: &Path) -> Result<Mounts, ExplainError> {
    let text = read(&proc_dir.join("mountinfo"))?;
    let infos: Vec<MountInfo> = text.lines().filter_map(MountInfo::parse).collect();
    // The last mount on "/" is the one it sees.
    let root = infos.iter().rev().find(|m| m.mount_point == "/");
    let mut masked = Vec::new();
    let mut read_only = Vec::new();
    for m in &infos {
        if m.mount_point == "/" {
            continue;
        }
        let null_bind = m.root.ends_with("/null") && m.mount_point != "/dev/null";
        let empty_ro_tmpfs = m.fs_type == "tmpfs"
            && m.read_only()
            && (m.mount_point.starts_with("/proc/") || m.mount_point.starts_with("/sys/"))
            && fs::read_dir(
                proc_dir
                    .join("root")
                    .join(m.mount_point.trim_start_matches('/')),
            )
            .map(|mut d| d.next().is_none())
            .unwrap_or(true);
        if null_bind || empty_ro_tmpfs {
            if !masked.contains(&m.mount_point) {
                masked.push(m.mount_point.clone());
            }
        } else if m.read_only() && !read_only.contains(&m.mount_point) {
            read_only.push(m.mount_point.clone());
        }
    }
    Ok(Mounts {
        count: infos.len(),
        root_fs_type: root.map(|m| m.fs_type.clone()).unwrap_or_default(),
        root_read_only: root.is_some_and(MountInfo::read_only),
        masked,
        read_only,
        all: infos
            .iter()
            .map(|m| Mount {
                mount_point: m.mount_point.clone(),
                fs_type: m.fs_type.clone(),
                source: m.source.clone(),
                read_only: m.read_only(),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_parse() {
        let line = "612 600 0:5 /null /proc/kcore rw,nosuid - devtmpfs udev rw,size=10k";
        let m = MountInfo::parse(line).unwrap();
        assert_eq!(m.root, "/null");
        assert_eq!(m.mount_point, "/proc/kcore");
        assert_eq!(m.fs_type, "devtmpfs");
        assert!(!m.read_only());
        let line = r"1 0 0:1 / /a\040b ro,relatime shared:1 - tmpfs tmpfs ro";
        let m = MountInfo::parse(line).unwrap();
        assert_eq!(m.mount_point, "/a b");
        assert!(m.read_only());
    }

    #[test]
    fn octal_escapes() {
        assert_eq!(unescape(r"/a\040b\134c"), "/a b\\c");
        assert_eq!(unescape(r"/x\777"), r"/x\777");
    }
}
