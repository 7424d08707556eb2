//! The on-disk image store: an OCI image layout whose blobs are verified and written atomically,
//! and whose index.json is updated under a lock.
//!
//! ```text
//! DATA_DIR/images/        OCI image layout (oci-layout, index.json, blobs/sha256/...)
//! DATA_DIR/images/.locks  index.lock (index.json updates), gc.lock (writers shared, prune exclusive)
//! DATA_DIR/layers/        unpacked layers, one directory per diff_id (see `unpack`)
//! DATA_DIR/tmp/           partial files, renamed into place when complete
//! ```

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use oci_spec::image::{
    Descriptor, DescriptorBuilder, Digest, ImageConfiguration, ImageIndex, ImageIndexBuilder,
    ImageManifest, MediaType,
};
use serde::Serialize;
use tempfile::NamedTempFile;

use crate::digest::{HashingWriter, is_sha256};
pub(crate) use crate::fsutil::io_err;
use crate::fsutil::{IoError, lock_file};
use crate::reference::{Reference, ReferenceError};

/// The annotation an OCI layout's index.json names images with.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// JSON documents (manifests, configs, indexes) larger than this are refused: real ones are
/// kilobytes, and reading a hostile multi-gigabyte "manifest" into memory must not be possible.
pub const MAX_JSON_BLOB: u64 = 16 << 20;

const OCI_LAYOUT_CONTENT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// What went wrong in the store, with the path or object concerned.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Io(#[from] crate::fsutil::IoError),
    #[error("blob {expected} failed verification: its content hashes to {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {digest} was expected to be {expected} bytes but is {actual}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("blob {0} is not in the store")]
    BlobNotFound(Digest),
    #[error("digest {0} uses an algorithm berth does not store (only sha256)")]
    UnsupportedDigest(Digest),
    #[error("no image named {0:?} in the store")]
    ImageNotFound(String),
    #[error("{what} is not valid JSON: {source}")]
    InvalidJson {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what} is {size} bytes, more than the {limit} bytes allowed for a JSON document")]
    JsonTooLarge { what: String, size: u64, limit: u64 },
    #[error("{what} has media type {media_type:?}, which berth cannot use here")]
    UnsupportedMediaType { what: String, media_type: String },
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("image reference {0:?} matches more than one image: give more of the digest")]
    Ambiguous(String),
}

