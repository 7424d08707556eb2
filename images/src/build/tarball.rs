//! Writing layer entries as a PAX tar, gzip-compressed into a store blob in one streaming
//! pass that hashes the tar (the diff_id) and the gzip (the blob digest) as it goes.

use std::fs::File;
use std::io::{self, Write};

use flate2::Compression;
use flate2::write::GzEncoder;
use oci_spec::image::Digest;

use super::error::{BuildError, Result, io_err, store_err};
use super::walk::{EntryKind, LayerEntry};
use crate::digest::HashingWriter;
use crate::fsutil::IoError;
use crate::progress::Progress;
use crate::store::{BlobWriter, Store};

/// The name and link fields of a ustar header hold 100 bytes; longer ones go in PAX records.
const NAME_FIELD: usize = 100;
/// The largest value a ustar octal field of 8 bytes holds (uid, gid, mode).
const MAX_OCTAL_ID: u64 = 0o7777777;

/// The layer as stored.
#[derive(Debug, Clone)]
pub(crate) struct LayerBlob {
    /// sha256 of the gzip stream: the blob's name in the store.
    pub digest: Digest,
    pub size: u64,
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
}

/// Passes writes through and reports their sizes to a progress sink.
struct Reporting<'a, W> {
    inner: W,
    progress: &'a dyn Progress,
    item: &'a str,
}

impl<W: Write> Write for Reporting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.progress.advanced(self.item, n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

type Pipeline<'a> = tar::Builder<Reporting<'a, HashingWriter<GzEncoder<BlobWriter>>>>;

/// Writes `entries` into a new gzip layer blob.
pub(crate) fn write_layer(
    store: &Store,
    entries: &[LayerEntry],
    progress: &dyn Progress,
) -> Result<LayerBlob> {
    let item = "layer";
    progress.started(item, None);
    let blob = store
        .blob_writer(None)
        .map_err(store_err("starting the layer blob"))?;
    // A fixed gzip header (no name, mtime 0) keeps the blob digest a function of the tar.
    let gzip = flate2::GzBuilder::new().write(blob, Compression::default());
    let mut tar: Pipeline<'_> = tar::Builder::new(Reporting {
        inner: HashingWriter::new(gzip),
        progress,
        item,
    });
    for entry in entries {
        append_entry(&mut tar, entry).map_err(|source| match source {
            AppendError::Source(e) => *e,
            AppendError::Archive(source) => BuildError::Archive {
                path: entry.path.clone(),
                source,
            },
        })?;
    }
    let reporting = tar.into_inner().map_err(|source| BuildError::Archive {
        path: "end of archive".into(),
        source,
    })?;
    let (gzip, diff_id, _tar_len) = reporting.inner.finish();
    let blob = gzip.finish().map_err(|source| BuildError::Archive {
        path: "end of gzip stream".into(),
        source,
    })?;
    let (digest, size) = blob.commit().map_err(store_err("storing the layer blob"))?;
    progress.finished(item);
    Ok(LayerBlob {
        digest,
        size,
        diff_id,
    })
}

enum AppendError {
    /// Reading the source file failed: reported with its path.
    Source(Box<BuildError>),
    /// Writing the archive failed.
    Archive(io::Error),
}

impl From<io::Error> for AppendError {
    fn from(e: io::Error) -> Self {
        Self::Archive(e)
    }
}

/// A device number's major or minor part as a tar header holds it (32 bits).
fn device_part(what: &str, n: u64) -> io::Result<u32> {
    u32::try_from(n).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("device {what} number {n} does not fit a tar header"),
        )
    })
}

