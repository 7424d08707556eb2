//! End to end: `berth build` from a Containerfile with the real binary: multi-stage COPY
//! --from onto busybox, refusals (parse errors, unsupported instructions, sources outside the
//! context), .dockerignore, the layer cache and SOURCE_DATE_EPOCH reproducibility; RUN steps
//! (whiteouts, ENV/ARG/USER/WORKDIR, cache, failures leaving nothing behind, NAT/none/host
//! networks) and a RUN build compared with buildah's.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use berth_tests::tree_compare::{Node, scan};
use berth_tests::{
    Berth, build_image, busybox_image, busybox_rootfs, require_root, require_tool, run_err,
    run_json, run_ok,
};
use serde_json::{Value, json};
use tempfile::TempDir;

/// A fixed SOURCE_DATE_EPOCH (2023-11-14).
const EPOCH: &str = "1700000000";

/// A build context with `files` (path, content) and the Containerfile `recipe`.
fn context(recipe: &str, files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("berth-build-ctx-")
        .tempdir()
        .expect("create a context dir");
    fs::write(dir.path().join("Containerfile"), recipe).unwrap();
    for (path, content) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }
    dir
}

/// `berth build -t TAG CONTEXT`, not yet run, with SOURCE_DATE_EPOCH set.
fn build_cmd(berth: &Berth, ctx: &Path, tag: &str) -> Command {
    let mut cmd = berth.cmd(["build", "-t", tag]);
    cmd.arg(ctx).env("SOURCE_DATE_EPOCH", EPOCH);
    cmd
}

fn build(berth: &Berth, ctx: &Path, tag: &str) -> Value {
    run_json(&mut build_cmd(berth, ctx, tag))
}

/// What a failing build says; the image must not have been named.
fn build_err(berth: &Berth, ctx: &Path, tag: &str) -> String {
    let err = run_err(&mut build_cmd(berth, ctx, tag));
    assert!(
        !berth.image_names().contains(&tag.to_string()),
        "a failed build tagged {tag}"
    );
    err
}

/// The image unpacked into a new temp dir (kept alive by the returned guard).
fn unpack(berth: &Berth, tag: &str) -> TempDir {
    let dir = TempDir::new().unwrap();
    let rootfs = dir.path().join("rootfs");
    berth.ok(["image", "unpack", tag, rootfs.to_str().unwrap()]);
    dir
}

/// Per step: (line, whether its layer came from the cache); metadata steps are left out.
fn layer_steps(built: &Value) -> Vec<(u64, bool)> {
    built["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| !s["layer"].is_null())
        .map(|s| (s["line"].as_u64().unwrap(), s["cached"].as_bool().unwrap()))
        .collect()
}

#[test]
fn multi_stage_copy_from_onto_busybox_with_metadata() {
    require_root();
    let berth = Berth::new();
    busybox_image(&berth, "busybox:cf");
    let ctx = context(
        "ARG BASE=busybox:cf\n\
         FROM scratch AS files\n\
         COPY --chmod=0640 --chown=1000:1000 app/ /out/\n\
         FROM ${BASE}\n\
         ARG GREETING=hello\n\
         ENV GREETING=${GREETING} HOME_DIR=/srv\n\
         WORKDIR ${HOME_DIR:-/nope}\n\
         COPY --from=files /out/hello.txt ./\n\
         COPY conf.ini /etc/app/\n\
         LABEL org.example.name=\"cf test\"\n\
         EXPOSE 8080 53/udp\n\
         VOLUME /data\n\
         USER 1000\n\
         ENTRYPOINT [\"/bin/cat\"]\n\
         CMD hello.txt\n",
        &[
            ("app/hello.txt", "hello from stage one\n"),
            ("conf.ini", "k=v\n"),
        ],
    );
    let built = run_json(
        build_cmd(&berth, ctx.path(), "cf:multi").args(["--build-arg", "GREETING=hi there"]),
    );
    assert_eq!(built["layers_written"], 3, "{built}");
    let config = &berth.json(["image", "inspect", "cf:multi"])["config"];
    let runtime = &config["config"];
    let env = runtime["Env"].as_array().unwrap();
    assert!(env.contains(&json!("GREETING=hi there")), "{env:?}");
    assert_eq!(runtime["WorkingDir"], "/srv");
    assert_eq!(runtime["User"], "1000");
    assert_eq!(runtime["Entrypoint"], json!(["/bin/cat"]));
    assert_eq!(runtime["Cmd"], json!(["/bin/sh", "-c", "hello.txt"]));
    assert_eq!(runtime["Labels"]["org.example.name"], "cf test");
    assert!(
        runtime["ExposedPorts"].get("8080/tcp").is_some(),
        "{runtime}"
    );
    assert!(runtime["ExposedPorts"].get("53/udp").is_some(), "{runtime}");
    assert!(runtime["Volumes"].get("/data").is_some(), "{runtime}");
    // busybox's one layer plus the two COPY layers of the last stage.
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);
    let unpacked = unpack(&berth, "cf:multi");
    let rootfs = unpacked.path().join("rootfs");
    let hello = rootfs.join("srv/hello.txt");
    assert_eq!(
        fs::read_to_string(&hello).unwrap(),
        "hello from stage one\n"
    );
    let meta = fs::metadata(&hello).unwrap();
    assert_eq!(
        (meta.uid(), meta.permissions().mode() & 0o7777),
        (1000, 0o640)
    );
    assert_eq!(meta.mtime().to_string(), EPOCH);
    assert_eq!(
        fs::read_to_string(rootfs.join("etc/app/conf.ini")).unwrap(),
        "k=v\n"
    );
    assert!(
        rootfs.join("bin/busybox").is_file(),
        "the base's files are there"
    );
}

