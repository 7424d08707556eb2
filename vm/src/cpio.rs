//! The newc ("070701") cpio format the kernel unpacks an initramfs from: a header per entry,
//! name and data each padded to four bytes, and a TRAILER!!! entry at the end.

use std::io::{self, Write};

pub(crate) const S_IFREG: u32 = 0o100_000;
pub(crate) const S_IFDIR: u32 = 0o040_000;
pub(crate) const S_IFLNK: u32 = 0o120_000;

/// Writes newc entries to `out`, numbering inodes as it goes; owner root, mtime 0, so the
/// same inputs always pack to the same bytes.
pub(crate) struct Writer<W: Write> {
    out: W,
    ino: u32,
    written: u64,
}

impl<W: Write> Writer<W> {
    pub(crate) fn new(out: W) -> Self {
        Self {
            out,
            ino: 1,
            written: 0,
        }
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4)) % 4;
        self.put(&[0u8; 3][..usize::try_from(n).unwrap_or(0)])
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn header(&mut self, name: &str, mode: u32, size: u64) -> io::Result<()> {
        let size = u32::try_from(size).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name} is over 4 GiB, too big for a newc cpio entry"),
            )
        })?;
        let name_size = u32::try_from(name.len() + 1)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name too long"))?;
        let nlink = if mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
        let fields = [
            self.ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, name_size, 0,
        ];
        self.ino += 1;
        let mut header = String::from("070701");
        for f in fields {
            header.push_str(&format!("{f:08x}"));
        }
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()
    }

    /// An entry with its data in memory (`name` relative, without a leading slash).
    pub(crate) fn entry(&mut self, name: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        self.header(name, mode, data.len() as u64)?;
        self.put(data)?;
        self.pad()
    }

    /// A regular file whose `size` bytes come from `data`.
    pub(crate) fn file_from(
        &mut self,
        name: &str,
        mode: u32,
        size: u64,
        data: &mut dyn io::Read,
    ) -> io::Result<()> {
        self.header(name, S_IFREG | mode, size)?;
        let copied = io::copy(&mut io::Read::take(data, size), &mut self.out)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{name} changed size while being packed"),
            ));
        }
        self.written += copied;
        self.pad()
    }

    /// The trailer; returns the output.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, &[])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let mut w = Writer::new(Vec::new());
        w.entry("bin", S_IFDIR | 0o755, &[]).unwrap();
        w.entry("bin/sh", S_IFLNK | 0o777, b"busybox").unwrap();
        w.file_from("init", 0o755, 3, &mut &b"abc"[..]).unwrap();
        let out = w.finish().unwrap();
        assert_eq!(out.len() % 4, 0);
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("070701"));
        assert_eq!(text.matches("070701").count(), 4);
        // The symlink's header: mode 0o120777 = a1ff, size 7.
        assert!(text.contains("0000a1ff"), "{text}");
        assert!(text.contains("TRAILER!!!"));
        let mut short = Writer::new(Vec::new());
        let err = short
            .file_from("f", 0o644, 10, &mut &b"abc"[..])
            .unwrap_err();
        assert!(err.to_string().contains("changed size"), "{err}");
    }
}
