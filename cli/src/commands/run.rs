//! `berth run`: an image's container straight through the runtime library, in the foreground
//! (output and exit code passed through) or detached under berth-shim.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use berth_images::bundle::{Network, RunOverrides, parse_memory};
use berth_runtime::security::SecurityOptions;

use crate::Context;
use crate::container::layout::{Paths, write_json};
use crate::container::{detached, mounts, pty, setup};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Run in the background and print the container id.
    #[arg(short, long)]
    detach: bool,
    /// Keep stdin attached.
    #[arg(short, long)]
    interactive: bool,
    /// Give the container a terminal.
    #[arg(short, long)]
    tty: bool,
    /// The container's name (and id); random hex otherwise.
    #[arg(long)]
    name: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to take it from here).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Memory limit: 64m, 1g, 512k or bytes.
    #[arg(short, long, value_parser = parse_memory_arg)]
    memory: Option<i64>,
    /// CPUs the container may use, as a fraction (0.5 = half a CPU).
    #[arg(long)]
    cpus: Option<f64>,
    /// Most processes the container may have.
    #[arg(long)]
    pids_limit: Option<i64>,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    read_only: bool,
    /// uid[:gid] or name[:group].
    #[arg(short, long)]
    user: Option<String>,
    /// none: loopback only; host: the host's network.
    #[arg(long, default_value = "none", value_parser = ["none", "host"])]
    network: String,
    /// The working directory inside the container.
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// Replace the image's entrypoint (an empty string clears it).
    #[arg(long)]
    entrypoint: Option<String>,
    /// The container's hostname (default: its id).
    #[arg(long)]
    hostname: Option<String>,
    /// seccomp=unconfined, seccomp=PATH (a Docker or OCI JSON profile) or
    /// no-new-privileges[=true|false]. Without a seccomp option berth's default profile applies.
    #[arg(long = "security-opt", value_name = "OPT")]
    security_opt: Vec<String>,
    /// Add capabilities (NET_ADMIN or CAP_NET_ADMIN, comma-separated; ALL for every one).
    #[arg(long = "cap-add", value_name = "CAP", value_delimiter = ',')]
    cap_add: Vec<String>,
    /// Drop capabilities (ALL drops every one; --cap-add then adds back).
    #[arg(long = "cap-drop", value_name = "CAP", value_delimiter = ',')]
    cap_drop: Vec<String>,
    /// Every capability, no seccomp filter, the host's devices, /proc and /sys unmasked and
    /// writable, no_new_privileges off.
    #[arg(long)]
    privileged: bool,
    /// Mount a host path or a named volume (made on first use): /HOST:/CTR[:ro] or
    /// NAME:/CTR[:ro]. Binding / or /proc needs --privileged.
    #[arg(short = 'v', long = "volume", value_name = "SRC:DST[:ro]")]
    volume: Vec<String>,
    /// A tmpfs at PATH: PATH[:size=64m,mode=1777,ro].
    #[arg(long, value_name = "PATH[:OPTS]")]
    tmpfs: Vec<String>,
    /// type=bind|volume|tmpfs,src=..,dst=..[,ro][,tmpfs-size=..][,tmpfs-mode=..]
    #[arg(long = "mount", value_name = "type=..,src=..,dst=..")]
    mount: Vec<String>,
    image: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn parse_memory_arg(text: &str) -> Result<i64, String> {
    parse_memory(text).map_err(|e| e.to_string())
}

fn security(args: &Args) -> anyhow::Result<SecurityOptions> {
    let mut security = SecurityOptions {
        privileged: args.privileged,
        cap_add: args.cap_add.clone(),
        cap_drop: args.cap_drop.clone(),
        ..Default::default()
    };
    for opt in &args.security_opt {
        security.add_security_opt(opt)?;
    }
    security.validate()?;
    Ok(security)
}

