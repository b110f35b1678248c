//! How the queue reaches Redis: one primary (a deadpool-redis pool) or a
//! Redis Cluster (`redis-cluster://` URLs, redis-rs' cluster client); a
//! shared multiplexed connection taken from either; and the readiness probe.
//!
//! Longer than 450 lines: one primary and a Redis Cluster behind one
//! interface (pools, the shared connection, TLS, cluster routing), with the
//! readiness probe; their tests are beside them.

use anyhow::Context as _;
use async_trait::async_trait;
use deadpool_redis::redis::aio::{ConnectionLike, MultiplexedConnection};
use deadpool_redis::redis::cluster::{ClusterClient, ClusterClientBuilder};
use deadpool_redis::redis::cluster_async::ClusterConnection;
use deadpool_redis::redis::{self, AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, Value};
use deadpool_redis::{Manager, Pool, Runtime};
use ports::{HealthProbe, ProbeError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://`, `rediss://`, or for a Redis Cluster
    /// `redis-cluster://host:port?node=host2:port2&node=host3:port3`
    /// (`rediss-cluster://` with TLS; any one node is enough to find the rest).
    pub url: String,
    pub max_connections: usize,
    /// Waiting for a pooled connection, or for a new one to connect.
    pub acquire_timeout: Duration,
    /// Longest wait for any reply (blocking waits stay below it).
    pub response_timeout: Duration,
    /// For `rediss://`: a CA to trust besides the system's roots, and a
    /// client certificate.
    pub tls: ports::TlsMaterial,
}

impl RedisSettings {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 32,
            acquire_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(5),
            tls: ports::TlsMaterial::default(),
        }
    }
}

/// The certificates redis-rs takes for `tls`: the system's roots and the
/// extra CA together (redis-rs trusts only the roots it is given once it
/// is given any), and the client certificate. `None`: nothing beyond the
/// system's roots.
fn certificates(tls: &ports::TlsMaterial) -> Option<redis::TlsCertificates> {
    if tls.ca_pem.is_none() && tls.client.is_none() {
        return None;
    }
    let root_cert = tls.ca_pem.as_ref().map(|extra| {
        let mut bundle = system_roots_pem();
        bundle.extend_from_slice(b"\n");
        bundle.extend_from_slice(extra);
        bundle
    });
    Some(redis::TlsCertificates {
        client_tls: tls
            .client
            .as_ref()
            .map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
        root_cert,
    })
}

/// The operating system's root certificates, as PEM.
fn system_roots_pem() -> Vec<u8> {
    use base64::Engine as _;
    let mut pem = Vec::new();
    for cert in rustls_native_certs::load_native_certs().certs {
        let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.extend_from_slice(line);
            pem.push(b'\n');
        }
        pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
    }
    pem
}

/// The node URLs of a `redis-cluster://` (or `rediss-cluster://`) URL, in
/// fred's convention: the host in the authority, more with `?node=`, the
/// credentials applying to every node. `None` for any other URL.
pub fn cluster_nodes(url: &str) -> Option<Result<Vec<String>, String>> {
    let (scheme, rest) = if let Some(r) = url.strip_prefix("redis-cluster://") {
        ("redis", r)
    } else if let Some(r) = url.strip_prefix("rediss-cluster://") {
        ("rediss", r)
    } else {
        return None;
    };
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = authority.trim_end_matches('/');
    let (userinfo, first) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let mut hosts = vec![first.to_owned()];
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("node", h)) if !h.is_empty() => hosts.push(h.to_owned()),
            _ => {
                return Some(Err(format!(
                    "unknown part {pair:?} of a redis-cluster:// URL (only node=host:port)"
                )));
            }
        }
    }
    if hosts.iter().any(|h| h.is_empty() || h.contains('/')) {
        return Some(Err(
            "a redis-cluster:// URL names each node as host:port".into()
        ));
    }
    let auth = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
    Some(Ok(hosts
        .into_iter()
        .map(|h| format!("{scheme}://{auth}{h}"))
        .collect()))
}

/// A single Redis behind a deadpool pool, or a Redis Cluster. Cheap to clone.
#[derive(Clone)]
pub enum RedisPool {
    Single(Pool),
    Cluster(ClusterPool),
    /// The primary a Sentinel names (`redis-sentinel://`), found again by
    /// every new connection, so a failover is followed.
    Sentinel(deadpool::managed::Pool<SentinelManager>),
}

