//! Property tests for the token decoder: whatever a client sends as a bearer
//! token, verification answers `Invalid` (or `Unavailable` when keys are
//! needed and unreachable) and never panics.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use auth_adapter::{AuthSettings, FirebaseTokenVerifier, KeySettings};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ports::{TokenVerifier, VerifyTokenError};
use proptest::prelude::*;
use std::sync::OnceLock;

fn verifier() -> &'static FirebaseTokenVerifier {
    static V: OnceLock<FirebaseTokenVerifier> = OnceLock::new();
    V.get_or_init(|| {
        let mut s = AuthSettings::new("fuzz-project");
        // Nothing listens here: key lookups fail fast.
        s.keys = KeySettings::new("http://127.0.0.1:9/keys");
        s.emulator = true;
        s.dev_secret = Some("fuzz-secret".into());
        FirebaseTokenVerifier::new(s).unwrap()
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static R: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    R.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

fn verify(token: &str) -> Result<domain::VerifiedIdentity, VerifyTokenError> {
    runtime().block_on(verifier().verify(token))
}

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_are_refused(s in ".{0,400}") {
        prop_assert!(verify(&s).is_err());
    }

    #[test]
    fn arbitrary_three_part_tokens_are_refused(a in "[A-Za-z0-9_-]{0,80}", b in "[A-Za-z0-9_-]{0,300}", c in "[A-Za-z0-9_-]{0,120}") {
        let token = format!("{a}.{b}.{c}");
        prop_assert!(verify(&token).is_err());
    }

    #[test]
    fn json_shaped_headers_and_claims_never_verify_unsigned_or_with_the_wrong_key(
        alg in prop::sample::select(vec!["RS256", "HS256", "none", "ES256", "", "rs256"]),
        kid in proptest::option::of("[a-z0-9-]{0,20}"),
        sub in proptest::option::of(".{0,140}"),
        exp in any::<i64>(),
        iat in any::<i64>(),
        aud in prop::sample::select(vec!["fuzz-project", "other", ""]),
        sig in "[A-Za-z0-9_-]{0,64}",
    ) {
        let header = serde_json::json!({"alg": alg, "kid": kid, "typ": "JWT"});
        let claims = serde_json::json!({
            "iss": "https://securetoken.google.com/fuzz-project",
            "aud": aud, "sub": sub, "exp": exp, "iat": iat,
        });
        let token = format!("{}.{}.{sig}", b64(&header), b64(&claims));
        match verify(&token) {
            // Only an unsigned emulator token with fully valid claims may pass.
            Ok(id) => {
                prop_assert_eq!(alg, "none");
                prop_assert!(sig.is_empty());
                prop_assert_eq!(aud, "fuzz-project");
                prop_assert_eq!(Some(id.uid.as_str()), sub.as_deref());
            }
            Err(VerifyTokenError::Invalid(_) | VerifyTokenError::Unavailable(_)) => {}
            Err(VerifyTokenError::Unknown(e)) => prop_assert!(false, "unexpected error {e:#}"),
        }
    }
}