impl StoreError {
    /// What kind of failure this is (see [`crate::ErrorKind`]).
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind as K;
        match self {
            Self::Io(_) => K::Internal,
            Self::DigestMismatch { .. } | Self::SizeMismatch { .. } | Self::InvalidJson { .. } => {
                K::DataLoss
            }
            Self::BlobNotFound(_) | Self::ImageNotFound(_) => K::NotFound,
            Self::UnsupportedDigest(_) | Self::UnsupportedMediaType { .. } => K::Unsupported,
            Self::JsonTooLarge { .. } => K::ResourceExhausted,
            Self::Reference(_) | Self::Ambiguous(_) => K::InvalidArgument,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// An image named in the store's index.
#[derive(Debug, Clone, Serialize)]
pub struct ImageRecord {
    /// The full reference, e.g. `localhost:5000/app:v2` or `busybox:latest`.
    pub name: String,
    pub descriptor: Descriptor,
}

/// A resolved image: its manifest and config, read and verified from the store.
#[derive(Debug, Clone)]
pub struct Image {
    /// The name it was found under, or its digest when looked up by digest.
    pub name: String,
    pub manifest_descriptor: Descriptor,
    pub manifest: ImageManifest,
    pub config: ImageConfiguration,
}

impl Image {
    pub fn digest(&self) -> &Digest {
        self.manifest_descriptor.digest()
    }

    /// The short id shown in listings: the first 12 hex digits of the manifest digest.
    pub fn short_id(&self) -> &str {
        short_id(self.digest())
    }
}

/// The first 12 hex digits of a digest.
pub fn short_id(digest: &Digest) -> &str {
    let hex = digest.digest();
    &hex[..hex.len().min(12)]
}

/// What `prune` removed.
#[derive(Debug, Default, Clone, Serialize)]
pub struct PruneReport {
    pub blobs_removed: Vec<String>,
    pub bytes_freed: u64,
    pub layers_removed: Vec<String>,
}

/// A handle on the image store under one data directory.
#[derive(Debug, Clone)]
pub struct Store {
    data_dir: PathBuf,
    layout: PathBuf,
}

/// Held by anything that writes blobs it has not tagged yet, so that `prune` (which takes the
/// same lock exclusively) never deletes them in between.
#[derive(Debug)]
pub struct WriteGuard {
    _lock: Flock<File>,
}

impl Store {
    /// Opens the store under `data_dir`, creating an empty layout if there is none.
    pub fn open(data_dir: impl AsRef<Path>) -> Result<Self> {
        let data_dir = data_dir.as_ref().to_path_buf();
        let layout = data_dir.join("images");
        let store = Self { data_dir, layout };
        for dir in [
            store.layout.join("blobs/sha256"),
            store.layout.join(".locks"),
            store.tmp_dir(),
            store.layers_dir(),
        ] {
            fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        }
        let marker = store.layout.join("oci-layout");
        if !marker.exists() {
            store.write_atomic(&marker, OCI_LAYOUT_CONTENT.as_bytes())?;
        }
        let index = store.index_path();
        if !index.exists() {
            let _lock = store.lock("index.lock", FlockArg::LockExclusive)?;
            if !index.exists() {
                store.write_index(&empty_index())?;
            }
        }
        Ok(store)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Unpacked layers live here, one directory per diff_id.
    pub fn layers_dir(&self) -> PathBuf {
        self.data_dir.join("layers")
    }

    /// Scratch space on the same filesystem as the store, so that finished files are renamed.
    pub fn tmp_dir(&self) -> PathBuf {
        self.data_dir.join("tmp")
    }

    fn index_path(&self) -> PathBuf {
        self.layout.join("index.json")
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.layout.join("blobs/sha256").join(digest.digest())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        is_sha256(digest) && self.blob_path(digest).is_file()
    }

    fn lock(&self, name: &str, kind: FlockArg) -> Result<Flock<File>> {
        Ok(lock_file(self.layout.join(".locks").join(name), kind)?)
    }

    /// Takes the shared write lock: hold it from the first blob written until the image is
    /// tagged.
    pub fn write_guard(&self) -> Result<WriteGuard> {
        Ok(WriteGuard {
            _lock: self.lock("gc.lock", FlockArg::LockShared)?,
        })
    }

    /// Starts writing a blob. When `expected` is given, `commit` refuses content that does
    /// not hash to it.
    pub fn blob_writer(&self, expected: Option<Digest>) -> Result<BlobWriter> {
        if let Some(digest) = &expected
            && !is_sha256(digest)
        {
            return Err(StoreError::UnsupportedDigest(digest.clone()));
        }
        let tmp = NamedTempFile::with_prefix_in("blob-", self.tmp_dir())
            .map_err(io_err("create temp file in", self.tmp_dir()))?;
        Ok(BlobWriter {
            store: self.clone(),
            expected,
            file: HashingWriter::new(io::BufWriter::with_capacity(256 << 10, tmp)),
        })
    }

    /// Copies a stream into the store as a blob, verifying it against `expected` if given.
    pub fn put_blob(
        &self,
        mut reader: impl Read,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64)> {
        if let Some(digest) = expected
            && self.has_blob(digest)
        {
            // Content-addressed: the same digest is the same content. Drain nothing.
            let size = fs::metadata(self.blob_path(digest))
                .map_err(io_err("stat", self.blob_path(digest)))?
                .len();
            return Ok((digest.clone(), size));
        }
        let mut writer = self.blob_writer(expected.cloned())?;
        io::copy(&mut reader, &mut writer)
            .map_err(io_err("write blob from stream into", self.tmp_dir()))?;
        writer.commit()
    }

    /// Stores a small blob held in memory.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        self.put_blob(bytes, None).map(|(digest, _)| digest)
    }

    /// Serializes `value` as JSON, stores it and returns its descriptor.
    pub fn put_json<T: Serialize>(&self, value: &T, media_type: MediaType) -> Result<Descriptor> {
        let bytes = serde_json::to_vec(value).map_err(|source| StoreError::InvalidJson {
            what: format!("{media_type} document being stored"),
            source,
        })?;
        let digest = self.put_bytes(&bytes)?;
        Ok(descriptor(media_type, digest, bytes.len() as u64))
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        if !is_sha256(digest) {
            return Err(StoreError::UnsupportedDigest(digest.clone()));
        }
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::BlobNotFound(digest.clone()),
            _ => StoreError::Io(IoError {
                op: "open blob",
                path,
                source: e,
            }),
        })
    }

