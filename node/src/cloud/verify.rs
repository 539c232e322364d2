//! A verified read (SPEC "Verified reads"). No single node is trusted:
//!
//! 1. Ask several nodes for `getdbhash`; while their roots differ (writes still
//!    spreading), ask those that answered again, for up to `settle`.
//! 2. Take the root a strict majority of the nodes asked report. A node that did
//!    not answer still counts as asked, so knocking honest nodes off the network
//!    does not hand the majority to the rest.
//! 3. Read the record with its proof from a node of that majority; check the proof
//!    against that node's root and the majority root, and the record against the
//!    proof (signature, slot, id = the proof's leaf). A node whose answer fails is
//!    caught and penalised, and the next majority node is asked.
//! 4. Penalise the nodes that reported another root or none.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cirrus_proto::api::{DbHash, GetResult, RecordView};
use cirrus_proto::merkle::Hash;
use cirrus_proto::record::Slot;
use serde_json::json;

use super::{Cloud, CloudError, Penalty};

/// Rounds of (roots, then a proof) before giving up on a root that keeps moving.
const ROUNDS: usize = 3;
const SETTLE_STEP: Duration = Duration::from_millis(250);

/// The root a strict majority of the asked nodes report, and who said what.
#[derive(Debug, Clone, PartialEq)]
pub struct Majority {
    pub root: Hash,
    pub agreed: Vec<String>,
    pub disagreed: Vec<(String, Hash)>,
    pub unresponsive: Vec<(String, String)>,
    pub asked: usize,
}

#[derive(Debug, Clone)]
pub struct VerifiedRead {
    /// The record, or `None` when the proof shows the slot empty.
    pub record: Option<RecordView>,
    pub majority: Majority,
    /// The node whose proof was checked.
    pub served_by: String,
    /// Majority nodes whose answer failed a check, and why.
    pub caught: Vec<(String, String)>,
}

/// The strict-majority root among `answers` (one per node asked).
pub fn majority(answers: &[(String, Result<Hash, String>)]) -> Result<Majority, CloudError> {
    let mut by_root: BTreeMap<Hash, Vec<String>> = BTreeMap::new();
    let mut unresponsive = Vec::new();
    for (node, a) in answers {
        match a {
            Ok(root) => by_root.entry(*root).or_default().push(node.clone()),
            Err(e) => unresponsive.push((node.clone(), e.clone())),
        }
    }
    let asked = answers.len();
    let mut ranked: Vec<(Hash, Vec<String>)> = by_root.into_iter().collect();
    ranked.sort_by_key(|r| std::cmp::Reverse(r.1.len()));
    match ranked.first() {
        Some((root, agreed)) if 2 * agreed.len() > asked => Ok(Majority {
            root: *root,
            agreed: agreed.clone(),
            disagreed: ranked[1..]
                .iter()
                .flat_map(|(r, ns)| ns.iter().map(move |n| (n.clone(), *r)))
                .collect(),
            unresponsive,
            asked,
        }),
        _ => {
            let mut split: Vec<String> = ranked
                .iter()
                .map(|(r, ns)| {
                    format!(
                        "{} report {}… ({})",
                        ns.len(),
                        &hex::encode(r)[..12],
                        ns.join(", ")
                    )
                })
                .collect();
            if !unresponsive.is_empty() {
                let who: Vec<&str> = unresponsive.iter().map(|(n, _)| n.as_str()).collect();
                split.push(format!("{} did not answer ({})", who.len(), who.join(", ")));
            }
            Err(CloudError::Split(format!(
                "{asked} nodes asked: {}",
                if split.is_empty() {
                    "none answered".into()
                } else {
                    split.join("; ")
                }
            )))
        }
    }
}

/// What a node's `get` with proof amounts to.
enum Judged {
    Bad(String),
    /// It proves against another root than the majority's (the root moved on).
    Moved,
    Good(Option<RecordView>),
}

fn judge(res: GetResult, slot: &Slot, majority_root: &Hash) -> Judged {
    let (Some(proof), Some(root)) = (res.proof, res.root) else {
        return Judged::Bad("answered without a proof".into());
    };
    // Against its own root first: a proof that fails even that is a broken or
    // lying node, whatever the majority holds.
    let proven = match proof.verify(&root, &slot.hash()) {
        Ok(p) => p,
        Err(e) => {
            return Judged::Bad(format!(
                "its proof does not verify against its own root: {e}"
            ));
        }
    };
    if root != *majority_root {
        return Judged::Moved;
    }
    match (proven, res.record) {
        (None, None) => Judged::Good(None),
        (None, Some(_)) => Judged::Bad("returned a record the proof says is absent".into()),
        (Some(_), None) => Judged::Bad("the proof shows the slot held, but no record came".into()),
        (Some(id), Some(view)) => {
            if view.record.slot() != *slot {
                Judged::Bad("returned a record of another slot".into())
            } else if view.record.verify().is_err() {
                Judged::Bad("returned a record whose signature does not verify".into())
            } else if view.record.id() != id || view.id != id {
                Judged::Bad("the record is not the one the proof's leaf names".into())
            } else {
                Judged::Good(Some(view))
            }
        }
    }
}

