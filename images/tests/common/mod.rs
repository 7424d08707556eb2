//! Hand-made layers and images for the unpack tests: raw ustar/PAX entries (so that hostile
//! names the `tar` builder refuses can be written), and a store image built from them without
//! the import code.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use berth_images::digest::sha256_of;
use berth_images::store::descriptor;
use berth_images::{Image, Reference, Store};
use oci_spec::image::{
    ConfigBuilder, ImageConfigurationBuilder, ImageManifestBuilder, MediaType, RootFsBuilder,
};
use tempfile::TempDir;

pub const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// One tar entry, written as raw header bytes.
#[derive(Debug, Clone)]
pub struct Entry {
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
    pub fn file(name: &str, data: &[u8]) -> Self {
        Self {
            data: data.to_vec(),
            ..Self::new(name, b'0', 0o644)
        }
    }
    pub fn dir(name: &str) -> Self {
        Self::new(name, b'5', 0o755)
    }
    pub fn symlink(name: &str, target: &str) -> Self {
        Self {
            link: target.as_bytes().to_vec(),
            ..Self::new(name, b'2', 0o777)
        }
    }
    pub fn hardlink(name: &str, target: &str) -> Self {
        Self {
            link: target.as_bytes().to_vec(),
            ..Self::new(name, b'1', 0o644)
        }
    }
    pub fn char_dev(name: &str, major: u32, minor: u32) -> Self {
        Self {
            dev: (major, minor),
            ..Self::new(name, b'3', 0o666)
        }
    }
    pub fn fifo(name: &str) -> Self {
        Self::new(name, b'6', 0o600)
    }
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }
    pub fn owner(mut self, uid: u32, gid: u32) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn mtime(mut self, mtime: u64) -> Self {
        self.mtime = mtime;
        self
    }
    pub fn xattr(mut self, key: &str, value: &[u8]) -> Self {
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
pub fn tar(entries: &[Entry]) -> Vec<u8> {
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

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).unwrap()
}

/// A layer blob as stored: its bytes, media type and the diff_id the config will claim.
#[derive(Debug, Clone)]
pub struct Layer {
    pub blob: Vec<u8>,
    pub media_type: &'static str,
    pub diff_id: String,
}

impl Layer {
    pub fn gzip(entries: &[Entry]) -> Self {
        let tar = tar(entries);
        Self {
            blob: gzip(&tar),
            media_type: GZIP,
            diff_id: sha256_of(&tar).to_string(),
        }
    }
    pub fn zstd(entries: &[Entry]) -> Self {
        let tar = tar(entries);
        Self {
            blob: zstd(&tar),
            media_type: ZSTD,
            diff_id: sha256_of(&tar).to_string(),
        }
    }
    pub fn plain(entries: &[Entry]) -> Self {
        let tar = tar(entries);
        Self {
            diff_id: sha256_of(&tar).to_string(),
            blob: tar,
            media_type: TAR,
        }
    }
    pub fn digest(&self) -> String {
        sha256_of(&self.blob).to_string()
    }
}

/// A store in a temp dir, with a work dir beside it for unpack targets and sentinels.
#[derive(Debug)]
pub struct Fixture {
    pub tmp: TempDir,
    pub store: Store,
}

impl Fixture {
    pub fn new() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("berth-unpack-test-")
            .tempdir()
            .unwrap();
        let store = Store::open(tmp.path().join("data")).unwrap();
        Self { tmp, store }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Stores the layers (blobs as given), a config claiming their diff_ids, a manifest, and
    /// tags it `name`.
    pub fn image(&self, name: &str, layers: &[Layer]) -> Image {
        let mut descriptors = Vec::new();
        for layer in layers {
            let digest = self.store.put_bytes(&layer.blob).unwrap();
            descriptors.push(descriptor(
                MediaType::Other(layer.media_type.to_string()),
                digest,
                layer.blob.len() as u64,
            ));
        }
        let rootfs = RootFsBuilder::default()
            .typ("layers")
            .diff_ids(layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>())
            .build()
            .unwrap();
        let config = ImageConfigurationBuilder::default()
            .architecture("amd64")
            .os("linux")
            .rootfs(rootfs)
            .config(ConfigBuilder::default().build().unwrap())
            .build()
            .unwrap();
        let config = self
            .store
            .put_json(&config, MediaType::ImageConfig)
            .unwrap();
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config)
            .layers(descriptors)
            .build()
            .unwrap();
        let manifest = self
            .store
            .put_json(&manifest, MediaType::ImageManifest)
            .unwrap();
        let reference = Reference::parse(name).unwrap();
        self.store.tag(&reference, &manifest).unwrap();
        self.store.image(name).unwrap()
    }

    /// Names in the layers dir other than the (possibly empty) `sha256` directory, and the
    /// layer directories under it.
    pub fn layer_dirs(&self) -> Vec<String> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(self.store.layers_dir()).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if name != "sha256" {
                names.push(name);
            }
        }
        if let Ok(entries) = std::fs::read_dir(self.store.layers_dir().join("sha256")) {
            for entry in entries {
                names.push(format!(
                    "sha256/{}",
                    entry.unwrap().file_name().to_string_lossy()
                ));
            }
        }
        names
    }
}

/// Every path under `dir`, relative, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let entry = entry.unwrap();
            let path = entry.path();
            out.push(path.strip_prefix(base).unwrap().display().to_string());
            if entry.file_type().unwrap().is_dir() {
                walk(base, &path, out);
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}
