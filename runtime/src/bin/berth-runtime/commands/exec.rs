//! `exec [--process FILE | ARGS...] [--tty] [--console-socket S] [--detach] [--pid-file F]
//! [--cwd D] [--env K=V]... [--user UID[:GID]] [--cap CAP]... ID`: the process comes from
//! `--process` (runc's process.json) or from the container's config.json with the flags on top.

use std::path::{Path, PathBuf};

use anyhow::Context;
use oci_spec::runtime::Process;

use super::ExitWith;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// JSON file holding the process to run (`-` for stdin).
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    /// Allocate a pseudo-terminal (sent over --console-socket).
    #[arg(short, long)]
    pub tty: bool,
    /// Unix socket that receives the pty master.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Return once the process started.
    #[arg(short, long)]
    pub detach: bool,
    /// Write the process's host pid here.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Working directory inside the container.
    #[arg(long)]
    pub cwd: Option<String>,
    /// Environment variables K=V added to the container's.
    #[arg(short, long)]
    pub env: Vec<String>,
    /// UID[:GID] to run as.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Additional capability (CAP_NET_ADMIN or NET_ADMIN).
    #[arg(short, long)]
    pub cap: Vec<String>,
    /// Set no_new_privs for the process.
    #[arg(long)]
    pub no_new_privs: bool,
    /// Accepted for runc compatibility; this host enforces no AppArmor.
    #[arg(long)]
    pub apparmor: Option<String>,
    /// Accepted for runc compatibility; this host enforces no SELinux.
    #[arg(long)]
    pub process_label: Option<String>,
    /// Pass descriptors 3..3+N on to the process.
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    /// Container id.
    pub id: String,
    /// The command and its arguments (without --process).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

fn read_process(path: &Path) -> anyhow::Result<Process> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading the process from stdin")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    serde_json::from_str(&text).with_context(|| format!("invalid process JSON {}", path.display()))
}

fn parse_user(text: &str) -> anyhow::Result<(u32, Option<u32>)> {
    let bad = || anyhow::anyhow!("--user {text:?}: expected UID[:GID] (numbers)");
    let (uid, gid) = match text.split_once(':') {
        Some((u, g)) => (u, Some(g.parse().map_err(|_| bad())?)),
        None => (text, None),
    };
    Ok((uid.parse().map_err(|_| bad())?, gid))
}

/// The container's process with the command line's changes, as runc builds it.
fn process_from_flags(root: &Path, args: &Args) -> anyhow::Result<Process> {
    anyhow::ensure!(
        !args.args.is_empty(),
        "exec needs a command or --process FILE"
    );
    let state = berth_runtime::state(root, &args.id)?;
    let spec = berth_runtime::spec::load_bundle(&state.oci.bundle)?.spec;
    let mut p = spec.process().clone().unwrap_or_default();
    p.set_args(Some(args.args.clone()));
    p.set_terminal(Some(args.tty));
    if let Some(cwd) = &args.cwd {
        p.set_cwd(PathBuf::from(cwd));
    }
    if !args.env.is_empty() {
        let mut env = p.env().clone().unwrap_or_default();
        for kv in &args.env {
            let key = kv.split('=').next().unwrap_or_default();
            env.retain(|e| e.split('=').next() != Some(key));
            env.push(kv.clone());
        }
        p.set_env(Some(env));
    }
    if let Some(user) = &args.user {
        let (uid, gid) = parse_user(user)?;
        let mut u = p.user().clone();
        u.set_uid(uid);
        if let Some(gid) = gid {
            u.set_gid(gid);
        }
        p.set_user(u);
    }
    if args.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if !args.cap.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        for name in &args.cap {
            let upper = name.to_ascii_uppercase();
            let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
            let cap: oci_spec::runtime::Capability =
                serde_json::from_value(serde_json::json!(format!("CAP_{bare}")))
                    .map_err(|_| anyhow::anyhow!("--cap {name:?}: unknown capability"))?;
            let add = |set: &Option<oci_spec::runtime::Capabilities>| {
                let mut set = set.clone().unwrap_or_default();
                set.insert(cap);
                Some(set)
            };
            caps.set_bounding(add(caps.bounding()));
            caps.set_effective(add(caps.effective()));
            caps.set_permitted(add(caps.permitted()));
        }
        p.set_capabilities(Some(caps));
    }
    Ok(p)
}

pub(crate) fn run(root: &Path, args: Args) -> anyhow::Result<()> {
    let mut process = match &args.process {
        Some(path) => read_process(path)?,
        None => process_from_flags(root, &args)?,
    };
    if args.tty {
        process.set_terminal(Some(true));
    }
    let opts = berth_runtime::exec::ExecOptions {
        root: root.to_path_buf(),
        id: args.id,
        process,
        console_socket: args.console_socket,
        pid_file: args.pid_file,
        preserve_fds: args.preserve_fds,
    };
    let started = berth_runtime::exec::exec(&opts)?;
    if args.detach {
        return Ok(());
    }
    match berth_runtime::exec::wait(started)? {
        0 => Ok(()),
        code => Err(ExitWith(u8::try_from(code).unwrap_or(255)).into()),
    }
}
