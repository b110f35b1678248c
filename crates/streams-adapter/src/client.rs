//! The fred client: built with a reconnect policy so that a Redis restart,
//! or a managed Redis closing idle connections, is ridden out.

use anyhow::Context as _;
use fred::prelude::*;
use std::time::Duration;

/// Builds a client and starts connecting. Waits up to `wait` for the first
/// connection; if Redis is not up by then the client keeps trying in the
/// background (readiness reports it) and this still returns the client.
pub async fn connect(url: &str, wait: Duration) -> anyhow::Result<Client> {
    connect_with_tls(url, &ports::TlsMaterial::default(), wait).await
}

/// The rustls configuration for `tls`: the system's roots and the extra CA,
/// and the client certificate.
pub fn rustls_config(tls: &ports::TlsMaterial) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(ca) = &tls.ca_pem {
        for cert in CertificateDer::pem_slice_iter(ca) {
            roots
                .add(cert.context("REDIS_TLS_CA_FILE is not PEM certificates")?)
                .context("REDIS_TLS_CA_FILE")?;
        }
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    Ok(match &tls.client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .context("REDIS_TLS_CERT_FILE is not PEM certificates")?;
            let key = PrivateKeyDer::from_pem_slice(key).context("REDIS_TLS_KEY_FILE")?;
            builder
                .with_client_auth_cert(chain, key)
                .context("REDIS_TLS_CERT_FILE / REDIS_TLS_KEY_FILE")?
        }
    })
}

/// Like [`connect`], with `tls` for a `rediss://` URL.
pub async fn connect_with_tls(
    url: &str,
    tls: &ports::TlsMaterial,
    wait: Duration,
) -> anyhow::Result<Client> {
    let client = build(url, tls, true)?;
    say_reconnects(&client, "Redis client");
    client.connect();
    match tokio::time::timeout(wait, client.wait_for_connect()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "Redis is not reachable yet; retrying in the background")
        }
        Err(_) => tracing::warn!(
            waited_ms = wait.as_millis() as u64,
            "Redis is not reachable yet; retrying in the background"
        ),
    }
    Ok(client)
}

/// One WARN line each time `client` (`what`) is connected again after its
/// connection was lost (the attempts in between are fred's, with backoff);
/// the first connection is not news.
pub(crate) fn say_reconnects(client: &impl fred::interfaces::EventInterface, what: &'static str) {
    let connected_before = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _listener = client.on_reconnect(move |server| {
        let again = connected_before.swap(true, std::sync::atomic::Ordering::Relaxed);
        async move {
            if again {
                tracing::warn!(%server, client = what, "Redis connection lost and made again");
            }
            Ok(())
        }
    });
}

/// The client for `url` (not connected yet). `retry`: reconnect forever
/// (a service's client); without it the first failure is the answer (a
/// diagnosis).
pub(crate) fn build(url: &str, tls: &ports::TlsMaterial, retry: bool) -> anyhow::Result<Client> {
    let mut config = Config::from_url(url).context("REDIS_URL is not a valid Redis URL")?;
    if config.tls.is_some() && *tls != ports::TlsMaterial::default() {
        config.tls = Some(fred::types::config::TlsConfig::from(rustls_config(tls)?));
    }
    // Without this, a client whose first connection fails (Redis down when
    // the process starts) never tries again.
    config.fail_fast = !retry;
    let builder = Builder::from_config(config)
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.internal_command_timeout = Duration::from_secs(5);
            // Each connection is named after its client (`CLIENT LIST`
            // shows which is which; tests kill exactly their own).
            c.auto_client_setname = true;
        })
        .with_performance_config(|p| {
            p.default_command_timeout = Duration::from_secs(5);
        })
        .clone();
    let mut builder = builder;
    if retry {
        // Retry forever: 100 ms growing to 5 s between attempts.
        builder.set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2));
    }
    builder.build().context("building the Redis client")
}
