//! Support: a user by uid or address, with their devices (fingerprints
//! only) and their welcome mail.

use crate::pages::{failure, layout, refusal, send};
use crate::{OpsConsole, admit, csrf_token, refused_page, relative};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use maud::{Markup, html as markup};
use ports::SupportUser;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub(crate) struct UserQuery {
    q: Option<String>,
}

/// `uid`'s open sockets on the instances alive now: `None` when the
/// console cannot tell.
async fn open_sockets(console: &OpsConsole, uid: &str) -> Result<Option<u64>, ports::AdminError> {
    let (Some(sockets), Some(instances)) = (&console.sockets, &console.instances) else {
        return Ok(None);
    };
    let alive: Vec<String> = instances
        .alive()
        .await?
        .into_iter()
        .map(|i| i.key())
        .collect();
    Ok(Some(
        sockets
            .sockets(uid)
            .await?
            .into_iter()
            .filter(|(instance, _)| alive.contains(instance))
            .map(|(_, n)| n)
            .sum(),
    ))
}

fn user_card(u: &SupportUser, sockets: Option<u64>, now_ms: i64) -> Markup {
    let when = |ms: Option<i64>| ms.map_or_else(|| "—".to_owned(), |ms| relative(ms, now_ms));
    markup! {
        h2 { code { (u.uid) } }
        div.scroll { table.detail { tbody {
            tr { th { "name" } td { (u.display_name.as_deref().unwrap_or("—")) } }
            tr { th { "e-mail" } td { (u.email.as_deref().unwrap_or("—")) } }
            tr { th { "verified e-mail" } td { (u.verified_email.as_deref().unwrap_or("—")) } }
            tr { th { "photo" } td { (u.photo_url.as_deref().unwrap_or("—")) } }
            tr { th { "created" } td { (relative(u.created_at_ms, now_ms)) } }
            tr { th { "updated" } td { (relative(u.updated_at_ms, now_ms)) } }
            tr { th { "sockets open now" } td data-sockets=(u.uid) { @match sockets { Some(n) => (n), None => "—" } } }
            tr { th { "welcome mail" } td {
                @match (u.welcome_claimed_at_ms, u.welcome_sent_at_ms) {
                    (_, Some(sent)) => { "sent " (relative(sent, now_ms)) },
                    (Some(claimed), None) => span.bad { "claimed " (relative(claimed, now_ms)) ", not sent" },
                    (None, None) => span.muted { "none" },
                }
            } }
        } } }
        h3 { "Devices" }
        @if u.devices.is_empty() {
            p.muted { "No push token registered." }
        } @else {
            div.scroll { table {
                thead { tr { th { "token (fingerprint)" } th { "platform" } th { "registered" } th { "last seen" } } }
                tbody { @for d in &u.devices {
                    tr { td { code { (d.fingerprint) } } td { (d.platform) } td { (when(Some(d.created_at_ms))) } td { (when(Some(d.last_seen_at_ms))) } }
                } }
            } }
        }
    }
}

/// `GET /ops/users?q=<uid or e-mail>`.
pub(crate) async fn page(
    req: HttpRequest,
    console: web::Data<OpsConsole>,
    query: web::Query<UserQuery>,
) -> HttpResponse {
    if let Err(refused) = admit(&req, &console).await {
        return refused_page(refused);
    }
    let Some(support) = &console.support else {
        return refusal(
            StatusCode::NOT_FOUND,
            "This console was started without the user store.",
        );
    };
    let q = query.q.as_deref().map(str::trim).unwrap_or("");
    let found = if q.is_empty() {
        None
    } else {
        match support.find_users(q).await {
            Ok(f) => {
                let mut with_sockets = Vec::new();
                for u in f {
                    match open_sockets(&console, &u.uid).await {
                        Ok(n) => with_sockets.push((u, n)),
                        Err(e) => return failure(&e),
                    }
                }
                Some(with_sockets)
            }
            Err(e) => return failure(&e),
        }
    };
    let (_, cookie) = csrf_token(&req);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let body = markup! {
        form.filter method="get" action="/ops/users" {
            label { "uid or e-mail " input type="text" name="q" value=(q) autocomplete="off"; }
            " " button type="submit" { "Look up" }
        }
        @if let Some(found) = &found {
            @if found.is_empty() {
                p.notice { "No user has the uid or address " (q) "." }
            }
            @for (u, n) in found { (user_card(u, *n, now_ms)) }
        }
    };
    send(StatusCode::OK, layout("Users", body), cookie)
}
