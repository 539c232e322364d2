//! The API methods, one function each. They take checked params and return a result
//! value; framing and batching are the dispatcher's job.

use cirrus_proto::api::{
    AddPeerParams, AdminParams, Done, GetParams, GetRatingParams, GetResult, LIST_DEFAULT_LIMIT,
    LIST_MAX_LIMIT, ListParams, ListResult, NodeInfo, PunchParams, PutParams, ReachRole,
    Reachability, RecordView, RelayParams, Transport,
};
use cirrus_proto::peer;
use cirrus_proto::record::Slot;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use std::net::IpAddr;

use super::Context;
use super::error::ApiError;
use crate::store::{ListQuery, Stored};

pub fn params<T: DeserializeOwned>(p: Map<String, Value>) -> Result<T, ApiError> {
    serde_json::from_value(Value::Object(p)).map_err(|e| ApiError::Params(e.to_string()))
}

fn to_value<T: serde::Serialize>(v: T) -> Result<Value, ApiError> {
    Ok(serde_json::to_value(v).expect("API results serialize"))
}

fn view(s: Stored) -> RecordView {
    RecordView {
        record: s.record,
        id: s.id,
    }
}

/// The CPU part of `put`: parse, check limits and signature, compute the id. The
/// store part happens in the writer, batched with other puts.
pub fn prepare_put(p: Map<String, Value>) -> Result<Stored, ApiError> {
    let PutParams { record } = params(p)?;
    record.verify()?;
    let id = record.id();
    Ok(Stored { record, id })
}

pub async fn getnodeinfo(ctx: &Context) -> Result<Value, ApiError> {
    let listen = ctx
        .network
        .listen_addrs()
        .await?
        .iter()
        .map(ToString::to_string)
        .collect();
    let peers = ctx.network.connections().await?.len();
    to_value(NodeInfo {
        peer_id: ctx.peer_id.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime: ctx.started.elapsed().as_secs(),
        ports: ctx.ports.clone(),
        listen,
        peers,
        stun: ctx.stun.info(true),
        db: ctx.store.db_hash()?,
    })
}

pub async fn getpeerinfo(ctx: &Context) -> Result<Value, ApiError> {
    to_value(ctx.peers.info(&ctx.network).await?)
}