impl std::fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "RedisPool::Single",
            Self::Cluster(_) => "RedisPool::Cluster",
            Self::Sentinel(_) => "RedisPool::Sentinel",
        })
    }
}

/// A Redis Cluster client and the idle connections kept for blocking waits
/// (a blocking command would hold up a shared connection).
#[derive(Clone)]
pub struct ClusterPool {
    inner: Arc<ClusterInner>,
}

struct ClusterInner {
    client: ClusterClient,
    /// Idle blocking connections, each with the permit it was opened under.
    idle: Mutex<Vec<ClusterBlocking>>,
    max_idle: usize,
    /// One per blocking connection open (idle or in use): at most
    /// `max_connections` of them, as in the single-node pool.
    open: Arc<tokio::sync::Semaphore>,
    acquire_timeout: Duration,
}

/// A cluster connection for blocking commands and the permit it holds.
pub(crate) struct ClusterBlocking {
    conn: ClusterConnection,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl ConnectionLike for ClusterBlocking {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.conn.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.conn.req_packed_commands(cmd, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

impl std::fmt::Debug for ClusterPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterPool")
            .field("max_idle", &self.inner.max_idle)
            .finish_non_exhaustive()
    }
}

impl RedisPool {
    /// Whether keys must be placed in hash slots (every key a script
    /// touches sharing one hash tag).
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// Closes the pool: connections are dropped as they come back.
    pub fn close(&self) {
        match self {
            Self::Single(pool) => pool.close(),
            Self::Sentinel(pool) => pool.close(),
            Self::Cluster(c) => {
                if let Ok(mut idle) = c.inner.idle.lock() {
                    idle.clear();
                }
            }
        }
    }

    /// A new shared (multiplexed) connection.
    pub(crate) async fn connect(&self) -> Result<Conn, PoolError> {
        match self {
            Self::Single(pool) => Ok(Conn::Single(deadpool_redis::Connection::take(
                pool.get().await?,
            ))),
            Self::Sentinel(pool) => Ok(Conn::Single(deadpool::managed::Object::take(
                pool.get().await?,
            ))),
            Self::Cluster(c) => Ok(Conn::Cluster(c.inner.client.get_async_connection().await?)),
        }
    }

    /// A connection of its own for a blocking command; give it back with
    /// [`release`](Self::release) when the command returned.
    pub(crate) async fn blocking(&self) -> Result<Blocking, PoolError> {
        match self {
            Self::Single(pool) => Ok(Blocking::Single(pool.get().await?)),
            Self::Sentinel(pool) => Ok(Blocking::Sentinel(pool.get().await?)),
            Self::Cluster(c) => {
                let idle = c.inner.idle.lock().ok().and_then(|mut v| v.pop());
                if let Some(conn) = idle {
                    return Ok(Blocking::Cluster(conn));
                }
                let permit = tokio::time::timeout(
                    c.inner.acquire_timeout,
                    c.inner.open.clone().acquire_owned(),
                )
                .await
                .map_err(|_| PoolError::Exhausted)?
                .map_err(|_| PoolError::Exhausted)?;
                Ok(Blocking::Cluster(ClusterBlocking {
                    conn: c.inner.client.get_async_connection().await?,
                    _permit: permit,
                }))
            }
        }
    }

    pub(crate) fn release(&self, conn: Blocking) {
        if let (Self::Cluster(c), Blocking::Cluster(conn)) = (self, conn)
            && let Ok(mut idle) = c.inner.idle.lock()
            && idle.len() < c.inner.max_idle
        {
            idle.push(conn);
        }
    }
}

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(transparent)]
    Pool(#[from] deadpool_redis::PoolError),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    /// Every blocking connection the budget allows is in use.
    #[error("every Redis connection of the budget is in use")]
    Exhausted,
}

