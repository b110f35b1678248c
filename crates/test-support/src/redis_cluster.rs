//! A real Redis Cluster a test owns: three primaries (`redis-server
//! --cluster-enabled yes`) on loopback ports, joined by `redis-cli --cluster
//! create`, killed when the value is dropped.

use crate::processes::{kill, wait_until};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

/// Three cluster primaries holding the 16384 slots between them.
#[derive(Debug)]
pub struct TestRedisCluster {
    ports: Vec<u16>,
    children: Vec<Option<Child>>,
    dir: std::path::PathBuf,
    prefix: String,
    /// With TLS: `redis-cli`'s arguments for it (and `rediss-cluster://`).
    tls: Option<Vec<String>>,
}

/// A port `p` with `p` and its cluster bus port `p + 10000` both free.
fn free_cluster_port(taken: &[u16]) -> u16 {
    for _ in 0..1000 {
        let p = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("no free port");
        // Ephemeral ports may be too high for a bus port: pick one below.
        let p = 20_000 + p % 25_000;
        let free = |q: u16| TcpListener::bind(("127.0.0.1", q)).is_ok();
        if !taken.contains(&p) && free(p) && free(p + 10_000) {
            return p;
        }
    }
    panic!("no free pair of ports for a Redis Cluster node");
}

impl TestRedisCluster {
    /// Starts the nodes, creates the cluster and waits until every node
    /// says `cluster_state:ok`.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Nodes that speak only TLS, among themselves too (`--tls-cluster
    /// yes`), with certificates from `ca` for 127.0.0.1; asking clients for
    /// a certificate from `ca` when `client_certs` is set.
    pub fn start_tls(ca: &crate::TestCa, client_certs: bool) -> Self {
        let issued = ca.issue("redis-cluster", &["127.0.0.1", "localhost"], false);
        let tls = vec![
            "--tls-cert-file".to_owned(),
            issued.cert.display().to_string(),
            "--tls-key-file".to_owned(),
            issued.key.display().to_string(),
            "--tls-ca-cert-file".to_owned(),
            ca.ca_file().display().to_string(),
            "--tls-auth-clients".to_owned(),
            if client_certs { "yes" } else { "no" }.to_owned(),
        ];
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<Vec<String>>) -> Self {
        crate::init_tracing();
        let dir = std::env::temp_dir().join(format!("trellis-cluster-{}", crate::unique_suffix()));
        std::fs::create_dir_all(&dir).expect("creating the cluster's directory");
        let mut ports = Vec::new();
        for _ in 0..3 {
            let p = free_cluster_port(&ports);
            ports.push(p);
        }
        let mut cluster = Self {
            ports: ports.clone(),
            children: Vec::new(),
            dir,
            prefix: format!("test:{}:{}:", crate::now_secs(), crate::unique_suffix()),
            tls: tls.as_ref().map(|args| {
                // redis-cli: --tls, the CA, and (for servers that ask) the
                // same certificate as a client's.
                let mut cli = vec!["--tls".to_owned()];
                for pair in args.chunks(2) {
                    match pair[0].as_str() {
                        "--tls-cert-file" => cli.extend(["--cert".to_owned(), pair[1].clone()]),
                        "--tls-key-file" => cli.extend(["--key".to_owned(), pair[1].clone()]),
                        "--tls-ca-cert-file" => {
                            cli.extend(["--cacert".to_owned(), pair[1].clone()]);
                        }
                        _ => {}
                    }
                }
                cli
            }),
        };
        for &port in &ports {
            let node_dir = cluster.dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("creating a node's directory");
            let mut server = Command::new("redis-server");
            match &tls {
                None => server.args(["--port", &port.to_string()]),
                Some(args) => server
                    .args(["--port", "0", "--tls-port", &port.to_string()])
                    .args(["--tls-cluster", "yes", "--tls-replication", "yes"])
                    .args(args),
            };
            let child = server
                .args(["--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"])
                .args(["--save", "", "--appendonly", "no", "--dir"])
                .arg(&node_dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start redis-server (is it installed?): {e}"));
            cluster.children.push(Some(child));
            wait_until("a cluster node to answer PING", || {
                cluster
                    .cli(port, &["PING"])
                    .is_some_and(|r| r.trim() == "PONG")
            });
        }
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let created = Command::new("redis-cli")
            .args(cluster.tls.iter().flatten())
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli (is it installed?): {e}"));
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        for &port in &ports {
            wait_until("the cluster to be ok on every node", || {
                cluster.cli(port, &["CLUSTER", "INFO"]).is_some_and(|r| {
                    r.contains("cluster_state:ok") && r.contains("cluster_known_nodes:3")
                })
            });
        }
        cluster
    }

    /// `redis-cluster://127.0.0.1:<p1>?node=127.0.0.1:<p2>&node=127.0.0.1:<p3>`.
    pub fn url(&self) -> String {
        format!(
            "{}://127.0.0.1:{}?node=127.0.0.1:{}&node=127.0.0.1:{}",
            if self.tls.is_some() {
                "rediss-cluster"
            } else {
                "redis-cluster"
            },
            self.ports[0],
            self.ports[1],
            self.ports[2]
        )
    }

    /// The plain `redis://` URL of each primary.
    pub fn node_urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// A key prefix for the code under test (the cluster is this test's own).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The port of the primary serving `key`'s hash slot.
    pub fn node_of(&self, key: &str) -> u16 {
        let slot: u16 = self
            .cli(self.ports[0], &["CLUSTER", "KEYSLOT", key])
            .and_then(|r| r.trim().parse().ok())
            .expect("CLUSTER KEYSLOT");
        let shards = self
            .cli(self.ports[0], &["CLUSTER", "SLOTS"])
            .expect("CLUSTER SLOTS");
        // redis-cli prints each range as: start, end, then the node's host,
        // port and id, one per line.
        let lines: Vec<&str> = shards.lines().map(str::trim).collect();
        for w in lines.windows(4) {
            if let (Ok(start), Ok(end), Ok(port)) = (
                w[0].parse::<u16>(),
                w[1].parse::<u16>(),
                w[3].parse::<u16>(),
            ) && w[2] == "127.0.0.1"
                && (start..=end).contains(&slot)
            {
                return port;
            }
        }
        panic!("no node serves slot {slot}: {shards}");
    }
}

impl TestRedisCluster {
    /// `redis-cli -p <port> <args>`, its output, or `None` if it failed.
    fn cli(&self, port: u16, args: &[&str]) -> Option<String> {
        cli_with(self.tls.as_deref().unwrap_or_default(), port, args)
    }
}

fn cli_with(tls: &[String], port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(tls)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Drop for TestRedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            kill(child);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_of_three_primaries_serves_every_slot() {
        let c = TestRedisCluster::start();
        let info = c.cli(c.ports[0], &["CLUSTER", "INFO"]).unwrap();
        assert!(info.contains("cluster_slots_assigned:16384"), "{info}");
        assert!(info.contains("cluster_size:3"), "{info}");
        let homes: std::collections::HashSet<u16> = ["a", "b", "c", "d", "e", "f", "g", "h"]
            .iter()
            .map(|k| c.node_of(k))
            .collect();
        assert!(homes.len() > 1, "keys spread over the nodes: {homes:?}");
    }
}
