//! Verification cost per token, with and without the verified-token cache.
//! `cargo bench -p auth-adapter --bench verify` (release build).
//! Prints one JSON line per case; `just bench` collects them.

#![expect(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "a benchmark binary"
)]

use auth_adapter::{AuthSettings, FirebaseClaims, FirebaseTokenVerifier, KeySettings};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ports::TokenVerifier;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PROJECT: &str = "bench";

async fn serve_keys(body: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/keys", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                let res = format!(
                    "HTTP/1.1 200 OK\r\ncache-control: max-age=3600\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(res.as_bytes()).await;
            });
        }
    });
    url
}

async fn run(verifier: &FirebaseTokenVerifier, tokens: &[String], rounds: usize) -> f64 {
    for t in tokens {
        verifier.verify(t).await.unwrap();
    }
    let start = Instant::now();
    for _ in 0..rounds {
        for t in tokens {
            verifier.verify(t).await.unwrap();
        }
    }
    start.elapsed().as_secs_f64() * 1e6 / (rounds * tokens.len()) as f64
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["bench".into()])
        .unwrap()
        .self_signed(&kp)
        .unwrap();
    let url = serve_keys(serde_json::json!({"k": cert.pem()}).to_string()).await;
    let key = EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes()).unwrap();
    let now = chrono::Utc::now().timestamp();
    let tokens: Vec<String> = (0..64)
        .map(|i| {
            let c = FirebaseClaims {
                iss: Some(format!("https://securetoken.google.com/{PROJECT}")),
                aud: Some(PROJECT.into()),
                sub: Some(format!("user-{i}")),
                exp: Some(now + 3600),
                iat: Some(now),
                email: Some(format!("u{i}@example.com")),
                ..FirebaseClaims::default()
            };
            let mut h = Header::new(Algorithm::RS256);
            h.kid = Some("k".into());
            jsonwebtoken::encode(&h, &c, &key).unwrap()
        })
        .collect();
    let settings = |cache| {
        let mut s = AuthSettings::new(PROJECT);
        s.keys = KeySettings {
            fetch_timeout: Duration::from_secs(2),
            ..KeySettings::new(url.clone())
        };
        s.cache_capacity = cache;
        s
    };
    let uncached = FirebaseTokenVerifier::new(settings(0)).unwrap();
    let cached = FirebaseTokenVerifier::new(settings(10_000)).unwrap();
    let rounds = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(200);
    let without = run(&uncached, &tokens, rounds).await;
    let with = run(&cached, &tokens, rounds).await;
    println!(
        "{}",
        serde_json::json!({"scenario": "auth.verify", "uncached_us": without, "cached_us": with, "speedup": without / with})
    );
}
