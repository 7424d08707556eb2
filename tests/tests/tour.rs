//! docs/tour.md, run as written: every `$ ` command of its `console` blocks, in order, in one
//! bash (so `export`, variables and background jobs carry over), as root from the workspace
//! root, with a data dir of the test's own. Every command must exit 0, and a few outputs must
//! say what the tour claims they say.
//!
//! `BERTH_TOUR_WRITE=1` also writes the captured output back into docs/tour.md, under each
//! command: that is how the tour's output is captured.

use std::fs;
use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::{binary, require_root, workspace_root};

const TOUR: &str = "docs/tour.md";
const MARK: &str = "<<<berth-tour-command";
/// The tour's own names, cleaned up after it whatever happens.
const NETNS: &str = "berth-tour";
const CONTAINERS: [&str; 2] = ["tour-sleeper", "tour-oom"];
const DEADLINE: Duration = Duration::from_secs(600);

/// One `$ ` command of the tour and the output lines under it.
#[derive(Debug)]
struct Step {
    /// The command as written (continuation lines joined with newlines).
    command: String,
    /// Index of the command's first line in the file.
    line: usize,
}

/// The commands of the `console` blocks, in order.
fn steps(text: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut in_console = false;
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.starts_with("```") {
            in_console = !in_console && line.trim() == "```console";
            i += 1;
            continue;
        }
        if in_console && let Some(first) = line.strip_prefix("$ ") {
            let start = i;
            let mut command = first.to_string();
            while command.ends_with('\\') && i + 1 < lines.len() {
                i += 1;
                command.push('\n');
                command.push_str(lines[i]);
            }
            steps.push(Step {
                command,
                line: start,
            });
        }
        i += 1;
    }
    steps
}

