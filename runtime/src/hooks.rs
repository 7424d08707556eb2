//! Runs OCI hooks: each gets the container state as JSON on stdin and must exit 0 within its
//! timeout.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use oci_spec::runtime::Hook;

use crate::error::{Error, Result};

/// Runs `hooks` in order; the first failure stops the rest and is returned.
pub(crate) fn run_all(kind: &'static str, hooks: &[Hook], state_json: &[u8]) -> Result<()> {
    for hook in hooks {
        run_one(kind, hook, state_json)?;
    }
    Ok(())
}

fn run_one(kind: &'static str, hook: &Hook, state_json: &[u8]) -> Result<()> {
    let fail = |reason: String| Error::Hook {
        hook: kind,
        path: hook.path().clone(),
        reason,
    };
    let mut cmd = Command::new(hook.path());
    if let Some(args) = hook.args() {
        // args[0] is the hook's argv[0], as in execve.
        if let Some((first, rest)) = args.split_first() {
            std::os::unix::process::CommandExt::arg0(&mut cmd, first);
            cmd.args(rest);
        }
    }
    cmd.env_clear();
    for kv in hook.env().as_deref().unwrap_or_default() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| fail(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin closes the pipe: EPIPE is not its failure.
        if let Err(e) = stdin.write_all(state_json)
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!("writing state: {e}")));
        }
    }
    if let Some(secs) = hook.timeout() {
        let timeout = Duration::from_secs(u64::try_from(secs).unwrap_or(0));
        let pid = i32::try_from(child.id())
            .map_err(|_| fail(format!("pid {} is out of range", child.id())))?;
        if !crate::sys::pidfd::wait_exit(pid, timeout) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!("timed out after {secs} s")));
        }
    }
    let status = child.wait().map_err(|e| fail(e.to_string()))?;
    if status.success() {
        Ok(())
    } else {
        Err(fail(format!("exited with {status}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(json: serde_json::Value) -> Hook {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn hooks_get_state_on_stdin_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = |n: u32| {
            hook(serde_json::json!({
                "path": "/bin/sh",
                "args": ["sh", "-c", format!("echo {n} $(cat) >> {}", out.display())],
            }))
        };
        run_all("prestart", &[script(1), script(2)], br#"{"id":"x"}"#).unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "1 {\"id\":\"x\"}\n2 {\"id\":\"x\"}\n"
        );
    }

    #[test]
    fn failing_hook_stops_the_rest() {
        let failing = hook(serde_json::json!({"path": "/bin/false", "args": ["false"]}));
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let after = hook(serde_json::json!({
            "path": "/bin/touch", "args": ["touch", marker]
        }));
        let err = run_all("poststart", &[failing, after], b"{}").unwrap_err();
        assert!(
            err.to_string().contains("poststart hook /bin/false"),
            "{err}"
        );
        assert!(!marker.exists());
    }

    #[test]
    fn hook_timeout_kills_it() {
        let slow = hook(serde_json::json!({
            "path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1
        }));
        let err = run_all("createRuntime", &[slow], b"{}").unwrap_err();
        assert!(err.to_string().contains("timed out"), "{err}");
    }
}
