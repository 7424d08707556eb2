//! berth's OCI image store: import, pull, build and unpack layered OCI images, and prepare
//! container root filesystems from them.

pub mod digest;
pub mod fsutil;
pub mod progress;
pub mod reference;
pub mod store;

pub use reference::Reference;
pub use store::{Image, ImageRecord, Store, StoreError};
