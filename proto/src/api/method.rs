//! Every method of the API, with what it takes, what it returns and how it may fail:
//! the dispatcher matches on [`Method`], and the OpenRPC document is built from the
//! same table, so the two cannot drift apart.

use schemars::{JsonSchema, Schema, SchemaGenerator};

use super::{
    AddPeerParams, AdminParams, DbHash, Done, GetParams, GetRatingParams, GetResult, ListParams,
    ListResult, NodeInfo, PeerInfo, PunchParams, PutParams, PutResult, RatingResult, Reachability,
    RelayParams, SubscribeParams, Subscribed,
};
use crate::jsonrpc::{
    FORBIDDEN, INVALID_RECORD, INVALID_SIGNATURE, PEER_UNAVAILABLE, PUNCH_TARGET,
    STORAGE_UNAVAILABLE, TOO_LARGE,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    GetNodeInfo,
    GetPeerInfo,
    GetDbHash,
    Put,
    Get,
    List,
    GetRating,
    Punch,
    Relay,
    AddPeer,
    Shutdown,
    Subscribe,
    Unsubscribe,
    GetReachability,
    Discover,
}

/// A method's params: none, or the fields of one struct.
type Params = Option<fn(&mut SchemaGenerator) -> Schema>;

fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

impl Method {
    pub const ALL: &'static [Method] = &[
        Method::GetNodeInfo,
        Method::GetPeerInfo,
        Method::GetDbHash,
        Method::Put,
        Method::Get,
        Method::List,
        Method::GetRating,
        Method::Punch,
        Method::Relay,
        Method::AddPeer,
        Method::Shutdown,
        Method::Subscribe,
        Method::Unsubscribe,
        Method::GetReachability,
        Method::Discover,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Method::GetNodeInfo => "getnodeinfo",
            Method::GetPeerInfo => "getpeerinfo",
            Method::GetDbHash => "getdbhash",
            Method::Put => "put",
            Method::Get => "get",
            Method::List => "list",
            Method::GetRating => "getrating",
            Method::Punch => "punch",
            Method::Relay => "relay",
            Method::AddPeer => "addpeer",
            Method::Shutdown => "shutdown",
            Method::Subscribe => "subscribe",
            Method::Unsubscribe => "unsubscribe",
            Method::GetReachability => "getreachability",
            Method::Discover => "rpc.discover",
        }
    }

    pub fn from_name(name: &str) -> Option<Method> {
        Method::ALL.iter().copied().find(|m| m.name() == name)
    }

    pub fn summary(self) -> &'static str {
        match self {
            Method::GetNodeInfo => {
                "This node: peer id, version, uptime, ports, listen addresses, STUN data, database hash, peer count."
            }
            Method::GetPeerInfo => {
                "One entry per connected peer: address, direction, ping, agent, STUN data, the root it last announced."
            }
            Method::GetDbHash => {
                "The Merkle root over all records, the number of slots held and the count and sum of live ratings."
            }
            Method::Put => "Store an author-signed record; it spreads to every node.",
            Method::Get => {
                "One record by author, key and kind; with `proof`, a Merkle proof of presence or absence against `root`."
            }
            Method::List => {
                "Records in slot order, filtered by author, kind and key prefix, a page at a time."
            }
            Method::GetRating => "The count, sum and average of the live ratings of a target.",
            Method::Punch => {
                "Ask a connected peer to open its NAT toward the caller's own endpoint (hole punching)."
            }
            Method::Relay => {
                "Run a JSON-RPC request on a connected peer over the swarm; the result is the peer's whole response object."
            }
            Method::AddPeer => "Admin: dial a peer.",
            Method::Shutdown => "Admin: stop the node cleanly, after answering.",
            Method::Subscribe => "WebSocket only: receive `record` and `peer` notifications.",
            Method::Unsubscribe => "WebSocket only: stop the notifications of these topics.",
            Method::GetReachability => {
                "The most recent punch and relay calls that went through this node, and the path each took."
            }
            Method::Discover => "This document.",
        }
    }

    /// The struct whose fields are the method's params (by name), if it takes any.
    fn params(self) -> Params {
        match self {
            Method::GetNodeInfo
            | Method::GetPeerInfo
            | Method::GetDbHash
            | Method::GetReachability
            | Method::Discover => None,
            Method::Put => Some(schema::<PutParams>),
            Method::Get => Some(schema::<GetParams>),
            Method::List => Some(schema::<ListParams>),
            Method::GetRating => Some(schema::<GetRatingParams>),
            Method::Punch => Some(schema::<PunchParams>),
            Method::Relay => Some(schema::<RelayParams>),
            Method::AddPeer => Some(schema::<AddPeerParams>),
            Method::Shutdown => Some(schema::<AdminParams>),
            Method::Subscribe | Method::Unsubscribe => Some(schema::<SubscribeParams>),
        }
    }

    /// The params' schema (an object), if the method takes any.
    pub fn params_schema(self, g: &mut SchemaGenerator) -> Option<Schema> {
        self.params().map(|f| f(g))
    }

    pub fn result_schema(self, g: &mut SchemaGenerator) -> Schema {
        match self {
            Method::GetNodeInfo => schema::<NodeInfo>(g),
            Method::GetPeerInfo => schema::<Vec<PeerInfo>>(g),
            Method::GetDbHash => schema::<DbHash>(g),
            Method::Put => schema::<PutResult>(g),
            Method::Get => schema::<GetResult>(g),
            Method::List => schema::<ListResult>(g),
            Method::GetRating => schema::<RatingResult>(g),
            Method::Punch | Method::AddPeer | Method::Shutdown => schema::<Done>(g),
            Method::Relay => schemars::json_schema!({
                "type": "object",
                "description": "The peer's JSON-RPC response object, as it sent it."
            }),
            Method::Subscribe | Method::Unsubscribe => schema::<Subscribed>(g),
            Method::GetReachability => schema::<Reachability>(g),
            Method::Discover => schemars::json_schema!({
                "type": "object",
                "description": "An OpenRPC 1.3 document."
            }),
        }
    }

    /// The errors of this method beyond those any request can get (parse, invalid
    /// request or params, rate, size, cookie, internal).
    pub fn errors(self) -> &'static [i64] {
        match self {
            Method::Put => &[INVALID_SIGNATURE, INVALID_RECORD, STORAGE_UNAVAILABLE],
            Method::Punch => &[PEER_UNAVAILABLE, PUNCH_TARGET],
            Method::Relay => &[PEER_UNAVAILABLE, TOO_LARGE],
            Method::AddPeer => &[FORBIDDEN, PEER_UNAVAILABLE],
            Method::Shutdown => &[FORBIDDEN],
            _ => &[],
        }
    }

    /// A read whose answer the UDP amplification budget bounds: the one kind of
    /// request a source that has not shown it receives may run.
    pub fn is_plain_read(self) -> bool {
        matches!(
            self,
            Method::GetNodeInfo
                | Method::GetPeerInfo
                | Method::GetDbHash
                | Method::Get
                | Method::List
                | Method::GetRating
                | Method::GetReachability
                | Method::Discover
        )
    }

    /// May come through `relay`: a relayed request cannot relay again, aim a punch,
    /// or administer the node it reaches.
    pub fn may_be_relayed(self) -> bool {
        !matches!(
            self,
            Method::Relay | Method::Punch | Method::AddPeer | Method::Shutdown
        )
    }

    /// Only over WebSocket, as a single request.
    pub fn websocket_only(self) -> bool {
        matches!(self, Method::Subscribe | Method::Unsubscribe)
    }
}
