//! The API's handlers, one file per resource. Each is a method of
//! [`Gate`](crate::Gate) that takes the authorized [`Call`](crate::request::Call)
//! and answers a reply or an error.

mod auth;
mod data;
mod doees;
mod invocations;
mod logs;
mod mqtt;
mod projects;
mod secrets;
pub mod system;
mod users;
