//! Containers: one file per CRI call, the record store, and the seams to the image store
//! and the OCI spec builder.

mod create;
mod list;
pub mod prepare;
mod remove;
mod start;
pub mod status;
mod stop;
pub mod store;

pub use store::{Container, ContainerRecord, ContainerStore};