/// The tour's text with each command's output replaced by `outputs[k]`.
fn rewrite(text: &str, outputs: &[String]) -> String {
    let mut out = String::new();
    let mut in_console = false;
    let mut k = 0;
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with("```") {
            in_console = !in_console && line.trim() == "```console";
            out.push_str(line);
            out.push('\n');
            continue;
        }
        if in_console && line.starts_with("$ ") {
            out.push_str(line);
            out.push('\n');
            let mut last = line;
            while last.ends_with('\\') {
                let next = lines.next().expect("a continuation line");
                out.push_str(next);
                out.push('\n');
                last = next;
            }
            // Skip the old output: up to the next command or the end of the block.
            while let Some(next) = lines.peek() {
                if next.starts_with("$ ") || next.starts_with("```") {
                    break;
                }
                lines.next();
            }
            if let Some(captured) = outputs.get(k) {
                out.push_str(captured);
                if !captured.is_empty() && !captured.ends_with('\n') {
                    out.push('\n');
                }
            }
            k += 1;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Cleans up what the tour makes, also when it fails half-way: its bash's process group (so a
/// `berth up` left running is stopped), its containers, its netns, its data dir.
struct Cleanup {
    pgid: Option<i32>,
    data_dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            let group = nix::unistd::Pid::from_raw(-pgid);
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGINT);
            let until = Instant::now() + Duration::from_secs(60);
            while Instant::now() < until && nix::sys::signal::kill(group, None).is_ok() {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        }
        for name in CONTAINERS {
            let _ = Command::new(binary("berth"))
                .arg("--data-dir")
                .arg(&self.data_dir)
                .args(["rm", "-f", name])
                .output();
        }
        let _ = Command::new("ip").args(["netns", "delete", NETNS]).output();
        let _ = fs::remove_dir_all(&self.data_dir);
    }
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one end-to-end scenario whose steps build on each other, read top to bottom"
)]
fn every_command_of_the_tour_works_as_written() {
    require_root();
    let root = workspace_root();
    let text = fs::read_to_string(root.join(TOUR)).expect("read docs/tour.md");
    let steps = steps(&text);
    assert!(steps.len() > 20, "too few commands found in the tour");
    let data_dir = tempfile::Builder::new()
        .prefix("berth-tour-data-")
        .tempdir()
        .expect("temp data dir")
        .keep();
    let mut cleanup = Cleanup {
        pgid: None,
        data_dir: data_dir.clone(),
    };

    // One script: a marker before each command and its exit code after it.
    let mut script = String::from("exec 2>&1\n");
    for (k, step) in steps.iter().enumerate() {
        script.push_str(&format!("echo '{MARK} {k}>>>'\n{}\n", step.command));
        script.push_str(&format!("echo \"{MARK} {k} rc=$?>>>\"\n"));
    }
    let bin_dir = binary("berth").parent().unwrap().to_path_buf();
    let path = format!(
        "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &script])
        .current_dir(&root)
        .env("BERTH_DATA_DIR", &data_dir)
        .env("PATH", path)
        .env_remove("BERTH_SCHEDULER")
        .env_remove("BERTH_AGENT")
        .env_remove("BERTH_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start bash");
    cleanup.pgid = Some(i32::try_from(child.id()).expect("a pid fits i32"));
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = stdout.read_to_string(&mut all);
        all
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for bash") {
            break status;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the tour did not finish within {DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let all = reader.join().expect("reader thread");
    assert!(status.success(), "bash: {status}\n{all}");

    // Split the output by command.
    let mut outputs = Vec::new();
    let mut codes = Vec::new();
    for (k, step) in steps.iter().enumerate() {
        let begin = format!("{MARK} {k}>>>\n");
        let end = format!("{MARK} {k} rc=");
        let from = all
            .find(&begin)
            .unwrap_or_else(|| panic!("no output for command {k}: {}\n{all}", step.command))
            + begin.len();
        let to = from
            + all[from..]
                .find(&end)
                .unwrap_or_else(|| panic!("command {k} never ended: {}\n{all}", step.command));
        let rc: i32 = all[to + end.len()..]
            .split(">>>")
            .next()
            .and_then(|c| c.parse().ok())
            .expect("an exit code");
        outputs.push(all[from..to].to_string());
        codes.push(rc);
    }
    if std::env::var_os("BERTH_TOUR_WRITE").is_some() {
        fs::write(root.join(TOUR), rewrite(&text, &outputs)).expect("write docs/tour.md");
    }
    for (k, step) in steps.iter().enumerate() {
        assert_eq!(
            codes[k],
            0,
            "docs/tour.md line {}: `{}` exited {}:\n{}",
            step.line + 1,
            step.command,
            codes[k],
            outputs[k]
        );
    }

    // What the tour says the output shows.
    let output_of = |needle: &str| -> &str {
        // The command itself, or else the first that contains `needle`.
        let k = steps
            .iter()
            .position(|s| s.command == needle)
            .or_else(|| steps.iter().position(|s| s.command.contains(needle)))
            .unwrap_or_else(|| panic!("no tour command contains {needle:?}"));
        &outputs[k]
    };
    assert!(output_of("tar -tvzf").contains("bin/.wh.vi"));
    assert!(output_of("ls $WORK/rootfs/bin/vi").contains("hello from layer 2"));
    assert!(output_of("ls $WORK/rootfs/bin/vi").contains("hidden by the whiteout"));
    assert!(output_of("I am pid").contains("I am pid 1 on inside"));
    assert!(output_of("memory.limit_in_bytes").contains("67108864"));
    assert!(output_of("cpu.cfs_quota_us").contains("50000"));
    let ns = output_of("/ns/pid");
    let links: Vec<&str> = ns.lines().collect();
    assert!(
        links.len() == 2 && links[0].starts_with("pid:[") && links[0] != links[1],
        "{ns}"
    );
    assert!(output_of("berth explain tour-sleeper").contains("isolated"));
    assert!(output_of("tail /dev/zero").contains("exit code 137"));
    assert!(output_of("dmesg").contains("task=tail"));
    let compare = output_of("berth compare");
    assert!(compare.contains("kernel seen"), "{compare}");
    assert!(compare.contains("(the host's)"), "{compare}");
    assert!(output_of("berth deploy -f examples/web.toml").contains("2/2 ready"));
    assert!(output_of("berth explain web").contains("node tour-node"));
    assert!(
        output_of("kill -INT $UP").contains("stopped"),
        "{}",
        output_of("kill -INT $UP")
    );
}

#[test]
fn the_tour_parser_finds_commands_and_rewrites_only_outputs() {
    let text = "intro\n```console\n$ echo a \\\n  b\nold\n$ true\n```\n```sh\n$ not run\n```\n";
    let found = steps(text);
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].command, "echo a \\\n  b");
    assert_eq!(found[1].command, "true");
    let rewritten = rewrite(text, &["a b\n".to_string(), String::new()]);
    assert_eq!(
        rewritten,
        "intro\n```console\n$ echo a \\\n  b\na b\n$ true\n```\n```sh\n$ not run\n```\n"
    );
}
