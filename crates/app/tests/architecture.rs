//! The crate dependency rules of ARCHITECTURE.md, checked on every test run.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

const ADAPTERS: &[&str] = &[
    "postgres-adapter",
    "streams-adapter",
    "queue-adapter",
    "mail-adapter",
    "auth-adapter",
    "push-adapter",
    "ws-hub",
];
const IO_CRATES: &[&str] = &[
    "tokio",
    "actix-web",
    "actix-ws",
    "diesel",
    "diesel-async",
    "fred",
    "deadpool-redis",
    "deadpool",
    "lettre",
    "reqwest",
    "async-trait",
    "sqlx",
    "redis",
    "hyper",
    "mio",
];

/// Each workspace crate and its normal (non-dev) dependencies.
fn workspace() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null())
                .map(|d| d["name"].as_str().unwrap().to_owned())
                .collect();
            (p["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect()
}

fn allowed_inner(name: &str) -> Option<&'static [&'static str]> {
    match name {
        "domain" => Some(&[]),
        "ports" => Some(&["domain"]),
        "usecases" => Some(&["domain", "ports"]),
        "http-api" => Some(&["domain", "ports", "usecases"]),
        n if ADAPTERS.contains(&n) => Some(&["domain", "ports"]),
        _ => None,
    }
}

/// The rules, as a list of violations (empty when all hold).
fn violations(ws: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let members: BTreeSet<&str> = ws.keys().map(String::as_str).collect();
    let mut broken = Vec::new();
    for (name, deps) in ws {
        let inner: BTreeSet<&str> = deps
            .iter()
            .map(String::as_str)
            .filter(|d| members.contains(d))
            .collect();
        if let Some(allowed) = allowed_inner(name) {
            let extra: Vec<&&str> = inner.iter().filter(|d| !allowed.contains(d)).collect();
            if !extra.is_empty() {
                broken.push(format!("{name} depends on {extra:?}"));
            }
        }
        if name == "domain" {
            let io: Vec<&String> = deps
                .iter()
                .filter(|d| IO_CRATES.contains(&d.as_str()))
                .collect();
            if !io.is_empty() {
                broken.push(format!("domain depends on async/I-O crates {io:?}"));
            }
        }
        if name != "app" && name != "test-support" && inner.contains("app") {
            broken.push(format!("{name} depends on app"));
        }
    }
    broken
}

#[test]
fn every_crate_keeps_the_dependency_rules() {
    let ws = workspace();
    for required in [
        "domain",
        "ports",
        "usecases",
        "postgres-adapter",
        "streams-adapter",
        "queue-adapter",
        "mail-adapter",
        "auth-adapter",
        "push-adapter",
        "ws-hub",
        "http-api",
        "test-support",
        "app",
    ] {
        assert!(ws.contains_key(required), "crate {required} is missing");
    }
    let broken = violations(&ws);
    assert!(
        broken.is_empty(),
        "dependency rules broken:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_rule_check_catches_each_kind_of_violation() {
    let mut ws = workspace();
    ws.get_mut("domain").unwrap().insert("tokio".into());
    ws.get_mut("http-api")
        .unwrap()
        .insert("postgres-adapter".into());
    ws.get_mut("mail-adapter")
        .unwrap()
        .insert("queue-adapter".into());
    ws.get_mut("streams-adapter")
        .unwrap()
        .insert("usecases".into());
    let broken = violations(&ws);
    assert_eq!(broken.len(), 4, "{broken:?}");
}
