//! What the buttons do. Every action is a POST carrying the CSRF token,
//! logged with who did it, and answered with a redirect back to the page
//! (303), so a reload never repeats it.

use crate::pages::{failure, refusal};
use crate::{Operator, OpsConsole, Refusal, admit_admin, csrf_ok};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use ports::AdminError;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub(crate) struct ActionForm {
    csrf: String,
    back: Option<String>,
    /// For "retry every dead job of a kind".
    kind: Option<String>,
}

impl ActionForm {
    pub(crate) fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Admits the operator and checks the token.
pub(crate) fn authorize(
    req: &HttpRequest,
    console: &OpsConsole,
    form: &ActionForm,
) -> Result<Operator, Refusal> {
    let who = admit_admin(req, console)?;
    if !csrf_ok(req, &form.csrf) {
        tracing::warn!(operator = %who.name, path = %req.path(), "ops console: action refused, no valid CSRF token");
        return Err(Refusal {
            status: StatusCode::FORBIDDEN,
            why: "This action came without a valid form token. Reload the page and try again.",
        });
    }
    Ok(who)
}

/// Back to where the button was: a page of the console, nowhere else.
pub(crate) fn back(form: &ActionForm) -> HttpResponse {
    let to = form
        .back
        .as_deref()
        .filter(|b| b.starts_with("/ops") && !b.starts_with("/ops//") && !b.contains('\\'))
        .unwrap_or("/ops");
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .finish()
}

/// Runs one action and answers: back to the page, or why it failed.
pub(crate) async fn act(
    req: HttpRequest,
    console: &OpsConsole,
    form: web::Form<ActionForm>,
    action: &'static str,
    target: String,
    run: impl std::future::Future<Output = Result<bool, AdminError>>,
    not_done: &str,
) -> HttpResponse {
    let who = match authorize(&req, console, &form) {
        Ok(w) => w,
        Err(refused) => return refused.response(),
    };
    match run.await {
        Ok(done) => {
            tracing::info!(operator = %who.name, action, target = %target, done, "ops console action");
            if done {
                back(&form)
            } else {
                refusal(StatusCode::CONFLICT, not_done)
            }
        }
        Err(e) => failure(&e),
    }
}

pub(crate) async fn pause(
    req: HttpRequest,
    console: web::Data<OpsConsole>,
    queue: web::Path<String>,
    form: web::Form<ActionForm>,
) -> HttpResponse {
    let q = queue.into_inner();
    let run = console.queues.pause(&q);
    act(
        req,
        &console,
        form,
        "pause",
        q.clone(),
        run,
        "The queue was already paused.",
    )
    .await
}

pub(crate) async fn resume(
    req: HttpRequest,
    console: web::Data<OpsConsole>,
    queue: web::Path<String>,
    form: web::Form<ActionForm>,
) -> HttpResponse {
    let q = queue.into_inner();
    let run = console.queues.resume(&q);
    act(
        req,
        &console,
        form,
        "resume",
        q.clone(),
        run,
        "The queue was not paused.",
    )
    .await
}

pub(crate) async fn retry(
    req: HttpRequest,
    console: web::Data<OpsConsole>,
    id: web::Path<String>,
    form: web::Form<ActionForm>,
) -> HttpResponse {
    let id = id.into_inner();
    let run = console.queues.retry(&id);
    act(
        req,
        &console,
        form,
        "retry",
        id.clone(),
        run,
        "That job is not dead (any more).",
    )
    .await
}

pub(crate) async fn delete(
    req: HttpRequest,
    console: web::Data<OpsConsole>,
    id: web::Path<String>,
    form: web::Form<ActionForm>,
) -> HttpResponse {
    let id = id.into_inner();
    let run = console.queues.delete(&id);
    act(
        req,
        &console,
        form,
        "delete",
        id.clone(),
        run,
        "There is no such job (any more).",
    )
    .await
}

pub(crate) async fn run_now(
    req: HttpRequest,
    console: web::Data<OpsConsole>,
    id: web::Path<String>,
    form: web::Form<ActionForm>,
) -> HttpResponse {
    let id = id.into_inner();
    let run = console.queues.run_now(&id);
    act(
        req,
        &console,
        form,
        "run now",
        id.clone(),
        run,
        "That job is neither scheduled nor waiting to retry (any more).",
    )
    .await
}

pub(crate) async fn retry_kind(
    req: HttpRequest,
    console: web::Data<OpsConsole>,
    queue: web::Path<String>,
    form: web::Form<ActionForm>,
) -> HttpResponse {
    let q = queue.into_inner();
    let kind = form.kind.clone().unwrap_or_default();
    let target = format!("{q} {kind}");
    let run = async {
        if kind.is_empty() {
            return Err(AdminError::Invalid("which kind?".into()));
        }
        console
            .queues
            .retry_dead_of_kind(&q, &kind)
            .await
            .map(|n| n > 0)
    };
    act(
        req,
        &console,
        form,
        "retry every dead job of a kind",
        target,
        run,
        "There was no dead job of that kind.",
    )
    .await
}
