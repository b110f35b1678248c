//! The claims of a Firebase ID token, and the checks `verifyIdToken` makes.

use domain::{FirebaseUid, VerifiedIdentity};
use ports::InvalidToken;
use serde::{Deserialize, Serialize};

/// The claims we read. Unknown claims are ignored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FirebaseClaims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Kept as any JSON value so an array (which RFC 7519 allows but
    /// Firebase never issues) is refused with a reason, not a parse error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub picture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firebase: Option<FirebaseInfo>,
    /// Every other claim (custom claims set with the Admin SDK).
    #[serde(flatten)]
    pub custom: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FirebaseInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_in_provider: Option<String>,
}

/// What the claims must say, and how much clock skew to forgive.
#[derive(Debug, Clone)]
pub(crate) struct Expectations {
    pub project_id: String,
    pub issuer: String,
    pub leeway_secs: i64,
}

impl Expectations {
    pub(crate) fn for_project(project_id: &str, leeway_secs: i64) -> Self {
        Self {
            project_id: project_id.to_owned(),
            issuer: format!("https://securetoken.google.com/{project_id}"),
            leeway_secs,
        }
    }
}

/// Firebase ID tokens carry one audience, the project id, as a string. An
/// array is refused even when it names the project: the Admin SDKs require
/// the string, and a token minted for several audiences was not minted for
/// this project alone.
fn audience_matches(aud: &serde_json::Value, project: &str) -> bool {
    aud.as_str() == Some(project)
}

/// Checks time, audience, issuer and subject; returns the identity and `exp`.
pub(crate) fn check(
    claims: FirebaseClaims,
    expect: &Expectations,
    now: i64,
) -> Result<(VerifiedIdentity, i64), InvalidToken> {
    let exp = claims
        .exp
        .ok_or_else(|| InvalidToken::BadClaim("exp".into()))?;
    let iat = claims
        .iat
        .ok_or_else(|| InvalidToken::BadClaim("iat".into()))?;
    if exp.saturating_add(expect.leeway_secs) <= now {
        return Err(InvalidToken::Expired);
    }
    if iat.saturating_sub(expect.leeway_secs) > now {
        return Err(InvalidToken::IssuedInFuture);
    }
    if claims
        .auth_time
        .is_some_and(|t| t.saturating_sub(expect.leeway_secs) > now)
    {
        return Err(InvalidToken::AuthTimeInFuture);
    }
    if !claims
        .aud
        .as_ref()
        .is_some_and(|a| audience_matches(a, &expect.project_id))
    {
        return Err(InvalidToken::WrongAudience);
    }
    if claims.iss.as_deref() != Some(expect.issuer.as_str()) {
        return Err(InvalidToken::WrongIssuer);
    }
    let uid = claims
        .sub
        .as_deref()
        .and_then(|s| FirebaseUid::parse(s).ok())
        .ok_or(InvalidToken::BadSubject)?;
    Ok((
        VerifiedIdentity {
            uid,
            email: claims.email,
            email_verified: claims.email_verified.unwrap_or(false),
            name: claims.name,
            picture: claims.picture,
            sign_in_provider: claims.firebase.and_then(|f| f.sign_in_provider),
            expires_at: chrono::DateTime::from_timestamp(exp, 0),
            issued_at: chrono::DateTime::from_timestamp(iat, 0),
            custom_claims: claims.custom.into_iter().collect(),
        },
        exp,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn good() -> FirebaseClaims {
        FirebaseClaims {
            iss: Some("https://securetoken.google.com/proj".into()),
            aud: Some("proj".into()),
            sub: Some("uid-1".into()),
            exp: Some(NOW + 3600),
            iat: Some(NOW - 10),
            auth_time: Some(NOW - 10),
            email: Some("a@b.com".into()),
            email_verified: Some(true),
            name: Some("Ada".into()),
            picture: None,
            firebase: Some(FirebaseInfo {
                sign_in_provider: Some("password".into()),
            }),
            custom: serde_json::Map::new(),
        }
    }

    fn expect() -> Expectations {
        Expectations::for_project("proj", 5)
    }

    #[test]
    fn good_claims_give_the_identity() {
        let (id, exp) = check(good(), &expect(), NOW).unwrap();
        assert_eq!(id.uid.as_str(), "uid-1");
        assert_eq!(id.expires_at.unwrap().timestamp(), NOW + 3600);
        assert!(id.email_verified);
        assert_eq!(id.sign_in_provider.as_deref(), Some("password"));
        assert_eq!(exp, NOW + 3600);
    }

    #[test]
    fn each_broken_claim_has_its_reason() {
        type Mutation = Box<dyn Fn(&mut FirebaseClaims)>;
        let cases: Vec<(Mutation, InvalidToken)> = vec![
            (Box::new(|c| c.exp = Some(NOW - 6)), InvalidToken::Expired),
            (
                Box::new(|c| c.iat = Some(NOW + 60)),
                InvalidToken::IssuedInFuture,
            ),
            (
                Box::new(|c| c.auth_time = Some(NOW + 60)),
                InvalidToken::AuthTimeInFuture,
            ),
            (
                Box::new(|c| c.aud = Some("other".into())),
                InvalidToken::WrongAudience,
            ),
            (Box::new(|c| c.aud = None), InvalidToken::WrongAudience),
            (
                Box::new(|c| c.iss = Some("https://evil.example.com/proj".into())),
                InvalidToken::WrongIssuer,
            ),
            (
                Box::new(|c| c.sub = Some(String::new())),
                InvalidToken::BadSubject,
            ),
            (
                Box::new(|c| c.sub = Some("x".repeat(129))),
                InvalidToken::BadSubject,
            ),
            (Box::new(|c| c.sub = None), InvalidToken::BadSubject),
            (
                Box::new(|c| c.exp = None),
                InvalidToken::BadClaim("exp".into()),
            ),
        ];
        for (mutate, want) in cases {
            let mut c = good();
            mutate(&mut c);
            assert_eq!(check(c, &expect(), NOW).unwrap_err(), want);
        }
    }

    #[test]
    fn leeway_forgives_small_skew_only() {
        let mut c = good();
        c.exp = Some(NOW - 4);
        c.iat = Some(NOW + 4);
        assert!(check(c, &expect(), NOW).is_ok());
    }

    #[test]
    fn an_audience_array_is_refused_even_when_it_names_the_project() {
        for aud in [
            serde_json::json!(["x", "proj"]),
            serde_json::json!(["proj"]),
            serde_json::json!(7),
        ] {
            let mut c = good();
            c.aud = Some(aud.clone());
            assert_eq!(
                check(c, &expect(), NOW).unwrap_err(),
                InvalidToken::WrongAudience,
                "{aud}"
            );
        }
    }
}
