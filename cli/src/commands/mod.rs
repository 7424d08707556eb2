//! One module per subcommand group.

pub(crate) mod approve;
pub(crate) mod build;
pub(crate) mod certs;
pub(crate) mod compare;
pub(crate) mod config;
pub(crate) mod delete;
pub(crate) mod deploy;
pub(crate) mod exec;
pub(crate) mod explain;
pub(crate) mod history;
pub(crate) mod image;
pub(crate) mod logs;
pub(crate) mod nodes;
pub(crate) mod ps;
pub(crate) mod reject;
pub(crate) mod rm;
pub(crate) mod rollback;
pub(crate) mod run;
pub(crate) mod scale;
pub(crate) mod secret;
pub(crate) mod services;
pub(crate) mod status;
pub(crate) mod stop;
pub(crate) mod token;
pub(crate) mod up;
pub(crate) mod volume;
