//! The rules on container mount targets and volume names, shared by `berth run` (the images
//! crate) and the scheduler's spec validation, so both refuse exactly the same paths.
//!
//! Pure and lexical: nothing here looks at a filesystem. Resolving a target inside an image's
//! root filesystem (symlinks) is the images crate's job, on the node.

use std::path::{Component, Path, PathBuf};

/// Container paths the runtime provides itself: nothing may be mounted at or under them.
pub const RESERVED: [&str; 3] = ["/proc", "/sys", "/dev"];

/// The longest volume name: it is a file name under DATA/volumes.
pub const MAX_VOLUME_NAME_LEN: usize = 255;

/// Why a mount target is refused. The messages say what was given and which rule it broke;
/// callers prefix them with what the user wrote (a flag or a spec field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error(
        "the target {} is relative: a mount target is an absolute path in the container",
        .0.display()
    )]
    Relative(PathBuf),
    #[error("the target is the container's root, which cannot be replaced")]
    Root,
    #[error("the target {} is at or under {dir}, which the runtime provides", target.display())]
    Reserved { target: PathBuf, dir: &'static str },
}

/// The path with `.` and `..` resolved lexically (`..` stops at `/`); None if relative.
pub fn clean(target: &Path) -> Option<PathBuf> {
    if !target.is_absolute() {
        return None;
    }
    let mut out = PathBuf::from("/");
    for component in target.components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Some(out)
}

/// The reserved directory `target` (clean, absolute) is at or under, if any.
pub fn reserved(target: &Path) -> Option<&'static str> {
    RESERVED.into_iter().find(|r| target.starts_with(r))
}

/// `target` cleaned, if it may be mounted on: absolute, not `/`, not at or under a
/// [`RESERVED`] directory.
pub fn check_target(target: &Path) -> Result<PathBuf, TargetError> {
    let clean = clean(target).ok_or_else(|| TargetError::Relative(target.to_path_buf()))?;
    if clean == Path::new("/") {
        return Err(TargetError::Root);
    }
    if let Some(dir) = reserved(&clean) {
        return Err(TargetError::Reserved { target: clean, dir });
    }
    Ok(clean)
}

/// Whether two clean paths are the same or one is inside the other (component-wise:
/// `/data` and `/database` do not overlap).
pub fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// The first pair `(earlier, later)` of indexes into `targets` (clean paths) that
/// [`overlaps`], scanning the later one in order.
pub fn first_overlap<P: AsRef<Path>>(targets: &[P]) -> Option<(usize, usize)> {
    (1..targets.len()).find_map(|later| {
        (0..later)
            .find(|&earlier| overlaps(targets[earlier].as_ref(), targets[later].as_ref()))
            .map(|earlier| (earlier, later))
    })
}

/// A volume name: starts with a letter or digit, then letters, digits, `_`, `.` and `-`, at
/// most [`MAX_VOLUME_NAME_LEN`] bytes (so it is one safe file name, never `.` or `..`).
pub fn valid_volume_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    first_ok && rest_ok && name.len() <= MAX_VOLUME_NAME_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_cleaned_and_checked() {
        assert_eq!(
            check_target(Path::new("/data/../srv/./x/")),
            Ok(PathBuf::from("/srv/x"))
        );
        assert_eq!(check_target(Path::new("/../..")), Err(TargetError::Root));
        assert!(matches!(
            check_target(Path::new("rel/x")),
            Err(TargetError::Relative(_))
        ));
        let e = check_target(Path::new("/a/../dev/shm")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the target /dev/shm is at or under /dev, which the runtime provides"
        );
        // A sibling of a reserved directory is not under it.
        assert!(check_target(Path::new("/device")).is_ok());
    }

    #[test]
    fn overlaps_are_component_wise() {
        assert!(overlaps(Path::new("/d"), Path::new("/d/e")));
        assert!(overlaps(Path::new("/d"), Path::new("/d")));
        assert!(!overlaps(Path::new("/data"), Path::new("/database")));
        assert_eq!(first_overlap(&["/a", "/b", "/c", "/b/x"]), Some((1, 3)));
        assert_eq!(first_overlap(&["/a", "/b"]), None);
        assert_eq!(first_overlap::<&str>(&[]), None);
    }

    #[test]
    fn volume_names() {
        for good in ["a", "data", "db_1.v-2", &"x".repeat(255)] {
            assert!(valid_volume_name(good), "{good}");
        }
        for bad in ["", ".", "..", "-a", "_a", "a/b", "bad!", &"x".repeat(256)] {
            assert!(!valid_volume_name(bad), "{bad}");
        }
    }
}
