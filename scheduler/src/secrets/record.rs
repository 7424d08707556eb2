//! The sealed record the store will keep for each secret version (serde: base64 fields in JSON, raw bytes in binary encodings).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The record format this build writes and reads; part of the associated data, so a record
/// cannot be re-labelled as another format.
pub const RECORD_FORMAT: u32 = 1;

/// One sealed secret version. Fields are public so the store can encode it; [`super::open`]
/// checks every one of them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedSecret {
    /// [`RECORD_FORMAT`] when sealed.
    pub format: u32,
    /// The id of the KEK that wrapped the data key.
    pub kek_id: String,
    /// The 96-bit nonce of the data key's wrapping.
    #[serde(with = "bytes")]
    pub dek_nonce: Vec<u8>,
    /// The data key encrypted under the KEK, with its 16-byte tag.
    #[serde(with = "bytes")]
    pub wrapped_dek: Vec<u8>,
    /// The 96-bit nonce of the value's encryption.
    #[serde(with = "bytes")]
    pub nonce: Vec<u8>,
    /// The value encrypted under the data key, with its 16-byte tag.
    #[serde(with = "bytes")]
    pub ciphertext: Vec<u8>,
}

/// Lengths only: a record in a log line should not carry a megabyte of ciphertext.
impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedSecret")
            .field("format", &self.format)
            .field("kek_id", &self.kek_id)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

/// Byte fields as base64 strings for human-readable formats (JSON), raw bytes otherwise.
mod bytes {
    use std::fmt;

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use serde::de::{self, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&BASE64.encode(bytes))
        } else {
            s.serialize_bytes(bytes)
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        if d.is_human_readable() {
            d.deserialize_str(Base64Visitor)
        } else {
            d.deserialize_byte_buf(BytesVisitor)
        }
    }

    struct Base64Visitor;

    impl Visitor<'_> for Base64Visitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a base64 string")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
            // The message leaves out the text: it is ciphertext, but there is no need to echo it.
            BASE64
                .decode(v)
                .map_err(|e| E::custom(format!("not valid base64: {e}")))
        }
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}