impl Cloud {
    /// Read `slot` verified by majority; see the module doc.
    pub async fn verified_get(&self, slot: &Slot) -> Result<VerifiedRead, CloudError> {
        let params = json!({
            "author": hex::encode(slot.author),
            "kind": slot.kind,
            "key": slot.key,
            "proof": true,
        });
        let mut caught = Vec::new();
        let mut moved = false;
        for _ in 0..ROUNDS {
            let m = majority(&self.roots(&self.pick()).await)?;
            for node in &m.agreed {
                let Ok(v) = self.call_on(node, "get", params.clone()).await else {
                    continue; // counted in its health already
                };
                let judged = match serde_json::from_value::<GetResult>(v) {
                    Ok(res) => judge(res, slot, &m.root),
                    Err(e) => Judged::Bad(format!("not a get result: {e}")),
                };
                match judged {
                    Judged::Bad(why) => {
                        self.penalize(node, Penalty::BadProof, why.clone());
                        caught.push((node.clone(), why));
                    }
                    Judged::Moved => moved = true,
                    Judged::Good(record) => {
                        for (d, root) in &m.disagreed {
                            let why = format!(
                                "reported root {}…, the majority {}…",
                                &hex::encode(root)[..12],
                                &hex::encode(m.root)[..12]
                            );
                            self.penalize(d, Penalty::Disagreed, why);
                        }
                        for (u, e) in &m.unresponsive {
                            self.penalize(u, Penalty::Disagreed, format!("no root: {e}"));
                        }
                        return Ok(VerifiedRead {
                            record,
                            served_by: node.clone(),
                            majority: m,
                            caught,
                        });
                    }
                }
            }
        }
        let mut why: Vec<String> = Vec::new();
        if moved {
            why.push("the root kept moving".into());
        }
        why.extend(caught.iter().map(|(n, w)| format!("{n}: {w}")));
        Err(CloudError::Unverified(format!(
            "no node of the majority served a proof that checks out{}",
            if why.is_empty() {
                String::new()
            } else {
                format!(": {}", why.join("; "))
            }
        )))
    }

    /// `getdbhash` from every node, asking again those that answered while their
    /// roots differ, up to `settle`.
    async fn roots(&self, nodes: &[String]) -> Vec<(String, Result<Hash, String>)> {
        let deadline = Instant::now() + self.cfg.settle;
        let mut answers: Vec<(String, Result<Hash, String>)> = nodes
            .iter()
            .map(|n| (n.clone(), Err("not asked".into())))
            .collect();
        let mut ask: Vec<usize> = (0..nodes.len()).collect();
        loop {
            let asked = futures::future::join_all(ask.iter().map(|&i| async move {
                let r = self.call_on(&nodes[i], "getdbhash", json!({})).await;
                let root = r
                    .map_err(|e| e.to_string())
                    .and_then(|v| serde_json::from_value::<DbHash>(v).map_err(|e| e.to_string()))
                    .map(|d| d.root);
                (i, root)
            }))
            .await;
            for (i, root) in asked {
                answers[i].1 = root;
            }
            let mut roots: Vec<Hash> = answers.iter().filter_map(|(_, r)| r.clone().ok()).collect();
            roots.sort();
            roots.dedup();
            if roots.len() <= 1 || Instant::now() + SETTLE_STEP > deadline {
                return answers;
            }
            ask = (0..nodes.len()).filter(|i| answers[*i].1.is_ok()).collect();
            tokio::time::sleep(SETTLE_STEP).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        s.to_string()
    }

    #[test]
    fn a_strict_majority_counts_the_silent_as_asked() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let m = majority(&[(n("x"), Ok(a)), (n("y"), Ok(a)), (n("z"), Ok(b))]).unwrap();
        assert_eq!(m.root, a);
        assert_eq!(m.disagreed, vec![(n("z"), b)]);
        // 2 of 4 is not a majority, even when the other two are silent.
        let e = majority(&[
            (n("w"), Ok(a)),
            (n("x"), Ok(a)),
            (n("y"), Err("down".into())),
            (n("z"), Err("down".into())),
        ]);
        assert!(
            matches!(e, Err(CloudError::Split(ref s)) if s.contains("did not answer")),
            "{e:?}"
        );
        let e = majority(&[
            (n("w"), Ok(a)),
            (n("x"), Ok(a)),
            (n("y"), Ok(b)),
            (n("z"), Ok(b)),
        ]);
        assert!(matches!(e, Err(CloudError::Split(_))));
    }
}