#[test]
fn a_file_that_does_not_parse_is_refused_with_line_and_column() {
    let berth = Berth::new();
    let ctx = context("FROM scratch\nCOPY only-one-argument\n", &[]);
    let err = build_err(&berth, ctx.path(), "cf:bad");
    assert!(err.contains("line 2, column"), "{err}");
    let mut cmd = berth.cmd(["build", "-t", "cf:bad"]);
    let status = cmd.arg(ctx.path()).status().expect("run berth build");
    assert_eq!(
        status.code(),
        Some(2),
        "a bad Containerfile is a usage error"
    );
}

#[test]
fn unsupported_instructions_are_refused_by_name_and_line() {
    let berth = Berth::new();
    let ctx = context("FROM scratch\n\nSHELL [\"/bin/bash\", \"-c\"]\n", &[]);
    let err = build_err(&berth, ctx.path(), "cf:shell");
    assert!(err.contains("SHELL is not supported yet (line 3)"), "{err}");
    let ctx = context("FROM scratch\nHEALTHCHECK NONE\n", &[]);
    let err = build_err(&berth, ctx.path(), "cf:hc");
    assert!(
        err.contains("HEALTHCHECK is not supported yet (line 2)"),
        "{err}"
    );
    let ctx = context("FROM scratch\nFROBNICATE x\n", &[]);
    let err = build_err(&berth, ctx.path(), "cf:unknown");
    assert!(
        err.contains("FROBNICATE") && err.contains("line 2"),
        "{err}"
    );
}

#[test]
fn sources_outside_the_context_are_refused_by_name() {
    let berth = Berth::new();
    let ctx = context("FROM scratch\nCOPY ../x /x\n", &[]);
    let err = build_err(&berth, ctx.path(), "cf:dotdot");
    assert_eq!(
        berth.code(["build", "-t", "cf:dotdot", ctx.path().to_str().unwrap()]),
        2
    );
    assert!(
        err.contains("\"../x\"") && err.contains("outside the build context"),
        "{err}"
    );
    let ctx = context("FROM scratch\nCOPY escape/passwd /x\n", &[]);
    std::os::unix::fs::symlink("/etc", ctx.path().join("escape")).unwrap();
    let err = build_err(&berth, ctx.path(), "cf:symlink");
    assert!(
        err.contains("\"escape/passwd\"") && err.contains("through a symlink"),
        "{err}"
    );
}

