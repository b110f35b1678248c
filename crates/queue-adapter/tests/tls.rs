//! The queue over `rediss://`: a `redis-server --tls-port` whose
//! certificate comes from a CA the test makes, with and without client
//! certificates.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use ports::{JobQueue as _, NewJob, TlsMaterial};
use queue_adapter::{QueueSettings, RedisJobQueue, RedisSettings, build_pool};
use std::time::Duration;
use test_support::{TestCa, TlsRedis};

fn queue(url: String, tls: TlsMaterial) -> RedisJobQueue {
    let pool = build_pool(&RedisSettings {
        tls,
        ..RedisSettings::new(url)
    })
    .unwrap();
    RedisJobQueue::new(pool, QueueSettings::new("tls-test:"))
}

fn material(ca: &TestCa, client: Option<&test_support::Issued>) -> TlsMaterial {
    TlsMaterial {
        ca_pem: Some(ca.ca_pem().as_bytes().to_vec()),
        client: client.map(|c| {
            (
                std::fs::read(&c.cert).unwrap(),
                std::fs::read(&c.key).unwrap(),
            )
        }),
    }
}

async fn round_trip(q: &RedisJobQueue) -> Result<(), String> {
    q.enqueue(NewJob::new("t", 1, &1).unwrap())
        .await
        .map_err(|e| format!("{e:#}"))?;
    let leased = q
        .fetch_many("default", Duration::from_secs(30), 1)
        .await
        .map_err(|e| format!("{e:#}"))?;
    assert_eq!(leased.len(), 1);
    Ok(())
}

#[tokio::test]
async fn jobs_go_through_a_tls_only_redis_with_its_ca() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca = TestCa::new("redis");
    let server = TlsRedis::start(&ca, false);
    round_trip(&queue(server.url(), material(&ca, None)))
        .await
        .unwrap();
    // A CA the server's certificate does not come from: refused.
    let other = TestCa::new("other");
    assert!(
        round_trip(&queue(server.url(), material(&other, None)))
            .await
            .is_err()
    );
    // Plaintext to a TLS port: refused.
    let plain = format!("redis://127.0.0.1:{}", server.port());
    assert!(
        round_trip(&queue(plain, TlsMaterial::default()))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_server_that_asks_for_client_certificates_gets_one() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca = TestCa::new("redis-mtls");
    let server = TlsRedis::start(&ca, true);
    assert!(
        round_trip(&queue(server.url(), material(&ca, None)))
            .await
            .is_err(),
        "no client certificate: refused"
    );
    let client = ca.issue("client", &["trellis"], false);
    round_trip(&queue(server.url(), material(&ca, Some(&client))))
        .await
        .unwrap();
}

/// A Redis Cluster whose nodes speak only TLS (among themselves too) and
/// ask for client certificates: `rediss-cluster://` with the CA and a
/// client certificate reaches every node (jobs on several queues land in
/// different slots); without the CA it does not.
#[tokio::test]
async fn jobs_go_through_a_tls_only_redis_cluster() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca = TestCa::new("redis-cluster");
    let cluster = test_support::TestRedisCluster::start_tls(&ca, true);
    assert!(cluster.url().starts_with("rediss-cluster://"));
    let client = ca.issue("cluster-client", &["trellis"], false);
    let q = queue(cluster.url(), material(&ca, Some(&client)));
    let queues = ["default", "mail", "push", "reports"];
    let nodes: std::collections::HashSet<u16> = queues
        .iter()
        .map(|name| cluster.node_of(&format!("{{tls-test:{name}}}")))
        .collect();
    assert!(nodes.len() > 1, "the queues live on several nodes");
    for name in queues {
        q.enqueue(NewJob::new("t", 1, &1).unwrap().on_queue(name))
            .await
            .unwrap();
        let leased = q
            .fetch_many(name, Duration::from_secs(30), 1)
            .await
            .unwrap();
        assert_eq!(leased.len(), 1, "{name}");
    }
    let other = TestCa::new("not-the-cluster's");
    assert!(
        round_trip(&queue(cluster.url(), material(&other, Some(&client))))
            .await
            .is_err()
    );
}
