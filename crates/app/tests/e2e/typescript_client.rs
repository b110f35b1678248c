//! The TypeScript client compiles against types generated from the
//! checked-in spec (openapi-typescript + tsc from npm, installed by
//! `scripts/dev test`), and it calls every operation of the spec.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `TRELLIS_TS_TOOLS`, or where `scripts/dev test` installs them.
fn tools() -> PathBuf {
    std::env::var_os("TRELLIS_TS_TOOLS").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/trellis/ts-tools")
        },
        PathBuf::from,
    )
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what} ({e}): scripts/dev test installs openapi-typescript, openapi-fetch and typescript into ~/.cache/trellis/ts-tools"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_typescript_client_type_checks_against_the_spec_and_calls_every_operation() {
    let source = repo().join("openapi/clients/typescript");
    let client = std::fs::read_to_string(source.join("client.ts")).unwrap();
    let spec: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("openapi/openapi.json")).unwrap(),
    )
    .unwrap();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let call = format!("client.{}(\"{path}\"", method.to_uppercase());
            assert!(
                client.contains(&call),
                "client.ts never calls {method} {path}"
            );
        }
    }

    let dir = std::env::temp_dir().join(format!("trellis-ts-{}", test_support::unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["client.ts", "tsconfig.json"] {
        std::fs::copy(source.join(f), dir.join(f)).unwrap();
    }
    let modules = tools().join("node_modules");
    assert!(
        modules.join(".bin/tsc").exists(),
        "{} lacks typescript: scripts/dev test installs it",
        modules.display()
    );
    std::os::unix::fs::symlink(&modules, dir.join("node_modules")).unwrap();
    run(
        Command::new(modules.join(".bin/openapi-typescript"))
            .arg(repo().join("openapi/openapi.json"))
            .arg("-o")
            .arg(dir.join("schema.d.ts"))
            .current_dir(&dir),
        "openapi-typescript",
    );
    run(
        Command::new(modules.join(".bin/tsc"))
            .args(["-p", "tsconfig.json"])
            .current_dir(&dir),
        "tsc",
    );
    let _ = std::fs::remove_dir_all(&dir);
}
