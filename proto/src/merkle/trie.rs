//! Updating and proving over any node store (redb in the node, a map in tests).

use super::{EMPTY, Hash, NibblePath, Node, Proof, ProofLeaf, leaf_hash, nibble};

/// Where trie nodes are read from (a snapshot is enough for proofs).
pub trait NodeSource {
    type Error;
    fn get(&mut self, path: &NibblePath) -> Result<Option<Node>, Self::Error>;
}

/// Where trie nodes live. Reads must see earlier writes of the same update.
pub trait NodeStore: NodeSource {
    fn put(&mut self, path: &NibblePath, node: Node) -> Result<(), Self::Error>;
}

/// The root hash: of the node at the root path, or [`EMPTY`] for an empty trie.
pub fn root_hash<S: NodeSource>(store: &mut S) -> Result<Hash, S::Error> {
    Ok(store.get(&NibblePath::ROOT)?.map_or(EMPTY, |n| n.hash()))
}

/// Set the record id held in `slot` (inserting the slot if new) and return the new
/// root. Touches one root-to-leaf path; a new slot that lands on another slot's leaf
/// pushes both down to the depth where their hashes first differ.
pub fn upsert<S: NodeStore>(store: &mut S, slot: &Hash, id: &Hash) -> Result<Hash, S::Error> {
    let mut path = NibblePath::ROOT;
    // Branches passed on the way down, to rehash on the way up.
    let mut stack: Vec<(NibblePath, [Hash; 16])> = Vec::new();
    let mut hash = loop {
        match store.get(&path)? {
            None => break place_leaf(store, path, slot, id)?,
            Some(Node::Leaf { slot: other, .. }) if other == *slot => {
                break place_leaf(store, path, slot, id)?;
            }
            Some(Node::Leaf {
                slot: other,
                id: other_id,
            }) => {
                break split(store, &mut stack, path, (slot, id), (&other, &other_id))?;
            }
            Some(Node::Branch { children }) => {
                stack.push((path, children));
                path = path.child(nibble(slot, path.len()));
            }
        }
    };
    while let Some((p, mut children)) = stack.pop() {
        children[nibble(slot, p.len())] = hash;
        let node = Node::Branch { children };
        hash = node.hash();
        store.put(&p, node)?;
    }
    Ok(hash)
}

fn place_leaf<S: NodeStore>(
    store: &mut S,
    path: NibblePath,
    slot: &Hash,
    id: &Hash,
) -> Result<Hash, S::Error> {
    store.put(
        &path,
        Node::Leaf {
            slot: *slot,
            id: *id,
        },
    )?;
    Ok(leaf_hash(slot, id))
}

/// `path` holds another slot's leaf: turn it into a branch (and one-child branches
/// below it while the two hashes share nibbles), ending in a branch with both leaves.
/// The new branches go on `stack` to be hashed bottom-up; the hash of the new leaf is
/// returned.
fn split<S: NodeStore>(
    store: &mut S,
    stack: &mut Vec<(NibblePath, [Hash; 16])>,
    mut path: NibblePath,
    (slot, id): (&Hash, &Hash),
    (other, other_id): (&Hash, &Hash),
) -> Result<Hash, S::Error> {
    loop {
        let depth = path.len();
        let (mine, theirs) = (nibble(slot, depth), nibble(other, depth));
        let mut children = [EMPTY; 16];
        if mine != theirs {
            children[theirs] = place_leaf(store, path.child(theirs), other, other_id)?;
            stack.push((path, children));
            return place_leaf(store, path.child(mine), slot, id);
        }
        stack.push((path, children));
        path = path.child(mine);
    }
}

/// A proof of presence or absence of `slot` against the current root.
pub fn prove<S: NodeSource>(store: &mut S, slot: &Hash) -> Result<Proof, S::Error> {
    let mut path = NibblePath::ROOT;
    let mut branches = Vec::new();
    loop {
        match store.get(&path)? {
            None => {
                return Ok(Proof {
                    branches,
                    leaf: None,
                });
            }
            Some(Node::Leaf { slot, id }) => {
                return Ok(Proof {
                    branches,
                    leaf: Some(ProofLeaf { slot, id }),
                });
            }
            Some(Node::Branch { children }) => {
                let next = nibble(slot, path.len());
                let empty = children[next] == EMPTY;
                branches.push(children);
                if empty {
                    return Ok(Proof {
                        branches,
                        leaf: None,
                    });
                }
                path = path.child(next);
            }
        }
    }
}
