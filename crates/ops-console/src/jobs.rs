//! A queue's jobs by state (filtered by kind if asked), and one job's page.

use crate::pages::{failure, form_fields, layout, refusal, send};
use crate::{OpsConsole, admit, csrf_token, refused_page, relative};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use maud::{Markup, html as markup};
use ports::admin::{JobState, JobSummary};
use serde::Deserialize;

/// Jobs on one page of a queue.
const PAGE: usize = 25;

/// The buttons a job in `state` has.
fn job_buttons(id: &str, state: JobState, csrf: &str, back: &str) -> Markup {
    markup! {
        @if state == JobState::Dead {
            form.inline method="post" action={ "/ops/jobs/" (id) "/retry" } {
                (form_fields(csrf, back)) button type="submit" { "Retry" }
            }
            " "
        }
        @if matches!(state, JobState::Scheduled | JobState::Retry) {
            form.inline method="post" action={ "/ops/jobs/" (id) "/run-now" } {
                (form_fields(csrf, back)) button type="submit" { "Run now" }
            }
            " "
        }
        form.inline method="post" action={ "/ops/jobs/" (id) "/delete" } {
            (form_fields(csrf, back)) button.danger type="submit" { "Delete" }
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct QueueQuery {
    state: Option<String>,
    kind: Option<String>,
    cursor: Option<String>,
}

fn job_row(job: &JobSummary, now_ms: i64, csrf: &str, back: &str) -> Markup {
    let payload = crate::redact::shown(&job.payload);
    markup! {
        tr {
            td { a href={ "/ops/jobs/" (job.id) } { code { (job.id) } } br; span.muted { (job.kind) } }
            td.n { (job.attempts) "/" (job.max_retries + 1) }
            td { span title=(job.at_ms) { (relative(job.at_ms, now_ms)) } }
            td {
                @if let Some(e) = &job.last_error { span.bad { (e) } }
                details { summary.muted { "payload" } pre { (payload) } }
            }
            td { (job_buttons(&job.id, job.state, csrf, back)) }
        }
    }
}

/// `GET /ops/queues/{queue}?state=..&cursor=..`: a page of the queue's jobs.
pub(crate) async fn queue(
    req: HttpRequest,
    console: web::Data<OpsConsole>,
    path: web::Path<String>,
    query: web::Query<QueueQuery>,
) -> HttpResponse {
    if let Err(refused) = admit(&req, &console).await {
        return refused_page(refused);
    }
    let name = path.into_inner();
    let state = match query
        .state
        .as_deref()
        .unwrap_or("pending")
        .parse::<JobState>()
    {
        Ok(s) => s,
        Err(why) => return refusal(StatusCode::BAD_REQUEST, &why),
    };
    let kind = query
        .kind
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let (csrf, cookie) = csrf_token(&req);
    let page = match console
        .queues
        .jobs(&name, state, kind, query.cursor.as_deref(), PAGE)
        .await
    {
        Ok(p) => p,
        Err(e) => return failure(&e),
    };
    let now_ms = chrono::Utc::now().timestamp_millis();
    let kind_param = kind
        .map(|k| format!("&kind={}", encode(k)))
        .unwrap_or_default();
    let here = format!("/ops/queues/{name}?state={}{kind_param}", state.as_str());
    let at_label = match state {
        JobState::Pending => "ready",
        JobState::Scheduled | JobState::Retry => "due",
        JobState::Active => "lease ends",
        JobState::Dead => "died",
    };
    let body = markup! {
        nav.tabs { @for s in JobState::ALL {
            a class=@if s == state { "on" } href={ "/ops/queues/" (name) "?state=" (s.as_str()) (kind_param) } { (s.as_str()) }
        } }
        form.filter method="get" action={ "/ops/queues/" (name) } {
            input type="hidden" name="state" value=(state.as_str());
            label { "kind " input type="text" name="kind" value=(kind.unwrap_or("")) placeholder="job kind"; }
            " " button type="submit" { "Filter" }
            @if kind.is_some() { " " a href={ "/ops/queues/" (name) "?state=" (state.as_str()) } { "all kinds" } }
        }
        @if let (Some(k), JobState::Dead, false) = (kind, state, page.jobs.is_empty()) {
            form.inline method="post" action={ "/ops/queues/" (name) "/retry-kind" } {
                (form_fields(&csrf, &here))
                input type="hidden" name="kind" value=(k);
                button type="submit" { "Retry every dead " (k) " job" }
            }
        }
        @if page.jobs.is_empty() {
            p.notice { "No " (state.as_str()) " jobs" @if let Some(k) = kind { " of kind " (k) } " in " (name) "." }
        } @else {
            div.scroll { table {
                thead { tr { th { "job" } th.n { "attempts" } th { (at_label) } th { "last error / payload" } th {} } }
                tbody { @for j in &page.jobs { (job_row(j, now_ms, &csrf, &here)) } }
            } }
        }
        @if let Some(next) = &page.next {
            p { a href={ (here) "&cursor=" (encode(next)) } { "Next page →" } }
        }
    };
    send(
        StatusCode::OK,
        layout(&format!("{name}: {}", state.as_str()), body),
        cookie,
    )
}

/// `value` as a URL query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn when(at_ms: Option<i64>, now_ms: i64) -> Markup {
    markup! {
        @match at_ms.filter(|ms| *ms > 0) {
            Some(ms) => {
                (relative(ms, now_ms))
                @if let Some(t) = chrono::DateTime::from_timestamp_millis(ms) {
                    " " span.muted { "(" (t.format("%Y-%m-%d %H:%M:%S UTC")) ")" }
                }
            }
            None => span.muted { "—" },
        }
    }
}

/// `GET /ops/jobs/{id}`: one job in full.
pub(crate) async fn job(
    req: HttpRequest,
    console: web::Data<OpsConsole>,
    id: web::Path<String>,
) -> HttpResponse {
    if let Err(refused) = admit(&req, &console).await {
        return refused_page(refused);
    }
    let id = id.into_inner();
    let detail = match console.queues.job(&id).await {
        Ok(Some(d)) => d,
        Ok(None) => return refusal(StatusCode::NOT_FOUND, "There is no such job (any more)."),
        Err(e) => return failure(&e),
    };
    let (csrf, cookie) = csrf_token(&req);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let j = &detail.summary;
    let back = format!("/ops/queues/{}?state={}", j.queue, j.state.as_str());
    let payload = crate::redact::shown(&j.payload);
    let body = markup! {
        div.scroll { table.detail {
            tbody {
                tr { th { "job" } td { code { (j.id) } } }
                tr { th { "queue" } td { a href=(back) { (j.queue) } } }
                tr { th { "state" } td { (j.state.as_str()) } }
                tr { th { "kind" } td { (j.kind) " " span.muted { "v" (detail.version) } } }
                tr { th { "attempts" } td { (j.attempts) " of " (j.max_retries + 1) } }
                tr { th { "ready since" } td { (when(detail.ready_at_ms, now_ms)) } }
                @if j.state != JobState::Pending {
                    tr { th { "due / lease / died" } td { (when(Some(j.at_ms), now_ms)) } }
                }
                tr { th { "last failure" } td { (when(detail.failed_at_ms, now_ms)) } }
                @if let Some(e) = &j.last_error { tr { th { "last error" } td.bad { (e) } } }
                @if let Some(u) = &detail.unique_key { tr { th { "unique key" } td { code { (u) } } } }
                tr { th { "time limit" } td { @if detail.timeout_ms == 0 { "the worker's default" } @else { (detail.timeout_ms / 1000) " s" } } }
            }
        } }
        h2 { "Payload" }
        pre { (payload) }
        p { (job_buttons(&j.id, j.state, &csrf, &back)) }
    };
    send(
        StatusCode::OK,
        layout(&format!("job {}", j.id), body),
        cookie,
    )
}
