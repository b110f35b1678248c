//! The event streams' dead letters (entries a consumer group could not
//! process, with the reason), and putting them back on their stream.

use crate::actions::{ActionForm, act};
use crate::pages::{failure, form_fields, layout, send};
use crate::{OpsConsole, Refusal, admit, csrf_token, refused_page, relative};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use maud::html as markup;
use ports::{AdminError, DeadLetter, EventAdmin, StreamOverview};
use std::sync::Arc;

/// Dead letters shown per topic.
const SHOWN: usize = 50;

fn events(console: &OpsConsole) -> Result<&(Arc<dyn EventAdmin>, Vec<String>), Refusal> {
    console.events.as_ref().ok_or(Refusal {
        status: StatusCode::NOT_FOUND,
        why: "This console was started without the event streams.",
    })
}

/// Stream entry ids: `<ms>-<seq>`.
fn valid_entry_id(id: &str) -> bool {
    id.split_once('-').is_some_and(|(ms, seq)| {
        !ms.is_empty()
            && !seq.is_empty()
            && ms.len() <= 20
            && seq.len() <= 20
            && ms.bytes().chain(seq.bytes()).all(|b| b.is_ascii_digit())
    })
}

fn pretty(event: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(event) {
        Ok(v) => crate::redact::shown(&v),
        // Not JSON: nothing to show field by field, so nothing shown.
        Err(_) => format!("[{} bytes that are not JSON]", event.len()),
    }
}

/// A stream's length and its consumer groups: how far behind each is.
fn groups_table(o: &StreamOverview) -> maud::Markup {
    markup! {
        h2 { "Stream " (o.topic) }
        p.muted { (o.length) " entries, " (o.dead_letters) " dead letters" }
        @if o.groups.is_empty() {
            p.notice { "No consumer group reads " (o.topic) " yet." }
        } @else {
            div.scroll { table {
                thead { tr { th { "group" } th.n { "consumers" } th.n { "pending" } th.n { "lag" } } }
                tbody { @for g in &o.groups {
                    tr {
                        td { (g.name) }
                        td.n { (g.consumers) }
                        td.n { (g.pending) }
                        td.n data-lag=(g.name) {
                            @match g.lag { Some(l) if l > 0 => span.bad { (l) }, Some(l) => (l), None => "?" }
                        }
                    }
                } }
            } }
        }
    }
}

fn letters_table(topic: &str, letters: &[DeadLetter], csrf: &str) -> maud::Markup {
    markup! {
        h3 { "Dead letters of " (topic) }
        @if letters.is_empty() {
            p.notice { "No dead letters on " (topic) "." }
        } @else {
            form.inline method="post" action={ "/ops/events/" (topic) "/replay-all" } {
                (form_fields(csrf, "/ops/events")) button type="submit" { "Replay all" }
            }
            div.scroll { table {
                thead { tr { th { "entry" } th { "group" } th.n { "deliveries" } th { "reason / event" } th {} } }
                tbody { @for d in letters {
                    tr {
                        td { code { (d.id) } br; span.muted { (d.event_type) } }
                        td { (d.group) }
                        td.n { (d.deliveries) }
                        td {
                            span.bad { (d.reason) }
                            details { summary.muted { "event" } pre { (pretty(&d.event)) } }
                        }
                        td {
                            form.inline method="post" action={ "/ops/events/" (topic) "/replay/" (d.id) } {
                                (form_fields(csrf, "/ops/events")) button type="submit" { "Replay" }
                            }
                        }
                    }
                } }
            } }
        }
    }
}

