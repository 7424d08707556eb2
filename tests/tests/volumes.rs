//! Named volumes, bind mounts and tmpfs with `berth run` (real containers from busybox
//! images), and `berth volume create|ls|inspect|rm|prune`. Each test has its own data dir,
//! container names and host directories; volumes live in the data dir.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use berth_tests::{LOCAL_IMAGE, LocalEnv, build_image, busybox_rootfs};

const IMAGE: &str = LOCAL_IMAGE;

/// `berth volume inspect NAME`, the one object.
fn inspect(env: &LocalEnv, name: &str) -> serde_json::Value {
    env.berth.json(["volume", "inspect", name])[0].clone()
}

fn mountpoint(env: &LocalEnv, name: &str) -> PathBuf {
    PathBuf::from(inspect(env, name)["mountpoint"].as_str().unwrap())
}

fn users(env: &LocalEnv, name: &str) -> Vec<String> {
    let value = inspect(env, name)["in_use_by"].clone();
    serde_json::from_value(value).unwrap()
}

fn volume_names(env: &LocalEnv) -> Vec<String> {
    env.berth
        .json(["volume", "ls"])
        .as_array()
        .expect("volume ls prints an array")
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

/// Builds image `tag` in `env`'s store: the busybox root filesystem plus what `extra` adds.
fn image_with(env: &LocalEnv, tag: &str, extra: impl FnOnce(&Path)) {
    let rootfs = tempfile::tempdir().unwrap();
    busybox_rootfs(rootfs.path());
    extra(rootfs.path());
    build_image(&env.berth, rootfs.path(), tag, "/bin/sh");
}

fn host_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("berth-vol-host-")
        .tempdir()
        .unwrap()
}

