//! JSON-RPC parsing, regression cases from fuzzing (`fuzz/`, target `jsonrpc_request`).

use cirrus_proto::jsonrpc::{self, Body, Request, Response};
use serde_json::Value;

fn single(text: &str) -> Request {
    match jsonrpc::parse_body(text.as_bytes()).expect("parses") {
        Body::Single(v) => Request::from_value(v).expect("a valid request"),
        Body::Batch(_) => panic!("not a batch"),
    }
}

/// The node must answer with the id it was sent. A float id with many digits was
/// parsed one unit in the last place off (serde_json's default float parsing is not
/// correctly rounded), so the answer carried `2.1999999999999998e29` for an id that
/// every correctly rounding client reads as `2.2e29`, and the client could not match
/// it to its request. Found by the `jsonrpc_request` fuzz target.
#[test]
fn a_float_id_comes_back_as_the_number_that_was_sent() {
    for id in [
        "220000000000000000000000000000.5",
        "2.2e29",
        "0.1",
        "1.7976931348623157e308",
        "5e-324",
        "123456789012345678901234567890",
    ] {
        let req = single(&format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"getdbhash"}}"#
        ));
        let sent: f64 = id.parse().unwrap(); // std parsing is correctly rounded
        let got = req.id.clone().unwrap();
        assert_eq!(got.as_f64(), Some(sent), "id {id} parsed as {got}");
        // And the answer's id, as the client reads it, is that number again.
        let answer = serde_json::to_string(&Response::ok(got, Value::Null)).unwrap();
        let back: Value = serde_json::from_str(&answer).unwrap();
        let text = back["id"].to_string();
        assert_eq!(
            text.parse::<f64>().unwrap(),
            sent,
            "id {id} answered as {text}"
        );
    }
}

#[test]
fn the_fuzzer_s_input_is_a_valid_request_whose_id_survives() {
    let text = r#"{"jsonrpc":"2.0","id":220000000000000000000000000000.5,"js":3,"monrpc":"2.0","idrams":{"":1000},"etdoh":"list","0arams":{"":1000},"c'":3,"method":"list","pakeyo":"ghash","params":[]}"#;
    let req = single(text);
    assert_eq!(req.method, "list");
    assert!(req.params.is_empty());
    let again = serde_json::json!({"jsonrpc": "2.0", "id": req.id, "method": req.method});
    assert_eq!(single(&again.to_string()), req);
}
