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
pub(crate) async fn authorize(
    req: &HttpRequest,
    console: &OpsConsole,
    form: &ActionForm,
) -> Result<Operator, Refusal> {
    let who = admit_admin(req, console).await?;
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
    let who = match authorize(&req, console, &form).await {
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

/// A button that does one thing to one queue or job (named by the path):
/// `$name` runs `QueueAdmin::$method` on it.
macro_rules! one_thing {
    ($name:ident, $method:ident, $what:literal, $not_done:literal) => {
        pub(crate) async fn $name(
            req: HttpRequest,
            console: web::Data<OpsConsole>,
            target: web::Path<String>,
            form: web::Form<ActionForm>,
        ) -> HttpResponse {
            let target = target.into_inner();
            let run = console.queues.$method(&target);
            act(req, &console, form, $what, target.clone(), run, $not_done).await
        }
    };
}

one_thing!(pause, pause, "pause", "The queue was already paused.");
one_thing!(resume, resume, "resume", "The queue was not paused.");
one_thing!(retry, retry, "retry", "That job is not dead (any more).");
one_thing!(delete, delete, "delete", "There is no such job (any more).");
one_thing!(
    run_now,
    run_now,
    "run now",
    "That job is neither scheduled nor waiting to retry (any more)."
);

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
