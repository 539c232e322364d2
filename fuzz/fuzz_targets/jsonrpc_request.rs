//! Any bytes as a JSON-RPC request body, the way every transport reads one:
//! `parse_body`, then `Request::from_value` on the request or on each element of a
//! batch. Nothing may panic; a checked request has an id that JSON-RPC allows and
//! params that are an object; an error names an id that is allowed too; and a
//! checked request re-serialized checks to the same request.
#![no_main]

use cirrus_proto::jsonrpc::{self, Body, Request};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fn valid_id(id: &Value) -> bool {
    matches!(id, Value::Null | Value::Number(_) | Value::String(_))
}

fuzz_target!(|data: &[u8]| {
    let items = match jsonrpc::parse_body(data) {
        Ok(Body::Single(v)) => vec![v],
        Ok(Body::Batch(items)) => {
            assert!(!items.is_empty(), "an empty batch is an error");
            items
        }
        Err(e) => {
            assert!(e.code == jsonrpc::PARSE_ERROR || e.code == jsonrpc::INVALID_REQUEST);
            return;
        }
    };
    for v in items {
        match Request::from_value(v) {
            Ok(req) => {
                assert!(req.id.as_ref().is_none_or(valid_id));
                let mut again = json!({"jsonrpc": "2.0", "method": req.method, "params": req.params});
                if let Some(id) = &req.id {
                    again["id"] = id.clone();
                }
                let text = serde_json::to_vec(&again).expect("serializes");
                let Ok(Body::Single(v)) = jsonrpc::parse_body(&text) else {
                    panic!("a request we serialized does not parse")
                };
                assert_eq!(Request::from_value(v).expect("still valid"), req);
            }
            Err((id, e)) => {
                assert!(valid_id(&id), "error answered with id {id}");
                assert!(e.code == jsonrpc::INVALID_REQUEST || e.code == jsonrpc::INVALID_PARAMS);
            }
        }
    }
});