fn append_entry<W: Write>(
    tar: &mut tar::Builder<W>,
    entry: &LayerEntry,
) -> Result<(), AppendError> {
    let mut header = tar::Header::new_ustar();
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    let path = entry.path.as_bytes();
    if path.len() > NAME_FIELD {
        pax.push(("path".into(), path.to_vec()));
    }
    set_bytes(&mut header.as_old_mut().name, path);
    let link: Option<&[u8]> = match &entry.kind {
        EntryKind::Symlink { target } => Some(target),
        EntryKind::HardLink { target } => Some(target.as_bytes()),
        _ => None,
    };
    if let Some(link) = link {
        if link.len() > NAME_FIELD {
            pax.push(("linkpath".into(), link.to_vec()));
        }
        set_bytes(&mut header.as_old_mut().linkname, link);
    }
    for (id_name, id) in [("uid", entry.uid), ("gid", entry.gid)] {
        if id > MAX_OCTAL_ID {
            pax.push((id_name.into(), id.to_string().into_bytes()));
        }
    }
    header.set_uid(entry.uid.min(MAX_OCTAL_ID));
    header.set_gid(entry.gid.min(MAX_OCTAL_ID));
    for (name, value) in &entry.xattrs {
        pax.push((format!("SCHILY.xattr.{name}"), value.clone()));
    }
    header.set_mode(entry.mode);
    header.set_mtime(entry.mtime);
    header.set_size(0);
    let entry_type = match &entry.kind {
        EntryKind::Dir => tar::EntryType::Directory,
        EntryKind::File { len } => {
            header.set_size(*len);
            tar::EntryType::Regular
        }
        EntryKind::Whiteout => tar::EntryType::Regular,
        EntryKind::Symlink { .. } => tar::EntryType::Symlink,
        EntryKind::HardLink { .. } => tar::EntryType::Link,
        EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
            header.set_device_major(device_part("major", *major)?)?;
            header.set_device_minor(device_part("minor", *minor)?)?;
            if matches!(entry.kind, EntryKind::CharDevice { .. }) {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            }
        }
        EntryKind::Fifo => tar::EntryType::Fifo,
    };
    header.set_entry_type(entry_type);
    header.set_cksum();
    if !pax.is_empty() {
        append_pax(tar, entry, &pax)?;
    }
    match (&entry.kind, &entry.source) {
        (EntryKind::File { len }, Some(source)) => {
            let file = File::open(source)
                .map_err(|e| AppendError::Source(Box::new(io_err("open", source)(e).into())))?;
            // A file that changed size since it was listed would corrupt the tar: the header's
            // size is fixed. Copy exactly `len` bytes and fail if fewer come.
            let mut reader = io::Read::take(file, *len);
            let mut counted = CountingReader::new(&mut reader);
            tar.append(&header, &mut counted)?;
            if counted.count != *len {
                return Err(AppendError::Source(Box::new(BuildError::Io(IoError {
                    op: "read (it shrank while being archived)",
                    path: source.clone(),
                    source: io::ErrorKind::UnexpectedEof.into(),
                }))));
            }
        }
        _ => tar.append(&header, io::empty())?,
    }
    Ok(())
}

/// Counts bytes read, to catch files that shrink while they are archived.
struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R> CountingReader<R> {
    fn new(inner: R) -> Self {
        Self { inner, count: 0 }
    }
}

impl<R: io::Read> io::Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Writes a PAX extended header (typeflag `x`) describing the next entry.
fn append_pax<W: Write>(
    tar: &mut tar::Builder<W>,
    entry: &LayerEntry,
    records: &[(String, Vec<u8>)],
) -> io::Result<()> {
    let mut data = Vec::new();
    for (key, value) in records {
        data.extend_from_slice(&pax_record(key, value));
    }
    let mut header = tar::Header::new_ustar();
    // Named as GNU tar and Go do; readers ignore the name of an `x` header.
    let base = entry
        .path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("");
    let name = format!("PaxHeaders.0/{base}");
    set_bytes(&mut header.as_old_mut().name, name.as_bytes());
    header.set_mode(0o644);
    header.set_mtime(entry.mtime);
    header.set_size(data.len() as u64);
    header.set_entry_type(tar::EntryType::XHeader);
    header.set_cksum();
    tar.append(&header, data.as_slice())
}

/// One `LEN key=value\n` record, LEN counting itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut record = format!("{len} {key}=").into_bytes();
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

/// Copies as much of `bytes` as fits into a fixed, NUL-padded header field.
fn set_bytes(field: &mut [u8], bytes: &[u8]) {
    field.fill(0);
    let n = bytes.len().min(field.len());
    field[..n].copy_from_slice(&bytes[..n]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        for value_len in [0, 1, 5, 90, 94, 95, 96, 994, 995, 996, 10_000] {
            let record = pax_record("path", &vec![b'x'; value_len]);
            let text = String::from_utf8(record.clone()).unwrap();
            let declared: usize = text.split(' ').next().unwrap().parse().unwrap();
            assert_eq!(declared, record.len(), "value of {value_len} bytes");
        }
    }
}
