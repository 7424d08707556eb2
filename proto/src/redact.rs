//! Debug for the messages that carry config or secret values: names, versions and lengths,
//! never the bytes, so a `{:?}` in a log line cannot leak a secret.

use std::fmt;

use crate::v1::{FileContent, PutFileRequest};

impl fmt::Debug for FileContent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileContent")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("data_len", &self.data.len())
            .finish()
    }
}

impl fmt::Debug for PutFileRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PutFileRequest")
            .field("name", &self.name)
            .field("data_len", &self.data.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_value() {
        let secret = b"hunter2-very-secret".to_vec();
        let c = FileContent {
            name: "db".into(),
            version: 3,
            data: secret.clone(),
        };
        let p = PutFileRequest {
            name: "db".into(),
            data: secret,
        };
        for text in [format!("{c:?}"), format!("{p:?}"), format!("{c:#?}")] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(!text.contains("104, 117"), "bytes as numbers: {text}");
            assert!(text.contains("data_len: 19"), "{text}");
        }
    }
}
