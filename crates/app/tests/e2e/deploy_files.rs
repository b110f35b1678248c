//! The deploy files parse, and every variable they set, subcommand they run
//! and metric they chart is one the app really has. A typo fails here, not in
//! production.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use app::settings::KNOWN_VARIABLES;
use serde_norway::Value as Yaml;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The subcommands the app binary itself lists in its `--help`.
fn subcommands() -> Vec<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_app"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let commands: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect();
    assert!(commands.len() >= 7, "no commands in --help: {help}");
    commands
}

#[test]
fn the_fixed_subcommands_exist() {
    let have = subcommands();
    for name in [
        "serve",
        "worker",
        "all",
        "migrate",
        "openapi",
        "dev-token",
        "jobs",
        "events",
        "doctor",
    ] {
        assert!(have.iter().any(|c| c == name), "no `app {name}`: {have:?}");
    }
}

fn seconds(v: &Yaml) -> u64 {
    let text = v
        .as_str()
        .map(str::to_owned)
        .or_else(|| v.as_u64().map(|n| n.to_string()))
        .unwrap();
    text.trim_end_matches('s').parse().unwrap()
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every YAML document in a file (a file may hold several, `---`-separated).
fn documents(rel: &str) -> Vec<Yaml> {
    use serde::Deserialize as _;
    serde_norway::Deserializer::from_str(&read(rel))
        .map(|d| Yaml::deserialize(d).unwrap_or_else(|e| panic!("{rel} does not parse: {e}")))
        .collect()
}

fn k8s_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(root().join("deploy/k8s"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "secret.yaml")
        .map(|n| format!("deploy/k8s/{n}"))
        .collect();
    files.sort();
    files
}

/// Every Rust source file of the workspace's crates, concatenated.
fn sources() -> String {
    let mut sources = String::new();
    for crate_dir in std::fs::read_dir(root().join("crates"))
        .unwrap()
        .filter_map(Result::ok)
    {
        let mut stack = vec![crate_dir.path().join("src")];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
            {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    sources.push_str(&std::fs::read_to_string(&p).unwrap());
                }
            }
        }
    }
    sources
}

fn assert_known(var: &str, whence: &str) {
    assert!(
        KNOWN_VARIABLES.contains(&var),
        "{whence} sets {var:?}, which the app does not read (typo?)"
    );
}

/// Every container spec in a Kubernetes object.
fn containers(doc: &Yaml) -> Vec<&Yaml> {
    let pod = match doc["kind"].as_str() {
        Some("Deployment" | "Job") => &doc["spec"]["template"]["spec"],
        _ => return Vec::new(),
    };
    pod["containers"]
        .as_sequence()
        .map(|c| c.iter().collect())
        .unwrap_or_default()
}

