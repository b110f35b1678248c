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