/// 32 random hex digits.
pub(crate) fn random_id() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    let mut f = std::fs::File::open("/dev/urandom")?;
    std::io::Read::read_exact(&mut f, &mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn overrides(args: &Args, id: &str) -> anyhow::Result<RunOverrides> {
    let mut env = Vec::new();
    for item in &args.env {
        match item.split_once('=') {
            Some((k, v)) => env.push((k.to_string(), v.to_string())),
            None => {
                if let Ok(v) = std::env::var(item) {
                    env.push((item.clone(), v));
                }
            }
        }
    }
    if let Some(cpus) = args.cpus {
        berth_images::bundle::cpus_to_cfs(cpus)?;
    }
    if args.pids_limit.is_some_and(|n| n == 0 || n < -1) {
        bail!("--pids-limit must be positive (or -1 for no limit)");
    }
    Ok(RunOverrides {
        args: (!args.command.is_empty()).then(|| args.command.clone()),
        entrypoint: args.entrypoint.as_ref().map(|e| {
            if e.is_empty() {
                vec![]
            } else {
                vec![e.clone()]
            }
        }),
        env,
        user: args.user.clone(),
        workdir: args.workdir.clone(),
        hostname: Some(
            args.hostname
                .clone()
                .unwrap_or_else(|| id.chars().take(12).collect()),
        ),
        memory_bytes: args.memory,
        cpus: args.cpus,
        pids_limit: args.pids_limit,
        read_only: args.read_only,
        network: if args.network == "host" {
            Network::Host
        } else {
            Network::None
        },
        tty: args.tty,
        cgroups_path: Some(PathBuf::from(format!("/berth/{id}"))),
    })
}

/// Runs the container; returns the exit code `berth` itself exits with.
pub(crate) fn run(args: Args, ctx: &Context) -> anyhow::Result<i32> {
    if args.detach && args.tty {
        bail!("-d with -t is not supported: a detached container has no terminal to attach");
    }
    let id = match &args.name {
        Some(name) => {
            berth_runtime::state::validate_id(name).context("invalid --name")?;
            name.clone()
        }
        None => random_id()?,
    };
    let overrides = overrides(&args, &id)?;
    let security = security(&args)?;
    let mounts = mounts::parse_all(&args.volume, &args.tmpfs, &args.mount)?;
    let request = setup::Request {
        id: &id,
        name: &id,
        image: &args.image,
        remove: args.rm,
        detached: args.detach,
        security: &security,
        mounts: &mounts,
    };
    let (guard, meta) = setup::prepare(&ctx.data_dir, &request, &overrides)?;
    let paths = Paths::new(&ctx.data_dir, &id);
    if args.detach {
        detached::start(&ctx.data_dir, &paths, &meta, guard)?;
        println!("{id}");
        return Ok(0);
    }
    let console = paths.dir.join("console.sock");
    let listener = if args.tty {
        Some(pty::listen(&console)?)
    } else {
        None
    };
    if !args.interactive && !args.tty {
        let devnull = std::fs::File::open("/dev/null")?;
        nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&devnull), 0).context("dup2")?;
    }
    let created = berth_runtime::create(&berth_runtime::CreateOptions {
        root: paths.runtime_root.clone(),
        id: id.clone(),
        bundle: paths.dir.clone(),
        pid_file: None,
        console_socket: listener.as_ref().map(|_| console.clone()),
        no_pivot: false,
        preserve_fds: 0,
        systemd_cgroup: false,
    })?;
    let master = listener.as_ref().map(pty::receive_master).transpose()?;
    drop(listener);
    let _ = std::fs::remove_file(&console);
    berth_runtime::forward::forward_to(created.pid)?;
    berth_runtime::start(&paths.runtime_root, &id)?;
    if let Some(master) = &master {
        let raw = if args.interactive {
            pty::RawMode::enter()?
        } else {
            None
        };
        pty::copy_window_size(std::os::fd::AsFd::as_fd(master));
        let proxied = pty::proxy(master, args.interactive);
        drop(raw);
        proxied?;
    }
    let code = loop {
        match nix::sys::wait::waitpid(created.pid, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(status) => break berth_runtime::container::exit_code(status),
            Err(e) => return Err(e).context("waiting for the container"),
        }
    };
    // Read before delete removes the cgroup with its counters.
    let oom_killed = !args.rm && berth_shim::oom_killed(&paths.dir, &id, false);
    berth_runtime::delete(&paths.runtime_root, &id, true)?;
    if args.rm {
        drop(guard);
    } else {
        // The shim's exit record, so that ps reads one format whoever ran the container.
        let record = berth_shim::ExitRecord {
            exit_code: code,
            oom_killed,
            finished_at_ms: berth_runtime::sys::time::now_ms(),
        };
        write_json(&paths.shim().exit(), &record)?;
        let _ = guard.disarm();
    }
    Ok(code)
}
