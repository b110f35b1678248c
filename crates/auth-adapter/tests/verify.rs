//! Verification with real RSA keys served by a local key server in Google's
//! x509 format.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use auth_adapter::{
    AuthSettings, DevTokenRequest, FirebaseClaims, FirebaseInfo, FirebaseTokenVerifier,
    KeySettings, mint_dev_token,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ports::{InvalidToken, TokenVerifier, VerifyTokenError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PROJECT: &str = "trellis-test";

struct TestKey {
    kid: String,
    encoding: EncodingKey,
    cert_pem: String,
    public_pem: String,
}

fn test_key(kid: &str) -> TestKey {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["securetoken.test".into()])
        .unwrap()
        .self_signed(&kp)
        .unwrap();
    TestKey {
        kid: kid.into(),
        encoding: EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes()).unwrap(),
        cert_pem: cert.pem(),
        public_pem: kp.public_key_pem(),
    }
}

#[derive(Clone)]
struct Served {
    body: String,
    status: u16,
    max_age: u64,
    delay: Duration,
}

/// A tiny HTTP server that answers every request with the current `Served`.
struct KeyServer {
    url: String,
    served: Arc<Mutex<Served>>,
    hits: Arc<AtomicUsize>,
}

impl KeyServer {
    async fn start(keys: &[&TestKey]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/keys", listener.local_addr().unwrap());
        let served = Arc::new(Mutex::new(Served {
            body: x509(keys),
            status: 200,
            max_age: 3600,
            delay: Duration::ZERO,
        }));
        let hits = Arc::new(AtomicUsize::new(0));
        let (s, h) = (served.clone(), hits.clone());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (s, h) = (s.clone(), h.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    h.fetch_add(1, Ordering::SeqCst);
                    let now = s.lock().unwrap().clone();
                    tokio::time::sleep(now.delay).await;
                    let res = format!(
                        "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncache-control: public, max-age={}, must-revalidate\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                        now.status,
                        now.max_age,
                        now.body.len(),
                        now.body
                    );
                    let _ = sock.write_all(res.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Self { url, served, hits }
    }

    fn serve(&self, keys: &[&TestKey]) {
        self.served.lock().unwrap().body = x509(keys);
    }

    fn set(&self, f: impl FnOnce(&mut Served)) {
        f(&mut self.served.lock().unwrap());
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn x509(keys: &[&TestKey]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = keys
        .iter()
        .map(|k| (k.kid.clone(), k.cert_pem.clone().into()))
        .collect();
    serde_json::Value::Object(map).to_string()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims(uid: &str) -> FirebaseClaims {
    FirebaseClaims {
        iss: Some(format!("https://securetoken.google.com/{PROJECT}")),
        aud: Some(PROJECT.into()),
        sub: Some(uid.into()),
        exp: Some(now() + 3600),
        iat: Some(now() - 5),
        auth_time: Some(now() - 5),
        email: Some("ada@example.com".into()),
        email_verified: Some(true),
        name: Some("Ada".into()),
        picture: None,
        firebase: Some(FirebaseInfo {
            sign_in_provider: Some("password".into()),
        }),
        custom: serde_json::Map::new(),
    }
}

fn sign(key: &TestKey, c: &FirebaseClaims) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&h, c, &key.encoding).unwrap()
}

fn settings(server: &KeyServer) -> AuthSettings {
    let mut s = AuthSettings::new(PROJECT);
    s.keys = KeySettings {
        unknown_kid_refetch: Duration::from_secs(60),
        ..KeySettings::new(server.url.clone())
    };
    s.leeway = Duration::from_secs(5);
    s
}

fn invalid(r: Result<domain::VerifiedIdentity, VerifyTokenError>) -> InvalidToken {
    match r {
        Err(VerifyTokenError::Invalid(reason)) => reason,
        other => panic!("expected an invalid token, got {other:?}"),
    }
}

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn a_valid_token_gives_its_identity() {
    let k = test_key("k1");
    let server = KeyServer::start(&[&k]).await;
    let v = FirebaseTokenVerifier::new(settings(&server)).unwrap();
    let id = v.verify(&sign(&k, &claims("uid-1"))).await.unwrap();
    assert_eq!(id.uid.as_str(), "uid-1");
    assert_eq!(id.email.as_deref(), Some("ada@example.com"));
    assert!(id.email_verified);
    assert_eq!(id.name.as_deref(), Some("Ada"));
    assert_eq!(id.sign_in_provider.as_deref(), Some("password"));
}

#[tokio::test]
async fn every_kind_of_bad_token_is_refused_with_its_reason() {
    let k = test_key("k1");
    let other = test_key("k1");
    let server = KeyServer::start(&[&k]).await;
    let v = FirebaseTokenVerifier::new(settings(&server)).unwrap();
    let good = sign(&k, &claims("uid-1"));

    let none_header = b64(&serde_json::json!({"alg": "none", "typ": "JWT"}));
    let alg_none = format!(
        "{none_header}.{}.",
        b64(&serde_json::to_value(claims("uid-1")).unwrap())
    );

    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("k1".into());
    let confusion = jsonwebtoken::encode(
        &hs,
        &claims("uid-1"),
        &EncodingKey::from_secret(k.public_pem.as_bytes()),
    )
    .unwrap();

    let rs512_key = test_key("k1");
    let mut h512 = Header::new(Algorithm::RS512);
    h512.kid = Some("k1".into());
    let rs512 = jsonwebtoken::encode(&h512, &claims("uid-1"), &rs512_key.encoding).unwrap();

    let no_kid = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims("uid-1"),
        &k.encoding,
    )
    .unwrap();
    let unknown_kid = sign(&test_key("k-unknown"), &claims("uid-1"));
    let bad_signature = sign(&other, &claims("uid-1"));
    let tampered = {
        let mut parts: Vec<&str> = good.split('.').collect();
        let mut c = claims("uid-1");
        c.sub = Some("someone-else".into());
        let forged = b64(&serde_json::to_value(c).unwrap());
        parts[1] = &forged;
        parts.join(".")
    };
    let with = |f: &dyn Fn(&mut FirebaseClaims)| {
        let mut c = claims("uid-1");
        f(&mut c);
        sign(&k, &c)
    };

    let cases: Vec<(&str, String, InvalidToken)> = vec![
        (
            "alg none outside emulator mode",
            alg_none,
            InvalidToken::EmulatorTokenRefused,
        ),
        (
            "HS256 with the public key as secret",
            confusion,
            InvalidToken::UnsupportedAlgorithm("HS256".into()),
        ),
        (
            "RS512",
            rs512,
            InvalidToken::UnsupportedAlgorithm("RS512".into()),
        ),
        ("missing kid", no_kid, InvalidToken::MissingKeyId),
        ("unknown kid", unknown_kid, InvalidToken::UnknownKeyId),
        ("bad signature", bad_signature, InvalidToken::BadSignature),
        ("payload tampered", tampered, InvalidToken::BadSignature),
        (
            "expired",
            with(&|c| c.exp = Some(now() - 60)),
            InvalidToken::Expired,
        ),
        (
            "iat in the future",
            with(&|c| c.iat = Some(now() + 600)),
            InvalidToken::IssuedInFuture,
        ),
        (
            "wrong aud",
            with(&|c| c.aud = Some("other-project".into())),
            InvalidToken::WrongAudience,
        ),
        (
            "wrong iss",
            with(&|c| c.iss = Some("https://securetoken.google.com/other".into())),
            InvalidToken::WrongIssuer,
        ),
        (
            "empty sub",
            with(&|c| c.sub = Some(String::new())),
            InvalidToken::BadSubject,
        ),
        (
            "129-char sub",
            with(&|c| c.sub = Some("x".repeat(129))),
            InvalidToken::BadSubject,
        ),
        (
            "over the size limit",
            format!("{}.{}.sig", "a".repeat(5000), "b".repeat(5000)),
            InvalidToken::TooLong,
        ),
        (
            "three segments of garbage",
            "!!!.@@@.###".into(),
            InvalidToken::Malformed,
        ),
        ("not a JWT at all", "hello".into(), InvalidToken::Malformed),
        ("empty", String::new(), InvalidToken::Missing),
    ];
    for (what, token, want) in cases {
        assert_eq!(invalid(v.verify(&token).await), want, "{what}");
    }
    assert!(
        v.verify(&good).await.is_ok(),
        "the good token still verifies"
    );
}

#[tokio::test]
async fn a_rotated_key_is_accepted_after_one_refetch_and_unknown_kids_are_rate_limited() {
    let (a, b) = (test_key("a"), test_key("b"));
    let server = KeyServer::start(&[&a]).await;
    let v = FirebaseTokenVerifier::new(settings(&server)).unwrap();
    v.verify(&sign(&a, &claims("u"))).await.unwrap();
    assert_eq!(server.hits(), 1);

    server.serve(&[&a, &b]);
    v.verify(&sign(&b, &claims("u"))).await.unwrap();
    assert_eq!(server.hits(), 2, "one refetch for the new kid");

    let c = test_key("c");
    for _ in 0..5 {
        assert_eq!(
            invalid(v.verify(&sign(&c, &claims("u"))).await),
            InvalidToken::UnknownKeyId
        );
    }
    assert_eq!(
        server.hits(),
        2,
        "unknown kids refetch at most once per minute"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_during_a_refresh_cause_exactly_one_fetch() {
    let k = test_key("k1");
    let server = KeyServer::start(&[&k]).await;
    server.set(|s| s.delay = Duration::from_millis(300));
    let v = Arc::new(FirebaseTokenVerifier::new(settings(&server)).unwrap());
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let (v, t) = (v.clone(), sign(&k, &claims(&format!("u{i}"))));
            tokio::spawn(async move { v.verify(&t).await })
        })
        .collect();
    for t in futures_util::future::join_all(tasks).await {
        assert!(t.unwrap().is_ok());
    }
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn a_key_server_outage_does_not_log_everyone_out_during_grace() {
    // With and without the verified-token cache: a cached token must not
    // outlive its key set's grace either.
    for cache_capacity in [0, 1000] {
        let k = test_key("k1");
        let server = KeyServer::start(&[&k]).await;
        server.set(|s| s.max_age = 1);
        let mut s = settings(&server);
        s.keys.min_max_age = Duration::ZERO;
        s.cache_capacity = cache_capacity;
        let v = FirebaseTokenVerifier::new(s.clone()).unwrap();
        let token = sign(&k, &claims("u"));
        v.verify(&token).await.unwrap();

        server.set(|s| s.status = 503);
        tokio::time::sleep(Duration::from_millis(1100)).await; // let max-age=1 pass
        assert!(
            v.verify(&token).await.is_ok(),
            "stale keys are used while in grace (cache {cache_capacity})"
        );
        assert_eq!(
            server.hits(),
            2,
            "a refresh was attempted (cache {cache_capacity})"
        );

        s.keys.grace = Duration::ZERO;
        let strict = FirebaseTokenVerifier::new(s).unwrap();
        server.set(|s| s.status = 200);
        strict.verify(&token).await.unwrap();
        strict.verify(&token).await.unwrap();
        server.set(|s| s.status = 503);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(
            matches!(
                strict.verify(&token).await,
                Err(VerifyTokenError::Unavailable(_))
            ),
            "past grace, keys are unavailable (cache {cache_capacity})"
        );
    }
}

#[tokio::test]
async fn a_cached_token_is_checked_again_once_its_key_set_goes_stale() {
    let (a, b) = (test_key("a"), test_key("b"));
    let server = KeyServer::start(&[&a]).await;
    server.set(|s| s.max_age = 1);
    let mut s = settings(&server);
    s.keys.min_max_age = Duration::ZERO;
    let v = FirebaseTokenVerifier::new(s).unwrap();
    let token_a = sign(&a, &claims("u"));
    v.verify(&token_a).await.unwrap();
    v.verify(&token_a).await.unwrap();
    assert_eq!(server.hits(), 1, "the second call was a cache hit");
    // Key `a` is revoked; nobody presents a token with a new kid.
    server.serve(&[&b]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        matches!(
            v.verify(&token_a).await,
            Err(VerifyTokenError::Invalid(InvalidToken::UnknownKeyId))
        ),
        "the cached token of a revoked key is refused once the keys are refreshed"
    );
    assert_eq!(server.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refreshing_stale_keys_under_load_fetches_once() {
    let k = test_key("k1");
    let server = KeyServer::start(&[&k]).await;
    server.set(|s| s.max_age = 1);
    let mut s = settings(&server);
    s.keys.min_max_age = Duration::ZERO;
    s.cache_capacity = 0;
    let v = Arc::new(FirebaseTokenVerifier::new(s).unwrap());
    v.verify(&sign(&k, &claims("warm"))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    server.set(|s| {
        s.delay = Duration::from_millis(300);
        s.max_age = 3600;
    });
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let (v, t) = (v.clone(), sign(&k, &claims(&format!("u{i}"))));
            tokio::spawn(async move { v.verify(&t).await })
        })
        .collect();
    for t in futures_util::future::join_all(tasks).await {
        assert!(t.unwrap().is_ok(), "served from the stale keys meanwhile");
    }
    assert_eq!(server.hits(), 2, "one refresh for fifty requests");
}

#[tokio::test]
async fn expired_or_foreign_tokens_are_refused_without_fetching_keys() {
    let k = test_key("k1");
    let server = KeyServer::start(&[&k]).await;
    let v = FirebaseTokenVerifier::new(settings(&server)).unwrap();
    let mut expired = claims("u");
    expired.exp = Some(now() - 3600);
    expired.iat = Some(now() - 7200);
    assert!(v.verify(&sign(&k, &expired)).await.is_err());
    let mut foreign = claims("u");
    foreign.aud = Some("someone-else".into());
    assert!(v.verify(&sign(&k, &foreign)).await.is_err());
    assert_eq!(server.hits(), 0, "no key was needed to refuse them");
}

#[tokio::test]
async fn a_key_server_that_was_never_reachable_is_unavailable_not_invalid() {
    let k = test_key("k1");
    let mut s = AuthSettings::new(PROJECT);
    s.keys = KeySettings::new("http://127.0.0.1:9/keys");
    let v = FirebaseTokenVerifier::new(s).unwrap();
    assert!(matches!(
        v.verify(&sign(&k, &claims("u"))).await,
        Err(VerifyTokenError::Unavailable(_))
    ));
}

#[tokio::test]
async fn cached_tokens_stop_working_when_their_key_is_revoked() {
    let (a, b) = (test_key("a"), test_key("b"));
    let server = KeyServer::start(&[&a]).await;
    let mut s = settings(&server);
    s.keys.unknown_kid_refetch = Duration::ZERO;
    let v = FirebaseTokenVerifier::new(s).unwrap();
    let token_a = sign(&a, &claims("u"));
    v.verify(&token_a).await.unwrap();
    v.verify(&token_a).await.unwrap();
    assert_eq!(server.hits(), 1);

    server.serve(&[&b]);
    v.verify(&sign(&b, &claims("u"))).await.unwrap();
    assert_eq!(
        invalid(v.verify(&token_a).await),
        InvalidToken::UnknownKeyId
    );
}

#[tokio::test]
async fn only_a_token_already_proven_is_found_without_a_signature_check() {
    use ports::TokenVerifier as _;
    let k = test_key("k1");
    let server = KeyServer::start(&[&k]).await;
    let v = FirebaseTokenVerifier::new(settings(&server)).unwrap();
    let token = sign(&k, &claims("uid-1"));
    assert!(v.verify_cached(&token).is_none(), "never verified");
    v.verify(&token).await.unwrap();
    let cached = v.verify_cached(&token).expect("proven once, cached");
    assert_eq!(cached.uid.as_str(), "uid-1");
    // One signature character changed (well inside it: every bit counts).
    let at = token.len() - 20;
    let swap = if &token[at..=at] == "A" { "B" } else { "A" };
    let forged = format!("{}{swap}{}", &token[..at], &token[at + 1..]);
    assert!(v.verify_cached(&forged).is_none());
    assert!(v.verify(&forged).await.is_err());
    assert!(
        v.verify_cached(&forged).is_none(),
        "a refusal is not cached"
    );
    assert!(v.verify_cached("").is_none());
}

#[tokio::test]
async fn emulator_tokens_are_accepted_only_in_emulator_mode() {
    let server = KeyServer::start(&[]).await;
    let header = b64(&serde_json::json!({"alg": "none", "typ": "JWT"}));
    let token = format!(
        "{header}.{}.",
        b64(&serde_json::to_value(claims("emu-user")).unwrap())
    );
    let mut wrong = claims("emu-user");
    wrong.aud = Some("another".into());
    let wrong_aud = format!("{header}.{}.", b64(&serde_json::to_value(wrong).unwrap()));

    let mut s = settings(&server);
    s.emulator = true;
    let emu = FirebaseTokenVerifier::new(s).unwrap();
    assert_eq!(emu.verify(&token).await.unwrap().uid.as_str(), "emu-user");
    assert_eq!(
        invalid(emu.verify(&wrong_aud).await),
        InvalidToken::WrongAudience
    );
    assert_eq!(
        invalid(emu.verify(&format!("{token}sig")).await),
        InvalidToken::Malformed
    );

    let prod = FirebaseTokenVerifier::new(settings(&server)).unwrap();
    assert_eq!(
        invalid(prod.verify(&token).await),
        InvalidToken::EmulatorTokenRefused
    );
    assert_eq!(
        server.hits(),
        0,
        "no key fetch for tokens refused on their header"
    );
}

#[tokio::test]
async fn dev_tokens_need_local_mode_and_the_dev_secret() {
    let server = KeyServer::start(&[]).await;
    let req = DevTokenRequest {
        uid: "dev-user".into(),
        email: Some("dev@example.com".into()),
        email_verified: true,
        name: Some("Dev".into()),
        ttl: Duration::from_secs(600),
        claims: serde_json::Map::new(),
    };
    let token = mint_dev_token("local-secret", PROJECT, &req).unwrap();

    let mut s = settings(&server);
    s.dev_secret = Some("local-secret".into());
    let local = FirebaseTokenVerifier::new(s.clone()).unwrap();
    let id = local.verify(&token).await.unwrap();
    assert_eq!(
        (id.uid.as_str(), id.name.as_deref()),
        ("dev-user", Some("Dev"))
    );

    s.dev_secret = Some("another-secret".into());
    let other = FirebaseTokenVerifier::new(s).unwrap();
    assert_eq!(
        invalid(other.verify(&token).await),
        InvalidToken::BadSignature
    );

    let prod = FirebaseTokenVerifier::new(settings(&server)).unwrap();
    assert_eq!(
        invalid(prod.verify(&token).await),
        InvalidToken::DevTokenRefused
    );
}