/// `GET /ops/events`: every topic's dead letters, newest first.
pub(crate) async fn page(req: HttpRequest, console: web::Data<OpsConsole>) -> HttpResponse {
    if let Err(refused) = admit(&req, &console).await {
        return refused_page(refused);
    }
    let (admin, topics) = match events(&console) {
        Ok(e) => e,
        Err(refused) => return refused.response(),
    };
    let (csrf, cookie) = csrf_token(&req);
    let mut sections = Vec::new();
    for topic in topics {
        let overview = match admin.overview(topic).await {
            Ok(o) => o,
            Err(e) => return failure(&e),
        };
        match admin.dead_letters(topic, SHOWN).await {
            Ok(letters) => {
                sections.push(groups_table(&overview));
                sections.push(letters_table(topic, &letters, &csrf));
            }
            Err(e) => return failure(&e),
        }
    }
    let outbox = match &console.support {
        Some(support) => match support.outbox().await {
            Ok(o) => Some(o),
            Err(e) => return failure(&e),
        },
        None => None,
    };
    let now_ms = chrono::Utc::now().timestamp_millis();
    let body = markup! {
        @if let Some(o) = &outbox {
            h2 { "Outbox" }
            p {
                span data-outbox-backlog=(o.backlog) { (o.backlog) " events wait to be relayed" }
                @if let Some(age) = o.oldest_age_ms { ", the oldest for " (age / 1000) " s" }
            }
            @if !o.failing.is_empty() {
                div.scroll { table {
                    thead { tr { th { "row" } th { "event" } th.n { "attempts" } th { "last error" } th { "written" } } }
                    tbody { @for f in &o.failing {
                        tr { td { (f.seq) } td { (f.event_type) } td.n { (f.attempts) } td.bad { (f.last_error) } td { (relative(f.created_at_ms, now_ms)) } }
                    } }
                } }
            }
        }
        p.muted { "Entries a consumer group could not process, with the reason. Replay puts one back on its stream for the groups to take again (after a fix or a newer version is out)." }
        @for s in &sections { (s) }
    };
    send(StatusCode::OK, layout("Events", body), cookie)
}

fn known_topic(console: &OpsConsole, topic: &str) -> Result<Arc<dyn EventAdmin>, Refusal> {
    let (admin, topics) = events(console)?;
    if topics.iter().any(|t| t == topic) {
        Ok(admin.clone())
    } else {
        Err(Refusal {
            status: StatusCode::NOT_FOUND,
            why: "There is no such stream.",
        })
    }
}

/// `POST /ops/events/{topic}/replay/{id}`.
pub(crate) async fn replay(
    req: HttpRequest,
    console: web::Data<OpsConsole>,
    path: web::Path<(String, String)>,
    form: web::Form<ActionForm>,
) -> HttpResponse {
    if let Err(refused) = admit(&req, &console).await {
        return refused.response();
    }
    let (topic, id) = path.into_inner();
    let admin = match known_topic(&console, &topic) {
        Ok(a) => a,
        Err(refused) => return refused.response(),
    };
    let run = async {
        if !valid_entry_id(&id) {
            return Err(AdminError::Invalid(format!(
                "{id:?} is not a stream entry id"
            )));
        }
        admin.replay(&topic, &id).await
    };
    let target = format!("{topic}/{id}");
    act(
        req,
        &console,
        form,
        "replay",
        target,
        run,
        "That dead letter is gone (replayed already?).",
    )
    .await
}

/// `POST /ops/events/{topic}/replay-all`.
pub(crate) async fn replay_all(
    req: HttpRequest,
    console: web::Data<OpsConsole>,
    topic: web::Path<String>,
    form: web::Form<ActionForm>,
) -> HttpResponse {
    if let Err(refused) = admit(&req, &console).await {
        return refused.response();
    }
    let topic = topic.into_inner();
    let admin = match known_topic(&console, &topic) {
        Ok(a) => a,
        Err(refused) => return refused.response(),
    };
    let run = async { admin.replay_all(&topic).await.map(|n| n > 0) };
    act(
        req,
        &console,
        form,
        "replay all",
        topic.clone(),
        run,
        "There was nothing to replay.",
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_stream_entry_ids_are_taken() {
        for ok in ["1700000000000-0", "1-12"] {
            assert!(valid_entry_id(ok), "{ok}");
        }
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "+",
            "1-x",
            "1700000000000",
            "$",
            "1-2-3",
        ] {
            assert!(!valid_entry_id(bad), "{bad}");
        }
    }
}
