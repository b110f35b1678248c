//! Mail the system sends, as data. Rendering (templates, MIME) belongs to the
//! mail adapter; the domain only says who gets what.

use crate::user::{DisplayName, Email, UserId};
use serde::{Deserialize, Serialize};

/// Every kind of mail Trellis sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mail {
    Welcome(WelcomeMail),
}

impl Mail {
    /// A key that is the same for every attempt to send this mail, so a
    /// receiving system (and our tests) can recognise a repeat.
    pub fn idempotency_key(&self) -> String {
        match self {
            Mail::Welcome(w) => format!("welcome-{}", w.user_id),
        }
    }

    pub fn recipient(&self) -> &Email {
        match self {
            Mail::Welcome(w) => &w.to,
        }
    }
}

/// The mail a new user gets once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WelcomeMail {
    pub user_id: UserId,
    pub to: Email,
    pub display_name: Option<DisplayName>,
}

impl WelcomeMail {
    /// How the mail greets its reader: the display name, or the e-mail address
    /// when there is none.
    pub fn greeting_name(&self) -> &str {
        self.display_name
            .as_ref()
            .map_or(self.to.as_str(), DisplayName::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welcome_mail_greets_by_name_then_by_email() {
        let mut m = WelcomeMail {
            user_id: UserId::new(),
            to: Email::parse("ada@example.com").unwrap(),
            display_name: Some(DisplayName::parse("Ada").unwrap()),
        };
        assert_eq!(m.greeting_name(), "Ada");
        m.display_name = None;
        assert_eq!(m.greeting_name(), "ada@example.com");
    }

    #[test]
    fn idempotency_key_is_stable_per_user() {
        let id = UserId::new();
        let mk = || {
            Mail::Welcome(WelcomeMail {
                user_id: id,
                to: Email::parse("a@b.com").unwrap(),
                display_name: None,
            })
        };
        assert_eq!(mk().idempotency_key(), mk().idempotency_key());
        assert!(mk().idempotency_key().contains(&id.to_string()));
    }
}
