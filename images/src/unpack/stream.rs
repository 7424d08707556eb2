//! A layer blob as a verified tar stream: a helper thread reads the blob, hashes it, inflates
//! it and hashes the result, handing chunks to the extracting thread (like `gzip -dc | tar -x`,
//! so inflating and writing files overlap on two cores).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use oci_spec::image::Digest;

use super::media::Compression;
use crate::digest::HashingReader;
use crate::progress::Progress;

const CHUNK: usize = 256 << 10;
const CHUNKS_IN_FLIGHT: usize = 8;

/// What the decoding thread found wrong with a blob.
#[derive(Debug)]
pub(super) enum StreamFailure {
    /// The media type says one compression, the magic bytes another.
    WrongMagic {
        declared: Compression,
        found: Compression,
    },
    Corrupt(Compression, io::Error),
    SizeLimit(u64),
    BlobDigest(Digest),
    DiffId {
        expected: String,
        actual: Digest,
    },
    /// The extracting side stopped reading (it failed and reports its own error).
    Abandoned,
}

/// What a fully read and verified blob held.
#[derive(Debug, Clone, Copy)]
pub(super) struct StreamSummary {
    pub uncompressed_bytes: u64,
}

/// The blob and what it must hash to.
pub(super) struct BlobSpec<'a> {
    pub blob: File,
    pub compression: Compression,
    pub blob_digest: &'a Digest,
    pub diff_id: &'a str,
    pub max_uncompressed: u64,
    pub item: &'a str,
    pub progress: &'a dyn Progress,
}

/// Counts compressed bytes into the progress report.
struct ProgressReader<'a> {
    inner: File,
    item: &'a str,
    progress: &'a dyn Progress,
}

impl Read for ProgressReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advanced(self.item, n as u64);
        Ok(n)
    }
}

type Compressed<'a> = BufReader<HashingReader<ProgressReader<'a>>>;

enum Decoder<'a> {
    Plain(Compressed<'a>),
    Gzip(Box<flate2::bufread::MultiGzDecoder<Compressed<'a>>>),
    Zstd(zstd::stream::read::Decoder<'static, Compressed<'a>>),
}

impl Read for Decoder<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(r) => r.read(buf),
            Self::Gzip(r) => r.read(buf),
            Self::Zstd(r) => r.read(buf),
        }
    }
}

impl<'a> Decoder<'a> {
    fn into_compressed(self) -> Compressed<'a> {
        match self {
            Self::Plain(r) => r,
            Self::Gzip(r) => (*r).into_inner(),
            Self::Zstd(r) => r.finish(),
        }
    }
}

/// Creates the channel between the decoding thread (sender) and the tar reader.
pub(super) fn channel() -> (SyncSender<Vec<u8>>, PipeReader) {
    let (tx, rx) = sync_channel(CHUNKS_IN_FLIGHT);
    (
        tx,
        PipeReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
        },
    )
}

/// Runs on the decoding thread: streams the whole blob through `tx`, then verifies both digests.
pub(super) fn decode(
    spec: BlobSpec<'_>,
    tx: SyncSender<Vec<u8>>,
) -> Result<StreamSummary, StreamFailure> {
    let compression = spec.compression;
    let corrupt = |e: io::Error| StreamFailure::Corrupt(compression, e);
    let reader = ProgressReader {
        inner: spec.blob,
        item: spec.item,
        progress: spec.progress,
    };
    let mut compressed = BufReader::with_capacity(CHUNK, HashingReader::new(reader));
    let found = Compression::sniff(compressed.fill_buf().map_err(corrupt)?);
    if found != compression {
        return Err(StreamFailure::WrongMagic {
            declared: compression,
            found,
        });
    }
    let decoder = match compression {
        Compression::None => Decoder::Plain(compressed),
        Compression::Gzip => {
            Decoder::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(compressed)))
        }
        Compression::Zstd => {
            Decoder::Zstd(zstd::stream::read::Decoder::with_buffer(compressed).map_err(corrupt)?)
        }
    };
    let mut decoder = decoder;
    let mut tar = HashingReader::new(&mut decoder);
    let pumped = pump(&mut tar, &tx, spec.max_uncompressed);
    drop(tx);
    let (diff_id, uncompressed_bytes) = tar.finish();
    let decode_error = match pumped {
        Ok(()) => None,
        Err(PumpError::Read(e)) => Some(e),
        Err(PumpError::SizeLimit) => return Err(StreamFailure::SizeLimit(spec.max_uncompressed)),
        Err(PumpError::Abandoned) => return Err(StreamFailure::Abandoned),
    };
    // The decoder stops at the end of its data (or at the corruption): hash the rest of the
    // file too, since the blob digest covers every byte. A blob that is not what the manifest
    // names explains any decoding error or diff_id mismatch, so it is reported first.
    let mut compressed = decoder.into_compressed();
    let drained = io::copy(&mut compressed, &mut io::sink());
    let (blob_digest, _) = compressed.into_inner().finish();
    if drained.is_ok() && &blob_digest != spec.blob_digest {
        return Err(StreamFailure::BlobDigest(blob_digest));
    }
    if let Some(e) = decode_error.or(drained.err()) {
        return Err(corrupt(e));
    }
    if diff_id.to_string() != spec.diff_id {
        return Err(StreamFailure::DiffId {
            expected: spec.diff_id.to_string(),
            actual: diff_id,
        });
    }
    Ok(StreamSummary { uncompressed_bytes })
}

enum PumpError {
    Read(io::Error),
    SizeLimit,
    Abandoned,
}

/// Reads the uncompressed stream to its end in chunks and sends them on.
fn pump(tar: &mut impl Read, tx: &SyncSender<Vec<u8>>, limit: u64) -> Result<(), PumpError> {
    let mut total: u64 = 0;
    loop {
        let mut chunk = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            match tar.read(&mut chunk[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(PumpError::Read(e)),
            }
        }
        total += filled as u64;
        if total > limit {
            return Err(PumpError::SizeLimit);
        }
        if filled == 0 {
            return Ok(());
        }
        chunk.truncate(filled);
        if tx.send(chunk).is_err() {
            return Err(PumpError::Abandoned);
        }
    }
}

/// The tar reader's end of the channel.
#[derive(Debug)]
pub(super) struct PipeReader {
    rx: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                // The sender is gone: the stream ended, or the decoder failed and says why
                // when it is joined.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
