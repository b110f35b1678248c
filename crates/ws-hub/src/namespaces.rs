//! Namespaces: which topics exist (`<namespace>:<name>`), with their
//! options and the policy that says who may join and publish. `public` and
//! `user` are built in; an application declares its own on the
//! [`HubBuilder`](crate::HubBuilder).

use async_trait::async_trait;
use domain::FirebaseUid;
use ports::{HistoryOptions, NamespaceOptions, NotifyError, TopicPolicy};
use std::collections::HashMap;
use std::sync::Arc;

/// Longest topic name after its namespace.
pub const MAX_TOPIC_NAME: usize = 100;

/// A declared namespace.
#[derive(Clone)]
pub(crate) struct Namespace {
    pub(crate) options: NamespaceOptions,
    pub(crate) policy: Arc<dyn TopicPolicy>,
}

/// The namespaces a hub serves: `public` and `user` unless replaced.
pub(crate) struct Namespaces(HashMap<String, Namespace>);

impl Namespaces {
    pub(crate) fn builtin(user_history: Option<HistoryOptions>) -> Self {
        let mut all = HashMap::new();
        all.insert(
            "public".to_owned(),
            Namespace {
                options: NamespaceOptions::default(),
                policy: Arc::new(AnyUser),
            },
        );
        all.insert(
            "user".to_owned(),
            Namespace {
                options: NamespaceOptions {
                    history: user_history,
                    ..NamespaceOptions::default()
                },
                policy: Arc::new(OwnUser),
            },
        );
        Self(all)
    }

    pub(crate) fn insert(&mut self, name: &str, ns: Namespace) {
        self.0.insert(name.to_owned(), ns);
    }

    /// The namespace of `topic` and the name within it, if `topic` is
    /// `<declared namespace>:<1 to 100 of [A-Za-z0-9-_.:]>`.
    pub(crate) fn resolve<'t>(&self, topic: &'t str) -> Option<(Namespace, &'t str)> {
        let (ns, name) = topic.split_once(':')?;
        let valid = (1..=MAX_TOPIC_NAME).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
        valid.then(|| self.0.get(ns).map(|n| (n.clone(), name)))?
    }
}

/// `public:<name>`: anyone signed in may subscribe.
#[derive(Debug, Clone, Copy)]
pub struct AnyUser;

#[async_trait]
impl TopicPolicy for AnyUser {
    async fn may_subscribe(&self, _: &FirebaseUid, _: &str) -> Result<bool, NotifyError> {
        Ok(true)
    }
}

/// `user:<uid>`: only that user.
#[derive(Debug, Clone, Copy)]
pub struct OwnUser;

#[async_trait]
impl TopicPolicy for OwnUser {
    async fn may_subscribe(&self, uid: &FirebaseUid, name: &str) -> Result<bool, NotifyError> {
        Ok(uid.as_str() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_resolve_to_declared_namespaces_with_valid_names() {
        let ns = Namespaces::builtin(None);
        assert!(ns.resolve("public:news").is_some());
        assert!(ns.resolve("user:alice").is_some());
        assert!(ns.resolve("room:1").is_none());
        assert!(ns.resolve("public:").is_none());
        assert!(ns.resolve("public:has space").is_none());
        assert!(ns.resolve("public:{tag}").is_none());
        assert!(ns.resolve("news").is_none());
        assert!(ns.resolve(&format!("public:{}", "a".repeat(101))).is_none());
    }
}