/// Admin methods change the node, not the data: they need the token from
/// `<data-dir>/admin.token` as `token`, from loopback too (a web page in the
/// operator's browser reaches loopback, SPEC "Admin methods").
fn check_admin(ctx: &Context, given: &str) -> Result<(), ApiError> {
    // Compared in constant time: the token is a secret.
    let equal = given.len() == ctx.admin_token.len()
        && given
            .bytes()
            .zip(ctx.admin_token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if equal {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
    }
}

/// `addpeer {addr, token}`: dial a multiaddr.
pub async fn addpeer(ctx: &Context, p: Map<String, Value>) -> Result<Value, ApiError> {
    let token = p.get("token").and_then(Value::as_str).unwrap_or_default();
    check_admin(ctx, token)?;
    let AddPeerParams { addr, .. } = params(p)?;
    let addr: libp2p::Multiaddr = addr
        .parse()
        .map_err(|_| ApiError::Params(format!("{addr:?} is not a multiaddr")))?;
    ctx.network.dial(addr).await?;
    to_value(Done::OK)
}

/// `shutdown {token}`: stop the node cleanly (after answering).
pub fn shutdown(ctx: &Context, p: Map<String, Value>) -> Result<Value, ApiError> {
    let token = p.get("token").and_then(Value::as_str).unwrap_or_default();
    check_admin(ctx, token)?;
    let AdminParams { .. } = params(p)?;
    tracing::info!("shutdown requested over the API");
    // The node stops in order: answers in flight, this one included, go out first.
    ctx.shutdown.cancel();
    to_value(Done::OK)
}

/// Ask a connected peer to open its NAT toward a client's endpoint (the rendezvous
/// side of hole punching, docs/nat.md). Only toward the requester's own address:
/// otherwise anyone could aim the peer's packets at a third party.
pub async fn punch(ctx: &Context, p: Map<String, Value>, from: IpAddr) -> Result<Value, ApiError> {
    let PunchParams {
        peer_id,
        endpoint,
        transport,
        guess,
    } = params(p)?;
    if guess.is_some() && transport != Transport::Udp {
        return Err(ApiError::Params("port guessing is for UDP only".into()));
    }
    let peer: libp2p::PeerId = peer_id
        .parse()
        .map_err(|_| ApiError::Params(format!("peerId {peer_id:?} is not a peer id")))?;
    if canonical(endpoint.ip()) != canonical(from) {
        return Err(ApiError::PunchTarget {
            endpoint: endpoint.ip(),
            from,
        });
    }
    ctx.reach
        .punch(ReachRole::Rendezvous, peer_id, endpoint, transport);
    let req = peer::Request::Punch {
        endpoint,
        transport,
        guess,
    };
    match ctx.network.ask_peer(peer, req).await? {
        peer::Response::Punching => to_value(Done::OK),
        peer::Response::Refused(why) => Err(ApiError::Peer(format!("the peer refused: {why}"))),
        _ => Err(ApiError::Peer("the peer answered something else".into())),
    }
}

/// Run a JSON-RPC request on a connected peer, over the swarm; the result is the
/// peer's whole response object. A relayed request cannot itself be a `relay`.
pub async fn relay(
    ctx: &Context,
    p: Map<String, Value>,
    client: Option<IpAddr>,
) -> Result<Value, ApiError> {
    let RelayParams { peer_id, request } = params(p)?;
    let peer: libp2p::PeerId = peer_id
        .parse()
        .map_err(|_| ApiError::Params(format!("peerId {peer_id:?} is not a peer id")))?;
    if request.get("method").and_then(Value::as_str) == Some("relay") {
        return Err(ApiError::Params(
            "a relayed request cannot be a relay".into(),
        ));
    }
    let bytes = serde_json::to_vec(&request).expect("serializes");
    ctx.reach
        .relay(ReachRole::Rendezvous, peer_id, client, &bytes);
    match ctx
        .network
        .ask_peer(peer, peer::Request::Relay(bytes.into()))
        .await?
    {
        peer::Response::Relay(answer) if answer.len() > ctx.max_answer_bytes => {
            Err(ApiError::TooLarge(format!(
                "the peer's answer is {} bytes, over the budget of {} for one message",
                answer.len(),
                ctx.max_answer_bytes
            )))
        }
        peer::Response::Relay(answer) => serde_json::from_slice(&answer)
            .map_err(|e| ApiError::Peer(format!("the peer's answer is not JSON: {e}"))),
        peer::Response::Refused(why) => Err(ApiError::Peer(format!("the peer refused: {why}"))),
        _ => Err(ApiError::Peer("the peer answered something else".into())),
    }
}

pub fn getreachability(ctx: &Context) -> Result<Value, ApiError> {
    to_value(Reachability {
        events: ctx.reach.events(),
    })
}

pub fn getdbhash(ctx: &Context) -> Result<Value, ApiError> {
    to_value(ctx.store.db_hash()?)
}

pub fn get(ctx: &Context, p: Map<String, Value>) -> Result<Value, ApiError> {
    let GetParams {
        author,
        key,
        kind,
        proof,
    } = params(p)?;
    let slot = Slot { author, kind, key };
    if proof {
        let (stored, proof, root) = ctx.store.get_with_proof(&slot)?;
        to_value(GetResult {
            record: stored.map(view),
            root: Some(root),
            proof: Some(proof),
        })
    } else {
        to_value(GetResult {
            record: ctx.store.get(&slot)?.map(view),
            root: None,
            proof: None,
        })
    }
}

pub fn list(ctx: &Context, p: Map<String, Value>) -> Result<Value, ApiError> {
    let ListParams {
        author,
        kind,
        prefix,
        after,
        limit,
    } = params(p)?;
    let limit = limit.unwrap_or(LIST_DEFAULT_LIMIT);
    if limit == 0 || limit > LIST_MAX_LIMIT {
        return Err(ApiError::Params(format!(
            "limit must be 1 to {LIST_MAX_LIMIT}"
        )));
    }
    let prefix = prefix.unwrap_or_default();
    if prefix.chars().any(char::is_control) {
        return Err(ApiError::Params(
            "prefix must not contain control characters".into(),
        ));
    }
    let (records, next) = ctx.store.list(&ListQuery {
        author,
        kind,
        prefix,
        after,
        limit,
    })?;
    to_value(ListResult {
        records: records.into_iter().map(view).collect(),
        next,
    })
}

pub fn getrating(ctx: &Context, p: Map<String, Value>) -> Result<Value, ApiError> {
    let GetRatingParams { target } = params(p)?;
    to_value(ctx.store.rating(&target)?)
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
