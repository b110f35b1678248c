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

/// The most characters of a display name a mail body shows.
pub const GREETING_NAME_CHARS: usize = 40;
/// The most characters of a display name a subject line shows.
pub const SUBJECT_NAME_CHARS: usize = 24;

impl WelcomeMail {
    /// How the mail greets its reader: the display name (at most
    /// [`GREETING_NAME_CHARS`], cut with `…`), or the e-mail address when
    /// there is none or when the name could turn into a link. A display name
    /// is text anyone can choose, and this mail leaves from the product's
    /// own domain: it must never carry a link or a long message of theirs.
    pub fn greeting_name(&self) -> String {
        self.safe_name(GREETING_NAME_CHARS)
    }

    /// The name in the subject line: like [`greeting_name`](Self::greeting_name),
    /// cut at [`SUBJECT_NAME_CHARS`].
    pub fn subject_name(&self) -> String {
        self.safe_name(SUBJECT_NAME_CHARS)
    }

    fn safe_name(&self, max: usize) -> String {
        match &self.display_name {
            Some(name) if !could_become_a_link(name.as_str()) => capped(name.as_str(), max),
            _ => self.to.as_str().to_owned(),
        }
    }
}

fn capped(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}

/// Whether a mail client could turn `text` into a link: a scheme, `www`, an
/// `@`, a slash or backslash, or a dot (or a look-alike dot) followed by a
/// letter or digit, as in `evil.example`. Conservative by design: a name
/// like `J.R. Smith` is greeted by address instead.
pub fn could_become_a_link(text: &str) -> bool {
    let lower = text.to_lowercase();
    if lower.contains("://") || lower.contains("www") || lower.contains("xn--") {
        return true;
    }
    let chars: Vec<char> = lower.chars().collect();
    chars.iter().enumerate().any(|(i, c)| match c {
        '@' | '/' | '\\' | '＠' | '／' => true,
        // ASCII, ideographic, fullwidth and halfwidth full stops.
        '.' | '。' | '．' | '｡' | ':' => {
            chars.get(i + 1).is_some_and(|next| next.is_alphanumeric())
        }
        _ => false,
    })
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

    fn named(name: &str) -> WelcomeMail {
        WelcomeMail {
            user_id: UserId::new(),
            to: Email::parse("ada@example.com").unwrap(),
            display_name: Some(DisplayName::parse(name).unwrap()),
        }
    }

    #[test]
    fn a_name_that_could_become_a_link_is_never_shown() {
        for name in [
            "evil.example",
            "Claim at evil.example now",
            "https://evil.example",
            "www evil example",
            "me@evil.example",
            "evil。example",
            "evil．example",
            "a/b",
            "x:y",
            "xn--80ak6aa92e",
        ] {
            let m = named(name);
            assert_eq!(m.greeting_name(), "ada@example.com", "{name:?}");
            assert_eq!(m.subject_name(), "ada@example.com", "{name:?}");
        }
        for name in ["Ada Lovelace", "Dr. Who", "Zoë O'Brien", "李小龍"] {
            assert_eq!(named(name).greeting_name(), name);
        }
    }

    #[test]
    fn long_names_are_cut_shorter_in_the_subject_than_in_the_body() {
        let long = "Abcdefghij ".repeat(9);
        let m = named(long.trim());
        let body = m.greeting_name();
        let subject = m.subject_name();
        assert!(body.ends_with('…') && body.chars().count() <= GREETING_NAME_CHARS);
        assert!(subject.ends_with('…') && subject.chars().count() <= SUBJECT_NAME_CHARS);
        assert!(body.starts_with("Abcdefghij Abcdefghij"));
        assert_eq!(named("Ada").subject_name(), "Ada");
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
