//! Mapping behaviour from what STUN servers saw (RFC 4787 terms, tested the RFC 5780
//! way: one local socket, two servers).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Nat {
    /// The mapped address is the local address: no NAT on the path.
    None,
    /// One local socket kept its external address and port towards two servers.
    EndpointIndependent,
    /// One local socket got different external ports towards two servers.
    EndpointDependent,
    /// Not enough observations yet (fewer than two servers for any socket).
    Unknown,
}

/// One observation: a local socket, the server asked, and what that server saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub local: SocketAddr,
    pub server: SocketAddr,
    pub mapped: SocketAddr,
}

/// Classify from observations. `None` wins if any socket is seen as itself;
/// otherwise any socket seen under two different mappings by two servers makes the
/// NAT endpoint-dependent; a socket seen identically by two servers makes it
/// endpoint-independent.
pub fn classify(obs: &[Observation]) -> Nat {
    if obs.iter().any(|o| o.mapped == o.local) {
        return Nat::None;
    }
    let mut independent = false;
    for (i, a) in obs.iter().enumerate() {
        for b in &obs[i + 1..] {
            if a.local == b.local && a.server != b.server {
                if a.mapped != b.mapped {
                    return Nat::EndpointDependent;
                }
                independent = true;
            }
        }
    }
    if independent {
        Nat::EndpointIndependent
    } else {
        Nat::Unknown
    }
}
