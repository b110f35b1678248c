//! The mail templates: subject, plain text and HTML for each kind of mail.
//! Every value from a user is HTML-escaped in the HTML part.

use domain::WelcomeMail;

/// A rendered mail body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The welcome mail, greeting the user by display name (or e-mail address).
pub fn welcome(mail: &WelcomeMail, product: &str) -> Rendered {
    let name = mail.greeting_name();
    let subject = format!("Welcome to {product}, {}!", mail.subject_name());
    let text = format!(
        "Hi {name},\n\n\
         Welcome to {product}! Your account is ready.\n\n\
         If you did not sign up, you can ignore this message.\n\n\
         — The {product} team\n"
    );
    let (name_html, product_html) = (escape_html(&name), escape_html(product));
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>Welcome to {product_html}</title></head>\n\
         <body style=\"font-family: -apple-system, Segoe UI, Roboto, sans-serif; line-height: 1.5; color: #1f2328;\">\n\
         <h1 style=\"font-size: 22px;\">Hi {name_html},</h1>\n\
         <p>Welcome to <strong>{product_html}</strong>! Your account is ready.</p>\n\
         <p style=\"color: #59636e;\">If you did not sign up, you can ignore this message.</p>\n\
         <p>— The {product_html} team</p>\n</body>\n</html>\n"
    );
    Rendered {
        subject,
        text,
        html,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{DisplayName, Email, UserId};

    fn mail(name: Option<&str>) -> WelcomeMail {
        WelcomeMail {
            user_id: UserId::new(),
            to: Email::parse("ada@example.com").unwrap(),
            display_name: name.map(|n| DisplayName::parse(n).unwrap()),
        }
    }

    #[test]
    fn the_welcome_mail_greets_by_name_or_by_address() {
        let r = welcome(&mail(Some("Ada")), "Trellis");
        assert_eq!(r.subject, "Welcome to Trellis, Ada!");
        assert!(r.text.starts_with("Hi Ada,"));
        assert!(r.html.contains("Hi Ada,"));
        let r = welcome(&mail(None), "Trellis");
        assert!(r.text.starts_with("Hi ada@example.com,"));
    }

    #[test]
    fn a_name_that_could_be_a_link_or_a_message_never_reaches_the_mail() {
        let r = welcome(&mail(Some("Win a prize at evil.example")), "Trellis");
        for part in [&r.subject, &r.text, &r.html] {
            assert!(!part.contains("evil"), "{part}");
        }
        assert_eq!(r.subject, "Welcome to Trellis, ada@example.com!");
        let long = "Please call our support line now for your refund ok";
        let r = welcome(&mail(Some(long)), "Trellis");
        assert!(!r.text.contains(long) && !r.subject.contains(long));
        assert!(r.subject.chars().count() <= "Welcome to Trellis, !".len() + 24);
    }

    #[test]
    fn names_are_escaped_in_html() {
        let r = welcome(&mail(Some("<b onclick=x>Ada & 'co'")), "Trellis");
        assert!(!r.html.contains("<b onclick"));
        assert!(r.html.contains("&lt;b onclick=x&gt;Ada &amp; &#39;co&#39;"));
        assert!(r.text.contains("<b onclick=x>"), "plain text is not HTML");
    }
}
