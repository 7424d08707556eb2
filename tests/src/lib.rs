//! Fixtures shared by the end-to-end tests: the binaries under test with per-test data dirs,
//! tools that must be installed, a headless chromium (with accessibility checks, and client
//! certificates from an NSS database) and the dashboard it visits, a busybox root filesystem,
//! a cached Debian userland, a loopback DNS upstream, OCI layouts built with umoci and altered
//! by hand, a real registry, and a comparison of root filesystem trees.

pub mod a11y;
pub mod agent_node;
pub mod bench;
mod berth;
pub mod browser;
mod busybox;
pub mod cluster;
pub mod dashboard;
mod debian;
mod dns_upstream;
pub mod etcd;
pub mod fake_node;
pub mod fake_scheduler;
pub mod layout;
mod local;
pub mod nssdb;
pub mod podman_matrix;
pub mod pyvenv;
mod registry;
pub mod services;
pub mod systemd_guest;
mod tools;
pub mod tree_compare;
mod umoci;

pub use berth::{Berth, binary, run_json, workspace_root};
pub use busybox::{BUSYBOX_APPLETS, PATH_ENV, build_image, busybox_image, busybox_rootfs};
pub use debian::{DEBIAN_CACHE, debian_base_cmd, debian_image, debian_layout, debian_rootfs};
pub use dns_upstream::{UPSTREAM_ADDR, UPSTREAM_NAME, dns_upstream};
pub use local::{LOCAL_IMAGE, LocalEnv};
pub use registry::{Registry, free_loopback_addr, http_status};
pub use tools::{
    files_holding, output, output_with_stdin, poll_until, require_root, require_tool, run_err,
    run_ok, skopeo_copy,
};
pub use tree_compare::compare_trees;
pub use umoci::{UmociImage, busybox_layout};