#[test]
fn dockerignore_keeps_files_out_of_the_image() {
    require_root();
    let berth = Berth::new();
    let ctx = context(
        "FROM scratch\nCOPY . /app/\n",
        &[
            (".dockerignore", "secret.txt\nlogs\n*.tmp\n!keep.tmp\n"),
            ("secret.txt", "s3cr3t"),
            ("logs/a.log", "log"),
            ("x.tmp", "tmp"),
            ("keep.tmp", "kept"),
            ("src/main.txt", "main"),
        ],
    );
    build(&berth, ctx.path(), "cf:ignore");
    let unpacked = unpack(&berth, "cf:ignore");
    let app = unpacked.path().join("rootfs/app");
    let mut names: Vec<String> = fs::read_dir(&app)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [".dockerignore", "Containerfile", "keep.tmp", "src"]);
    fs::write(
        ctx.path().join("Containerfile"),
        "FROM scratch\nCOPY secret.txt /s\n",
    )
    .unwrap();
    let err = build_err(&berth, ctx.path(), "cf:ignored-source");
    assert!(err.contains("excluded by .dockerignore"), "{err}");
}

const THREE_COPIES: &str = "FROM scratch\nCOPY a /a\nENV X=1\nCOPY b /b\nCOPY c /c\n";

#[test]
fn a_rebuild_without_change_makes_no_layer_even_after_touching_files() {
    let berth = Berth::new();
    let ctx = context(THREE_COPIES, &[("a", "a"), ("b", "b"), ("c", "c")]);
    let first = build(&berth, ctx.path(), "cf:cache");
    assert_eq!(layer_steps(&first), [(2, false), (4, false), (5, false)]);
    let blobs = berth.stored_blobs();
    let status = Command::new("touch")
        .args(["-d", "2001-01-01"])
        .arg(ctx.path().join("b"))
        .status()
        .unwrap();
    assert!(status.success());
    let second = build(&berth, ctx.path(), "cf:cache");
    assert_eq!(layer_steps(&second), [(2, true), (4, true), (5, true)]);
    assert_eq!(
        (
            second["cache_hits"].clone(),
            second["layers_written"].clone()
        ),
        (json!(3), json!(0))
    );
    assert_eq!(second["digest"], first["digest"]);
    assert_eq!(
        berth.stored_blobs(),
        blobs,
        "a cached rebuild stores nothing new"
    );
    let fresh = run_json(build_cmd(&berth, ctx.path(), "cf:cache").arg("--no-cache"));
    assert_eq!(fresh["layers_written"], 3);
    assert_eq!(
        fresh["digest"], first["digest"],
        "the same layers made afresh"
    );
}

#[test]
fn one_changed_file_rebuilds_from_its_step_on() {
    let berth = Berth::new();
    let ctx = context(THREE_COPIES, &[("a", "a"), ("b", "b"), ("c", "c")]);
    let first = build(&berth, ctx.path(), "cf:change");
    fs::write(ctx.path().join("b"), "B").unwrap();
    let second = build(&berth, ctx.path(), "cf:change");
    assert_eq!(layer_steps(&second), [(2, true), (4, false), (5, false)]);
    let layers = |v: &Value| v["layers"].as_array().unwrap().clone();
    assert_eq!(layers(&second)[0], layers(&first)[0]);
    assert_ne!(layers(&second)[1], layers(&first)[1]);
    // c's content is unchanged, so its layer blob is the same; its step still ran, as its
    // key chains on b's.
    assert_eq!(layers(&second)[2], layers(&first)[2]);
    assert_ne!(second["digest"], first["digest"]);
}

#[test]
fn source_date_epoch_gives_the_same_digest_in_two_stores() {
    let files = [("a", "a"), ("dir/b", "b")];
    let recipe = "FROM scratch\nCOPY a dir /stuff/\nCMD [\"/a\"]\n";
    let (one, two) = (context(recipe, &files), context(recipe, &files));
    let status = Command::new("touch")
        .args(["-d", "1999-09-09"])
        .arg(two.path().join("a"))
        .status()
        .unwrap();
    assert!(status.success());
    let (berth_one, berth_two) = (Berth::new(), Berth::new());
    let first = build(&berth_one, one.path(), "cf:repro");
    let second = build(&berth_two, two.path(), "cf:repro");
    assert_eq!(first["layers_written"], 1);
    assert_eq!(second["layers_written"], 1);
    assert_eq!(first["digest"], second["digest"]);
    assert_eq!(first["config"], second["config"]);
}