/// `ConnectionLike` for an enum of a `Single` and a `Cluster` connection:
/// each call goes to the one it holds.
macro_rules! delegate_connection_like {
    ($enum:ident: $($variant:ident),+) => {
        impl ConnectionLike for $enum {
            fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
                match self {
                    $(Self::$variant(c) => c.req_packed_command(cmd),)+
                }
            }

            fn req_packed_commands<'a>(
                &'a mut self,
                cmd: &'a Pipeline,
                offset: usize,
                count: usize,
            ) -> RedisFuture<'a, Vec<Value>> {
                match self {
                    $(Self::$variant(c) => c.req_packed_commands(cmd, offset, count),)+
                }
            }

            fn get_db(&self) -> i64 {
                match self {
                    $(Self::$variant(c) => c.get_db(),)+
                }
            }
        }
    };
}

/// A multiplexed connection to one Redis or to a cluster.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

delegate_connection_like!(Conn: Single, Cluster);

/// A connection held for a blocking command.
pub(crate) enum Blocking {
    Single(deadpool_redis::Connection),
    Cluster(ClusterBlocking),
    Sentinel(deadpool::managed::Object<SentinelManager>),
}

delegate_connection_like!(Blocking: Single, Cluster, Sentinel);

/// A `redis-sentinel://` (or `rediss-sentinel://`) URL, in fred's
/// convention: `redis-sentinel://[user:password@]host:port[/db]?node=host2:port2&sentinelServiceName=name[&sentinelUsername=..&sentinelPassword=..]`.
/// The credentials and database are the primary's; the Sentinels take their
/// own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    /// The Sentinels, as `redis://` (or `rediss://`) URLs.
    pub sentinels: Vec<String>,
    /// The name the Sentinels know the primary by.
    pub service: String,
    scheme: &'static str,
    auth: String,
    db: String,
}

impl SentinelUrl {
    /// The URL of the primary at `host:port`.
    pub fn primary(&self, host: &str, port: u16) -> String {
        format!("{}://{}{host}:{port}{}", self.scheme, self.auth, self.db)
    }
}

/// The parts of a `redis-sentinel://` URL; `None` for any other URL.
pub fn sentinel_parts(url: &str) -> Option<Result<SentinelUrl, String>> {
    let (scheme, rest) = if let Some(r) = url.strip_prefix("redis-sentinel://") {
        ("redis", r)
    } else if let Some(r) = url.strip_prefix("rediss-sentinel://") {
        ("rediss", r)
    } else {
        return None;
    };
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, db) = match before_query.split_once('/') {
        Some((a, d)) if !d.is_empty() => (a, format!("/{d}")),
        Some((a, _)) => (a, String::new()),
        None => (before_query, String::new()),
    };
    let (userinfo, first) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let mut hosts = vec![first.to_owned()];
    let (mut service, mut sentinel_user, mut sentinel_password) = (None, None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("node", h)) if !h.is_empty() => hosts.push(h.to_owned()),
            Some(("sentinelServiceName", n)) if !n.is_empty() => service = Some(n.to_owned()),
            Some(("sentinelUsername", u)) => sentinel_user = Some(u.to_owned()),
            Some(("sentinelPassword", p)) => sentinel_password = Some(p.to_owned()),
            _ => {
                return Some(Err(format!(
                    "unknown part {pair:?} of a redis-sentinel:// URL (node, sentinelServiceName, sentinelUsername, sentinelPassword)"
                )));
            }
        }
    }
    let Some(service) = service else {
        return Some(Err(
            "a redis-sentinel:// URL names its primary with ?sentinelServiceName=".into(),
        ));
    };
    if hosts.iter().any(|h| h.is_empty() || h.contains('/')) {
        return Some(Err(
            "a redis-sentinel:// URL names each Sentinel as host:port".into(),
        ));
    }
    let sentinel_auth = match (sentinel_user, sentinel_password) {
        (None, None) => String::new(),
        (user, password) => format!(
            "{}:{}@",
            user.unwrap_or_default(),
            password.unwrap_or_default()
        ),
    };
    Some(Ok(SentinelUrl {
        sentinels: hosts
            .iter()
            .map(|h| format!("{scheme}://{sentinel_auth}{h}"))
            .collect(),
        service,
        scheme,
        auth: userinfo.map(|u| format!("{u}@")).unwrap_or_default(),
        db,
    }))
}

