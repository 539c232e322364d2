//! Known peers (peer id → addresses, last seen), kept so a restarted node can redial
//! the network without its bootstrap list.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

use super::tables::PEERS;
use super::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KnownPeer {
    /// Peer id bytes (libp2p multihash).
    #[serde(skip)]
    pub peer: Vec<u8>,
    /// Multiaddrs as strings.
    pub addrs: Vec<String>,
    /// Unix seconds.
    pub last_seen: u64,
    /// The `stun` object the peer last announced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stun: Option<cirrus_proto::api::StunInfo>,
}

impl Store {
    /// Remember `peers` in one transaction, keeping at most `max` (the least
    /// recently seen are forgotten first). Not made durable at once: these are
    /// dialing hints, and the next durable commit takes them along.
    pub fn save_peers(&self, peers: &[KnownPeer], max: usize) -> Result<(), StoreError> {
        if peers.is_empty() {
            return Ok(());
        }
        let mut txn = self.db()?.begin_write()?;
        txn.set_durability(redb::Durability::None)?;
        {
            let mut t = txn.open_table(PEERS)?;
            for p in peers {
                let json = serde_json::to_vec(p).expect("serializes");
                t.insert(p.peer.as_slice(), json.as_slice())?;
            }
            while t.len()? as usize > max {
                let Some(oldest) = oldest_peer(&t)? else {
                    break;
                };
                t.remove(oldest.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    pub fn known_peers(&self) -> Result<Vec<KnownPeer>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let t = txn.open_table(PEERS)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            // A record we cannot read is skipped, not fatal: it is only a dialing hint.
            if let Ok(mut p) = serde_json::from_slice::<KnownPeer>(v.value()) {
                p.peer = k.value().to_vec();
                out.push(p);
            }
        }
        Ok(out)
    }
}

fn oldest_peer(
    t: &impl ReadableTable<&'static [u8], &'static [u8]>,
) -> Result<Option<Vec<u8>>, StoreError> {
    let mut oldest: Option<(u64, Vec<u8>)> = None;
    for entry in t.iter()? {
        let (k, v) = entry?;
        let seen = serde_json::from_slice::<KnownPeer>(v.value()).map_or(0, |p| p.last_seen);
        if oldest.as_ref().is_none_or(|(s, _)| seen < *s) {
            oldest = Some((seen, k.value().to_vec()));
        }
    }
    Ok(oldest.map(|(_, k)| k))
}
