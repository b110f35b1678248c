//! The API contract, fuzzed from the served spec with Schemathesis (a
//! property-based tester, from PyPI; `scripts/dev test` installs it): no
//! schema-valid request is refused, and no response, status, content type
//! or header is off the spec. Bounded: a fixed seed, 60 examples per
//! operation. (Schemathesis' boundary-value `coverage` phase is left out:
//! on the spec's URL and visible-text patterns it takes two minutes here;
//! run it by hand with `--phases coverage` after changing a rule.)
//!
//! Not checked: that schema-*invalid* requests are refused. The schema is
//! allowed to be stricter than the server (a trimmed name, a URL the
//! pattern does not spell out), never looser.

use std::path::PathBuf;
use std::process::Command;
use test_support::spawn_app_with;

/// `TRELLIS_SCHEMATHESIS`, or where `scripts/dev test` installs it.
fn schemathesis() -> PathBuf {
    std::env::var_os("TRELLIS_SCHEMATHESIS").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/trellis/fuzz-venv/bin/schemathesis")
        },
        PathBuf::from,
    )
}

fn fuzz(spec: &str, token: &str, extra: &[&str]) -> (bool, String) {
    let out = Command::new(schemathesis())
        .args(["run", spec, "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .args([
            "--max-examples",
            "60",
            "--seed",
            "20261206",
            "--phases",
            "examples,fuzzing",
            "--checks",
            "all",
            "--no-color",
        ])
        .args(extra)
        .env("SCHEMATHESIS_HOOKS", "")
        // Its run cache goes to the working directory: never the checkout.
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): python3 -m venv ~/.cache/trellis/fuzz-venv && ~/.cache/trellis/fuzz-venv/bin/pip install schemathesis (scripts/dev test does)",
                schemathesis().display()
            )
        });
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_keeps_to_the_served_spec() {
    let app = spawn_app_with(
        app::Role::All,
        &[("RATE_LIMIT_PER_USER", "0"), ("RATE_LIMIT_PER_IP", "0")],
    )
    .await;
    let token = app.token_with("fuzzer", Some("fuzzer@example.com"), Some("Fuzzer"));
    let spec = app.url("/openapi.json");
    let (spec2, token2) = (spec.clone(), token.clone());
    // Blocking: a process that talks to the app, which runs on this
    // runtime's other thread.
    let (ok, report) = tokio::task::spawn_blocking(move || {
        fuzz(
            &spec2,
            &token2,
            &[
                "--exclude-checks",
                "negative_data_rejection",
                "--exclude-operation-id",
                "listPushTokens",
            ],
        )
    })
    .await
    .unwrap();
    assert!(ok, "the API left its spec:\n{report}");
    assert!(
        report.contains("generated"),
        "nothing was generated:\n{report}"
    );

    // A cursor the server did not sign is refused (400 `invalid_cursor`,
    // documented): a fuzzer cannot make a valid one, so this operation is
    // held to its responses only.
    let (ok, report) = tokio::task::spawn_blocking(move || {
        fuzz(
            &spec,
            &token,
            &[
                "--exclude-checks",
                "negative_data_rejection,positive_data_acceptance",
                "--include-operation-id",
                "listPushTokens",
            ],
        )
    })
    .await
    .unwrap();
    assert!(ok, "listPushTokens left its spec:\n{report}");
}
