//! Guest images kept under a data dir, named by a hash of their inputs: made once, through a
//! temporary file renamed into place, and remade only when an input changes.

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result};

/// A cache key under construction: a sha256 over labelled inputs.
#[derive(Debug, Clone, Default)]
pub struct Key(Sha256);

impl Key {
    /// An empty key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a piece of text (a version, a recipe, a path).
    pub fn text(&mut self, text: &str) -> &mut Self {
        self.0.update(format!("t{}:", text.len()));
        self.0.update(text);
        self
    }

    /// Adds a file's contents.
    pub fn contents(&mut self, path: &Path) -> Result<&mut Self> {
        let mut f = fs::File::open(path).ctx(|| format!("opening {}", path.display()))?;
        let mut buf = vec![0u8; 1 << 16];
        self.text(&path.to_string_lossy());
        loop {
            let n = f
                .read(&mut buf)
                .ctx(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            self.0.update(&buf[..n]);
        }
        Ok(self)
    }

    /// Adds a file's path, size, modification time and inode: for big files (binaries being
    /// rebuilt) where hashing the contents on every run costs more than it saves.
    pub fn stamp(&mut self, path: &Path) -> Result<&mut Self> {
        let m = fs::metadata(path).ctx(|| format!("reading {}", path.display()))?;
        self.text(&format!(
            "{}:{}:{}.{}:{}",
            path.display(),
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            m.ino()
        ));
        Ok(self)
    }

    /// The key as hex.
    pub fn finish(&self) -> String {
        hex::encode(self.0.clone().finalize())
    }
}

/// Writes `path` through a temporary file in its directory that `write` fills; renamed into
/// place only when `write` succeeds, removed otherwise.
pub fn write_atomic(path: &Path, write: impl FnOnce(&mut fs::File) -> Result<()>) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .ctx(|| format!("creating a temporary file in {}", dir.display()))?;
    write(tmp.as_file_mut())?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .ctx(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

/// `DIR/NAME-KEY.EXT`, made by `make` (given the path to write, through [`write_atomic`] or
/// its own temporary name) if it does not exist; other `NAME-*.EXT` files are removed then,
/// so a cache holds one image per name.
pub fn get_or_make(
    dir: &Path,
    name: &str,
    ext: &str,
    key: &str,
    make: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let path = dir.join(format!("{name}-{key}.{ext}"));
    if path.exists() {
        return Ok(path);
    }
    make(&path)?;
    let prefix = format!("{name}-");
    let suffix = format!(".{ext}");
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            // KEY is hex: NAME-KEY.EXT never matches another name's NAME2-KEY.EXT by accident
            // unless NAME2 starts with NAME-, which callers avoid.
            let other_key = n
                .strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(&suffix))
                .is_some_and(|k| k != key && k.chars().all(|c| c.is_ascii_hexdigit()));
            if other_key {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_per_key_and_old_keys_go() {
        let tmp = tempfile::tempdir().unwrap();
        let mut made = 0;
        let mut make = |p: &Path| {
            made += 1;
            write_atomic(p, |f| {
                use std::io::Write;
                f.write_all(b"x").ctx(|| "w".into())
            })
        };
        let a = get_or_make(tmp.path(), "img", "cpio", "aa", &mut make).unwrap();
        let again = get_or_make(tmp.path(), "img", "cpio", "aa", &mut make).unwrap();
        assert_eq!(a, again);
        let b = get_or_make(tmp.path(), "img", "cpio", "bb", &mut make).unwrap();
        assert_eq!(made, 2);
        assert!(!a.exists() && b.exists());
        let failed = write_atomic(&tmp.path().join("f"), |_| {
            Err(crate::Error::Failed("no".into()))
        });
        assert!(failed.is_err());
        let left: Vec<_> = fs::read_dir(tmp.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "{left:?}");
        let k1 = Key::new().text("a").finish();
        assert_ne!(k1, Key::new().text("b").finish());
    }
}
