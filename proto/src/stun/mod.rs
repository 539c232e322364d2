//! STUN (RFC 8489), sans-IO: the message codec, the Binding server's answer to a
//! request, the client's request and its reading of the answer, TCP framing, the
//! RFC 7983 test that tells STUN from other datagrams on a shared socket, and the
//! project's own comprehension-optional attributes that let a node prove which peer
//! sent a request.
//!
//! Nothing here opens a socket: bytes and the source address go in, bytes to send
//! (and what was learned) come out.

mod attribute;
mod binding;
mod error;
pub mod keepalive;
mod message;
pub mod nat;
pub mod transaction;

pub use attribute::{Attribute, attr};
pub use binding::{
    AMPLIFICATION, BindingAnswer, ProvenPeer, binding_indication, binding_request, handle_binding,
    parse_binding_response, peer_signing_message,
};
pub use error::StunError;
pub use message::{Class, Message, frame_len, is_stun};

pub const MAGIC_COOKIE: u32 = 0x2112_A442;
pub const HEADER_LEN: usize = 20;
pub const BINDING: u16 = 0x001;
/// Largest message this implementation reads or writes.
pub const MAX_MESSAGE: usize = 2048;
