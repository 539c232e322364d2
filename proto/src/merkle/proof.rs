//! Proofs of presence and absence of a slot, checkable with nothing but the root.

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};

use super::{EMPTY, Hash, NibblePath, branch_hash, leaf_hash, nibble};

/// The branches from the root down the slot's path (all 16 children of each), and
/// the leaf where the path ends, if it ends at a leaf rather than an empty child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub branches: Vec<[Hash; 16]>,
    pub leaf: Option<ProofLeaf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProofLeaf {
    #[serde(with = "crate::hexser")]
    #[schemars(with = "crate::hexser::Hex<32>")]
    pub slot: Hash,
    #[serde(with = "crate::hexser")]
    #[schemars(with = "crate::hexser::Hex<32>")]
    pub id: Hash,
}

impl schemars::JsonSchema for Proof {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Proof".into()
    }

    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let child = g.subschema_for::<crate::hexser::Hex<32>>();
        let leaf = g.subschema_for::<Option<ProofLeaf>>();
        schemars::json_schema!({
            "type": "object",
            "description": "The branches from the root down the slot's path (all 16 children of each, as hashes) and the leaf where the path ends, or null where it ends at an empty child (docs/merkle.md).",
            "properties": {
                "branches": {
                    "type": "array",
                    "items": {"type": "array", "items": child, "minItems": 16, "maxItems": 16},
                },
                "leaf": leaf,
            },
            "required": ["branches", "leaf"],
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("branch at depth {0} does not hash to the value its parent (or the root) holds")]
    BranchMismatch(usize),
    #[error("the proof ends at an empty child but the parent holds a non-empty hash")]
    NotEmpty,
    #[error("the leaf does not hash to the value its parent (or the root) holds")]
    LeafMismatch,
    #[error("the leaf is not on the slot's path")]
    LeafOffPath,
    #[error("the proof is deeper than a slot hash")]
    TooDeep,
}

impl Proof {
    /// Check the proof for `slot` against `root`. `Ok(Some(id))`: the slot is present
    /// holding record `id`; `Ok(None)`: the slot is absent.
    pub fn verify(&self, root: &Hash, slot: &Hash) -> Result<Option<Hash>, ProofError> {
        if self.branches.len() >= 64 {
            return Err(ProofError::TooDeep);
        }
        let mut expected = *root;
        for (depth, children) in self.branches.iter().enumerate() {
            if branch_hash(children) != expected {
                return Err(ProofError::BranchMismatch(depth));
            }
            expected = children[nibble(slot, depth)];
        }
        let depth = self.branches.len();
        match &self.leaf {
            None if expected == EMPTY => Ok(None),
            None => Err(ProofError::NotEmpty),
            Some(leaf) => {
                if leaf_hash(&leaf.slot, &leaf.id) != expected {
                    return Err(ProofError::LeafMismatch);
                }
                if NibblePath::prefix_of(&leaf.slot, depth) != NibblePath::prefix_of(slot, depth) {
                    return Err(ProofError::LeafOffPath);
                }
                Ok((leaf.slot == *slot).then_some(leaf.id))
            }
        }
    }
}

/// JSON form: `{"branches": [[16 hex hashes], ...], "leaf": {"slot", "id"} | null}`.
#[derive(Serialize, Deserialize)]
struct ProofJson {
    branches: Vec<Vec<String>>,
    leaf: Option<ProofLeaf>,
}

impl Serialize for Proof {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ProofJson {
            branches: self
                .branches
                .iter()
                .map(|b| b.iter().map(hex::encode).collect())
                .collect(),
            leaf: self.leaf.clone(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Proof {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let j = ProofJson::deserialize(d)?;
        let mut branches = Vec::with_capacity(j.branches.len());
        for b in j.branches {
            if b.len() != 16 {
                return Err(D::Error::custom("a branch has exactly 16 children"));
            }
            let mut children = [EMPTY; 16];
            for (c, h) in children.iter_mut().zip(&b) {
                *c = crate::hexser::decode_array(h).map_err(D::Error::custom)?;
            }
            branches.push(children);
        }
        Ok(Proof {
            branches,
            leaf: j.leaf,
        })
    }
}
