//! `berth run`'s mount flags with podman's meanings, parsed into mount requests:
//! `-v /host:/ctr[:ro]`, `-v NAME:/ctr[:ro]`, `--tmpfs /path[:size=64m,mode=1777]` and
//! `--mount type=bind|volume|tmpfs,src=..,dst=..[,ro][,tmpfs-size=..][,tmpfs-mode=..]`.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use berth_images::volumes::{MountRequest, MountSource, VolumeError, check_targets, validate_name};

/// Every mount flag of one `berth run`, as requests with their targets checked.
pub(crate) fn parse_all(
    volumes: &[String],
    tmpfs: &[String],
    mounts: &[String],
) -> anyhow::Result<Vec<MountRequest>> {
    let mut out = Vec::new();
    for value in volumes {
        out.push(parse_volume(value).map_err(|e| refused("-v", value, &e))?);
    }
    for value in tmpfs {
        out.push(parse_tmpfs(value).map_err(|e| refused("--tmpfs", value, &e))?);
    }
    for value in mounts {
        out.push(parse_mount(value).map_err(|e| refused("--mount", value, &e))?);
    }
    check_targets(&mut out)?;
    Ok(out)
}

/// A flag value that does not parse: an invalid argument naming the flag and value.
fn refused(flag: &str, value: &str, err: &anyhow::Error) -> VolumeError {
    VolumeError::BadMount {
        origin: format!("{flag} {value}"),
        reason: crate::chain(err),
    }
}

/// A bind source is an absolute path; anything else names a volume.
fn source_of(src: &str) -> anyhow::Result<MountSource> {
    if src.starts_with('/') {
        Ok(MountSource::Bind(PathBuf::from(src)))
    } else {
        validate_name(src)?;
        Ok(MountSource::Volume(src.to_string()))
    }
}

/// `SRC:DST[:OPTIONS]`, options `ro` or `rw`.
fn parse_volume(value: &str) -> anyhow::Result<MountRequest> {
    let parts: Vec<&str> = value.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [src, dst] => (*src, *dst, ""),
        [src, dst, opts] => (*src, *dst, *opts),
        [_] => bail!("expected SOURCE:TARGET (anonymous volumes are not supported: name one)"),
        _ => bail!(
            "expected SOURCE:TARGET[:ro], got {} ':'-separated parts",
            parts.len()
        ),
    };
    if src.is_empty() || dst.is_empty() {
        bail!("expected SOURCE:TARGET, with neither empty");
    }
    let mut read_only = false;
    for opt in opts.split(',').filter(|o| !o.is_empty()) {
        match opt {
            "ro" => read_only = true,
            "rw" => read_only = false,
            other => bail!("unknown option {other:?} (ro or rw)"),
        }
    }
    Ok(MountRequest {
        source: source_of(src)?,
        target: PathBuf::from(dst),
        read_only,
        origin: format!("-v {value}"),
    })
}

/// `PATH[:size=64m,mode=1777,ro]`.
fn parse_tmpfs(value: &str) -> anyhow::Result<MountRequest> {
    let (dst, opts) = value.split_once(':').unwrap_or((value, ""));
    let mut req = MountRequest {
        source: MountSource::Tmpfs {
            size: None,
            mode: None,
        },
        target: PathBuf::from(dst),
        read_only: false,
        origin: format!("--tmpfs {value}"),
    };
    for opt in opts.split(',').filter(|o| !o.is_empty()) {
        match opt.split_once('=') {
            Some(("size", v)) => set_tmpfs(&mut req, Some(parse_size(v)?), None),
            Some(("mode", v)) => set_tmpfs(&mut req, None, Some(parse_mode(v)?)),
            None if opt == "ro" => req.read_only = true,
            None if opt == "rw" => req.read_only = false,
            _ => bail!("unknown tmpfs option {opt:?} (size=, mode=, ro or rw)"),
        }
    }
    Ok(req)
}

fn set_tmpfs(req: &mut MountRequest, new_size: Option<u64>, new_mode: Option<u32>) {
    if let MountSource::Tmpfs { size, mode } = &mut req.source {
        *size = new_size.or(*size);
        *mode = new_mode.or(*mode);
    }
}

fn parse_size(text: &str) -> anyhow::Result<u64> {
    let bytes = berth_images::bundle::parse_memory(text)
        .with_context(|| format!("invalid tmpfs size {text:?}"))?;
    u64::try_from(bytes)
        .ok()
        .filter(|b| *b > 0)
        .with_context(|| format!("invalid tmpfs size {text:?}: must be above 0"))
}

fn parse_mode(text: &str) -> anyhow::Result<u32> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .with_context(|| format!("invalid tmpfs mode {text:?}: expected octal, e.g. 1777"))
}

