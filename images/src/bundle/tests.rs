//! Unit tests of the image-config-to-spec mapping.

use super::*;
use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn image(config: serde_json::Value) -> Image {
    let manifest: ImageManifest = serde_json::from_value(serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", "a".repeat(64)), "size": 2},
        "layers": []
    }))
    .unwrap();
    let config: ImageConfiguration = serde_json::from_value(serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
        "config": config
    }))
    .unwrap();
    let descriptor: Descriptor = manifest.config().clone();
    Image {
        name: "test:latest".into(),
        manifest_descriptor: descriptor,
        manifest,
        config,
    }
}

fn rootfs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("etc")).unwrap();
    fs::write(
        dir.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\nbroken:x:nope\n",
    )
    .unwrap();
    fs::write(
        dir.path().join("etc/group"),
        "root:x:0:\napp:x:1001:\nwheel:x:10:app,other\naudio:x:29:app\n",
    )
    .unwrap();
    dir
}

#[test]
fn entrypoint_and_cmd_combine_as_docker_does() {
    let ep = s(&["/entry", "-x"]);
    let cmd = s(&["serve"]);
    let args = s(&["echo", "hi"]);
    assert_eq!(
        command_line(Some(&ep), Some(&cmd), None, None).unwrap(),
        s(&["/entry", "-x", "serve"])
    );
    assert_eq!(
        command_line(Some(&ep), Some(&cmd), None, Some(&args)).unwrap(),
        s(&["/entry", "-x", "echo", "hi"])
    );
    assert_eq!(
        command_line(None, Some(&cmd), None, Some(&args)).unwrap(),
        args
    );
    // An overridden entrypoint drops the image's cmd.
    assert_eq!(
        command_line(Some(&ep), Some(&cmd), Some(&s(&["/bin/true"])), None).unwrap(),
        s(&["/bin/true"])
    );
    assert_eq!(
        command_line(Some(&ep), Some(&cmd), Some(&[]), Some(&args)).unwrap(),
        args
    );
    assert!(matches!(
        command_line(None, None, None, None),
        Err(BundleError::NoCommand)
    ));
}

#[test]
fn env_overrides_replace_in_place_and_append() {
    let image_env = s(&["PATH=/bin", "A=1", "B=2"]);
    let merged = merge_env(
        &image_env,
        &[("B".into(), "3".into()), ("C".into(), "x=y".into())],
    )
    .unwrap();
    assert_eq!(merged, s(&["PATH=/bin", "A=1", "B=3", "C=x=y"]));
    let no_path = merge_env(&[], &[]).unwrap();
    assert!(
        no_path[0].starts_with("PATH=/usr/local/sbin"),
        "{no_path:?}"
    );
    assert!(merge_env(&[], &[("".into(), "v".into())]).is_err());
}

#[test]
fn users_resolve_by_name_and_number() {
    let root = rootfs();
    let r = |u: &str| resolve_user(root.path(), u);
    assert_eq!(
        r("").unwrap(),
        ResolvedUser {
            uid: 0,
            gid: 0,
            additional_gids: vec![]
        }
    );
    assert_eq!(
        r("app").unwrap(),
        ResolvedUser {
            uid: 1000,
            gid: 1001,
            additional_gids: vec![10, 29]
        }
    );
    // A numeric uid with a passwd entry takes its primary group.
    assert_eq!(r("1000").unwrap().gid, 1001);
    assert_eq!(
        r("4242").unwrap(),
        ResolvedUser {
            uid: 4242,
            gid: 0,
            additional_gids: vec![]
        }
    );
    let with_group = r("app:wheel").unwrap();
    assert_eq!((with_group.uid, with_group.gid), (1000, 10));
    assert!(with_group.additional_gids.is_empty());
    assert_eq!(r("5:7").unwrap().gid, 7);
    assert!(matches!(r("ghost"), Err(BundleError::UnknownUser(u)) if u == "ghost"));
    assert!(matches!(r("app:ghosts"), Err(BundleError::UnknownGroup(_))));
}

#[test]
fn symlinked_passwd_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("etc")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("etc/passwd")).unwrap();
    assert!(matches!(
        resolve_user(dir.path(), "root"),
        Err(BundleError::UnknownUser(_))
    ));
}

#[test]
fn memory_sizes_parse_in_binary_units() {
    assert_eq!(parse_memory("64m").unwrap(), 64 << 20);
    assert_eq!(parse_memory("64MB").unwrap(), 64 << 20);
    assert_eq!(parse_memory("1g").unwrap(), 1 << 30);
    assert_eq!(parse_memory("512k").unwrap(), 512 << 10);
    assert_eq!(parse_memory("4096").unwrap(), 4096);
    assert_eq!(parse_memory("100b").unwrap(), 100);
    for bad in ["", "m", "12x", "-5m", "1.5g", "0", "99999999999999g"] {
        assert!(parse_memory(bad).is_err(), "{bad:?} parsed");
    }
}

