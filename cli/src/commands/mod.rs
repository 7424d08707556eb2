//! One module per subcommand group.

pub mod exec;
pub mod image;
pub mod logs;
pub mod ps;
pub mod rm;
pub mod run;
pub mod stop;
