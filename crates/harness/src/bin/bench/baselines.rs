//! The baselines built in this workspace: a bare actix-web hello world and a
//! bare actix-ws broadcast server (no auth, no envelopes, no limits).

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use std::sync::{Arc, Mutex};

pub(crate) fn serve_hello(port: u16) -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(|| {
            App::new().route(
                "/",
                web::get().to(|| async {
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body("{\"status\":\"ok\"}")
                }),
            )
        })
        .workers(2)
        .tcp_nodelay(true)
        .bind(("127.0.0.1", port))?
        .run()
        .await
    })?;
    Ok(())
}

type Sessions = Arc<Mutex<Vec<actix_ws::Session>>>;

async fn ws(
    req: HttpRequest,
    body: web::Payload,
    sessions: web::Data<Sessions>,
) -> actix_web::Result<HttpResponse> {
    let (res, session, mut stream) = actix_ws::handle(&req, body)?;
    sessions
        .lock()
        .map_err(|_| actix_web::error::ErrorInternalServerError("lock"))?
        .push(session);
    actix_web::rt::spawn(async move { while let Some(Ok(_)) = stream.recv().await {} });
    Ok(res)
}

/// Sends the body to every session, one after the other.
async fn broadcast(body: String, sessions: web::Data<Sessions>) -> HttpResponse {
    let all: Vec<actix_ws::Session> = sessions.lock().map(|s| s.clone()).unwrap_or_default();
    for mut s in all {
        let _ = s.text(body.clone()).await;
    }
    HttpResponse::Ok().finish()
}

pub(crate) fn serve_ws(port: u16) -> anyhow::Result<()> {
    let sessions: Sessions = Arc::default();
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(sessions.clone()))
                .route("/ws", web::get().to(ws))
                .route("/broadcast", web::post().to(broadcast))
        })
        .workers(2)
        .tcp_nodelay(true)
        .bind(("127.0.0.1", port))?
        .run()
        .await
    })?;
    Ok(())
}