/// Every path of `root` with its type, mode, owner and link target, and a file's content:
/// what must agree with buildah's tree (timestamps aside).
fn tree(root: &Path) -> Vec<(std::path::PathBuf, Node, Option<Vec<u8>>)> {
    scan(root)
        .into_iter()
        .map(|(rel, mut node)| {
            node.mtime = 0;
            let content = (node.kind == "file").then(|| fs::read(root.join(&rel)).unwrap());
            (rel, node, content)
        })
        .collect()
}

/// `buildah bud` of `ctx` with `args` (run in `cwd` if given) on a storage of its own under
/// `work` (vfs: plain directories, nothing mounted to undo), pushed to an OCI layout and
/// unpacked by umoci; returns the bundle (its tree is `rootfs/`).
fn buildah_build(work: &Path, ctx: &Path, args: &[&str], cwd: Option<&Path>) -> std::path::PathBuf {
    let (buildah, umoci) = (require_tool("buildah"), require_tool("umoci"));
    let buildah_cmd = |args: &[&str]| {
        let mut cmd = Command::new(&buildah);
        cmd.arg("--root").arg(work.join("root"));
        cmd.arg("--runroot").arg(work.join("runroot"));
        cmd.args(["--storage-driver", "vfs"]).args(args);
        cmd.env("TMPDIR", work);
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        cmd
    };
    run_ok(
        buildah_cmd(&["bud", "-q", "-t", "cf:cmp"])
            .args(args)
            .arg(ctx),
    );
    let layout = work.join("layout");
    let target = format!("oci:{}:cmp", layout.display());
    run_ok(&mut buildah_cmd(&["push", "-q", "cf:cmp", &target]));
    let bundle = work.join("bundle");
    run_ok(
        Command::new(&umoci)
            .args(["unpack", "--image"])
            .arg(format!("{}:cmp", layout.display()))
            .arg(&bundle),
    );
    bundle
}

#[test]
fn a_multi_stage_build_gives_the_same_tree_as_buildah() {
    require_root();
    let ctx = context(
        "FROM scratch AS files\n\
         COPY --chmod=0640 --chown=1000:1000 app/ /out/\n\
         FROM scratch\n\
         COPY --from=files /out /srv/\n\
         COPY conf.ini /etc/app/\n\
         WORKDIR /srv\n",
        &[
            ("app/hello.txt", "hi\n"),
            ("app/sub/d.txt", "deep\n"),
            ("conf.ini", "k=v\n"),
        ],
    );
    std::os::unix::fs::symlink("hello.txt", ctx.path().join("app/link")).unwrap();
    let work = TempDir::new().unwrap();
    let berth = Berth::new();
    build(&berth, ctx.path(), "cf:cmp");
    let ours = work.path().join("berth-rootfs");
    berth.ok(["image", "unpack", "cf:cmp", ours.to_str().unwrap()]);
    let bundle = buildah_build(work.path(), ctx.path(), &[], None);
    let theirs = tree(&bundle.join("rootfs"));
    assert!(theirs.len() > 6, "buildah's tree looks empty: {theirs:?}");
    assert_eq!(tree(&ours), theirs);
}

/// The RUN steps' lines of a build, with whether each came from the cache.
fn run_steps(built: &Value) -> Vec<(u64, bool)> {
    built["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["instruction"].as_str().unwrap_or("").starts_with("RUN "))
        .map(|s| (s["line"].as_u64().unwrap(), s["cached"].as_bool().unwrap()))
        .collect()
}

/// `berth build` that must succeed; its JSON and stderr (where RUN output goes).
fn build_with_stderr(cmd: &mut Command) -> (Value, String) {
    let out = cmd.args(["-o", "json"]).output().expect("run berth build");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "berth build failed: {stderr}");
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("berth build printed no JSON ({e}); stderr: {stderr}"));
    (json, stderr)
}

