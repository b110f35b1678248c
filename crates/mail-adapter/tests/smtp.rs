//! `LettreMailer` against a real SMTP server process.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use domain::{DisplayName, Email, Mail, UserId, WelcomeMail};
use mail_adapter::{LettreMailer, MailSettings};
use ports::{Mailer, SendMailError};
use std::time::Duration;
use test_support::{SmtpBehaviour, SmtpSink};

fn mailer(url: Option<String>) -> LettreMailer {
    let mut s = MailSettings::new("Trellis <no-reply@trellis.test>");
    s.smtp_url = url;
    s.timeout = Duration::from_secs(5);
    s.file_dir =
        std::env::temp_dir().join(format!("trellis-eml-{}", test_support::unique_suffix()));
    LettreMailer::new(&s).unwrap()
}

fn welcome(email: &str, name: Option<&str>) -> Mail {
    Mail::Welcome(WelcomeMail {
        user_id: UserId::new(),
        to: Email::parse(email).unwrap(),
        display_name: name.map(|n| DisplayName::parse(n).unwrap()),
    })
}

#[tokio::test]
async fn the_welcome_mail_arrives_addressed_and_greeting_by_name() {
    let sink = SmtpSink::start();
    let m = mailer(Some(sink.url()));
    let mail = welcome("ada@example.com", Some("Ada Lovelace"));
    m.send(&mail).await.unwrap();
    let got = sink.wait_for(1, Duration::from_secs(10)).await;
    let r = &got[0];
    assert_eq!(r.rcpt_tos, ["ada@example.com"]);
    assert_eq!(r.to_addr.as_deref(), Some("ada@example.com"));
    assert_eq!(r.to_name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(r.subject, "Welcome to Trellis, Ada Lovelace!");
    assert!(r.from.contains("no-reply@trellis.test"));
    assert!(r.text.as_deref().unwrap().starts_with("Hi Ada Lovelace,"));
    assert!(r.html.as_deref().unwrap().contains("Hi Ada Lovelace,"));
    assert_eq!(
        r.message_id,
        format!("<{}@trellis.test>", mail.idempotency_key())
    );
}

#[tokio::test]
async fn a_user_without_a_name_is_greeted_by_address() {
    let sink = SmtpSink::start();
    mailer(Some(sink.url()))
        .send(&welcome("bob@example.com", None))
        .await
        .unwrap();
    let r = &sink.wait_for(1, Duration::from_secs(10)).await[0];
    assert_eq!(r.to_name.as_deref(), Some(""));
    assert_eq!(r.subject, "Welcome to Trellis, bob@example.com!");
    assert!(
        r.text
            .as_deref()
            .unwrap()
            .starts_with("Hi bob@example.com,")
    );
}

#[tokio::test]
async fn awkward_names_are_encoded_safely() {
    let sink = SmtpSink::start();
    let m = mailer(Some(sink.url()));
    let names = [
        "Zoë \"Z\" O'Brien, Jr.",
        "Łukasz Żółć",
        "李小龙",
        "a; b: <c@evil.example>",
    ];
    for (i, n) in names.iter().enumerate() {
        m.send(&welcome(&format!("u{i}@example.com"), Some(n)))
            .await
            .unwrap();
    }
    let got = sink.wait_for(names.len(), Duration::from_secs(10)).await;
    for (i, n) in names.iter().enumerate() {
        let r = got
            .iter()
            .find(|r| r.rcpt_tos == [format!("u{i}@example.com")])
            .unwrap();
        // A name that could become a link is left out of the mail whole.
        let expected = (!domain::mail::could_become_a_link(n)).then_some(*n);
        assert_eq!(
            r.to_name.as_deref().filter(|n| !n.is_empty()),
            expected,
            "the name survives the round trip, or is left out"
        );
        assert_eq!(
            r.to_addr.as_deref(),
            Some(format!("u{i}@example.com").as_str()),
            "and adds no recipient"
        );
        assert_eq!(r.rcpt_tos.len(), 1);
    }
    assert!(
        DisplayName::parse("Eve\r\nBcc: victim@example.com").is_err(),
        "CR/LF never reaches a header"
    );
}

#[tokio::test]
async fn a_4xx_reply_is_unavailable_and_a_5xx_reply_is_rejected_with_the_reply() {
    let transient = SmtpSink::start_with(SmtpBehaviour {
        fail_first: 1,
        ..SmtpBehaviour::default()
    });
    let m = mailer(Some(transient.url()));
    match m.send(&welcome("a@example.com", None)).await {
        Err(SendMailError::Unavailable { reason }) => assert!(reason.contains("451"), "{reason}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    m.send(&welcome("a@example.com", None)).await.unwrap();
    assert_eq!(
        transient.wait_for(1, Duration::from_secs(10)).await.len(),
        1
    );

    let permanent = SmtpSink::start_with(SmtpBehaviour {
        always_reply: Some("550 5.1.1 No such user here".into()),
        ..SmtpBehaviour::default()
    });
    match mailer(Some(permanent.url()))
        .send(&welcome("nobody@example.com", None))
        .await
    {
        Err(SendMailError::Rejected { reply }) => assert!(
            reply.contains("550") && reply.contains("No such user"),
            "{reply}"
        ),
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    let port = test_support::free_port();
    let m = mailer(Some(format!("smtp://127.0.0.1:{port}")));
    assert!(matches!(
        m.send(&welcome("a@example.com", None)).await,
        Err(SendMailError::Unavailable { .. })
    ));
}

#[tokio::test]
async fn without_smtp_mail_is_written_as_eml_files() {
    let m = mailer(None);
    assert!(m.describe().starts_with(".eml files in"));
    m.send(&welcome("file@example.com", Some("File")))
        .await
        .unwrap();
    let dir = m.describe().trim_start_matches(".eml files in ").to_owned();
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .collect();
    assert_eq!(files.len(), 1);
    let eml = std::fs::read_to_string(files[0].path()).unwrap();
    assert!(eml.contains("Subject: Welcome to Trellis, File!"));
    std::fs::remove_dir_all(dir).unwrap();
}