/// `type=..,src=..,dst=..` with podman's key names and aliases.
fn parse_mount(value: &str) -> anyhow::Result<MountRequest> {
    let (mut typ, mut src, mut dst) = (None, None, None);
    let (mut read_only, mut size, mut mode) = (false, None, None);
    for field in value.split(',').filter(|f| !f.is_empty()) {
        let (key, val) = field.split_once('=').unwrap_or((field, ""));
        match key {
            "type" => typ = Some(val),
            "src" | "source" => src = Some(val),
            "dst" | "destination" | "target" => dst = Some(val),
            "ro" | "readonly" => read_only = matches!(val, "" | "true" | "1"),
            "tmpfs-size" => size = Some(parse_size(val)?),
            "tmpfs-mode" => mode = Some(parse_mode(val)?),
            other => bail!("unknown key {other:?}"),
        }
    }
    let dst = dst.context("no dst= (the path in the container)")?;
    let source = match typ {
        Some("bind") => MountSource::Bind(PathBuf::from(src.context("type=bind needs src=")?)),
        Some("volume") => {
            let name =
                src.context("type=volume needs src= (anonymous volumes are not supported)")?;
            validate_name(name)?;
            MountSource::Volume(name.to_string())
        }
        Some("tmpfs") if src.is_some() => bail!("type=tmpfs takes no src="),
        Some("tmpfs") => MountSource::Tmpfs { size, mode },
        Some(other) => bail!("unknown type {other:?} (bind, volume or tmpfs)"),
        None => bail!("no type= (bind, volume or tmpfs)"),
    };
    if (size.is_some() || mode.is_some()) && typ != Some("tmpfs") {
        bail!("tmpfs-size and tmpfs-mode are for type=tmpfs only");
    }
    Ok(MountRequest {
        source,
        target: PathBuf::from(dst),
        read_only,
        origin: format!("--mount {value}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(volumes: &[&str], tmpfs: &[&str], mounts: &[&str]) -> anyhow::Result<MountRequest> {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut all = parse_all(&own(volumes), &own(tmpfs), &own(mounts))?;
        assert_eq!(all.len(), 1);
        Ok(all.remove(0))
    }

    fn err(volumes: &[&str], tmpfs: &[&str], mounts: &[&str]) -> String {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let e = parse_all(&own(volumes), &own(tmpfs), &own(mounts)).unwrap_err();
        crate::chain(&e)
    }

    #[test]
    fn volume_flag_binds_paths_and_names_volumes() {
        let bind = one(&["/srv/x:/x:ro"], &[], &[]).unwrap();
        assert_eq!(bind.source, MountSource::Bind("/srv/x".into()));
        assert!(bind.read_only);
        assert_eq!(bind.origin, "-v /srv/x:/x:ro");
        let vol = one(&["data:/var/lib/db"], &[], &[]).unwrap();
        assert_eq!(vol.source, MountSource::Volume("data".into()));
        assert_eq!(vol.target, PathBuf::from("/var/lib/db"));
        assert!(!vol.read_only);
    }

    #[test]
    fn tmpfs_flag_takes_size_and_mode() {
        let t = one(&[], &["/run/x:size=64m,mode=1770"], &[]).unwrap();
        let want = MountSource::Tmpfs {
            size: Some(64 << 20),
            mode: Some(0o1770),
        };
        assert_eq!(t.source, want);
        let plain = one(&[], &["/t"], &[]).unwrap();
        assert!(matches!(
            plain.source,
            MountSource::Tmpfs {
                size: None,
                mode: None
            }
        ));
    }

    #[test]
    fn mount_flag_has_podmans_keys() {
        let m = one(&[], &[], &["type=volume,src=db,dst=/d,ro"]).unwrap();
        assert_eq!(m.source, MountSource::Volume("db".into()));
        assert!(m.read_only);
        let b = one(
            &[],
            &[],
            &["type=bind,source=/srv,target=/s,readonly=false"],
        )
        .unwrap();
        assert_eq!(b.source, MountSource::Bind("/srv".into()));
        assert!(!b.read_only);
        let t = one(
            &[],
            &[],
            &["type=tmpfs,dst=/t,tmpfs-size=1k,tmpfs-mode=700"],
        )
        .unwrap();
        let want = MountSource::Tmpfs {
            size: Some(1024),
            mode: Some(0o700),
        };
        assert_eq!(t.source, want);
    }

    /// `-v` values, `--tmpfs` values, `--mount` values, and what the error must say.
    type Case<'a> = (&'a [&'a str], &'a [&'a str], &'a [&'a str], &'a [&'a str]);

    #[test]
    fn bad_values_name_the_flag_and_what_is_wrong() {
        let cases: [Case<'_>; 12] = [
            (&["data"], &[], &[], &["-v data", "anonymous"]),
            (&["a:b:c:d"], &[], &[], &["-v a:b:c:d", "4"]),
            (&["data:/d:rx"], &[], &[], &["-v data:/d:rx", "\"rx\""]),
            (
                &["bad!name:/d"],
                &[],
                &[],
                &["-v bad!name:/d", "invalid volume name"],
            ),
            (&["data:rel"], &[], &[], &["-v data:rel", "relative"]),
            (&[], &["/sys/x"], &[], &["--tmpfs /sys/x", "/sys"]),
            (
                &[],
                &["/t:size=lots"],
                &[],
                &["--tmpfs /t:size=lots", "size"],
            ),
            (
                &[],
                &["/t:mode=999"],
                &[],
                &["--tmpfs /t:mode=999", "octal"],
            ),
            (
                &[],
                &[],
                &["type=nfs,dst=/x"],
                &["--mount type=nfs,dst=/x", "nfs"],
            ),
            (&[], &[], &["type=bind,dst=/x"], &["src="]),
            (&[], &[], &["type=volume,src=v"], &["dst="]),
            (
                &["a:/d", "b:/d"],
                &[],
                &[],
                &["-v b:/d", "overlaps", "-v a:/d"],
            ),
        ];
        for (volumes, tmpfs, mounts, needles) in cases {
            let text = err(volumes, tmpfs, mounts);
            for needle in needles {
                assert!(text.contains(needle), "{text:?} lacks {needle:?}");
            }
        }
    }
}
