//! What the integration tests share: real `cirrus` processes on loopback
//! ([`TestNode`], and [`TestNet`] for more than one), running the CLI ([`cli`]),
//! waiting for a condition ([`wait_until`]), records to write ([`records`]), and a
//! libp2p peer inside the test process that speaks the node's protocols
//! ([`rogue`]). Two modules serve a few files each and are not re-exported here,
//! since both define `IO_TIMEOUT`: STUN from the test process ([`stun`]) and the
//! client API over WebSocket and raw UDP ([`transport`]).
//!
//! Every node gets its own temp data dir and port 0, and a `TestNet` its own
//! loopback addresses, so tests run in parallel. Nothing waits a fixed time:
//! conditions are polled until they hold or [`TIMEOUT`] passes.

#![allow(dead_code, unused_imports)] // each test binary uses its own subset

pub mod cli;
pub mod net;
pub mod node;
pub mod records;
pub mod rogue;
pub mod stun;
pub mod transport;
pub mod wait;

pub use cli::{cirrus, cirrus_in, fails, must_not_start};
pub use net::TestNet;
pub use node::{
    TestNode, entry_for, metric_in, ready_line, run_command, run_command_on, terminate, wait_lists,
};
pub use records::*;
pub use wait::{POLL, TIMEOUT, wait_until, wait_until_every};

pub const BIN: &str = env!("CARGO_BIN_EXE_cirrus");