#[test]
fn named_volume_data_survives_rm_and_a_new_container() {
    let mut env = LocalEnv::new();
    let writer = env.name("writer");
    let script = "echo kept > /data/file";
    env.run_ok(&[
        "--name",
        &writer,
        "-v",
        "keep:/data",
        IMAGE,
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(users(&env, "keep"), [writer.as_str()]);
    env.berth.ok(["rm", &writer]);
    assert!(users(&env, "keep").is_empty());
    assert_eq!(volume_names(&env), ["keep"]);
    let read = env.run_ok(&["--rm", "-v", "keep:/data", IMAGE, "cat", "/data/file"]);
    assert_eq!(read, "kept\n");
    let mount = "type=volume,src=keep,dst=/m,ro";
    let read = env.run_ok(&["--rm", "--mount", mount, IMAGE, "cat", "/m/file"]);
    assert_eq!(read, "kept\n");
    assert!(users(&env, "keep").is_empty());
}

#[test]
fn a_read_only_bind_refuses_writes() {
    let env = LocalEnv::new();
    let host = host_dir();
    fs::write(host.path().join("in"), "from host\n").unwrap();
    let ro = format!("{}:/h:ro", host.path().display());
    let out = env.run(&[
        "--rm",
        "-v",
        &ro,
        IMAGE,
        "sh",
        "-c",
        "cat /h/in; echo x > /h/new",
    ]);
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from host\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    assert!(!host.path().join("new").exists());
    let mount = format!("type=bind,src={},dst=/h,readonly", host.path().display());
    let out = env.run(&["--rm", "--mount", &mount, IMAGE, "touch", "/h/new"]);
    assert!(!out.status.success(), "{out:?}");
    // Read-write, the write reaches the host.
    let rw = format!("{}:/h", host.path().display());
    env.run_ok(&["--rm", "-v", &rw, IMAGE, "sh", "-c", "echo w > /h/new"]);
    assert_eq!(fs::read_to_string(host.path().join("new")).unwrap(), "w\n");
}

#[test]
fn tmpfs_size_and_mode_are_enforced() {
    let env = LocalEnv::new();
    let script = "stat -c %a /t; cat /dev/zero > /t/z; echo rc=$?; wc -c < /t/z";
    let out = env.run(&[
        "--rm",
        "--tmpfs",
        "/t:size=1m,mode=1770",
        IMAGE,
        "sh",
        "-c",
        script,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[..2], ["1770", "rc=1"], "{out:?}");
    let written: u64 = lines[2].trim().parse().unwrap();
    assert!(
        written > 0 && written <= 1 << 20,
        "{written} bytes on a 1 MiB tmpfs"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("No space left on device"), "{stderr}");
    let mount = "type=tmpfs,dst=/t,tmpfs-size=64k";
    let out = env.run(&["--rm", "--mount", mount, IMAGE, "sh", "-c", script]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let written: u64 = stdout.lines().nth(2).unwrap().trim().parse().unwrap();
    assert!(written <= 64 << 10, "{written} bytes on a 64 KiB tmpfs");
}

/// Mount points on this host (field 5 of mountinfo).
fn host_mount_points() -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .collect()
}

#[test]
fn a_symlink_in_the_image_aimed_at_etc_does_not_move_a_mount_onto_the_host() {
    let env = LocalEnv::new();
    image_with(&env, "linked:latest", |root| {
        symlink("/etc", root.join("data")).unwrap();
        symlink("../../../../../../../etc", root.join("up")).unwrap();
    });
    let probe = format!("berth-vol-probe-{}", std::process::id());
    let host_etc = Path::new("/etc").join(&probe);
    let write = format!("echo in > /data/{probe}");
    env.run_ok(&["--rm", "-v", "linkvol:/data", "linked", "sh", "-c", &write]);
    assert!(!host_etc.exists(), "{} was written", host_etc.display());
    assert!(!host_mount_points().iter().any(|m| m == "/etc"));
    // The volume took the write, and was seeded from the image's /etc, not the host's.
    let volume = mountpoint(&env, "linkvol");
    assert_eq!(fs::read_to_string(volume.join(&probe)).unwrap(), "in\n");
    let passwd = fs::read_to_string(volume.join("passwd")).unwrap();
    assert!(
        passwd.starts_with("root:x:0:0:root:/root:/bin/sh\n"),
        "{passwd}"
    );
    assert!(
        !passwd.contains("daemon:"),
        "the host's passwd was copied: {passwd}"
    );
    // A bind mount through a relative link that climbs past the root lands in the rootfs too.
    let host = host_dir();
    let bind = format!("{}:/up", host.path().display());
    let write = format!("echo up > /up/{probe}; cat /etc/{probe}");
    assert_eq!(
        env.run_ok(&["--rm", "-v", &bind, "linked", "sh", "-c", &write]),
        "up\n"
    );
    assert!(!host_etc.exists(), "{} was written", host_etc.display());
    assert_eq!(
        fs::read_to_string(host.path().join(&probe)).unwrap(),
        "up\n"
    );
}

/// /srv/app in the image: a directory and file owned by 1234:5678, a subdirectory, a symlink.
fn seeded_image(env: &LocalEnv) {
    image_with(env, "seeded:latest", |root| {
        let app = root.join("srv/app");
        fs::create_dir_all(app.join("sub")).unwrap();
        fs::write(app.join("conf"), "v1\n").unwrap();
        fs::write(app.join("sub/deep"), "deep\n").unwrap();
        symlink("conf", app.join("link")).unwrap();
        for path in [&app, &app.join("conf")] {
            lchown(path, Some(1234), Some(5678)).unwrap();
        }
        fs::set_permissions(&app, fs::Permissions::from_mode(0o750)).unwrap();
        fs::set_permissions(app.join("conf"), fs::Permissions::from_mode(0o640)).unwrap();
    });
}

#[test]
fn seeding_copies_image_content_once_and_never_into_binds() {
    let env = LocalEnv::new();
    seeded_image(&env);
    env.run_ok(&["--rm", "-v", "seed:/srv/app", "seeded", "true"]);
    let volume = mountpoint(&env, "seed");
    let owner_mode = |p: &Path| {
        let m = fs::symlink_metadata(p).unwrap();
        (m.uid(), m.gid(), m.mode() & 0o7777)
    };
    assert_eq!(owner_mode(&volume), (1234, 5678, 0o750));
    assert_eq!(owner_mode(&volume.join("conf")), (1234, 5678, 0o640));
    assert_eq!(fs::read_to_string(volume.join("conf")).unwrap(), "v1\n");
    assert_eq!(
        fs::read_to_string(volume.join("sub/deep")).unwrap(),
        "deep\n"
    );
    assert_eq!(
        fs::read_link(volume.join("link")).unwrap(),
        Path::new("conf")
    );
    // Changed by a container (as the owner: the copy kept it), not seeded again by the next.
    let owner = ["--rm", "-u", "1234:5678", "-v", "seed:/srv/app", "seeded"];
    env.run_ok(&[&owner[..], &["rm", "/srv/app/conf"]].concat());
    let listed = env.run_ok(&[&owner[..], &["ls", "/srv/app"]].concat());
    assert_eq!(listed, "link\nsub\n");
    // First used where the image has nothing: later mounts over content do not seed it.
    env.run_ok(&["--rm", "-v", "late:/srv/none", "seeded", "true"]);
    env.run_ok(&["--rm", "-v", "late:/srv/app", "seeded", "true"]);
    assert_eq!(fs::read_dir(mountpoint(&env, "late")).unwrap().count(), 0);
    // A bind mount shows the host's directory as it is.
    let host = host_dir();
    let bind = format!("{}:/srv/app", host.path().display());
    env.run_ok(&["--rm", "-v", &bind, "seeded", "true"]);
    assert_eq!(fs::read_dir(host.path()).unwrap().count(), 0);
}

#[test]
fn a_volume_in_use_is_removed_only_with_force() {
    let mut env = LocalEnv::new();
    let user = env.run_detached("user", &["-v", "busy:/d"]);
    assert_eq!(users(&env, "busy"), [user.as_str()]);
    let out = env.berth.cmd(["volume", "rm", "busy"]).output().unwrap();
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("busy") && stderr.contains(&user),
        "{stderr}"
    );
    assert_eq!(volume_names(&env), ["busy"]);
    env.berth.ok(["volume", "rm", "-f", "busy"]);
    assert!(volume_names(&env).is_empty());
    // Once its container is removed, a volume goes without force.
    let other = env.run_detached("other", &["-v", "freed:/d"]);
    env.berth.ok(["stop", "-t", "1", &other]);
    env.berth.ok(["rm", &other]);
    env.berth.ok(["volume", "rm", "freed"]);
    assert!(volume_names(&env).is_empty());
}

#[test]
fn prune_removes_only_unused_volumes() {
    let mut env = LocalEnv::new();
    let made = env
        .berth
        .json(["volume", "create", "idle", "--label", "team=a"]);
    assert_eq!(made["labels"]["team"], "a");
    env.run_detached("pinned", &["-v", "held:/d"]);
    let pruned = env.berth.json(["volume", "prune"]);
    assert_eq!(pruned["removed"], serde_json::json!(["idle"]));
    assert_eq!(volume_names(&env), ["held"]);
}

fn spawn_run(env: &LocalEnv, args: &[&str]) -> std::process::Child {
    env.berth
        .cmd(["run", "--rm"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn concurrent_runs_make_one_volume_and_rm_never_removes_one_in_use() {
    let env = LocalEnv::new();
    let runs: Vec<_> = (0..4)
        .map(|_| {
            spawn_run(
                &env,
                &["-v", "same:/d", IMAGE, "sh", "-c", "echo $$ >> /d/log"],
            )
        })
        .collect();
    for run in runs {
        let out = run.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    assert_eq!(volume_names(&env), ["same"]);
    let log = fs::read_to_string(mountpoint(&env, "same").join("log")).unwrap();
    assert_eq!(log.lines().count(), 4, "{log}");
    // Removals racing runs: each run keeps the volume it mounted.
    // Each run its own file: runs sharing one would truncate it under each other's `cat`.
    let script = "sleep 0.2; f=/d/f.$RANDOM$RANDOM; echo ok > $f && cat $f";
    let runs: Vec<_> = (0..3)
        .map(|_| spawn_run(&env, &["-v", "race:/d", IMAGE, "sh", "-c", script]))
        .collect();
    for _ in 0..10 {
        let out = env.berth.cmd(["volume", "rm", "race"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let refused = stderr.contains("in use") || stderr.contains("no such volume");
        assert!(out.status.success() || refused, "{out:?}");
    }
    for run in runs {
        let out = run.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n", "{out:?}");
    }
}

#[test]
fn bad_flags_and_names_are_refused_naming_what_is_wrong() {
    let env = LocalEnv::new();
    let cases: [(&[&str], &[&str]); 9] = [
        (&["-v", "/:/host"], &["-v /:/host", "--privileged"]),
        (&["-v", "/proc:/p"], &["-v /proc:/p", "--privileged"]),
        (
            &["-v", "/no/such/berth-dir:/d"],
            &["/no/such/berth-dir", "does not exist"],
        ),
        (&["--tmpfs", "/proc/x"], &["--tmpfs /proc/x", "/proc"]),
        (
            &["--mount", "type=tmpfs,dst=/dev/shm"],
            &["--mount", "/dev"],
        ),
        (&["-v", "data:relative"], &["-v data:relative", "relative"]),
        (
            &["-v", "a:/d", "-v", "b:/d/e"],
            &["-v b:/d/e", "overlaps", "-v a:/d"],
        ),
        (
            &["--mount", "type=nfs,dst=/x"],
            &["--mount type=nfs,dst=/x", "nfs"],
        ),
        (
            &["-v", "bad!name:/d"],
            &["-v bad!name:/d", "invalid volume name"],
        ),
    ];
    for (flags, needles) in cases {
        let mut args = flags.to_vec();
        args.extend([IMAGE, "true"]);
        let out = env.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "{args:?}: {stderr:?} lacks {needle:?}"
            );
        }
    }
    let containers = env.berth.data_dir.path().join("containers");
    let left = fs::read_dir(&containers).map_or(0, |d| d.count());
    assert_eq!(left, 0, "a refused run left a container");
    assert!(volume_names(&env).is_empty());
    // --privileged lets the host's root in.
    let host_root = [
        "--privileged",
        "-v",
        "/:/host:ro",
        IMAGE,
        "test",
        "-d",
        "/host/proc",
    ];
    env.run_ok(&host_root);
    let code = |args: &[&str]| {
        let out = env.berth.cmd(args).stdin(Stdio::null()).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (status, stderr) = code(&["volume", "rm", "nosuch"]);
    assert_eq!(status, Some(5), "{stderr}");
    assert!(stderr.contains("nosuch"), "{stderr}");
    let (status, stderr) = code(&["volume", "create", "bad/name"]);
    assert_eq!(status, Some(2), "{stderr}");
    assert!(stderr.contains("bad/name"), "{stderr}");
    env.berth.ok(["volume", "create", "twice"]);
    let (status, stderr) = code(&["volume", "create", "twice"]);
    assert_eq!(status, Some(6), "{stderr}");
    assert!(stderr.contains("already exists"), "{stderr}");
}

#[test]
fn a_detached_rm_container_ends_its_use_when_it_exits() {
    let mut env = LocalEnv::new();
    let name = env.name("brief");
    let args = [
        "-d",
        "--rm",
        "--name",
        &name,
        "-v",
        "brief:/d",
        IMAGE,
        "sh",
        "-c",
        "echo done > /d/f",
    ];
    env.run_ok(&args);
    // Its berth-shim runs `berth rm` once it has exited, which releases the volume.
    berth_tests::poll_until(
        "the volume to be released",
        std::time::Duration::from_secs(20),
        || users(&env, "brief").is_empty().then_some(()),
    );
    assert_eq!(
        fs::read_to_string(mountpoint(&env, "brief").join("f")).unwrap(),
        "done\n"
    );
    env.berth.ok(["volume", "rm", "brief"]);
}
