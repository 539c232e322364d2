//! The client API: one [`Dispatcher`] that maps JSON-RPC requests to methods, and
//! transports that only move bytes to and from it (HTTP in [`http`]).
//!
//! Request flow: transport bytes → [`Dispatcher::handle`] → `proto::jsonrpc` parsing
//! → [`methods`] → response bytes. Errors become JSON-RPC errors in one place,
//! [`error`].

pub mod dispatch;
pub mod error;
pub mod http;
pub mod methods;

use std::sync::Arc;
use std::time::Instant;

use cirrus_proto::api::Ports;

use crate::p2p::P2pHandle;
use crate::store::Store;
use crate::store::writer::Writer;

pub use dispatch::Dispatcher;

/// What the methods need from the rest of the node.
pub struct Context {
    pub store: Arc<Store>,
    pub writer: Writer,
    pub peer_id: String,
    pub started: Instant,
    pub ports: Ports,
    pub max_batch: usize,
    pub p2p: P2pHandle,
    pub stun: std::sync::Arc<crate::stun::StunState>,
}
