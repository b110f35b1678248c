//! The crate dependency rules of `docs/architecture.md`, checked on every
//! test run.

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
    "storage-adapter",
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

/// Drivers: only the adapter that owns one (and `app`, which composes
/// them) may depend on it; the core and the HTTP edge never.
const DRIVERS: &[&str] = &[
    "diesel",
    "diesel-async",
    "diesel_migrations",
    "tokio-postgres",
    "fred",
    "deadpool-redis",
    "redis",
    "lettre",
    "jsonwebtoken",
    "reqwest",
    "actix-ws",
    "sqlx",
];

fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc).arg("-vV").output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .unwrap()
        .to_owned()
}

fn metadata(no_deps: bool) -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut args = vec![
        "metadata".to_owned(),
        "--format-version".into(),
        "1".into(),
        "--offline".into(),
    ];
    if no_deps {
        args.push("--no-deps".into());
    } else {
        // Resolve for this machine only: other platforms' crates may not
        // be downloaded, and --offline cannot fetch them.
        args.extend(["--filter-platform".into(), host_triple()]);
    }
    let out = Command::new(cargo)
        .args(&args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Each workspace crate and its normal (non-dev) dependencies.
fn workspace() -> BTreeMap<String, BTreeSet<String>> {
    let meta = metadata(true);
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
        "ports-testing" => Some(&["domain", "ports"]),
        "usecases" => Some(&["domain", "ports"]),
        "http-api" | "ops-console" => Some(&["domain", "ports", "usecases"]),
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
        if matches!(
            name.as_str(),
            "domain" | "ports" | "ports-testing" | "usecases" | "http-api" | "ops-console"
        ) {
            let drivers: Vec<&String> = deps
                .iter()
                .filter(|d| DRIVERS.contains(&d.as_str()))
                .collect();
            if !drivers.is_empty() {
                broken.push(format!("{name} depends on drivers {drivers:?}"));
            }
        }
        // Only the tools around the app may depend on it: test-support
        // (spawn_app) and the bench/chaos harness.
        if !matches!(name.as_str(), "app" | "test-support" | "harness") && inner.contains("app") {
            broken.push(format!("{name} depends on app"));
        }
        if !matches!(name.as_str(), "test-support" | "harness") && inner.contains("test-support") {
            broken.push(format!(
                "{name} depends on test-support outside [dev-dependencies]"
            ));
        }
        // The fakes and contracts are for tests: only the test tools
        // may depend on them outside [dev-dependencies].
        if !matches!(name.as_str(), "test-support" | "harness") && inner.contains("ports-testing") {
            broken.push(format!(
                "{name} depends on ports-testing outside [dev-dependencies]"
            ));
        }
        // The harness is a tool, never part of what ships.
        if inner.contains("harness") {
            broken.push(format!("{name} depends on harness"));
        }
    }
    broken
}

/// Every crate `domain` pulls in, however indirectly (normal dependencies
/// as resolved, features included).
fn domain_closure() -> BTreeSet<String> {
    let meta = metadata(false);
    let names: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let nodes: BTreeMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let root = names
        .iter()
        .find(|(_, n)| **n == "domain")
        .map(|(id, _)| *id)
        .unwrap();
    let mut seen = BTreeSet::new();
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            let dep_id = dep["pkg"].as_str().unwrap();
            if normal && seen.insert(names[dep_id].to_owned()) {
                stack.push(dep_id);
            }
        }
    }
    seen
}

#[test]
fn the_domain_pulls_in_no_async_or_io_crate_even_indirectly() {
    let closure = domain_closure();
    assert!(
        closure.contains("serde"),
        "the walk found nothing: {closure:?}"
    );
    let io: Vec<&String> = closure
        .iter()
        .filter(|c| IO_CRATES.contains(&c.as_str()) || DRIVERS.contains(&c.as_str()))
        .collect();
    assert!(io.is_empty(), "domain pulls in {io:?}");
}

#[test]
fn every_crate_keeps_the_dependency_rules() {
    let ws = workspace();
    for required in [
        "domain",
        "ports",
        "ports-testing",
        "usecases",
        "postgres-adapter",
        "streams-adapter",
        "queue-adapter",
        "mail-adapter",
        "auth-adapter",
        "push-adapter",
        "ws-hub",
        "http-api",
        "ops-console",
        "test-support",
        "harness",
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
    ws.get_mut("usecases").unwrap().insert("fred".into());
    ws.get_mut("ws-hub").unwrap().insert("test-support".into());
    ws.get_mut("app").unwrap().insert("harness".into());
    ws.get_mut("usecases")
        .unwrap()
        .insert("ports-testing".into());
    ws.get_mut("ops-console")
        .unwrap()
        .insert("queue-adapter".into());
    let broken = violations(&ws);
    assert_eq!(broken.len(), 11, "{broken:?}");
}
