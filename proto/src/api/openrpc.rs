//! The OpenRPC 1.3 document (`rpc.discover`), built from [`Method`]'s table and the
//! params and result types the dispatcher itself deserializes and serializes.

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::Method;
use crate::jsonrpc::{
    BEHIND, COOKIE_REQUIRED, ERRORS, INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST,
    METHOD_NOT_FOUND, PARSE_ERROR, RATE_LIMITED, TOO_LARGE,
};

/// What any request may get, whatever its method.
const COMMON_ERRORS: &[i64] = &[
    BEHIND,
    PARSE_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    INVALID_PARAMS,
    INTERNAL_ERROR,
    TOO_LARGE,
    RATE_LIMITED,
    COOKIE_REQUIRED,
];

fn error(code: i64) -> Value {
    let message = ERRORS
        .iter()
        .find(|(c, _)| *c == code)
        .map_or("error", |(_, m)| *m);
    json!({ "code": code, "message": message })
}

/// The document for a node of `version`.
pub fn document(version: &str) -> Value {
    // Draft 7 keeps shared types under `definitions`, which OpenRPC's own JSON
    // Schema (draft 7) knows; the references are rewritten to `components`.
    let mut g = SchemaSettings::draft07()
        .with(|s| s.definitions_path = "/components/schemas/".into())
        .into_generator();
    let methods: Vec<Value> = Method::ALL
        .iter()
        .map(|m| {
            let mut params = match m.params_schema(&mut g) {
                Some(s) => by_name(&mut g, s.to_value()),
                None => Vec::new(),
            };
            params.extend(session_params());
            let mut errors: Vec<i64> = COMMON_ERRORS.to_vec();
            errors.extend(m.errors());
            json!({
                "name": m.name(),
                "summary": m.summary(),
                "paramStructure": "by-name",
                "params": params,
                "result": { "name": "result", "schema": m.result_schema(&mut g).to_value() },
                "errors": errors.into_iter().map(error).collect::<Vec<_>>(),
            })
        })
        .collect();
    let schemas: Map<String, Value> = g.take_definitions(true).into_iter().collect();
    json!({
        "openrpc": "1.3.2",
        "info": {
            "title": "Cirrus node",
            "version": version,
            "description": "JSON-RPC 2.0 over HTTP (POST /), WebSocket and UDP. Field names are camelCase; hashes, keys and signatures are lowercase hex.",
        },
        "methods": methods,
        "components": { "schemas": schemas },
    })
}

/// What every method takes besides its own params (SPEC "Sessions").
fn session_params() -> [Value; 2] {
    [
        json!({
            "name": "session",
            "required": false,
            "description": "A session token from a put result: answer only once this node holds every write it names (docs/sessions.md).",
            "schema": { "type": "string", "maxLength": crate::session::MAX_CHARS },
        }),
        json!({
            "name": "wait",
            "required": false,
            "description": "How long to wait for the session, in ms (default 2000; more than 10000 is taken as 10000); then error -32011.",
            "schema": { "type": "integer", "minimum": 0 },
        }),
    ]
}

/// The params of a method whose params are the fields of one struct: one content
/// descriptor per field, required as the struct requires it.
fn by_name(g: &mut schemars::SchemaGenerator, schema: Value) -> Vec<Value> {
    let schema = resolve(g, schema);
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = schema["properties"].as_object() else {
        return Vec::new();
    };
    props
        .iter()
        .map(|(name, s)| {
            let mut d = json!({
                "name": name,
                "required": required.contains(&name.as_str()),
                "schema": s,
            });
            if let Some(desc) = s.get("description") {
                d["description"] = desc.clone();
            }
            d
        })
        .collect()
}

/// A params struct is referenced from the definitions; its fields are wanted.
fn resolve(g: &mut schemars::SchemaGenerator, schema: Value) -> Value {
    let Some(name) = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
    else {
        return schema;
    };
    let name = name.to_string();
    g.definitions_mut().remove(&name).unwrap_or(schema)
}