    /// Reads a small blob whole, checking its digest again (blobs are verified on write; this
    /// catches a store corrupted behind berth's back before JSON from it is trusted).
    pub fn read_blob(&self, digest: &Digest, what: &str) -> Result<Vec<u8>> {
        let file = self.open_blob(digest)?;
        let size = file
            .metadata()
            .map_err(io_err("stat", self.blob_path(digest)))?
            .len();
        if size > MAX_JSON_BLOB {
            return Err(StoreError::JsonTooLarge {
                what: format!("{what} {digest}"),
                size,
                limit: MAX_JSON_BLOB,
            });
        }
        // A hint only; the size was checked against the limit above.
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        file.take(MAX_JSON_BLOB)
            .read_to_end(&mut bytes)
            .map_err(io_err("read blob", self.blob_path(digest)))?;
        let actual = crate::digest::sha256_of(&bytes);
        if &actual != digest {
            return Err(StoreError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Reads and parses a JSON blob; `what` names it in errors ("manifest", "config").
    pub fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        digest: &Digest,
        what: &str,
    ) -> Result<T> {
        let bytes = self.read_blob(digest, what)?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::InvalidJson {
            what: format!("{what} {digest}"),
            source,
        })
    }

    fn read_index(&self) -> Result<ImageIndex> {
        let path = self.index_path();
        let bytes = fs::read(&path).map_err(io_err("read", &path))?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::InvalidJson {
            what: path.display().to_string(),
            source,
        })
    }

