//! Containers: one file per CRI call, the record store, and the seams to the image store
//! and the OCI spec builder.

mod create;
mod list;
pub mod prepare;
mod remove;
mod reopen_log;
mod start;
pub mod status;
mod stop;
pub mod store;
mod update;

pub use store::{Container, ContainerRecord, ContainerStore};
