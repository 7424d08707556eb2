//! Deciding the names imported images get: `--tag`, else a full-reference ref.name or a docker
//! RepoTag; a bare tag like umoci's "latest" is not a name.

use super::error::{ImportError, Result};
use crate::reference::Reference;

/// An imported image before it is named, with the names its source gave it.
#[derive(Debug)]
pub(crate) struct Unnamed<T> {
    /// How the image is shown in errors.
    pub label: String,
    /// Names from the source: an OCI ref.name, or docker RepoTags.
    pub source_names: Vec<String>,
    pub item: T,
}

/// True when an OCI ref.name is a whole reference (`busybox:1`, `reg/x:y`) rather than a tag.
fn is_full_reference(name: &str) -> bool {
    name.contains(':') || name.contains('/') || name.contains('@')
}

/// Names every image: `tag` when given (then there must be exactly one image), else its source
/// names.
pub(crate) fn name_all<T>(
    images: Vec<Unnamed<T>>,
    tag: Option<&Reference>,
    origin: &str,
) -> Result<Vec<(Vec<Reference>, T)>> {
    if images.is_empty() {
        return Err(ImportError::NothingToImport {
            origin: origin.to_string(),
        });
    }
    if let Some(tag) = tag {
        if images.len() > 1 {
            return Err(ImportError::TagForSeveral {
                origin: origin.to_string(),
                count: images.len(),
            });
        }
        check_taggable(tag, origin)?;
        let image = images
            .into_iter()
            .next()
            .expect("checked: exactly one image");
        return Ok(vec![(vec![tag.clone()], image.item)]);
    }
    let mut named = Vec::new();
    for image in images {
        let mut references = Vec::new();
        for name in &image.source_names {
            if !is_full_reference(name) {
                continue;
            }
            let reference = Reference::parse(name).map_err(|e| ImportError::BadName {
                origin: origin.to_string(),
                name: name.clone(),
                reason: e.reason,
            })?;
            check_taggable(&reference, origin)?;
            references.push(reference);
        }
        if references.is_empty() {
            return Err(ImportError::NeedsName {
                origin: origin.to_string(),
                label: image.label,
            });
        }
        named.push((references, image.item));
    }
    Ok(named)
}

/// A store name is `name:tag`; a digest in it would make the name lie once re-tagged.
fn check_taggable(reference: &Reference, origin: &str) -> Result<()> {
    if reference.digest.is_some() {
        return Err(ImportError::BadName {
            origin: origin.to_string(),
            name: reference.to_string(),
            reason: "an image is named NAME:TAG; a digest cannot be part of its name".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unnamed(names: &[&str]) -> Unnamed<()> {
        Unnamed {
            label: "test image".into(),
            source_names: names.iter().map(|s| s.to_string()).collect(),
            item: (),
        }
    }

    #[test]
    fn bare_tag_needs_a_name_and_full_reference_is_one() {
        let err = name_all(vec![unnamed(&["latest"])], None, "x").unwrap_err();
        assert!(matches!(err, ImportError::NeedsName { .. }), "{err}");
        let named = name_all(vec![unnamed(&["reg.example/a/b:1"])], None, "x").unwrap();
        assert_eq!(named[0].0[0].to_string(), "reg.example/a/b:1");
    }

    #[test]
    fn tag_for_several_images_is_refused() {
        let tag = Reference::parse("x:1").unwrap();
        let err = name_all(vec![unnamed(&[]), unnamed(&[])], Some(&tag), "o").unwrap_err();
        assert!(
            matches!(err, ImportError::TagForSeveral { count: 2, .. }),
            "{err}"
        );
        let named = name_all(vec![unnamed(&["latest"])], Some(&tag), "o").unwrap();
        assert_eq!(named[0].0, vec![tag]);
    }
}
