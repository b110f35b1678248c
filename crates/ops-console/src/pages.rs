//! The pages: the overview of every queue, and one queue's jobs by state.

use crate::{OpsConsole, admit, csrf_token, html, refused_page, relative};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use maud::{DOCTYPE, Markup, html as markup};
use ports::AdminError;
use ports::admin::{InstanceInfo, MinuteCount, QueueOverview};

pub(crate) fn layout(title: &str, body: Markup) -> String {
    markup! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Trellis ops" }
                link rel="stylesheet" href="/ops/assets/ops.css";
                script src="/ops/assets/ops.js" defer {}
            }
            body {
                header {
                    h1 { a href="/ops" { "Trellis ops" } }
                    a href="/ops" { "Queues" }
                    a href="/ops/events" { "Events" }
                    a href="/ops/users" { "Users" }
                    span.muted { (title) }
                }
                main { (body) }
            }
        }
    }
    .into_string()
}

/// A page that says why a request was not served.
pub(crate) fn refusal(status: StatusCode, why: &str) -> HttpResponse {
    let title = status.canonical_reason().unwrap_or("Error");
    html(
        status,
        layout(
            title,
            markup! { p.notice { (why) } p { a href="/ops" { "Back to the overview" } } },
        ),
    )
}

/// What an admin error shows: never the internal text (it is logged).
pub(crate) fn failure(e: &AdminError) -> HttpResponse {
    match e {
        AdminError::Invalid(why) => refusal(StatusCode::BAD_REQUEST, why),
        AdminError::Unavailable(err) => {
            tracing::warn!(error = %format!("{err:#}"), "ops console: the queue store is unavailable");
            refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "Redis cannot be reached right now; try again in a moment.",
            )
        }
        AdminError::Unknown(err) => {
            tracing::error!(error = %format!("{err:#}"), "ops console: an operation failed");
            refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong; the server log has the details.",
            )
        }
    }
}

/// The token in a hidden field and where to come back to.
pub(crate) fn form_fields(csrf: &str, back: &str) -> Markup {
    markup! {
        input type="hidden" name="csrf" value=(csrf);
        input type="hidden" name="back" value=(back);
    }
}

fn state_badge(paused: bool) -> Markup {
    if paused {
        markup! { span.state.paused { "paused" } }
    } else {
        markup! { span.state.running { "running" } }
    }
}

/// The last hour as bars, a minute each: processed in green, failed in
/// red on top (inline SVG: no script, nothing to load).
fn hour_chart(minutes: &[MinuteCount]) -> Markup {
    let (w, h) = (2_u64, 24_u64);
    let peak = minutes
        .iter()
        .map(|m| m.processed + m.failed)
        .max()
        .unwrap_or(0)
        .max(1);
    let (done, failed) = minutes
        .iter()
        .fold((0, 0), |(d, f), m| (d + m.processed, f + m.failed));
    let width = w * minutes.len() as u64;
    markup! {
        svg.chart width=(width) height=(h) viewBox={ "0 0 " (width) " " (h) } role="img"
            aria-label={ (done) " processed, " (failed) " failed in the last hour" } {
            title { (done) " processed, " (failed) " failed in the last hour" }
            @for (i, m) in minutes.iter().enumerate() {
                @let x = i as u64 * w;
                @let ok = (m.processed * h).div_ceil(peak);
                @let bad = (m.failed * h).div_ceil(peak);
                @if ok > 0 { rect x=(x) y=(h - ok) width=(w - 1) height=(ok) fill="#1a7f37" {} }
                @if bad > 0 { rect x=(x) y=(h.saturating_sub(ok + bad)) width=(w - 1) height=(bad) fill="#cf222e" {} }
            }
        }
        span.muted.wide { " " (done) " / " (failed) }
    }
}

/// The processes alive now, from their heartbeats.
fn instances_table(instances: &[InstanceInfo], now_ms: i64) -> Markup {
    markup! {
        h2 { "Instances" }
        @if instances.is_empty() {
            p.notice { "No instance has sent a heartbeat in the last 30 s." }
        } @else {
            div.scroll { table {
                thead { tr { th { "instance" } th { "role" } th.wide { "version" } th { "started" } th { "last heartbeat" } th.n { "sockets" } } }
                tbody { @for i in instances {
                    tr {
                        td { code { (i.id) } }
                        td { (i.role) }
                        td.wide { (i.version) }
                        td { (relative(i.started_at_ms, now_ms)) }
                        td { (relative(i.last_seen_ms, now_ms)) }
                        td.n { @match i.ws_connections { Some(n) => (n), None => "—" } }
                    }
                } }
            } }
        }
    }
}

