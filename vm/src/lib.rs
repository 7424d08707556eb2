//! Guests under qemu for berth's tests and `berth compare`: the host's Debian kernel from /boot,
//! initramfs images packed here (files, `ldd` libraries, busybox, kernel modules), cached by a
//! hash of their inputs, booted under KVM or TCG (a cached probe decides), with the console
//! kept for diagnostics and a virtio-serial port carrying the guest's results out.

pub mod accel;
pub mod cache;
pub mod console;
mod cpio;
mod error;
pub mod guest;
pub mod initramfs;
pub mod kernel;

pub use accel::Accel;
pub use error::{Error, Result};
pub use guest::{BootSpec, ConsoleLine, Outcome, boot, boot_observed};
pub use initramfs::Builder;
pub use kernel::Kernel;

/// The qemu binary the guests run under (Debian: qemu-system-x86).
pub const QEMU: &str = "qemu-system-x86_64";

/// The path of `name` on PATH, or an error naming the Debian package that has it.
pub fn find_tool(name: &str, package: &str) -> Result<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Missing(format!("{name} is not installed (Debian: {package})")))
}
