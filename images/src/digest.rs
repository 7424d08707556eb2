//! SHA-256 digests: computing them while data streams past, and checking them.

use std::io::{self, Read, Write};

use oci_spec::image::{Digest, DigestAlgorithm};
use sha2::{Digest as _, Sha256};

/// The `sha256:<hex>` digest of a byte slice.
pub fn sha256_of(bytes: &[u8]) -> Digest {
    from_sha256_hasher(Sha256::new_with_prefix(bytes))
}

/// Turns a finished hasher into an OCI digest.
pub fn from_sha256_hasher(hasher: Sha256) -> Digest {
    let hex = hex::encode(hasher.finalize());
    sha256_from_hex(&hex).expect("a sha256 hasher always yields 64 lowercase hex digits")
}

/// Builds `sha256:<hex>` from the hex part, checking its form.
pub fn sha256_from_hex(hex: &str) -> Result<Digest, oci_spec::OciSpecError> {
    format!("sha256:{hex}").parse()
}

/// True when the digest uses the one algorithm berth stores blobs under.
pub fn is_sha256(digest: &Digest) -> bool {
    matches!(digest.algorithm(), DigestAlgorithm::Sha256)
}

/// A reader that hashes and counts every byte read through it.
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Reads whatever the consumer left unread (tar streams end with padding that a tar
    /// reader need not consume) so that the digest covers the whole stream.
    pub fn drain(&mut self) -> io::Result<()> {
        io::copy(self, &mut io::sink()).map(|_| ())
    }

    /// The digest and length of everything read.
    pub fn finish(self) -> (Digest, u64) {
        (from_sha256_hasher(self.hasher), self.bytes)
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// A writer that hashes and counts every byte written through it.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    /// The inner writer, the digest and length of everything written.
    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, from_sha256_hasher(self.hasher), self.bytes)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_input_has_the_well_known_digest() {
        assert_eq!(
            sha256_of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn hashing_reader_matches_one_shot_digest() {
        let data = vec![7u8; 100_000];
        let mut reader = HashingReader::new(&data[..]);
        let mut sink = Vec::new();
        reader.read_to_end(&mut sink).unwrap();
        let (digest, len) = reader.finish();
        assert_eq!(len, 100_000);
        assert_eq!(digest, sha256_of(&data));
    }

    #[test]
    fn malformed_hex_is_refused() {
        assert!(sha256_from_hex("abc").is_err());
        assert!(sha256_from_hex(&"G".repeat(64)).is_err());
    }
}
