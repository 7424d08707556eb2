//! OCI image layouts built with umoci: a layout image and the umoci commands that change it,
//! and a busybox image layout that several tests start from.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::busybox::busybox_rootfs;
use crate::tools::{require_root, require_tool, run_ok};

/// `umoci`, not yet run.
fn umoci() -> Command {
    Command::new(require_tool("umoci"))
}

/// One image, `TAG`, of an OCI layout that umoci writes.
#[derive(Debug, Clone)]
pub struct UmociImage {
    /// The layout directory.
    pub layout: PathBuf,
    pub tag: String,
}

impl UmociImage {
    /// `umoci init` of a new layout at `layout`, then `umoci new` of an empty image `tag`.
    pub fn create(layout: &Path, tag: &str) -> Self {
        run_ok(umoci().args(["init", "--layout"]).arg(layout));
        let image = Self {
            layout: layout.to_path_buf(),
            tag: tag.to_string(),
        };
        run_ok(umoci().args(["new", "--image", &image.image_arg()]));
        image
    }

    /// `LAYOUT:TAG`, as umoci's `--image` takes it.
    pub fn image_arg(&self) -> String {
        format!("{}:{}", self.layout.display(), self.tag)
    }

    /// `oci:LAYOUT:TAG`, as skopeo names it.
    pub fn skopeo_ref(&self) -> String {
        format!("oci:{}", self.image_arg())
    }

    /// `umoci unpack` into `bundle` (which must not exist); the tree is `bundle/rootfs`.
    pub fn unpack(&self, bundle: &Path) {
        umoci_image_bundle("unpack", &[], &self.image_arg(), bundle);
    }

    /// `umoci repack` of `bundle` as a new layer of the image.
    pub fn repack(&self, bundle: &Path) {
        umoci_image_bundle("repack", &[], &self.image_arg(), bundle);
    }

    /// `umoci repack --refresh-bundle`: a new layer, and the bundle stays usable for the next.
    pub fn repack_refreshing(&self, bundle: &Path) {
        umoci_image_bundle("repack", &["--refresh-bundle"], &self.image_arg(), bundle);
    }

    /// `umoci config --image LAYOUT:TAG ARGS...`.
    pub fn config(&self, args: &[&str]) {
        run_ok(
            umoci()
                .args(["config", "--image", &self.image_arg()])
                .args(args),
        );
    }

    /// `umoci gc` of the layout.
    pub fn gc(&self) {
        run_ok(umoci().args(["gc", "--layout"]).arg(&self.layout));
    }
}

fn umoci_image_bundle(command: &str, flags: &[&str], image: &str, bundle: &Path) {
    run_ok(
        umoci()
            .arg(command)
            .args(flags)
            .args(["--image", image])
            .arg(bundle),
    );
}

/// A one-layer busybox image `tag` for linux/amd64 with cmd `/bin/sh`, in a new layout at
/// `dir/layout`; its bundle stays at `dir/bundle`. Needs root (umoci keeps owners).
pub fn busybox_layout(dir: &Path, tag: &str) -> UmociImage {
    require_root();
    let image = UmociImage::create(&dir.join("layout"), tag);
    let bundle = dir.join("bundle");
    image.unpack(&bundle);
    busybox_rootfs(&bundle.join("rootfs"));
    image.repack(&bundle);
    image.config(&[
        "--config.cmd",
        "/bin/sh",
        "--architecture",
        "amd64",
        "--os",
        "linux",
    ]);
    image
}
