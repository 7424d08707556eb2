//! berth's OCI image store: import, pull, build and unpack layered OCI images, and prepare
//! container root filesystems from them.

pub mod build;
pub mod bundle;
pub mod containerfile;
pub mod digest;
pub(crate) mod fsutil;
pub mod import;
pub(crate) mod kind;
pub mod platform;
pub mod progress;
pub(crate) mod reference;
pub mod registry;
pub mod snapshot;
pub mod store;
pub mod unpack;
pub mod volumes;

pub use kind::ErrorKind;
pub use reference::Reference;
pub use store::{Image, ImageRecord, Store, StoreError};
