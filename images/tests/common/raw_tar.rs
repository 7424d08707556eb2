//! Tar streams written header by header (so that hostile names the `tar` builder refuses can
//! be written), and layer blobs made of them.

use super::{gzip, sha256_hex};

pub(crate) const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub(crate) const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub(crate) const TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// One tar entry, written as raw header bytes.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub name: Vec<u8>,
    pub kind: u8,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    pub link: Vec<u8>,
    pub data: Vec<u8>,
    pub dev: (u32, u32),
    pub pax: Vec<(String, Vec<u8>)>,
}

impl Entry {
    fn new(name: &str, kind: u8, mode: u32) -> Self {
        Self {
            name: name.as_bytes().to_vec(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            link: Vec::new(),
            data: Vec::new(),
            dev: (0, 0),
            pax: Vec::new(),
        }
    }
    pub(crate) fn file(name: &str, data: &[u8]) -> Self {
        Self {
            data: data.to_vec(),
            ..Self::new(name, b'0', 0o644)
        }
    }
    pub(crate) fn dir(name: &str) -> Self {
        Self::new(name, b'5', 0o755)
    }
    pub(crate) fn symlink(name: &str, target: &str) -> Self {
        Self {
            link: target.as_bytes().to_vec(),
            ..Self::new(name, b'2', 0o777)
        }
    }
    pub(crate) fn hardlink(name: &str, target: &str) -> Self {
        Self {
            link: target.as_bytes().to_vec(),
            ..Self::new(name, b'1', 0o644)
        }
    }
    pub(crate) fn char_dev(name: &str, major: u32, minor: u32) -> Self {
        Self {
            dev: (major, minor),
            ..Self::new(name, b'3', 0o666)
        }
    }
    pub(crate) fn fifo(name: &str) -> Self {
        Self::new(name, b'6', 0o600)
    }
    pub(crate) fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }
    pub(crate) fn owner(mut self, uid: u32, gid: u32) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub(crate) fn mtime(mut self, mtime: u64) -> Self {
        self.mtime = mtime;
        self
    }
    pub(crate) fn xattr(mut self, key: &str, value: &[u8]) -> Self {
        self.pax
            .push((format!("SCHILY.xattr.{key}"), value.to_vec()));
        self
    }
}

fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    field[..width].copy_from_slice(text.as_bytes());
    field[width] = 0;
}

fn header(name: &[u8], kind: u8, e: &Entry, size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    assert!(name.len() <= 100, "test names fit the ustar name field");
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], u64::from(e.mode));
    octal(&mut h[108..116], u64::from(e.uid));
    octal(&mut h[116..124], u64::from(e.gid));
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], e.mtime);
    h[156] = kind;
    h[157..157 + e.link.len()].copy_from_slice(&e.link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    octal(&mut h[329..337], u64::from(e.dev.0));
    octal(&mut h[337..345], u64::from(e.dev.1));
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(text.as_bytes());
    h
}

fn push_padded(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0u8, pad));
}

/// A tar stream of the entries, end-of-archive blocks included.
pub(crate) fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        if !e.pax.is_empty() {
            let mut records = Vec::new();
            for (key, value) in &e.pax {
                let body_len = key.len() + value.len() + 3;
                let mut len = body_len + 1;
                while format!("{len}").len() + body_len != len {
                    len = format!("{len}").len() + body_len;
                }
                records.extend_from_slice(format!("{len} {key}=").as_bytes());
                records.extend_from_slice(value);
                records.push(b'\n');
            }
            out.extend_from_slice(&header(b"PaxHeaders/x", b'x', e, records.len() as u64));
            push_padded(&mut out, &records);
        }
        out.extend_from_slice(&header(&e.name, e.kind, e, e.data.len() as u64));
        push_padded(&mut out, &e.data);
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

/// A layer blob as stored: its bytes, media type and the diff_id the config will claim.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    pub blob: Vec<u8>,
    pub media_type: &'static str,
    pub diff_id: String,
}

impl Layer {
    pub(crate) fn gzip(entries: &[Entry]) -> Self {
        let tar = tar(entries);
        Self {
            blob: gzip(&tar),
            media_type: GZIP,
            diff_id: format!("sha256:{}", sha256_hex(&tar)),
        }
    }
    pub(crate) fn zstd(entries: &[Entry]) -> Self {
        let tar = tar(entries);
        Self {
            blob: zstd::encode_all(tar.as_slice(), 3).unwrap(),
            media_type: ZSTD,
            diff_id: format!("sha256:{}", sha256_hex(&tar)),
        }
    }
    pub(crate) fn plain(entries: &[Entry]) -> Self {
        let tar = tar(entries);
        Self {
            diff_id: format!("sha256:{}", sha256_hex(&tar)),
            blob: tar,
            media_type: TAR,
        }
    }
    pub(crate) fn digest(&self) -> String {
        format!("sha256:{}", sha256_hex(&self.blob))
    }
}
