//! The UDP API (SPEC "UDP API"), sans-IO: framing a large answer in fragments and
//! reassembling it ([`fragment`]), the anti-amplification cookie ([`cookie`]), the
//! server's rules per datagram ([`Endpoint`]) and one client call ([`UdpCall`]).
//! Nothing here opens a socket: bytes and the time go in, bytes to send come out.

pub mod call;
pub mod cookie;
pub mod endpoint;
pub mod fragment;

pub use call::{CallError, Progress, Retransmit, UdpCall};
pub use cookie::{
    AmplificationGuard, cookie_answer, cookie_asked, request_id, strip_cookie, with_cookie,
};
pub use endpoint::{Endpoint, Incoming, Outcome, Reply, Response, Rpc};
pub use fragment::{Fragment, Reassembler, datagrams, parse_fragment, wire_len};

/// A response up to this size goes as one plain JSON datagram.
pub const MAX_PLAIN: usize = 1200;
/// First byte of a fragment.
pub const FRAGMENT_TAG: u8 = 0xCF;
/// Tag, message number (u32), index (u16), count (u16).
pub const FRAGMENT_HEADER: usize = 9;
/// JSON bytes per fragment, so a fragment is at most MAX_PLAIN bytes on the wire.
pub const FRAGMENT_PAYLOAD: usize = MAX_PLAIN - FRAGMENT_HEADER;
/// To an address that has not shown it receives, at most this many times the bytes
/// it sent.
pub const AMPLIFICATION: usize = 3;
/// Largest UDP payload over IPv4; a request larger than this cannot come by UDP.
pub const MAX_DATAGRAM: usize = 65_507;
/// Requests are padded with JSON whitespace to this size, so that the cookie
/// answer fits three times the request.
pub const MIN_REQUEST: usize = 64;
