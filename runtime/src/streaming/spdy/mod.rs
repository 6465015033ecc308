//! SPDY/3.1, as far as Kubernetes' streaming protocols use it.
//!
//! Our own implementation: crates.io has no maintained SPDY/3.1 crate for a server (what
//! exists is either abandoned or a client-only multiplexer over WebSocket transports), and
//! the subset kubelet, kubectl and crictl need is small: framing with zlib-compressed header
//! blocks ([`frame`]) and a connection that opens, accepts, half-closes and resets streams
//! ([`conn`]). Written from the SPDY/3.1 draft and the behaviour of moby/spdystream, the
//! implementation Kubernetes' clients use.

pub mod conn;
mod dictionary;
pub mod frame;

pub use conn::{Connection, Role, Stream, StreamReader, StreamWriter};
pub use frame::Headers;