/// Opens connections to the primary the Sentinels name now: asked again
/// for every new connection, so after a failover (which closes the old
/// primary's clients) the pool reconnects to the new one.
pub struct SentinelManager {
    parts: SentinelUrl,
    config: AsyncConnectionConfig,
    certs: Option<redis::TlsCertificates>,
    ping: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for SentinelManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelManager")
            .field("service", &self.parts.service)
            .finish_non_exhaustive()
    }
}

impl SentinelManager {
    fn client(&self, url: &str) -> redis::RedisResult<redis::Client> {
        match &self.certs {
            Some(certs) => redis::Client::build_with_tls(url, certs.clone()),
            None => redis::Client::open(url),
        }
    }

    /// Where the first Sentinel that answers says the primary is.
    async fn primary(&self) -> redis::RedisResult<(String, u16)> {
        let mut last = None;
        for sentinel in &self.parts.sentinels {
            let asked = async {
                let mut conn = self
                    .client(sentinel)?
                    .get_multiplexed_async_connection_with_config(&self.config)
                    .await?;
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(&self.parts.service)
                    .query_async::<Option<(String, u16)>>(&mut conn)
                    .await
            };
            match asked.await {
                Ok(Some(addr)) => return Ok(addr),
                Ok(None) => {
                    last = Some(redis::RedisError::from((
                        redis::ErrorKind::Client,
                        "the Sentinel knows no primary by the sentinelServiceName",
                    )));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::Client, "no Sentinel in the URL"))
        }))
    }
}

impl deadpool::managed::Manager for SentinelManager {
    type Type = MultiplexedConnection;
    type Error = redis::RedisError;

    async fn create(&self) -> Result<MultiplexedConnection, redis::RedisError> {
        let (host, port) = self.primary().await?;
        let mut conn = self
            .client(&self.parts.primary(&host, port))?
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        // A Sentinel that has not noticed a failover yet names a server that
        // is a replica now: only a primary takes the queue's writes.
        let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut conn).await?;
        match role.first() {
            Some(Value::BulkString(r)) if r.as_slice() == b"master" => Ok(conn),
            _ => Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "the server the Sentinel named is not a primary (a failover under way)",
            ))),
        }
    }

    async fn recycle(
        &self,
        conn: &mut MultiplexedConnection,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<redis::RedisError> {
        let n = self
            .ping
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_string();
        let pong: String = redis::cmd("PING").arg(&n).query_async(conn).await?;
        if pong == n {
            Ok(())
        } else {
            Err(deadpool::managed::RecycleError::message(
                "an unexpected answer to PING",
            ))
        }
    }
}

