//! Image references: `[registry[:port]/]repository[:tag][@sha256:digest]`, as docker parses them.

use std::fmt;
use std::str::FromStr;

use oci_spec::image::Digest;

/// The tag a reference gets when it names neither a tag nor a digest.
pub(crate) const DEFAULT_TAG: &str = "latest";

const MAX_TAG_LEN: usize = 128;
const MAX_NAME_LEN: usize = 255;

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `host[:port]`, present when the first path component looks like a host.
    pub registry: Option<String>,
    /// Slash-separated lowercase path components.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

/// Why a string is not an image reference.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct ReferenceError {
    pub input: String,
    pub reason: String,
}

impl Reference {
    /// Parses a reference; a reference without tag or digest gets the tag `latest`.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let fail = |reason: &str| ReferenceError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(fail("it is empty"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                let digest = Digest::from_str(digest)
                    .map_err(|e| fail(&format!("bad digest {digest:?}: {e}")))?;
                (rest, Some(digest))
            }
            None => (input, None),
        };
        // A tag follows the last ':' only if no '/' comes after it (else it is a port).
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            let valid = !tag.is_empty()
                && tag.len() <= MAX_TAG_LEN
                && tag
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !valid {
                return Err(fail(&format!(
                    "bad tag {tag:?} (letters, digits, '_', '.', '-', at most {MAX_TAG_LEN})"
                )));
            }
        }
        if name.is_empty() {
            return Err(fail("the repository name is empty"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(fail("the name is longer than 255 characters"));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (Some(first.to_string()), rest)
            }
            _ => (None, name),
        };
        if let Some(registry) = &registry
            && !is_registry_host(registry)
        {
            return Err(fail(&format!(
                "bad registry host {registry:?} (a host name, IPv4 or [IPv6] address, optional :port)"
            )));
        }
        for component in repository.split('/') {
            if !is_path_component(component) {
                return Err(fail(&format!(
                    "bad repository component {component:?} (lowercase letters, digits and \
                     single '.', '_', '__' or '-' separators)"
                )));
            }
        }
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Self {
            registry,
            repository: repository.to_string(),
            tag,
            digest,
        })
    }

    /// `registry/repository` (or just `repository` for a local name).
    pub fn name(&self) -> String {
        match &self.registry {
            Some(registry) => format!("{registry}/{}", self.repository),
            None => self.repository.clone(),
        }
    }

    /// The tag or the digest, whichever a registry should be asked for (the digest wins).
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }
}

/// `host[:port]` where host is dot-separated labels of letters, digits and inner hyphens, or a
/// bracketed IPv6 address.
fn is_registry_host(registry: &str) -> bool {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        match rest.split_once(']') {
            Some((addr, tail)) => {
                if addr.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                match tail {
                    "" => return true,
                    tail => ("ipv6", tail.strip_prefix(':')),
                }
            }
            None => return false,
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    // Separators: '.', '_', '__' or one or more '-'; never two different ones in a row.
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if alnum(b) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_name_gets_latest() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.registry, None);
        assert_eq!(r.to_string(), "busybox:latest");
    }

    #[test]
    fn registry_with_port_is_not_a_tag() {
        let r = Reference::parse("localhost:5000/team/app").unwrap();
        assert_eq!(r.registry.as_deref(), Some("localhost:5000"));
        assert_eq!(r.repository, "team/app");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        let r = Reference::parse("127.0.0.1:5000/app:v2").unwrap();
        assert_eq!(r.registry.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(r.tag.as_deref(), Some("v2"));
    }

    #[test]
    fn ipv6_registry_is_a_host() {
        let r = Reference::parse("[::1]:5000/app:v1").unwrap();
        assert_eq!(r.registry.as_deref(), Some("[::1]:5000"));
        assert_eq!(r.tag.as_deref(), Some("v1"));
    }

    #[test]
    fn digest_reference_has_no_default_tag() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("example.com/app@{d}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_reference(), d);
    }

    #[test]
    fn bad_references_name_the_problem() {
        for (input, needle) in [
            ("", "empty"),
            ("Busybox", "component"),
            ("app:", "tag"),
            ("a//b", "component"),
            ("app@sha256:zz", "digest"),
            ("../x", "registry host"),
            ("a..b/x", "registry host"),
            ("host:port/x", "registry host"),
        ] {
            let err = Reference::parse(input).unwrap_err();
            assert!(err.to_string().contains(needle), "{input}: {err}");
        }
    }
}
