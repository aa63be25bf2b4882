//! The `isms` command: the CLI, the supervisor of `isms up`, and the entry
//! point of every service process. This is the one crate that knows every
//! service; the services meet only through the kernel.

pub mod cli;
pub mod client;
pub mod config;
pub mod join;
pub mod service;
pub mod supervisor;
