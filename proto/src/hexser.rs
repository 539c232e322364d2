//! Serde helpers for fixed-size byte arrays written as lowercase hex.

use serde::{Deserialize, Deserializer, Serializer, de::Error};

/// Parse exactly `N` bytes of hex, with a message that names what was wrong.
pub fn decode_array<const N: usize>(s: &str) -> Result<[u8; N], String> {
    if s.len() != 2 * N {
        return Err(format!(
            "expected {} hex characters, got {}",
            2 * N,
            s.len()
        ));
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|e| format!("invalid hex: {e}"))?;
    Ok(out)
}

pub fn serialize<S: Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(v))
}

pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    decode_array(&s).map_err(D::Error::custom)
}

/// The JSON Schema of `N` bytes written as lowercase hex, for fields serialized with
/// this module: `#[schemars(with = "crate::hexser::Hex<32>")]`.
pub struct Hex<const N: usize>;

impl<const N: usize> schemars::JsonSchema for Hex<N> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        format!("Hex{N}").into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": format!("^[0-9a-f]{{{}}}$", 2 * N),
            "description": format!("{N} bytes as lowercase hex"),
        })
    }
}
