//! The AsyncAPI document of `/ws` is the code's: checked in up to date,
//! valid AsyncAPI 3.0, and naming every message type the hub handles.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use serde_json::Value;
use std::collections::BTreeSet;

fn read(path: &str) -> Value {
    let full = format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&full).expect(&full)).unwrap()
}

#[test]
fn the_checked_in_document_matches_the_code() {
    assert!(
        read("openapi/asyncapi.json") == app::asyncapi(),
        "openapi/asyncapi.json is stale: regenerate it with `just asyncapi` (cargo run -p app -- asyncapi > openapi/asyncapi.json)"
    );
}

#[test]
fn the_document_is_valid_asyncapi_3() {
    let schema = read("openapi/schemas/asyncapi-3.0.0.json");
    let validator = jsonschema::validator_for(&schema).unwrap();
    let doc = app::asyncapi();
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // And the validator does reject what is not AsyncAPI.
    let mut broken = doc;
    broken["channels"]["ws"]["address"] = Value::from(7);
    assert!(!validator.is_valid(&broken));
}

fn kinds(doc: &Value, prefix: &str) -> BTreeSet<String> {
    doc["components"]["messages"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(key, _)| key.starts_with(prefix))
        .map(|(_, m)| m["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn every_message_type_the_hub_handles_is_documented_and_no_other() {
    let hub = ws_hub::Hub::new(ws_hub::HubSettings::new("doc"));
    let mut handled: BTreeSet<String> = hub.handler_kinds().into_iter().collect();
    handled.insert(ws_hub::REFRESH_TYPE.to_owned());
    assert_eq!(kinds(&app::asyncapi(), "client."), handled);
}

#[test]
fn the_notifications_the_use_cases_send_are_documented() {
    let sent = kinds(&app::asyncapi(), "server.");
    for kind in [
        usecases::PROFILE_UPDATED,
        ws_hub::DISCONNECT_TYPE,
        ws_hub::TOKEN_EXPIRING_TYPE,
        "error",
    ] {
        assert!(sent.contains(kind), "{kind} is not documented");
    }
}