fn queues_table(queues: &[QueueOverview], csrf: &str) -> Markup {
    markup! {
        @if queues.is_empty() {
            p.notice { "No queues yet: a queue appears with its first job." }
        } @else {
            div.scroll { table {
                thead { tr {
                    th { "queue" } th { "state" }
                    th.n { "pending" } th.n { "scheduled" } th.n { "active" } th.n { "retry" } th.n { "dead" }
                    th.n.wide { "processed" } th.n.wide { "failed" } th.wide { "last hour" } th.wide { "limits" } th {}
                } }
                tbody { @for q in queues {
                    @let s = &q.stats;
                    tr {
                        td { a href={ "/ops/queues/" (s.queue) } { (s.queue) } }
                        td { (state_badge(s.paused)) }
                        td.n data-pending=(s.queue) { (s.pending) }
                        td.n { (s.scheduled) } td.n { (s.active) } td.n { (s.retry) }
                        td.n { @if s.dead > 0 { a.bad href={ "/ops/queues/" (s.queue) "?state=dead" } { (s.dead) } } @else { "0" } }
                        td.n.wide { (s.processed) } td.n.wide { (s.failed) }
                        td.wide { (hour_chart(&q.last_hour)) }
                        td.wide.muted {
                            @if let Some(n) = q.controls.concurrency { "at most " (n) " at once " }
                            @if let Some(r) = q.controls.rate { (r.jobs) " per " (r.per.as_millis()) " ms" }
                        }
                        td {
                            @let (action, label) = if s.paused { ("resume", "Resume") } else { ("pause", "Pause") };
                            form.inline method="post" action={ "/ops/queues/" (s.queue) "/" (action) } {
                                (form_fields(csrf, "/ops"))
                                button type="submit" { (label) }
                            }
                        }
                    }
                } }
            } }
        }
    }
}

/// Sends `page`, setting the CSRF cookie when the request had none.
pub(crate) fn send(
    status: StatusCode,
    page: String,
    cookie: Option<actix_web::cookie::Cookie<'static>>,
) -> HttpResponse {
    let mut res = html(status, page);
    if let Some(c) = cookie {
        let _ = res.add_cookie(&c);
    }
    res
}

/// What the overview refreshes live: the queues and the instances.
async fn live(console: &OpsConsole, csrf: &str) -> Result<Markup, ports::AdminError> {
    let queues = console.queues.overview().await?;
    let instances = match &console.instances {
        Some(i) => Some(i.alive().await?),
        None => None,
    };
    let now_ms = chrono::Utc::now().timestamp_millis();
    Ok(markup! {
        (queues_table(&queues, csrf))
        @if let Some(i) = &instances { (instances_table(i, now_ms)) }
    })
}

/// `GET /ops`: every queue at a glance, and the live instances, refreshed
/// every few seconds.
pub(crate) async fn overview(req: HttpRequest, console: web::Data<OpsConsole>) -> HttpResponse {
    let who = match admit(&req, &console).await {
        Ok(who) => who,
        Err(refused) => return refused_page(refused),
    };
    let (csrf, cookie) = csrf_token(&req);
    match live(&console, &csrf).await {
        Ok(part) => send(
            StatusCode::OK,
            layout(
                "Queues",
                markup! {
                    @if matches!(console.access, crate::Access::SignIn(_)) {
                        {
                            p.muted {
                                "Signed in: " (who.name)
                                @if who.role == crate::Role::Viewer { " (can look, not act)" }
                                " "
                                form.inline method="post" action="/ops/logout" {
                                    (form_fields(&csrf, "/ops")) button type="submit" { "Sign out" }
                                }
                            }
                        }
                    }
                    div data-refresh="/ops/fragments/queues" { (part) }
                },
            ),
            cookie,
        ),
        Err(e) => failure(&e),
    }
}

/// The overview's live part alone, for the refresh.
pub(crate) async fn queues_fragment(
    req: HttpRequest,
    console: web::Data<OpsConsole>,
) -> HttpResponse {
    if let Err(refused) = admit(&req, &console).await {
        return refused_page(refused);
    }
    let (csrf, cookie) = csrf_token(&req);
    match live(&console, &csrf).await {
        Ok(part) => send(StatusCode::OK, part.into_string(), cookie),
        Err(e) => failure(&e),
    }
}