#[test]
fn run_steps_see_env_args_user_and_workdir_and_their_deletions_are_whiteouts() {
    require_root();
    let berth = Berth::new();
    busybox_image(&berth, "busybox:run");
    let ctx = context(
        "FROM busybox:run\n\
         ARG GREETING=hello\n\
         ENV WHO=world\n\
         WORKDIR /work\n\
         RUN echo \"$GREETING $WHO from $(pwd)\" > said && rm /etc/hostname && rm -r /root\n\
         RUN [\"/bin/sh\", \"-c\", \"mkdir -p /data && chown 65534:65534 /data\"]\n\
         USER 65534\n\
         RUN id -u > /data/uid\n\
         COPY Containerfile /tmp/\n",
        &[],
    );
    let mut cmd = build_cmd(&berth, ctx.path(), "cf:run");
    let (built, stderr) =
        build_with_stderr(cmd.args(["--build-arg", "GREETING=hi", "--network", "none"]));
    assert_eq!(run_steps(&built), [(5, false), (6, false), (8, false)]);
    assert!(stderr.contains("line 5: RUN /bin/sh -c echo"), "{stderr}");
    let unpacked = unpack(&berth, "cf:run");
    let root = unpacked.path().join("rootfs");
    assert_eq!(
        fs::read_to_string(root.join("work/said")).unwrap(),
        "hi world from /work\n"
    );
    assert_eq!(
        fs::read_to_string(root.join("data/uid")).unwrap(),
        "65534\n"
    );
    assert!(!root.join("etc/hostname").exists() && !root.join("root").exists());
    assert!(
        root.join("etc/passwd").exists(),
        "only what RUN deleted is gone"
    );
    let tmp = fs::metadata(root.join("tmp")).unwrap();
    assert_eq!(
        tmp.permissions().mode() & 0o7777,
        0o1777,
        "COPY into /tmp keeps its mode"
    );
    // The RUN layer carries OCI whiteouts for what it deleted, and nothing of the runtime's.
    let layer = built["layers"][1].as_str().unwrap();
    let listing = run_ok(Command::new("tar").arg("tzf").arg(berth.blob_path(layer)));
    let mut names: Vec<&str> = listing.lines().collect();
    names.sort();
    assert_eq!(
        names,
        [".wh.root", "etc/", "etc/.wh.hostname", "work/", "work/said"]
    );
}

#[test]
fn a_rebuild_runs_no_step_and_a_changed_copy_reruns_from_there() {
    require_root();
    let berth = Berth::new();
    busybox_image(&berth, "busybox:runcache");
    let ctx = context(
        "FROM busybox:runcache\n\
         RUN echo one > /one\n\
         COPY input /input\n\
         RUN cat /input /one > /both\n",
        &[("input", "v1\n")],
    );
    let build =
        |args: &[&str]| build_with_stderr(build_cmd(&berth, ctx.path(), "cf:runcache").args(args));
    let (first, _) = build(&["--network", "none"]);
    assert_eq!(run_steps(&first), [(2, false), (4, false)]);
    let (again, stderr) = build(&["--network", "none"]);
    assert_eq!(run_steps(&again), [(2, true), (4, true)]);
    assert!(
        !stderr.contains("line 2: RUN"),
        "a cached step does not run: {stderr}"
    );
    assert_eq!(again["digest"], first["digest"]);
    // Another network is another key: the step runs again.
    let (host, _) = build(&["--network", "host"]);
    assert_eq!(run_steps(&host), [(2, false), (4, false)]);
    fs::write(ctx.path().join("input"), "v2\n").unwrap();
    let (changed, _) = build(&["--network", "none"]);
    assert_eq!(run_steps(&changed), [(2, true), (4, false)]);
    let unpacked = unpack(&berth, "cf:runcache");
    let both = fs::read_to_string(unpacked.path().join("rootfs/both")).unwrap();
    assert_eq!(both, "v2\none\n");
}

