//! The identity a verified ID token proves.

use crate::user::{DisplayName, Email, FirebaseUid, PhotoUrl, ProfileDefaults};
use chrono::{DateTime, Utc};

/// What a verified Firebase ID token says about its holder. Optional claims are
/// kept raw: a claim that does not parse as a profile value (say a 300-character
/// name) still authenticates the user, it just does not seed the profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIdentity {
    pub uid: FirebaseUid,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub picture: Option<String>,
    /// `firebase.sign_in_provider`, e.g. `password`, `google.com`, `custom`.
    pub sign_in_provider: Option<String>,
    /// When the token stops proving this (its `exp`): a WebSocket opened
    /// with it closes then, unless the client sends a fresh token first.
    pub expires_at: Option<DateTime<Utc>>,
    /// When the token was issued (its `iat`, whole seconds).
    pub issued_at: Option<DateTime<Utc>>,
    /// The token's other claims, custom claims set with the Admin SDK among
    /// them (`{"ops": "admin"}`), as JSON.
    pub custom_claims: std::collections::BTreeMap<String, serde_json::Value>,
}

impl VerifiedIdentity {
    /// A bare identity with only a uid.
    pub fn new(uid: FirebaseUid) -> Self {
        Self {
            uid,
            email: None,
            email_verified: false,
            name: None,
            picture: None,
            sign_in_provider: None,
            expires_at: None,
            issued_at: None,
            custom_claims: std::collections::BTreeMap::new(),
        }
    }

    /// Whether the token was issued before (or in the same second as) the
    /// deletion of its uid's account at `deleted_at`: such a token no
    /// longer proves anything, however long it still has to run. `iat` is
    /// in whole seconds, so a token of the deletion's own second counts as
    /// older; one without `iat` is older than any deletion.
    pub fn issued_before(&self, deleted_at: DateTime<Utc>) -> bool {
        self.issued_at.is_none_or(|iat| iat <= deleted_at)
    }

    /// The profile values these claims give a newly created user. Claims that
    /// do not parse are left out.
    pub fn profile_defaults(&self) -> ProfileDefaults {
        let email = self.email.as_deref().and_then(|e| Email::parse(e).ok());
        ProfileDefaults {
            issued_at: self.issued_at,
            verified_email: email.clone().filter(|_| self.email_verified),
            email,
            display_name: self
                .name
                .as_deref()
                .and_then(|n| DisplayName::parse(n).ok()),
            photo_url: self
                .picture
                .as_deref()
                .and_then(|p| PhotoUrl::parse(p).ok()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_address_the_provider_verified_is_the_verified_email() {
        let mut id = VerifiedIdentity::new(FirebaseUid::parse("u").unwrap());
        id.email = Some("ada@example.com".into());
        assert!(id.profile_defaults().verified_email.is_none());
        id.email_verified = true;
        assert_eq!(
            id.profile_defaults().verified_email.unwrap().as_str(),
            "ada@example.com"
        );
        id.email = Some("not an address".into());
        assert!(id.profile_defaults().verified_email.is_none());
    }

    #[test]
    fn claims_that_do_not_parse_are_left_out_of_the_defaults() {
        let mut id = VerifiedIdentity::new(FirebaseUid::parse("u").unwrap());
        id.email = Some("ada@example.com".into());
        id.name = Some("x".repeat(300));
        id.picture = Some("ftp://nope".into());
        let d = id.profile_defaults();
        assert_eq!(d.email.as_ref().unwrap().as_str(), "ada@example.com");
        assert!(
            d.verified_email.is_none(),
            "the claim says nothing of verification"
        );
        assert!(d.display_name.is_none());
        assert!(d.photo_url.is_none());
    }
}