/// Builds the pool (or the cluster client). Connections open lazily: this
/// succeeds with Redis down.
pub fn build_pool(settings: &RedisSettings) -> anyhow::Result<RedisPool> {
    if let Some(nodes) = cluster_nodes(&settings.url) {
        let nodes = nodes.map_err(anyhow::Error::msg)?;
        let mut builder = ClusterClientBuilder::new(nodes)
            .connection_timeout(settings.acquire_timeout)
            .response_timeout(settings.response_timeout);
        if let Some(certs) = certificates(&settings.tls) {
            builder = builder.certs(certs);
        }
        let client = builder
            .build()
            .context("REDIS_URL is not a valid Redis Cluster URL")?;
        return Ok(RedisPool::Cluster(ClusterPool {
            inner: Arc::new(ClusterInner {
                client,
                idle: Mutex::default(),
                max_idle: settings.max_connections,
                open: Arc::new(tokio::sync::Semaphore::new(settings.max_connections.max(1))),
                acquire_timeout: settings.acquire_timeout,
            }),
        }));
    }
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(settings.acquire_timeout))
        .set_response_timeout(Some(settings.response_timeout));
    if let Some(parts) = sentinel_parts(&settings.url) {
        let parts = parts.map_err(anyhow::Error::msg)?;
        let manager = SentinelManager {
            parts,
            config,
            certs: certificates(&settings.tls),
            ping: std::sync::atomic::AtomicU64::new(0),
        };
        return deadpool::managed::Pool::builder(manager)
            .max_size(settings.max_connections)
            .wait_timeout(Some(settings.acquire_timeout))
            .create_timeout(Some(settings.acquire_timeout))
            .recycle_timeout(Some(settings.acquire_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .context("building the Redis pool")
            .map(RedisPool::Sentinel);
    }
    let manager = match certificates(&settings.tls) {
        // The client redis-rs builds with the certificates carries them in
        // its connection info, which the pool's manager then uses.
        Some(certs) => {
            let client = redis::Client::build_with_tls(settings.url.as_str(), certs)
                .context("REDIS_URL with REDIS_TLS_* (a rediss:// URL and PEM files)")?;
            Manager::new_with_config(client.get_connection_info().clone(), config)
        }
        None => Manager::new_with_config(settings.url.as_str(), config),
    }
    .context("REDIS_URL is not a valid Redis URL")?;
    Pool::builder(manager)
        .max_size(settings.max_connections)
        .wait_timeout(Some(settings.acquire_timeout))
        .create_timeout(Some(settings.acquire_timeout))
        .recycle_timeout(Some(settings.acquire_timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .context("building the Redis pool")
        .map(RedisPool::Single)
}

/// One multiplexed connection shared by clones: every operation pipelines
/// over it without a pool checkout (and its recycle `PING`). A connection
/// error drops it; the next call makes a fresh one.
pub(crate) struct SharedConnection {
    pool: RedisPool,
    /// The connection, and which one it is (counting from 1): a `WAIT`
    /// proves something only about writes on its own connection.
    slot: tokio::sync::RwLock<Option<(Conn, u64)>>,
    made: std::sync::atomic::AtomicU64,
}

impl SharedConnection {
    pub(crate) fn new(pool: RedisPool) -> Self {
        Self {
            pool,
            slot: tokio::sync::RwLock::new(None),
            made: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub(crate) async fn get(&self) -> Result<Conn, PoolError> {
        Ok(self.get_numbered().await?.0)
    }

    /// The connection and its number.
    pub(crate) async fn get_numbered(&self) -> Result<(Conn, u64), PoolError> {
        if let Some(c) = self.slot.read().await.as_ref() {
            return Ok(c.clone());
        }
        let mut slot = self.slot.write().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let conn = self.pool.connect().await?;
        let n = self.made.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        *slot = Some((conn.clone(), n));
        Ok((conn, n))
    }

    pub(crate) async fn reset(&self) {
        *self.slot.write().await = None;
    }

    pub(crate) fn pool(&self) -> &RedisPool {
        &self.pool
    }
}

/// `/readyz` check: Redis answers PING (on a cluster, through the client
/// that routes to every node).
#[derive(Clone)]
pub struct RedisHealthProbe {
    pool: RedisPool,
}

impl std::fmt::Debug for RedisHealthProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHealthProbe").finish_non_exhaustive()
    }
}

impl RedisHealthProbe {
    pub fn new(pool: RedisPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl HealthProbe for RedisHealthProbe {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn check(&self) -> Result<(), ProbeError> {
        let fail = |e: anyhow::Error| ProbeError {
            dependency: "redis",
            source: e,
        };
        let mut conn = self.pool.blocking().await.map_err(|e| fail(e.into()))?;
        let pong: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|e| fail(e.into()))?;
        self.pool.release(conn);
        if pong != "PONG" {
            return Err(fail(anyhow::anyhow!("unexpected PING reply")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_name_every_node_with_shared_credentials() {
        assert_eq!(cluster_nodes("redis://127.0.0.1:6379"), None);
        assert_eq!(
            cluster_nodes("redis-cluster://127.0.0.1:7001?node=127.0.0.1:7002&node=127.0.0.1:7003"),
            Some(Ok(vec![
                "redis://127.0.0.1:7001".to_owned(),
                "redis://127.0.0.1:7002".to_owned(),
                "redis://127.0.0.1:7003".to_owned(),
            ]))
        );
        assert_eq!(
            cluster_nodes("rediss-cluster://:s3cret@a.example:6380/?node=b.example:6380"),
            Some(Ok(vec![
                "rediss://:s3cret@a.example:6380".to_owned(),
                "rediss://:s3cret@b.example:6380".to_owned(),
            ]))
        );
        assert!(matches!(
            cluster_nodes("redis-cluster://a:1?db=2"),
            Some(Err(_))
        ));
        assert!(matches!(
            cluster_nodes("redis-cluster://a:1?node="),
            Some(Err(_))
        ));
    }
}
