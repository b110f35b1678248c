use super::*;

#[test]
fn uid_accepts_128_chars_and_refuses_129() {
    assert!(FirebaseUid::parse(&"a".repeat(128)).is_ok());
    assert_eq!(
        FirebaseUid::parse(&"a".repeat(129)),
        Err(InvalidFirebaseUid::TooLong)
    );
    assert_eq!(FirebaseUid::parse(""), Err(InvalidFirebaseUid::Empty));
    assert_eq!(
        FirebaseUid::parse("a\nb"),
        Err(InvalidFirebaseUid::ControlCharacter)
    );
}

#[test]
fn uid_counts_characters_not_bytes() {
    assert!(FirebaseUid::parse(&"é".repeat(128)).is_ok());
}

#[test]
fn email_is_trimmed_and_its_domain_lowercased() {
    let e = Email::parse("  Ada.Lovelace@Example.COM ").unwrap();
    assert_eq!(e.as_str(), "Ada.Lovelace@example.com");
}

#[test]
fn email_refuses_what_is_not_an_address() {
    for bad in [
        "",
        "   ",
        "plain",
        "@example.com",
        "a@",
        "a@@b.com",
        "a b@c.com",
        "a@b..com",
        "a@-b.com",
        "a\r\nBcc: x@y.com",
        "\"a\"@b.com",
        ".a@b.com",
    ] {
        assert!(Email::parse(bad).is_err(), "{bad:?} should be refused");
    }
    assert_eq!(
        Email::parse(&format!("a@{}.com", "b".repeat(260))),
        Err(InvalidEmail::TooLong)
    );
}

#[test]
fn email_accepts_plus_tags_and_single_label_domains() {
    assert!(Email::parse("ada+tag@example.co.uk").is_ok());
    assert!(Email::parse("root@localhost").is_ok());
    assert!(Email::parse("zoë@exämple.com").is_ok());
}

#[test]
fn display_name_is_trimmed_and_bounded() {
    assert_eq!(DisplayName::parse("  Ada  ").unwrap().as_str(), "Ada");
    assert_eq!(DisplayName::parse("   "), Err(InvalidDisplayName::Empty));
    assert!(DisplayName::parse(&"x".repeat(100)).is_ok());
    assert_eq!(
        DisplayName::parse(&"x".repeat(101)),
        Err(InvalidDisplayName::TooLong)
    );
    assert_eq!(
        DisplayName::parse("Eve\r\nBcc: victim@example.com"),
        Err(InvalidDisplayName::ControlCharacter)
    );
    assert!(DisplayName::parse("Zoë \"Z\" O'Brien, Jr.").is_ok());
    assert!(DisplayName::parse("李小龍").is_ok());
    for sneaky in [
        "Eve\u{202E}nimda",
        "A\u{200B}da",
        "Ada\u{2028}Bcc",
        "\u{2066}x\u{2069}",
    ] {
        assert_eq!(
            DisplayName::parse(sneaky),
            Err(InvalidDisplayName::InvisibleCharacter),
            "{sneaky:?}"
        );
    }
}

#[test]
fn photo_url_must_be_absolute_http() {
    assert!(PhotoUrl::parse("https://cdn.example.com/a.png").is_ok());
    assert!(PhotoUrl::parse("http://example.com/a.png").is_ok());
    for bad in [
        "ftp://example.com/a.png",
        "javascript:alert(1)",
        "/relative.png",
        "not a url",
        "https://",
    ] {
        assert!(PhotoUrl::parse(bad).is_err(), "{bad:?} should be refused");
    }
    let long = format!("https://example.com/{}", "a".repeat(2048));
    assert_eq!(PhotoUrl::parse(&long), Err(InvalidPhotoUrl::TooLong));
}

#[test]
fn value_objects_parse_when_deserialized() {
    let err = serde_json::from_str::<DisplayName>("\"\"").unwrap_err();
    assert!(err.to_string().contains("must not be empty"));
    let ok: Email = serde_json::from_str("\"a@b.com\"").unwrap();
    assert_eq!(ok.as_str(), "a@b.com");
}

fn user() -> User {
    let now = Utc::now();
    User {
        id: UserId::new(),
        uid: FirebaseUid::parse("u1").unwrap(),
        email: Some(Email::parse("a@b.com").unwrap()),
        display_name: None,
        photo_url: None,
        created_at: now,
        updated_at: now,
    }
}

#[test]
fn a_patch_changes_only_the_fields_it_gives() {
    let u = user();
    let patch = ProfilePatch {
        display_name: Some(DisplayName::parse("Ada").unwrap()),
        ..ProfilePatch::default()
    };
    let next = u.patched(&patch);
    assert_eq!(next.email, u.email);
    assert_eq!(next.display_name.unwrap().as_str(), "Ada");
    assert!(u.would_change(&patch));
    assert!(!u.would_change(&ProfilePatch::default()));
    let same = ProfilePatch {
        email: u.email.clone(),
        ..ProfilePatch::default()
    };
    assert!(!u.would_change(&same));
}

#[test]
fn defaults_fill_only_missing_fields() {
    let patch = ProfilePatch {
        display_name: Some(DisplayName::parse("Given").unwrap()),
        ..ProfilePatch::default()
    };
    let defaults = ProfileDefaults {
        email: Some(Email::parse("claim@b.com").unwrap()),
        display_name: Some(DisplayName::parse("Claim").unwrap()),
        photo_url: None,
        verified_email: None,
        issued_at: None,
    };
    let merged = patch.or_defaults(&defaults);
    assert_eq!(merged.display_name.unwrap().as_str(), "Given");
    assert_eq!(merged.email.unwrap().as_str(), "claim@b.com");
}
