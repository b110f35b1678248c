//! The routes, grouped by resource.

pub(crate) mod docs;
pub(crate) mod health;
pub(crate) mod me;
pub(crate) mod push_tokens;
pub(crate) mod test_push;

use crate::problem::ApiError;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, Responder};
use paperclip::actix::{OperationModifier, web};
use paperclip::v2::models::{DefaultOperationRaw, Either, Response};
use paperclip::v2::schema::Apiv2Schema;
use serde::Serialize;

/// The operational routes every role serves.
pub(crate) fn operational(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/healthz").route(web::get().to(health::healthz)))
        .service(web::resource("/readyz").route(web::get().to(health::readyz)));
}

/// Mounts every documented route (those that appear in the OpenAPI spec).
pub(crate) fn documented(cfg: &mut web::ServiceConfig) {
    operational(cfg);
    cfg.service(
        web::scope("/api/v1")
            .service(
                web::resource("/me")
                    .route(web::get().to(me::get_me))
                    .route(web::patch().to(me::patch_me))
                    .route(web::delete().to(me::delete_me)),
            )
            .service(
                web::resource("/me/test-push").route(web::post().to(test_push::send_test_push)),
            )
            .service(
                web::resource("/push-tokens")
                    .route(web::get().to(push_tokens::list))
                    .route(web::post().to(push_tokens::register)),
            )
            .service(
                web::resource("/push-tokens/{token}")
                    .route(web::delete().to(push_tokens::unregister)),
            ),
    );
}

/// A JSON body with 201 Created when the request created the resource and
/// 200 OK when it changed or confirmed an existing one.
#[derive(Debug)]
pub(crate) struct Upserted<T> {
    pub created: bool,
    pub body: T,
}

impl<T: Serialize> Responder for Upserted<T> {
    type Body = actix_web::body::BoxBody;

    fn respond_to(self, _: &HttpRequest) -> HttpResponse {
        let status = if self.created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        HttpResponse::build(status).json(self.body)
    }
}

impl<T: Apiv2Schema> Apiv2Schema for Upserted<T> {
    fn name() -> Option<String> {
        T::name()
    }

    fn raw_schema() -> paperclip::v2::models::DefaultSchemaRaw {
        T::raw_schema()
    }
}

impl<T: Apiv2Schema> OperationModifier for Upserted<T> {
    fn update_response(op: &mut DefaultOperationRaw) {
        for (status, description) in [("200", "Updated (or unchanged)"), ("201", "Created")] {
            let mut schema = T::schema_with_ref();
            schema.retain_ref();
            op.responses.insert(
                status.into(),
                Either::Right(Response {
                    description: Some(description.into()),
                    schema: Some(schema),
                    ..Default::default()
                }),
            );
        }
    }
}

/// Maps the port/use-case error vocabulary onto HTTP.
pub(crate) fn unavailable(e: anyhow::Error) -> ApiError {
    ApiError::Unavailable(e)
}

pub(crate) fn internal(e: anyhow::Error) -> ApiError {
    ApiError::Internal(e)
}
