//! Platforms (`os/architecture[/variant]`) and choosing an index's manifest for one.

use std::fmt;
use std::str::FromStr;

use oci_spec::image::Descriptor;

/// The platform whose manifest to take out of an index or manifest list (pull and import).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

/// Why a string is not `os/architecture[/variant]`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid platform {0:?}: expected os/architecture[/variant], e.g. linux/amd64 or linux/arm64/v8"
)]
pub struct PlatformError(pub String);

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        let architecture = normalize_architecture(architecture);
        let variant = variant.and_then(|v| normalize_variant(&architecture, v));
        Self {
            os: os.to_ascii_lowercase(),
            architecture,
            variant,
        }
    }

    /// linux on the CPU berth was built for, in Go's names (as registries use them).
    pub fn host() -> Self {
        Self::new("linux", std::env::consts::ARCH, None)
    }

    /// True when an index entry's platform can run here. Without a wanted variant any variant
    /// matches; with one, the entry's (normalized) variant must be the same.
    pub fn matches(&self, platform: &oci_spec::image::Platform) -> bool {
        let architecture = normalize_architecture(&platform.architecture().to_string());
        if platform.os().to_string() != self.os || architecture != self.architecture {
            return false;
        }
        match &self.variant {
            None => true,
            Some(wanted) => {
                platform
                    .variant()
                    .as_deref()
                    .and_then(|v| normalize_variant(&architecture, v))
                    .as_ref()
                    == Some(wanted)
            }
        }
    }

    /// The manifest for this platform in an index: the first matching entry, preferring one
    /// without a variant when no variant was asked for (as docker does). Entries without a
    /// platform are never chosen: they are attestations and the like, not runnable images.
    pub fn select<'a>(&self, manifests: &'a [Descriptor]) -> Option<&'a Descriptor> {
        let candidates: Vec<&Descriptor> = manifests
            .iter()
            .filter(|d| d.platform().as_ref().is_some_and(|p| self.matches(p)))
            .collect();
        candidates
            .iter()
            .find(|d| d.platform().as_ref().is_some_and(|p| p.variant().is_none()))
            .or(candidates.first())
            .copied()
    }
}

impl Default for Platform {
    /// linux/amd64: what berth's users run, whatever machine berth was built on.
    fn default() -> Self {
        Self::new("linux", "amd64", None)
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = input.split('/').collect();
        let valid_part = |p: &&str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(valid_part) {
            return Err(PlatformError(input.to_string()));
        }
        Ok(Self::new(parts[0], parts[1], parts.get(2).copied()))
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// `os/architecture[/variant]` of an index entry, for error messages.
/// The platforms an index offers, for an error that says none matched: "linux/amd64,
/// linux/arm64/v8", or "no platforms".
pub fn describe_all(manifests: &[Descriptor]) -> String {
    let available: Vec<String> = manifests
        .iter()
        .filter_map(|d| d.platform().as_ref().map(describe))
        .collect();
    if available.is_empty() {
        "no platforms".to_string()
    } else {
        available.join(", ")
    }
}

pub fn describe(platform: &oci_spec::image::Platform) -> String {
    let mut text = format!("{}/{}", platform.os(), platform.architecture());
    if let Some(variant) = platform.variant() {
        text.push('/');
        text.push_str(variant);
    }
    text
}

/// Go's architecture names, which indexes use, for the names people also type.
fn normalize_architecture(architecture: &str) -> String {
    match architecture.to_ascii_lowercase().as_str() {
        "x86_64" | "x86-64" => "amd64".to_string(),
        "aarch64" => "arm64".to_string(),
        "i386" | "i686" => "386".to_string(),
        other => other.to_string(),
    }
}

/// arm64 is v8 unless said otherwise, so `v8` and no variant are the same thing there.
fn normalize_variant(architecture: &str, variant: &str) -> Option<String> {
    let variant = variant.to_ascii_lowercase();
    if architecture == "arm64" && variant == "v8" {
        None
    } else {
        Some(variant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::{DescriptorBuilder, MediaType, PlatformBuilder};

    fn entry(n: u8, os: &str, arch: &str, variant: Option<&str>) -> Descriptor {
        let mut platform = PlatformBuilder::default()
            .os(os)
            .architecture(arch)
            .build()
            .unwrap();
        platform.set_variant(variant.map(str::to_string));
        DescriptorBuilder::default()
            .media_type(MediaType::ImageManifest)
            .digest(crate::digest::sha256_of(&[n]))
            .size(100u64)
            .platform(platform)
            .build()
            .unwrap()
    }

    fn no_platform(n: u8) -> Descriptor {
        DescriptorBuilder::default()
            .media_type(MediaType::ImageManifest)
            .digest(crate::digest::sha256_of(&[n]))
            .size(100u64)
            .build()
            .unwrap()
    }

    fn pick(wanted: &str, manifests: &[Descriptor]) -> Option<String> {
        let platform: Platform = wanted.parse().unwrap();
        platform.select(manifests).map(|d| d.digest().to_string())
    }

    #[test]
    fn parses_and_prints_platforms() {
        let p: Platform = "linux/amd64".parse().unwrap();
        assert_eq!(p, Platform::default());
        assert_eq!(p.to_string(), "linux/amd64");
        assert_eq!(
            "linux/arm/v7".parse::<Platform>().unwrap().to_string(),
            "linux/arm/v7"
        );
        assert_eq!(
            "linux/x86_64".parse::<Platform>().unwrap().architecture,
            "amd64"
        );
        assert_eq!("linux/arm64/v8".parse::<Platform>().unwrap().variant, None);
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "linux/amd 64", ""] {
            assert!(
                bad.parse::<Platform>().is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn picks_linux_amd64_out_of_a_multi_arch_index() {
        let index = [
            no_platform(0),
            entry(1, "linux", "arm64", Some("v8")),
            entry(2, "linux", "amd64", None),
            entry(3, "windows", "amd64", None),
            entry(4, "linux", "arm", Some("v7")),
        ];
        assert_eq!(
            pick("linux/amd64", &index),
            Some(index[2].digest().to_string())
        );
        assert_eq!(
            pick("linux/arm64", &index),
            Some(index[1].digest().to_string())
        );
        assert_eq!(
            pick("linux/arm64/v8", &index),
            Some(index[1].digest().to_string())
        );
        assert_eq!(
            pick("linux/arm/v7", &index),
            Some(index[4].digest().to_string())
        );
        assert_eq!(pick("linux/arm/v6", &index), None);
        assert_eq!(
            pick("windows/amd64", &index),
            Some(index[3].digest().to_string())
        );
        assert_eq!(pick("linux/s390x", &index), None);
    }

    #[test]
    fn prefers_the_entry_without_variant_when_none_is_asked_for() {
        let index = [
            entry(1, "linux", "arm", Some("v6")),
            entry(2, "linux", "arm", None),
        ];
        assert_eq!(
            pick("linux/arm", &index),
            Some(index[1].digest().to_string())
        );
        let only_variants = [
            entry(1, "linux", "arm", Some("v6")),
            entry(2, "linux", "arm", Some("v7")),
        ];
        assert_eq!(
            pick("linux/arm", &only_variants),
            Some(only_variants[0].digest().to_string())
        );
    }

    #[test]
    fn describes_entries_for_errors() {
        let e = entry(1, "linux", "arm", Some("v7"));
        assert_eq!(describe(e.platform().as_ref().unwrap()), "linux/arm/v7");
    }
}
