//! Push tokens: register, unregister, list with opaque cursors.

use domain::{
    CursorCodec, CursorPage, Platform, PushToken, PushTokenRecord, VerifiedIdentity,
    pagination::clamp_limit,
};
use ports::{
    PushTokenKey, PushTokenRepository, RegisterPushTokenError, RegisteredPushToken,
    UnregisterPushTokenError,
};
use std::sync::Arc;
use thiserror::Error;

/// The cursor scope of this list: a cursor of another list never decodes here.
const CURSOR_SCOPE: &str = "push_tokens";

#[derive(Debug, Error)]
pub enum ListPushTokensError {
    /// The cursor was not made by this service for this list.
    #[error("invalid cursor")]
    InvalidCursor,
    #[error("push token store unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(anyhow::Error),
}

impl From<ports::ListPushTokensError> for ListPushTokensError {
    fn from(e: ports::ListPushTokensError) -> Self {
        match e {
            ports::ListPushTokensError::Unavailable(e) => ListPushTokensError::Unavailable(e),
            ports::ListPushTokensError::Unknown(e) => ListPushTokensError::Unknown(e),
        }
    }
}

#[derive(Debug, Error)]
pub enum RegisterDeviceError {
    /// The caller's token was issued before their account was deleted.
    #[error("the account was deleted after this token was issued")]
    AccountDeleted,
    #[error("push token store unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(anyhow::Error),
}

impl From<RegisterPushTokenError> for RegisterDeviceError {
    fn from(e: RegisterPushTokenError) -> Self {
        match e {
            RegisterPushTokenError::AccountDeleted => RegisterDeviceError::AccountDeleted,
            RegisterPushTokenError::Unavailable(e) => RegisterDeviceError::Unavailable(e),
            RegisterPushTokenError::Unknown(e) => RegisterDeviceError::Unknown(e),
        }
    }
}

#[derive(Debug, Error)]
pub enum UnregisterDeviceError {
    /// The token is not registered to the caller (it may be someone else's).
    #[error("push token not registered for this user")]
    NotFound,
    #[error("push token store unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(anyhow::Error),
}

impl From<UnregisterPushTokenError> for UnregisterDeviceError {
    fn from(e: UnregisterPushTokenError) -> Self {
        match e {
            UnregisterPushTokenError::NotFound => UnregisterDeviceError::NotFound,
            UnregisterPushTokenError::Unavailable(e) => UnregisterDeviceError::Unavailable(e),
            UnregisterPushTokenError::Unknown(e) => UnregisterDeviceError::Unknown(e),
        }
    }
}

#[derive(Clone)]
pub struct PushTokenService {
    tokens: Arc<dyn PushTokenRepository>,
    cursors: CursorCodec,
}

impl std::fmt::Debug for PushTokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushTokenService").finish_non_exhaustive()
    }
}

impl PushTokenService {
    pub fn new(tokens: Arc<dyn PushTokenRepository>, cursors: CursorCodec) -> Self {
        Self { tokens, cursors }
    }

    /// Registers the caller's device token; creates the caller's user (once)
    /// if this is the first thing they do.
    pub async fn register(
        &self,
        caller: &VerifiedIdentity,
        token: &PushToken,
        platform: Platform,
    ) -> Result<RegisteredPushToken, RegisterDeviceError> {
        let registered = self
            .tokens
            .register(&caller.uid, token, platform, &caller.profile_defaults())
            .await?;
        tracing::info!(
            user_id = %registered.record.user_id,
            token = %token.fingerprint(),
            %platform,
            user_created = registered.user_created,
            "push token registered"
        );
        Ok(registered)
    }

    pub async fn unregister(
        &self,
        caller: &VerifiedIdentity,
        token: &PushToken,
    ) -> Result<(), UnregisterDeviceError> {
        Ok(self.tokens.unregister(&caller.uid, token).await?)
    }

    /// A page of the caller's tokens. `cursor` is the `next_cursor` of the
    /// previous page; `limit` is clamped to 1..=100 (default 20).
    pub async fn list(
        &self,
        caller: &VerifiedIdentity,
        cursor: Option<&str>,
        limit: Option<i64>,
    ) -> Result<CursorPage<PushTokenRecord>, ListPushTokensError> {
        let after = cursor
            .filter(|c| !c.is_empty())
            .map(|c| self.cursors.decode::<PushTokenKey>(CURSOR_SCOPE, c))
            .transpose()
            .map_err(|_| ListPushTokensError::InvalidCursor)?;
        let page = self
            .tokens
            .list_for_user(&caller.uid, after, clamp_limit(limit))
            .await?;
        Ok(CursorPage {
            items: page.items,
            next_cursor: page.next.map(|k| self.cursors.encode(CURSOR_SCOPE, &k)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::FirebaseUid;
    use ports_testing::InMemoryStore;

    fn svc() -> PushTokenService {
        PushTokenService::new(
            Arc::new(InMemoryStore::new()),
            CursorCodec::new(b"k".to_vec()),
        )
    }

    fn caller() -> VerifiedIdentity {
        VerifiedIdentity::new(FirebaseUid::parse("u").unwrap())
    }

    #[tokio::test]
    async fn cursors_walk_the_whole_list() {
        let svc = svc();
        for i in 0..5 {
            let t = PushToken::parse(&format!("t{i}")).unwrap();
            svc.register(&caller(), &t, Platform::Ios).await.unwrap();
        }
        let first = svc.list(&caller(), None, Some(2)).await.unwrap();
        assert_eq!(first.items.len(), 2);
        let cursor = first.next_cursor.unwrap();
        let second = svc.list(&caller(), Some(&cursor), Some(10)).await.unwrap();
        assert_eq!(second.items.len(), 3);
        assert!(second.next_cursor.is_none());
    }

    #[tokio::test]
    async fn a_garbage_cursor_is_an_invalid_cursor() {
        let err = svc()
            .list(&caller(), Some("garbage"), None)
            .await
            .unwrap_err();
        assert!(matches!(err, ListPushTokensError::InvalidCursor));
    }

    #[tokio::test]
    async fn absurd_limits_are_clamped() {
        let svc = svc();
        svc.register(&caller(), &PushToken::parse("t").unwrap(), Platform::Web)
            .await
            .unwrap();
        let page = svc.list(&caller(), None, Some(-7)).await.unwrap();
        assert_eq!(page.items.len(), 1);
        let page = svc.list(&caller(), None, Some(i64::MAX)).await.unwrap();
        assert_eq!(page.items.len(), 1);
    }
}