#[test]
fn a_failing_run_names_its_line_and_exit_code_and_leaves_nothing_behind() {
    require_root();
    let berth = Berth::new();
    busybox_image(&berth, "busybox:runfail");
    let ctx = context(
        "FROM busybox:runfail\n\
         RUN echo fine > /fine\n\
         RUN echo the-step-says-why; exit 3\n",
        &[],
    );
    let cache_dir = berth.data_dir.path().join("build-cache");
    let err = build_err(&berth, ctx.path(), "cf:runfail");
    assert!(
        err.contains("line 3: RUN /bin/sh -c echo the-step-says-why; exit 3: exit code 3"),
        "{err}"
    );
    assert!(
        err.contains("the-step-says-why"),
        "the step's output is shown: {err}"
    );
    let entries = fs::read_dir(&cache_dir).unwrap().count();
    assert_eq!(entries, 1, "only the step that succeeded is cached");
    assert_eq!(berth.temp_files(), Vec::<std::path::PathBuf>::new());
    let data = berth.data_dir.path().to_str().unwrap().to_string();
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(&data), "a mount was left: {mountinfo}");
    // An empty RUN and an unknown network are refused before anything runs.
    let ctx = context("FROM busybox:runfail\nRUN [\"\"]\n", &[]);
    let err = build_err(&berth, ctx.path(), "cf:empty");
    assert!(
        err.contains("line 2: RUN") && err.contains("empty"),
        "{err}"
    );
    let err = run_err(build_cmd(&berth, ctx.path(), "cf:net").args(["--network", "bridge"]));
    assert!(
        err.contains("\"bridge\"") && err.contains("--network"),
        "{err}"
    );
}

/// A network namespace the test made; deleting it deletes its veth end, and with it the host's.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .output();
    }
}

/// A network namespace joined to the host by a veth on a /30 of its own, with a Python HTTP
/// server in it that logs each client's address. Removed on drop (server first).
struct Upstream {
    server: std::process::Child,
    _netns: Netns,
    log: std::path::PathBuf,
    addr: String,
    host_addr: String,
    _dir: TempDir,
}

impl Upstream {
    fn start() -> Self {
        require_tool("python3");
        let ip = require_tool("ip");
        let pid = std::process::id();
        let name = format!("bt-up-{pid}");
        let host_veth = format!("btu{}", pid % 100_000);
        let subnet = format!("10.214.{}", pid % 250);
        let (host_addr, addr) = (format!("{subnet}.1"), format!("{subnet}.2"));
        let run = |args: &[&str]| {
            run_ok(Command::new(&ip).args(args));
        };
        // A namespace left by an earlier run with the same pid goes first.
        drop(Netns(name.clone()));
        run(&["netns", "add", &name]);
        let netns = Netns(name.clone());
        run(&[
            "link", "add", &host_veth, "type", "veth", "peer", "name", "up0", "netns", &name,
        ]);
        run(&["addr", "add", &format!("{host_addr}/30"), "dev", &host_veth]);
        run(&["link", "set", &host_veth, "up"]);
        run(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{addr}/30"),
            "dev",
            "up0",
        ]);
        run(&["-n", &name, "link", "set", "up0", "up"]);
        run(&["-n", &name, "link", "set", "lo", "up"]);
        let dir = TempDir::new().unwrap();
        let www = dir.path().join("www");
        fs::create_dir(&www).unwrap();
        fs::write(www.join("hello.txt"), "from upstream\n").unwrap();
        let log_path = dir.path().join("server.log");
        let log = fs::File::create(&log_path).unwrap();
        let server = Command::new(&ip)
            .args([
                "netns",
                "exec",
                &name,
                "python3",
                "-m",
                "http.server",
                "8080",
            ])
            .args(["--bind", &addr])
            .current_dir(&www)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the upstream HTTP server");
        let upstream = Self {
            server,
            _netns: netns,
            log: log_path,
            addr,
            host_addr,
            _dir: dir,
        };
        let target = format!("{}:8080", upstream.addr);
        while std::net::TcpStream::connect(&target).is_err() {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        upstream
    }

