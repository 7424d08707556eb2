//! Which platform to take from a multi-platform image index (`linux/amd64` unless told).

use std::fmt;
use std::str::FromStr;

use oci_spec::image::Platform;

/// An `os/architecture[/variant]` wanted from an image index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformSpec {
    pub os: String,
    pub architecture: String,
    /// When `None`, any variant of the architecture matches.
    pub variant: Option<String>,
}

impl Default for PlatformSpec {
    fn default() -> Self {
        Self {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }
}

impl PlatformSpec {
    pub fn matches(&self, platform: &Platform) -> bool {
        platform.os().to_string() == self.os
            && platform.architecture().to_string() == self.architecture
            && match &self.variant {
                Some(wanted) => platform.variant().as_deref() == Some(wanted.as_str()),
                None => true,
            }
    }
}

/// Formats a descriptor's platform the way `PlatformSpec` parses it.
pub fn describe(platform: &Platform) -> String {
    match platform.variant() {
        Some(variant) => format!("{}/{}/{variant}", platform.os(), platform.architecture()),
        None => format!("{}/{}", platform.os(), platform.architecture()),
    }
}

impl fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// Why a string is not `os/architecture[/variant]`.
#[derive(Debug, thiserror::Error)]
#[error("invalid platform {0:?}: expected os/architecture[/variant], e.g. linux/arm64/v8")]
pub struct PlatformError(String);

impl FromStr for PlatformSpec {
    type Err = PlatformError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(PlatformError(s.into()));
        }
        match parts.as_slice() {
            [os, arch] => Ok(Self {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] => Ok(Self {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(PlatformError(s.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_round_trip() {
        let spec: PlatformSpec = "linux/arm64/v8".parse().unwrap();
        assert_eq!(spec.variant.as_deref(), Some("v8"));
        assert_eq!(spec.to_string(), "linux/arm64/v8");
        assert!("linux".parse::<PlatformSpec>().is_err());
        assert!("linux//v8".parse::<PlatformSpec>().is_err());
    }
}