#[test]
fn cpus_map_to_a_cfs_quota() {
    assert_eq!(cpus_to_cfs(0.5).unwrap(), (50_000, 100_000));
    assert_eq!(cpus_to_cfs(2.0).unwrap(), (200_000, 100_000));
    assert_eq!(cpus_to_cfs(0.001).unwrap(), (1000, 100_000));
    assert!(cpus_to_cfs(0.0).is_err());
    assert!(cpus_to_cfs(f64::NAN).is_err());
}

/// The namespaces a spec lists.
fn namespaces_of(spec: &oci_spec::runtime::Spec) -> Vec<oci_spec::runtime::LinuxNamespace> {
    let linux = spec.linux().as_ref().unwrap();
    linux.namespaces().clone().unwrap()
}

#[test]
fn spec_carries_image_config_and_overrides() {
    let root = rootfs();
    let img = image(serde_json::json!({
        "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo image"],
        "Env": ["PATH=/bin", "MODE=image"], "WorkingDir": "/srv", "User": "app"
    }));
    let spec = build_spec(&img, root.path(), &RunOverrides::default()).unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(
        p.args().as_ref().unwrap(),
        &s(&["/bin/sh", "-c", "echo image"])
    );
    assert_eq!(p.cwd(), Path::new("/srv"));
    assert_eq!((p.user().uid(), p.user().gid()), (1000, 1001));
    let linux = spec.linux().as_ref().unwrap();
    let ns: Vec<_> = namespaces_of(&spec).iter().map(|n| n.typ()).collect();
    for want in [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Cgroup,
    ] {
        assert!(ns.contains(&want), "{want:?} missing");
    }
    assert!(linux.masked_paths().as_ref().is_some_and(|m| !m.is_empty()));
    assert!(
        spec.mounts()
            .as_ref()
            .is_some_and(|m| m.iter().any(|m| m.destination() == Path::new("/proc")))
    );

    let overrides = RunOverrides {
        args: Some(s(&["id"])),
        entrypoint: Some(vec![]),
        env: vec![("MODE".into(), "flag".into())],
        user: Some("0:0".into()),
        workdir: Some("/tmp".into()),
        hostname: Some("box".into()),
        memory_bytes: Some(64 << 20),
        cpus: Some(0.5),
        pids_limit: Some(20),
        read_only: true,
        network: Network::Host,
        tty: true,
        cgroups_path: Some("/berth/x".into()),
    };
    let spec = build_spec(&img, root.path(), &overrides).unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.args().as_ref().unwrap(), &s(&["id"]));
    let env = p.env().as_ref().unwrap();
    assert!(env.contains(&"MODE=flag".to_string()) && !env.contains(&"MODE=image".to_string()));
    assert!(env.contains(&"TERM=xterm".to_string()));
    assert_eq!(p.terminal(), Some(true));
    assert_eq!(p.cwd(), Path::new("/tmp"));
    assert_eq!(p.user().uid(), 0);
    assert_eq!(spec.hostname().as_deref(), Some("box"));
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
    let linux = spec.linux().as_ref().unwrap();
    assert!(
        !namespaces_of(&spec)
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::Network)
    );
    assert_eq!(linux.cgroups_path().as_deref(), Some(Path::new("/berth/x")));
    let res = linux.resources().as_ref().unwrap();
    assert_eq!(res.memory().as_ref().unwrap().limit(), Some(64 << 20));
    assert_eq!(res.cpu().as_ref().unwrap().quota(), Some(50_000));
    assert_eq!(res.pids().as_ref().unwrap().limit(), 20);

    let joined = RunOverrides {
        network: Network::Path("/run/netns/n1".into()),
        ..Default::default()
    };
    let spec = build_spec(&img, root.path(), &joined).unwrap();
    let net: Vec<_> = namespaces_of(&spec)
        .iter()
        .filter(|n| n.typ() == LinuxNamespaceType::Network)
        .map(|n| n.path().clone())
        .collect();
    assert_eq!(net, vec![Some(PathBuf::from("/run/netns/n1"))]);

    let bad = RunOverrides {
        workdir: Some("rel".into()),
        ..Default::default()
    };
    assert!(matches!(
        build_spec(&img, root.path(), &bad),
        Err(BundleError::RelativeWorkdir(_))
    ));
}

#[test]
fn bundle_config_points_at_the_rootfs() {
    let root = rootfs();
    let out = tempfile::tempdir().unwrap();
    let img = image(serde_json::json!({"Cmd": ["sh"]}));
    let spec = build_spec(&img, root.path(), &RunOverrides::default()).unwrap();
    let path = write_bundle(out.path(), &spec, root.path()).unwrap();
    let written: serde_json::Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    assert_eq!(written["root"]["path"], root.path().to_str().unwrap());
    assert_eq!(written["process"]["args"], serde_json::json!(["sh"]));
}