    fn write_index(&self, index: &ImageIndex) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(index).map_err(|source| StoreError::InvalidJson {
            what: "index.json being written".into(),
            source,
        })?;
        self.write_atomic(&self.index_path(), &bytes)
    }

    /// Writes a file by temp file, fsync and rename, then fsyncs the directory.
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        Ok(berth_runtime::sys::fs::atomic_write(path, bytes).map_err(io_err("write", path))?)
    }

    /// Names an image: points `reference` at a manifest descriptor, replacing any previous
    /// image of that name. The manifest blob must already be stored.
    pub fn tag(&self, reference: &Reference, manifest: &Descriptor) -> Result<()> {
        if !self.has_blob(manifest.digest()) {
            return Err(StoreError::BlobNotFound(manifest.digest().clone()));
        }
        let name = reference.to_string();
        let _lock = self.lock("index.lock", FlockArg::LockExclusive)?;
        let index = self.read_index()?;
        let mut manifests: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| ref_name(d) != Some(name.as_str()))
            .cloned()
            .collect();
        let mut entry = manifest.clone();
        let mut annotations = entry.annotations().clone().unwrap_or_default();
        annotations.insert(REF_NAME_ANNOTATION.to_string(), name);
        entry.set_annotations(Some(annotations));
        entry.set_platform(None);
        manifests.push(entry);
        manifests.sort_by(|a, b| ref_name(a).cmp(&ref_name(b)));
        self.write_index(&index_with(manifests))
    }

    /// Removes a name; the blobs stay until `prune`. Returns the descriptor it pointed at.
    pub fn untag(&self, reference: &str) -> Result<Descriptor> {
        let name = self.resolve(reference)?.name;
        let _lock = self.lock("index.lock", FlockArg::LockExclusive)?;
        let index = self.read_index()?;
        let (removed, kept): (Vec<Descriptor>, Vec<Descriptor>) = index
            .manifests()
            .iter()
            .cloned()
            .partition(|d| ref_name(d) == Some(name.as_str()));
        let removed = removed
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::ImageNotFound(reference.to_string()))?;
        self.write_index(&index_with(kept))?;
        Ok(removed)
    }

    /// Every named image, sorted by name.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        let index = self.read_index()?;
        Ok(index
            .manifests()
            .iter()
            .filter_map(|d| {
                ref_name(d).map(|name| ImageRecord {
                    name: name.to_string(),
                    descriptor: d.clone(),
                })
            })
            .collect())
    }

    /// Finds the index entry for what a user typed: a reference (`busybox` means
    /// `busybox:latest`), or a manifest digest or a unique prefix of its hex of 4+ digits.
    fn resolve(&self, input: &str) -> Result<ImageRecord> {
        let records = self.list()?;
        let named = |name: &str| records.iter().find(|r| r.name == name).cloned();
        if let Ok(reference) = Reference::parse(input) {
            if let Some(record) = named(&reference.to_string()) {
                return Ok(record);
            }
            // docker save / skopeo write short names out in full (`docker.io/library/busybox`);
            // let `busybox` find them, as docker does.
            if reference.registry.is_none() {
                let repository = if reference.repository.contains('/') {
                    reference.repository.clone()
                } else {
                    format!("library/{}", reference.repository)
                };
                let docker_name = Reference {
                    registry: Some("docker.io".to_string()),
                    repository,
                    ..reference
                };
                if let Some(record) = named(&docker_name.to_string()) {
                    return Ok(record);
                }
            }
        }
        let hex = input.strip_prefix("sha256:").unwrap_or(input);
        if hex.len() >= 4 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            let matching: Vec<&ImageRecord> = records
                .iter()
                .filter(|r| r.descriptor.digest().digest().starts_with(hex))
                .collect();
            // Several names of one manifest are one image; the first name (index order) speaks
            // for it.
            let digests: BTreeSet<&str> = matching
                .iter()
                .map(|r| r.descriptor.digest().digest())
                .collect();
            match (digests.len(), matching.first()) {
                (1, Some(record)) => return Ok((*record).clone()),
                (0, _) => {}
                _ => return Err(StoreError::Ambiguous(input.to_string())),
            }
        }
        // Report a malformed reference as such rather than as "not found".
        Reference::parse(input)?;
        Err(StoreError::ImageNotFound(input.to_string()))
    }

    /// Finds an image by name or digest and reads its manifest and config.
    pub fn image(&self, input: &str) -> Result<Image> {
        let record = self.resolve(input)?;
        self.load_image(record.name, record.descriptor)
    }

    /// Reads the manifest a descriptor points at, and its config.
    pub fn load_image(&self, name: String, descriptor: Descriptor) -> Result<Image> {
        let manifest: ImageManifest = self.read_json(descriptor.digest(), "manifest")?;
        let config_desc = manifest.config();
        let config: ImageConfiguration = self.read_json(config_desc.digest(), "image config")?;
        Ok(Image {
            name,
            manifest_descriptor: descriptor,
            manifest,
            config,
        })
    }

    /// Deletes every blob no named image refers to, every unpacked layer no named image uses
    /// (except those in `layers_in_use`, such as layers under a running container), and stale
    /// temp files.
    ///
    /// `layers_in_use` is asked under the exclusive lock, so a container root filesystem being
    /// prepared meanwhile (which holds the shared write lock) is either seen or not yet begun.
    pub fn prune<E>(
        &self,
        layers_in_use: impl FnOnce() -> Result<BTreeSet<String>, E>,
    ) -> Result<PruneReport, E>
    where
        E: From<StoreError>,
    {
        let _gc = self.lock("gc.lock", FlockArg::LockExclusive)?;
        let mut live_layers = layers_in_use()?;
        Ok(self.prune_locked(&mut live_layers)?)
    }

    fn prune_locked(&self, live_layers: &mut BTreeSet<String>) -> Result<PruneReport> {
        let mut live_blobs = BTreeSet::new();
        for record in self.list()? {
            let image = self.load_image(record.name, record.descriptor)?;
            live_blobs.insert(image.digest().digest().to_string());
            live_blobs.insert(image.manifest.config().digest().digest().to_string());
            for layer in image.manifest.layers() {
                live_blobs.insert(layer.digest().digest().to_string());
            }
            for diff_id in image.config.rootfs().diff_ids() {
                live_layers.insert(diff_id.trim_start_matches("sha256:").to_string());
            }
        }
        let mut report = PruneReport::default();
        let blob_dir = self.layout.join("blobs/sha256");
        for entry in read_dir_sorted(&blob_dir)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if live_blobs.contains(&name) {
                continue;
            }
            let path = entry.path();
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            fs::remove_file(&path).map_err(io_err("remove blob", &path))?;
            report.bytes_freed += size;
            report.blobs_removed.push(format!("sha256:{name}"));
        }
        let layers_dir = self.layers_dir().join("sha256");
        if layers_dir.exists() {
            for entry in read_dir_sorted(&layers_dir)? {
                let name = entry.file_name().to_string_lossy().into_owned();
                if live_layers.contains(&name) {
                    continue;
                }
                let path = entry.path();
                report.bytes_freed += crate::fsutil::remove_tree(&path)?;
                report.layers_removed.push(format!("sha256:{name}"));
            }
        }
        // Half-extracted layers of a crashed unpack: nobody holds the write lock, so no
        // extraction is under way.
        if self.layers_dir().exists() {
            for entry in read_dir_sorted(&self.layers_dir())? {
                if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                    report.bytes_freed += crate::fsutil::remove_tree(&entry.path())?;
                }
            }
        }
        // Nobody is writing (we hold gc.lock exclusively), so any temp file is an orphan.
        for entry in read_dir_sorted(&self.tmp_dir())? {
            crate::fsutil::remove_tree(&entry.path())?;
        }
        sync_dir(&blob_dir)?;
        Ok(report)
    }
}