    fn url(&self) -> String {
        format!("http://{}:8080/hello.txt", self.addr)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

#[test]
fn run_reaches_the_network_through_nat_and_none_cannot() {
    require_root();
    let upstream = Upstream::start();
    let berth = Berth::new();
    busybox_image(&berth, "busybox:nat");
    // -O - and no -T: busybox-static 1.35 wget crashes with -T or -O FILE writing to a file.
    let recipe = format!(
        "FROM busybox:nat\nRUN wget -q -O - {} > /got\n",
        upstream.url()
    );
    let ctx = context(&recipe, &[]);
    build(&berth, ctx.path(), "cf:nat");
    let unpacked = unpack(&berth, "cf:nat");
    let got = fs::read_to_string(unpacked.path().join("rootfs/got")).unwrap();
    assert_eq!(got, "from upstream\n");
    let log = fs::read_to_string(&upstream.log).unwrap();
    let hit = log
        .lines()
        .find(|l| l.contains("GET /hello.txt"))
        .expect("the server saw the request");
    assert!(
        hit.starts_with(&format!("{} ", upstream.host_addr)),
        "the request came masqueraded as the host's address {}: {hit}",
        upstream.host_addr
    );
    let none = run_err(build_cmd(&berth, ctx.path(), "cf:none").args(["--network", "none"]));
    assert!(
        none.contains("line 2: RUN") && none.contains("exit code"),
        "{none}"
    );
    let host = run_json(build_cmd(&berth, ctx.path(), "cf:host").args(["--network", "host"]));
    assert_eq!(run_steps(&host), [(2, false)]);
    assert_eq!(berth.temp_files(), Vec::<std::path::PathBuf>::new());
}

/// A busybox image with the files a runtime binds (/etc/hosts, /etc/resolv.conf) present:
/// buildah 1.28 commits the empty mount points it makes for missing ones into the image.
fn busybox_with_mount_points(berth: &Berth, tag: &str) {
    let rootfs = TempDir::new().unwrap();
    busybox_rootfs(rootfs.path());
    fs::write(rootfs.path().join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    fs::write(rootfs.path().join("etc/resolv.conf"), "").unwrap();
    build_image(berth, rootfs.path(), tag, "/bin/sh");
}

/// Two stages on busybox: RUNs delete a file, a directory and a lower layer's files, create
/// files with odd modes and owners, replace a directory (an opaque one in the upper dir), and
/// COPY --from and into /tmp.
const RUN_STAGES: &str = "ARG BASE\n\
    FROM $BASE AS build\n\
    RUN mkdir -p /out/sub && echo built > /out/result && echo deep > /out/sub/d \\\n\
        && chmod 0600 /out/result && ln -s result /out/link\n\
    FROM $BASE\n\
    COPY conf.ini /tmp/\n\
    RUN rm /bin/false /etc/group && rm -r /root && echo made > /etc/created \\\n\
        && mkdir -p /var/lib/app && chown 65534:65534 /var/lib/app && chmod 0750 /var/lib/app\n\
    RUN rm -r /var && mkdir -p /var/fresh && echo f > /var/fresh/f\n\
    COPY --from=build /out /srv/\n\
    WORKDIR /srv\n";

#[test]
fn a_multi_stage_build_with_run_gives_the_same_tree_as_buildah() {
    require_root();
    // Before anything is built: a missing tool fails the test at once.
    require_tool("buildah");
    require_tool("umoci");
    let berth = Berth::new();
    busybox_with_mount_points(&berth, "busybox:runcmp");
    let ctx = context(RUN_STAGES, &[("conf.ini", "k=v\n")]);
    let work = TempDir::new().unwrap();
    let built = run_json(
        build_cmd(&berth, ctx.path(), "cf:runcmp").args(["--build-arg", "BASE=busybox:runcmp"]),
    );
    assert_eq!(run_steps(&built).len(), 3);
    let ours = work.path().join("berth-rootfs");
    berth.ok(["image", "unpack", "cf:runcmp", ours.to_str().unwrap()]);
    // The RUN that replaced /var wrote an opaque directory; the one before it whiteouts.
    let layer = |n: usize| {
        let digest = built["layers"][n].as_str().unwrap();
        run_ok(Command::new("tar").arg("tzf").arg(berth.blob_path(digest)))
    };
    assert!(
        layer(3).lines().any(|l| l == "var/.wh..wh..opq"),
        "{}",
        layer(3)
    );
    assert!(
        layer(2).lines().any(|l| l == "bin/.wh.false"),
        "{}",
        layer(2)
    );
    // buildah reads the base from berth's store, an OCI layout (by a path relative to the data
    // dir: buildah names its build container after it, and a temp dir's random name has
    // capitals, which a container name may not); runc, as crun refuses this host's hybrid
    // cgroups.
    let args = [
        "--runtime",
        "runc",
        "--build-arg",
        "BASE=oci:images:busybox:runcmp",
    ];
    let bundle = buildah_build(work.path(), ctx.path(), &args, Some(berth.data_dir.path()));
    let theirs = tree(&bundle.join("rootfs"));
    for gone in ["bin/false", "etc/group", "root", "var/lib"] {
        assert!(
            !theirs.iter().any(|(p, ..)| p == Path::new(gone)),
            "buildah kept {gone}"
        );
    }
    assert!(theirs.iter().any(|(p, ..)| p == Path::new("srv/sub/d")));
    assert_eq!(tree(&ours), theirs);
}

#[test]
fn run_layers_are_reproducible_with_source_date_epoch() {
    require_root();
    let (one, two) = (Berth::new(), Berth::new());
    busybox_with_mount_points(&one, "busybox:runrepro");
    busybox_with_mount_points(&two, "busybox:runrepro");
    let ctx = context(RUN_STAGES, &[("conf.ini", "k=v\n")]);
    let build = |berth: &Berth| {
        run_json(
            build_cmd(berth, ctx.path(), "cf:runrepro")
                .args(["--no-cache", "--network", "none"])
                .args(["--build-arg", "BASE=busybox:runrepro"]),
        )
    };
    let first = build(&one);
    assert_eq!(run_steps(&first), [(3, false), (7, false), (9, false)]);
    let again = build(&one);
    let other = build(&two);
    assert_eq!(
        again["layers"], first["layers"],
        "RUN layers made afresh are the same"
    );
    assert_eq!(again["digest"], first["digest"]);
    // The base images differ (their files' mtimes): every layer above them is the same.
    let above_base = |v: &Value| v["layers"].as_array().unwrap()[1..].to_vec();
    assert_eq!(
        above_base(&other),
        above_base(&first),
        "and in another store"
    );
}

#[test]
fn concurrent_nat_steps_get_subnets_of_their_own() {
    require_root();
    let (one, two) = (Berth::new(), Berth::new());
    busybox_image(&one, "busybox:par");
    busybox_image(&two, "busybox:par");
    // The sleep keeps both steps' networks up at once.
    let ctx = context(
        "FROM busybox:par\nRUN cat /proc/net/route > /route && sleep 2\n",
        &[],
    );
    let mut builds: Vec<_> = [&one, &two]
        .iter()
        .map(|berth| {
            build_cmd(berth, ctx.path(), "cf:par")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start berth build")
        })
        .collect();
    for build in builds.drain(..) {
        let out = build.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "a concurrent build failed: {stderr}");
    }
    // /proc/net/route: interface, destination, gateway (hex); the default route's gateway is
    // the host side of the step's /30.
    let gateway = |berth: &Berth| {
        let unpacked = unpack(berth, "cf:par");
        let routes = fs::read_to_string(unpacked.path().join("rootfs/route")).unwrap();
        routes
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.get(1) == Some(&"00000000"))
            .map(|f| f[2].to_string())
            .unwrap_or_else(|| panic!("no default route in the step: {routes}"))
    };
    assert_ne!(gateway(&one), gateway(&two), "two steps shared a subnet");
}

#[test]
fn an_interrupted_run_step_is_killed_and_leaves_nothing_behind() {
    use std::io::BufRead as _;
    require_root();
    let berth = Berth::new();
    busybox_image(&berth, "busybox:int");
    let ctx = context("FROM busybox:int\nRUN echo started && sleep 600\n", &[]);
    let mut child = build_cmd(&berth, ctx.path(), "cf:int")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start berth build");
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    // The step's own line (its title, printed before it runs, holds the word too).
    while !seen.lines().any(|l| l == "started") {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "build ended: {seen}"
        );
        seen.push_str(&line);
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "an interrupted build succeeded");
    assert!(rest.contains("exit code 137"), "{rest}");
    assert!(!berth.image_names().contains(&"cf:int".to_string()));
    assert_eq!(berth.temp_files(), Vec::<std::path::PathBuf>::new());
    let data = berth.data_dir.path().to_str().unwrap().to_string();
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(&data), "a mount was left: {mountinfo}");
}