#[test]
fn every_kubernetes_manifest_parses_and_sets_only_known_variables() {
    let files = k8s_files();
    assert!(files.len() >= 10, "{files:?}");
    let subcommands = subcommands();
    let mut kinds = BTreeSet::new();
    for f in &files {
        for doc in documents(f) {
            let kind = doc["kind"].as_str().map(str::to_owned);
            if kind.as_deref() == Some("HorizontalPodAutoscaler") {
                for m in doc["spec"]["metrics"].as_sequence().into_iter().flatten() {
                    if let Some(name) = m["external"]["metric"]["name"].as_str() {
                        assert!(
                            sources().contains(&format!("\"{name}\"")),
                            "{f} scales on {name}, which no code records"
                        );
                    }
                }
            }
            if let Some(k) = &kind {
                kinds.insert(k.clone());
            }
            if kind.as_deref() == Some("ConfigMap") {
                for key in doc["data"].as_mapping().unwrap().keys() {
                    assert_known(key.as_str().unwrap(), f);
                }
            }
            if kind.as_deref() == Some("Secret") {
                for key in doc["stringData"].as_mapping().unwrap().keys() {
                    assert_known(key.as_str().unwrap(), f);
                }
            }
            for c in containers(&doc) {
                for e in c["env"].as_sequence().into_iter().flatten() {
                    assert_known(e["name"].as_str().unwrap(), f);
                }
                let args: Vec<&str> = c["args"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .filter_map(Yaml::as_str)
                    .collect();
                assert!(
                    subcommands.iter().any(|s| s == args[0]),
                    "{f} runs unknown subcommand {:?}",
                    args[0]
                );
            }
        }
    }
    for k in [
        "Deployment",
        "Job",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ConfigMap",
        "Secret",
    ] {
        assert!(kinds.contains(k), "no {k} among the manifests: {kinds:?}");
    }
}

#[test]
fn the_config_map_loads_as_production_settings_with_metrics_off_the_service() {
    let config = &documents("deploy/k8s/configmap.yaml")[0];
    let mut vars: std::collections::HashMap<String, String> = config["data"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_owned(),
                v.as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    // What the Secret adds: its template's keys (the storage credentials
    // among them), with a placeholder of the right shape where one matters.
    let secret = &documents("deploy/k8s/secret.example.yaml")[0];
    for (k, v) in secret["stringData"].as_mapping().unwrap() {
        vars.insert(
            k.as_str().unwrap().to_owned(),
            v.as_str().unwrap().to_owned(),
        );
    }
    vars.insert("CURSOR_SECRET".into(), "0123456789abcdef0123".into());
    let settings = app::Settings::from_lookup(&|k| vars.get(k).cloned())
        .unwrap_or_else(|e| panic!("configmap.yaml and the Secret as settings: {e}"));
    assert!(
        settings.storage.bucket.is_some() && settings.storage.access_key_id.is_some(),
        "uploads go to a bucket in production, its credentials from the Secret"
    );
    assert!(
        !settings.rate_limit.trusted_proxies.is_empty(),
        "the ingress is a listed proxy"
    );
    let metrics = settings.http.metrics_addr.expect("METRICS_ADDR is set");
    let service = &documents("deploy/k8s/api-service.yaml")[0];
    for p in service["spec"]["ports"].as_sequence().unwrap() {
        assert_ne!(p["targetPort"].as_str(), Some("metrics"));
        assert_ne!(p["targetPort"].as_u64(), Some(u64::from(metrics.port())));
    }
    for f in [
        "deploy/k8s/api-deployment.yaml",
        "deploy/k8s/worker-deployment.yaml",
    ] {
        let d = &documents(f)[0];
        let annotations = &d["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(
            annotations["prometheus.io/port"].as_str(),
            Some(metrics.port().to_string().as_str()),
            "{f}: Prometheus scrapes METRICS_ADDR's port"
        );
    }
}

#[test]
fn the_kustomization_lists_existing_files_and_the_secret_template_exists() {
    let k = &documents("deploy/k8s/kustomization.yaml")[0];
    for r in k["resources"].as_sequence().unwrap() {
        let name = r.as_str().unwrap();
        let present = root().join("deploy/k8s").join(name).exists()
            || (name == "secret.yaml" && root().join("deploy/k8s/secret.example.yaml").exists());
        assert!(present, "kustomization lists {name}, which does not exist");
    }
}

#[test]
fn deployments_probe_health_and_outlive_the_shutdown_deadline() {
    let config = &documents("deploy/k8s/configmap.yaml")[0];
    let shutdown: u64 = config["data"]["SHUTDOWN_TIMEOUT_SECS"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    for f in [
        "deploy/k8s/api-deployment.yaml",
        "deploy/k8s/worker-deployment.yaml",
    ] {
        let d = &documents(f)[0];
        let pod = &d["spec"]["template"]["spec"];
        let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
        let c = &pod["containers"][0];
        let pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .unwrap_or(0);
        assert!(
            grace > shutdown + pre_stop,
            "{f}: grace {grace}s must exceed preStop {pre_stop}s + shutdown {shutdown}s"
        );
        assert_eq!(
            c["readinessProbe"]["httpGet"]["path"].as_str(),
            Some("/readyz"),
            "{f}"
        );
        assert_eq!(
            c["livenessProbe"]["httpGet"]["path"].as_str(),
            Some("/healthz"),
            "{f}"
        );
        assert!(
            c["resources"]["requests"].is_mapping() && c["resources"]["limits"].is_mapping(),
            "{f}"
        );
        assert_eq!(
            pod["securityContext"]["runAsNonRoot"].as_bool(),
            Some(true),
            "{f}"
        );
        let pod_name = c["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "POD_NAME")
            .unwrap();
        assert_eq!(
            pod_name["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
            Some("metadata.name"),
            "unique ids come from the pod name"
        );
    }
}

#[test]
fn compose_parses_runs_known_subcommands_and_sets_known_variables() {
    let mut c = documents("deploy/docker-compose.yml").remove(0);
    c.apply_merge().unwrap();
    let c = &c;
    let services = c["services"].as_mapping().unwrap();
    for name in ["postgres", "redis", "mailpit", "migrate", "serve", "worker"] {
        assert!(services.contains_key(name), "compose lacks {name}");
    }
    let redis_cmd: Vec<&str> = c["services"]["redis"]["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(
        redis_cmd.windows(2).any(|w| w == ["--appendonly", "yes"]),
        "the queue's Redis persists: {redis_cmd:?}"
    );
    assert!(
        redis_cmd
            .windows(2)
            .any(|w| w == ["--maxmemory-policy", "noeviction"]),
        "{redis_cmd:?}"
    );
    let subcommands = subcommands();
    for name in ["migrate", "serve", "worker"] {
        let svc = &c["services"][name];
        let cmd = svc["command"][0].as_str().unwrap();
        assert!(subcommands.iter().any(|s| s == cmd), "{name} runs {cmd:?}");
        for (k, _) in svc["environment"].as_mapping().unwrap() {
            if let Some(k) = k.as_str() {
                assert_known(k, "docker-compose.yml");
            }
        }
    }
    assert_eq!(
        c["services"]["serve"]["depends_on"]["migrate"]["condition"].as_str(),
        Some("service_completed_successfully")
    );
    for name in ["serve", "worker"] {
        let svc = &c["services"][name];
        let deadline = seconds(&svc["environment"]["SHUTDOWN_TIMEOUT_SECS"]);
        let grace = seconds(&svc["stop_grace_period"]);
        assert!(
            grace > deadline,
            "{name}: docker kills after {grace} s, before the {deadline} s shutdown deadline"
        );
    }
}

/// Whether a compose value is a variable reference (`${NAME:?why}`) rather
/// than text written into the file.
fn interpolated(value: &str) -> bool {
    value.contains("${") && value.contains('}')
}

/// Every string value in a YAML tree, with its path.
fn strings<'a>(v: &'a Yaml, path: String, out: &mut Vec<(String, &'a str)>) {
    match v {
        Yaml::String(s) => out.push((path, s)),
        Yaml::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                strings(item, format!("{path}[{i}]"), out);
            }
        }
        Yaml::Mapping(m) => {
            for (k, item) in m {
                let k = k.as_str().unwrap_or("?");
                strings(item, format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

/// A literal secret: a value under a secret-sounding name, a password after
/// `--requirepass`, or a URL with a password, that is not a `${...}`.
fn literal_secrets(compose: &Yaml) -> Vec<String> {
    let mut all = Vec::new();
    strings(compose, String::new(), &mut all);
    let secret_name = |path: &str| {
        let name = path.rsplit('.').next().unwrap_or(path).to_ascii_uppercase();
        ["SECRET", "PASSWORD", "TOKEN", "_KEY", "CREDENTIAL", "AUTH"]
            .iter()
            .any(|w| name.contains(w))
    };
    let mut found = Vec::new();
    for (i, (path, value)) in all.iter().enumerate() {
        let after_flag = i > 0 && all[i - 1].1 == "--requirepass";
        let url_password = url::Url::parse(value).is_ok_and(|u| u.password().is_some());
        if (secret_name(path) || after_flag || url_password) && !interpolated(value) {
            found.push(format!("{path} = {value:?}"));
        }
    }
    found
}

#[test]
fn compose_holds_no_literal_secret_and_publishes_on_loopback_only() {
    let mut c = documents("deploy/docker-compose.yml").remove(0);
    c.apply_merge().unwrap();
    let secrets = literal_secrets(&c);
    assert!(
        secrets.is_empty(),
        "secrets written into docker-compose.yml (take them from deploy/.env): {secrets:?}"
    );
    let services = c["services"].as_mapping().unwrap();
    let mut published = 0;
    for (name, svc) in services {
        for port in svc["ports"].as_sequence().into_iter().flatten() {
            let port = port.as_str().unwrap_or_else(|| {
                panic!("{name:?}: write ports as \"127.0.0.1:host:container\" strings")
            });
            assert!(
                port.starts_with("127.0.0.1:"),
                "{name:?} publishes {port:?} on every interface; bind it to 127.0.0.1"
            );
            published += 1;
        }
    }
    assert!(
        published >= 4,
        "the API, Postgres, Redis and Mailpit are published"
    );
    let redis_cmd: Vec<&str> = c["services"]["redis"]["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(
        redis_cmd.contains(&"--requirepass"),
        "Redis has a password: {redis_cmd:?}"
    );
    let env = &c["services"]["serve"]["environment"];
    assert!(
        env["DEV_TOKEN_SECRET"].is_null(),
        "dev tokens are signed with the app's own random secret"
    );
    let redis_url = env["REDIS_URL"].as_str().unwrap_or_default();
    assert!(
        redis_url.contains(":${REDIS_PASSWORD"),
        "the app logs in to Redis: {redis_url}"
    );
    assert!(
        read(".gitignore").lines().any(|l| l == "/deploy/.env"),
        "deploy/.env (the passwords) is never committed"
    );
}

#[test]
fn the_secret_check_finds_what_it_looks_for() {
    let leaky: Yaml = serde_norway::from_str(
        r#"
services:
  a:
    environment:
      DEV_TOKEN_SECRET: change-me
      DATABASE_URL: postgres://u:hunter2@db/x
      REDIS_URL: redis://:${REDIS_PASSWORD:?x}@redis:6379
    command: ["redis-server", "--requirepass", "letmein"]
"#,
    )
    .unwrap();
    let found = literal_secrets(&leaky);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found.iter().any(|f| f.contains("DEV_TOKEN_SECRET")));
    assert!(found.iter().any(|f| f.contains("hunter2")));
    assert!(found.iter().any(|f| f.contains("letmein")));
}

#[test]
fn the_dockerfile_runs_a_known_subcommand_as_non_root_with_a_health_check() {
    let d = read("deploy/Dockerfile");
    assert!(
        d.contains("cargo chef cook"),
        "dependencies are built in their own layer"
    );
    let user = d.lines().rfind(|l| l.starts_with("USER ")).unwrap();
    assert!(
        !user.contains("root") && !user.trim_end().ends_with(" 0"),
        "{user}"
    );
    let check = d
        .lines()
        .skip_while(|l| !l.starts_with("HEALTHCHECK"))
        .take(2)
        .collect::<String>();
    assert!(check.contains("/healthz"), "{check}");
    let runtime = &d[d.rfind("\nFROM ").unwrap()..];
    if check.contains("curl") {
        assert!(
            runtime.contains("install") && runtime.contains(" curl"),
            "the health check runs curl, which the runtime image must install"
        );
    }
    assert!(runtime.contains("ca-certificates"));
    let cmd = d.lines().rfind(|l| l.starts_with("CMD ")).unwrap();
    assert!(
        subcommands()
            .iter()
            .any(|s| cmd.contains(&format!("\"{s}\""))),
        "{cmd}"
    );
    let mut env_block = false;
    for line in d.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("ENV ") {
            env_block = true;
            assert_known(rest.split('=').next().unwrap().trim(), "Dockerfile");
        } else if env_block && line.contains('=') {
            assert_known(line.split('=').next().unwrap().trim(), "Dockerfile");
        }
        env_block = env_block && line.ends_with('\\');
    }
}

/// Every metric a dashboard panel charts is one the code records.
#[test]
fn the_grafana_dashboard_charts_metrics_the_code_records() {
    let dash: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/trellis-dashboard.json")).unwrap();
    let sources = sources();
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    let mut checked = 0;
    for p in panels {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                let metric = word.trim_end_matches("_bucket");
                let is_metric = [
                    "http_", "job", "queue_", "stream_", "outbox_", "ws_", "mail_", "push_",
                    "events_",
                ]
                .iter()
                .any(|p| metric.starts_with(p))
                    && metric.contains('_');
                if is_metric {
                    assert!(
                        sources.contains(&format!("\"{metric}\"")),
                        "panel {:?} charts {metric}, which no code records",
                        p["title"]
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 15, "only {checked} metric references checked");
}

/// The mount path of the `ca` volume in `file`'s first container.
fn ca_mount(file: &str) -> String {
    let d = &documents(file)[0];
    let c = containers(d)[0];
    c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"].as_str() == Some("ca"))
        .and_then(|m| m["mountPath"].as_str())
        .unwrap_or_else(|| panic!("{file} mounts no CA"))
        .to_owned()
}

/// The URL forms the manifests teach, pointed at a TLS-only Postgres and
/// a TLS-only Redis on loopback with the test's CA in place of the mounted
/// one: `app doctor` (which the manifests run as a Job) connects, verifies
/// and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secrets_url_forms_connect_over_verified_tls_with_the_mounted_ca() {
    let mount = ca_mount("deploy/k8s/api-deployment.yaml");
    for f in [
        "deploy/k8s/worker-deployment.yaml",
        "deploy/k8s/migrate-job.yaml",
        "deploy/k8s/doctor-job.yaml",
    ] {
        assert_eq!(ca_mount(f), mount, "{f} mounts the CA where the API does");
    }
    let secret = &documents("deploy/k8s/secret.example.yaml")[0];
    let taught = secret["stringData"]["DATABASE_URL"].as_str().unwrap();
    let mut url = url::Url::parse(taught).unwrap();
    let pairs: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(pairs["sslmode"], "verify-full", "{taught}");
    let root = &pairs["sslrootcert"];
    assert!(
        root.starts_with(&format!("{mount}/")),
        "{root} is under {mount}"
    );
    let config = read("deploy/k8s/configmap.yaml");
    let redis_ca = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("# REDIS_TLS_CA_FILE: "))
        .expect("configmap.yaml shows REDIS_TLS_CA_FILE");
    assert!(redis_ca.starts_with(&format!("{mount}/")), "{redis_ca}");

    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca = test_support::TestCa::new("deploy");
    let pg = test_support::TlsPostgres::start(&ca, &["localhost"], false);
    let redis = test_support::TlsRedis::start(&ca, false);
    // The taught URL, with this machine's server, user and CA file.
    url.set_host(Some("localhost")).unwrap();
    url.set_port(Some(pg.port())).unwrap();
    url.set_username("postgres").unwrap();
    url.set_password(None).unwrap();
    url.set_path("/postgres");
    let ca_file = ca.ca_file().display().to_string();
    let query: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            let v = if k == "sslrootcert" { &ca_file } else { v };
            format!("{k}={v}")
        })
        .collect();
    url.set_query(Some(&query.join("&")));
    postgres_adapter::run_migrations(url.as_str())
        .await
        .unwrap();
    let taught_redis =
        url::Url::parse(secret["stringData"]["REDIS_URL"].as_str().unwrap()).unwrap();
    assert_eq!(taught_redis.scheme(), "rediss");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_app"))
        .arg("doctor")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("APP_ENV", "production")
        .env("FIREBASE_PROJECT_ID", "deploy-test")
        .env("CURSOR_SECRET", "0123456789abcdef0123")
        .env("DATABASE_URL", url.as_str())
        .env("REDIS_URL", redis.url())
        .env("REDIS_TLS_CA_FILE", &ca_file)
        .env(
            "MAIL_OUTBOX_DIR",
            std::env::temp_dir().join("trellis-deploy-mail"),
        )
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let result = |dependency: &str, check: &str| {
        table
            .lines()
            .find(|l| {
                l.starts_with(dependency) && l[dependency.len()..].trim_start().starts_with(check)
            })
            .and_then(|l| {
                l[dependency.len()..].trim_start()[check.len()..]
                    .split_whitespace()
                    .next()
            })
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no {dependency} {check}: {table}"))
    };
    for (dependency, check) in [
        ("postgres (DATABASE_URL)", "tls"),
        ("postgres (DATABASE_URL)", "reachable"),
        ("postgres (DATABASE_URL)", "migrations"),
        ("redis (REDIS_URL)", "tls"),
        ("redis (REDIS_URL)", "reachable"),
    ] {
        assert_eq!(
            result(dependency, check),
            "ok",
            "{dependency} {check}:\n{table}"
        );
    }
    assert!(table.contains("verified against"), "{table}");
}
