//! runc command-line behaviours callers rely on: `--flag=value`, JSON log records with
//! runc's keys, and a pty master sent over `--console-socket`.

mod common;

use std::fs;
use std::io::{IoSliceMut, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;

use common::TestContainer;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use serde_json::json;

#[test]
fn json_log_records_use_runcs_keys() {
    let c = TestContainer::new("jsonlog", &["true"]);
    let log = c.bundle().join("runtime.log");
    let out = c.output([
        format!("--log={}", log.display()),
        "--log-format=json".to_string(),
        "start".to_string(),
        c.id.clone(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not exist"), "{stderr}");
    let text = fs::read_to_string(&log).unwrap();
    let record: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(record["level"], "error");
    assert!(record["msg"].as_str().unwrap().contains(&c.id), "{record}");
    assert!(record["time"].as_str().unwrap().ends_with('Z'), "{record}");
}

#[test]
fn terminal_master_goes_over_the_console_socket() {
    let mut c = TestContainer::new(
        "console",
        &["sh", "-c", "test -t 0 && test -t 1 && echo tty-ok"],
    );
    c.config["process"]["terminal"] = json!(true);
    c.write_config();
    let err = c.err(["create", "--bundle", c.bundle().to_str().unwrap(), &c.id]);
    assert!(err.contains("--console-socket"), "{err}");

    let socket = c.bundle().join("console.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    c.ok([
        "create",
        "--bundle",
        c.bundle().to_str().unwrap(),
        "--console-socket",
        socket.to_str().unwrap(),
        &c.id,
    ]);
    let (stream, _) = listener.accept().unwrap();
    let mut name = [0u8; 256];
    let mut iov = [IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        std::os::fd::AsRawFd::as_raw_fd(&stream),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .unwrap();
    let fd = msg
        .cmsgs()
        .unwrap()
        .find_map(|m| match m {
            ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
            _ => None,
        })
        .expect("a pty master in SCM_RIGHTS");
    // SAFETY: the descriptor arrived with the message and nothing else owns it.
    let mut master = fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    c.ok(["start", &c.id]);
    c.wait_status("stopped");
    let mut out = Vec::new();
    // EIO once the slave side is closed ends the read, as for any pty.
    let _ = master.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("tty-ok"), "{out:?}");
    c.ok(["delete", &c.id]);
}

/// `run` with a non-close-on-exec file at descriptors 3 and 4, as a careless caller leaves them.
fn run_with_inherited_fds(c: &TestContainer, extra: &[&str]) -> String {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let file = fs::File::open(c.bundle().join("config.json")).unwrap();
    let raw = file.as_raw_fd();
    let mut cmd = c.cmd(["run"]);
    cmd.args(extra).arg("--bundle").arg(c.bundle()).arg(&c.id);
    // SAFETY: only dup2 and fcntl, which are async-signal-safe, run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for target in [3, 4] {
                // dup2 onto itself keeps close-on-exec: clear it explicitly.
                if libc::dup2(raw, target) < 0 || libc::fcntl(target, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn only_preserved_descriptors_reach_the_container() {
    // How many of init's descriptors point at the file the caller left open.
    let c = TestContainer::new(
        "fds",
        &[
            "sh",
            "-c",
            "echo $(ls -l /proc/$$/fd | grep -c config.json)",
        ],
    );
    assert_eq!(run_with_inherited_fds(&c, &[]), "0");
    assert_eq!(run_with_inherited_fds(&c, &["--preserve-fds=1"]), "1");
}
