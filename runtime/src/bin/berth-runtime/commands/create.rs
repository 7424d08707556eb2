//! `create ID --bundle DIR [--pid-file F] [--console-socket S] [--no-pivot]`.

use std::path::{Path, PathBuf};

/// Flags shared by `create` and `run`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Container id.
    pub id: String,
    /// Bundle directory (config.json + rootfs).
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Write init's pid here.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master when process.terminal is set.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// chroot instead of pivot_root (for ramfs roots).
    #[arg(long)]
    pub no_pivot: bool,
    /// Accepted for runc compatibility: no session keyring is made anyway.
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass descriptors 3..3+N on to the container's process.
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
}

impl Args {
    pub(crate) fn options(self, root: &Path, systemd_cgroup: bool) -> berth_runtime::CreateOptions {
        berth_runtime::CreateOptions {
            root: root.to_path_buf(),
            id: self.id,
            bundle: self.bundle,
            pid_file: self.pid_file,
            console_socket: self.console_socket,
            no_pivot: self.no_pivot,
            preserve_fds: self.preserve_fds,
            systemd_cgroup,
        }
    }
}

pub(crate) fn run(root: &Path, args: Args, systemd_cgroup: bool) -> anyhow::Result<()> {
    berth_runtime::create(&args.options(root, systemd_cgroup))?;
    Ok(())
}
