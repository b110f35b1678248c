//! What each value type's parser accepts, stated as JSON Schema keywords,
//! next to the parser it describes: the OpenAPI document takes its field
//! constraints from here (one source), and the tests below hold each rule
//! to its parser at the edges.

use crate::push::{Platform, PushToken};
use crate::upload::UploadPurpose;
use crate::user::{DisplayName, Email, PhotoUrl};

/// JSON Schema keywords for one string or number field. A rule may be
/// stricter than its parser (a schema-valid value always parses), never
/// looser.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FieldRule {
    pub min_length: Option<usize>,
    pub max_length: Option<usize>,
    pub format: Option<&'static str>,
    /// An ECMA-262 (and Python `re`) pattern, anchored.
    pub pattern: Option<&'static str>,
    pub one_of: Option<&'static [&'static str]>,
    pub minimum: Option<u64>,
    pub maximum: Option<u64>,
}

impl FieldRule {
    /// The keywords as a JSON object, to merge into a property's schema.
    pub fn keywords(&self) -> serde_json::Value {
        let mut k = serde_json::Map::new();
        let mut put = |name: &str, v: serde_json::Value| {
            k.insert(name.to_owned(), v);
        };
        if let Some(v) = self.min_length {
            put("minLength", v.into());
        }
        if let Some(v) = self.max_length {
            put("maxLength", v.into());
        }
        if let Some(v) = self.format {
            put("format", v.into());
        }
        if let Some(v) = self.pattern {
            put("pattern", v.into());
        }
        if let Some(v) = self.one_of {
            put("enum", v.to_vec().into());
        }
        if let Some(v) = self.minimum {
            put("minimum", v.into());
        }
        if let Some(v) = self.maximum {
            put("maximum", v.into());
        }
        serde_json::Value::Object(k)
    }
}

/// No control characters (Unicode Cc) and none of the invisible formatting
/// characters names refuse, and at least one that is not whitespace.
const VISIBLE_TEXT: &str = "^[^\\u0000-\\u001F\\u007F-\\u009F\\u200B-\\u200F\\u2028-\\u202E\\u2060-\\u2064\\u2066-\\u2069\\uFEFF]*[^\\s\\u0000-\\u001F\\u007F-\\u009F\\u200B-\\u200F\\u2028-\\u202E\\u2060-\\u2064\\u2066-\\u2069\\uFEFF][^\\u0000-\\u001F\\u007F-\\u009F\\u200B-\\u200F\\u2028-\\u202E\\u2060-\\u2064\\u2066-\\u2069\\uFEFF]*$";

impl DisplayName {
    pub const RULE: FieldRule = FieldRule {
        min_length: Some(1),
        max_length: Some(Self::MAX_CHARS),
        format: None,
        pattern: Some(VISIBLE_TEXT),
        one_of: None,
        minimum: None,
        maximum: None,
    };
}

impl Email {
    pub const RULE: FieldRule = FieldRule {
        min_length: Some(3),
        max_length: Some(Self::MAX_LEN),
        format: Some("email"),
        pattern: Some("^[^\\s@<>()\\[\\],;:\"\\\\]+@[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)*$"),
        one_of: None,
        minimum: None,
        maximum: None,
    };
}

impl PhotoUrl {
    pub const RULE: FieldRule = FieldRule {
        min_length: Some(8),
        max_length: Some(Self::MAX_CHARS),
        format: Some("uri"),
        // A DNS name (labels of at most 63, starting with a letter, at most
        // 253 in all), a small port, a path of URL characters.
        pattern: Some(
            "^https?://(?=[^/:?#]{1,253}(?:[:/?#]|$))(?:[A-Za-z][A-Za-z0-9-]{0,62}\\.)*[A-Za-z][A-Za-z0-9-]{0,62}(?::[1-9][0-9]{0,3})?(?:/[A-Za-z0-9._~%!$&'()*+,;=:@/-]*)?$",
        ),
        one_of: None,
        minimum: None,
        maximum: None,
    };
}

impl PushToken {
    pub const RULE: FieldRule = FieldRule {
        min_length: Some(1),
        max_length: Some(Self::MAX_CHARS),
        format: None,
        pattern: Some("^[\\x21-\\x7E]+$"),
        one_of: None,
        minimum: None,
        maximum: None,
    };
}

impl Platform {
    pub const RULE: FieldRule = FieldRule {
        min_length: None,
        max_length: None,
        format: None,
        pattern: None,
        one_of: Some(&["ios", "android", "web"]),
        minimum: None,
        maximum: None,
    };
}

impl UploadPurpose {
    pub const RULE: FieldRule = FieldRule {
        min_length: None,
        max_length: None,
        format: None,
        pattern: None,
        one_of: Some(&["avatar", "attachment"]),
        minimum: None,
        maximum: None,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_holds_its_parser_at_the_edges() {
        let a = |n: usize| "a".repeat(n);
        assert!(DisplayName::parse(&a(DisplayName::MAX_CHARS)).is_ok());
        assert!(DisplayName::parse(&a(DisplayName::MAX_CHARS + 1)).is_err());
        assert!(PushToken::parse(&a(PushToken::MAX_CHARS)).is_ok());
        assert!(PushToken::parse(&a(PushToken::MAX_CHARS + 1)).is_err());
        assert!(
            PushToken::parse("has space").is_err(),
            "outside \\x21-\\x7E"
        );
        let url = format!("https://example.com/{}", a(PhotoUrl::MAX_CHARS - 20));
        assert_eq!(url.chars().count(), PhotoUrl::MAX_CHARS);
        assert!(PhotoUrl::parse(&url).is_ok());
        assert!(PhotoUrl::parse(&format!("{url}a")).is_err());
        for p in Platform::RULE.one_of.unwrap() {
            assert!(p.parse::<Platform>().is_ok(), "{p}");
        }
        for p in UploadPurpose::RULE.one_of.unwrap() {
            assert!(UploadPurpose::parse(p).is_ok(), "{p}");
        }
        assert_eq!(
            UploadPurpose::RULE.one_of.unwrap().len(),
            UploadPurpose::ALL.len()
        );
        let k = PushToken::RULE.keywords();
        assert_eq!(k["maxLength"], 4096);
        assert_eq!(k["pattern"], "^[\\x21-\\x7E]+$");
    }
}
