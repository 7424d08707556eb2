//! One module per subcommand group.

pub mod approve;
pub mod certs;
pub mod compare;
pub mod delete;
pub mod deploy;
pub mod exec;
pub mod explain;
pub mod history;
pub mod image;
pub mod logs;
pub mod nodes;
pub mod ps;
pub mod reject;
pub mod rm;
pub mod rollback;
pub mod run;
pub mod scale;
pub mod status;
pub mod stop;
pub mod token;
pub mod up;
