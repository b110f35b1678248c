//! fred over `rediss://`: the cache and the fan-out through a
//! `redis-server --tls-port`, trusting a CA the test makes, with a client
//! certificate where the server asks for one.

use ports::{Cache as _, TlsMaterial};
use std::time::Duration;
use streams_adapter::{RedisCache, connect_with_tls};
use test_support::{TestCa, TlsRedis};

#[tokio::test]
async fn the_cache_works_over_tls_with_a_client_certificate() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca = TestCa::new("fred");
    let server = TlsRedis::start(&ca, true);
    let client = ca.issue("fred-client", &["trellis"], false);
    let tls = TlsMaterial {
        ca_pem: Some(ca.ca_pem().as_bytes().to_vec()),
        client: Some((
            std::fs::read(&client.cert).unwrap(),
            std::fs::read(&client.key).unwrap(),
        )),
    };
    let fred = connect_with_tls(&server.url(), &tls, Duration::from_secs(5))
        .await
        .unwrap();
    let cache = RedisCache::new(fred, "tls:");
    cache
        .set("k", b"over tls", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(cache.get("k").await.unwrap(), Some(b"over tls".to_vec()));

    // Without the client certificate the server hangs up on us.
    let no_cert = TlsMaterial {
        client: None,
        ..tls
    };
    let fred = connect_with_tls(&server.url(), &no_cert, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(RedisCache::new(fred, "tls:").get("k").await.is_err());
}

/// fred on a Redis Cluster that speaks only TLS: `rediss-cluster://` with
/// the CA reaches the keys on every node.
#[tokio::test]
async fn the_cache_works_on_a_tls_only_redis_cluster() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca = TestCa::new("fred-cluster");
    let cluster = test_support::TestRedisCluster::start_tls(&ca, false);
    let tls = TlsMaterial {
        ca_pem: Some(ca.ca_pem().as_bytes().to_vec()),
        client: None,
    };
    let fred = connect_with_tls(&cluster.url(), &tls, Duration::from_secs(5))
        .await
        .unwrap();
    let cache = RedisCache::new(fred, "tls:");
    let keys = ["a", "b", "c", "d", "e", "f"];
    let nodes: std::collections::HashSet<u16> = keys
        .iter()
        .map(|k| cluster.node_of(&format!("tls:{k}")))
        .collect();
    assert!(nodes.len() > 1, "the keys live on several nodes");
    for k in keys {
        cache
            .set(k, k.as_bytes(), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(cache.get(k).await.unwrap(), Some(k.as_bytes().to_vec()));
    }
}
