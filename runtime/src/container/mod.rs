//! Containers: one file per CRI call, the record store, and the seams to the image store
//! and the OCI spec builder.

mod attach;
mod create;
mod exec;
pub mod exec_sync;
mod list;
mod mount_targets;
pub mod prepare;
mod remove;
mod reopen_log;
mod start;
pub mod status;
mod stop;
pub mod store;
mod trash;
mod update;

pub use exec_sync::ExecOutput;
pub use store::{Container, ContainerRecord, ContainerStore};
pub use trash::PendingRemovals;