/// A blob being written; nothing is visible in the store until `commit` verifies it.
/// Dropping it uncommitted deletes the partial file.
#[derive(Debug)]
pub struct BlobWriter {
    store: Store,
    expected: Option<Digest>,
    file: HashingWriter<io::BufWriter<NamedTempFile>>,
}

impl BlobWriter {
    pub fn bytes_written(&self) -> u64 {
        self.file.bytes_written()
    }

    /// Verifies the digest, fsyncs and renames the blob into place.
    pub fn commit(self) -> Result<(Digest, u64)> {
        let (buffered, actual, size) = self.file.finish();
        let tmp = buffered.into_inner().map_err(|e| {
            StoreError::Io(IoError {
                op: "flush blob",
                path: self.store.tmp_dir(),
                source: e.into_error(),
            })
        })?;
        if let Some(expected) = &self.expected
            && expected != &actual
        {
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let dest = self.store.blob_path(&actual);
        if dest.is_file() {
            return Ok((actual, size));
        }
        tmp.as_file()
            .sync_all()
            .map_err(io_err("fsync", tmp.path()))?;
        tmp.persist(&dest).map_err(|e| {
            StoreError::Io(IoError {
                op: "rename blob into place",
                path: dest.clone(),
                source: e.error,
            })
        })?;
        sync_dir(dest.parent().expect("blob path has a parent"))?;
        Ok((actual, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The `org.opencontainers.image.ref.name` of an index entry.
pub fn ref_name(descriptor: &Descriptor) -> Option<&str> {
    descriptor
        .annotations()
        .as_ref()?
        .get(REF_NAME_ANNOTATION)
        .map(String::as_str)
}

/// A descriptor with just media type, digest and size.
pub fn descriptor(media_type: MediaType, digest: Digest, size: u64) -> Descriptor {
    DescriptorBuilder::default()
        .media_type(media_type)
        .digest(digest)
        .size(size)
        .build()
        .expect("media type, digest and size are all a descriptor needs")
}

fn empty_index() -> ImageIndex {
    index_with(Vec::new())
}

fn index_with(manifests: Vec<Descriptor>) -> ImageIndex {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .expect("an index needs only a schema version and manifests")
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    let mut entries = fs::read_dir(dir)
        .map_err(io_err("list", dir))?
        .collect::<io::Result<Vec<_>>>()
        .map_err(io_err("list", dir))?;
    entries.sort_by_key(|e| e.file_name());
    Ok(entries)
}

/// fsyncs a directory so that a rename into it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    Ok(berth_runtime::sys::fs::sync_dir(dir).map_err(io_err("fsync directory", dir))?)
}
