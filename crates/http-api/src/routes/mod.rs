//! The routes, grouped by resource.

pub(crate) mod docs;
pub(crate) mod export;
pub(crate) mod health;
pub(crate) mod me;
pub(crate) mod push_tokens;
pub(crate) mod test_push;
pub(crate) mod uploads;

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
            .service(web::resource("/me/export").route(web::get().to(export::export_me)))
            .service(
                web::resource("/me/test-push").route(web::post().to(test_push::send_test_push)),
            )
            .service(
                web::resource("/push-tokens")
                    .route(web::get().to(push_tokens::list))
                    .route(web::post().to(push_tokens::register)),
            )
            .service(
                web::resource("/push-tokens/unregister")
                    .route(web::post().to(push_tokens::unregister_in_body)),
            )
            .service(
                web::resource("/push-tokens/{token}")
                    .route(web::delete().to(push_tokens::unregister)),
            )
            .service(
                web::resource("/uploads")
                    .route(web::get().to(uploads::list))
                    .route(web::post().to(uploads::create)),
            )
            .service(
                web::resource("/uploads/{id}/complete").route(web::post().to(uploads::complete)),
            ),
    );
}

/// The routes outside the API's documented surface: `/media/{id}`, the
/// lasting link an avatar's `photo_url` holds.
pub(crate) fn links(cfg: &mut actix_web::web::ServiceConfig) {
    cfg.route("/media/{id}", actix_web::web::get().to(uploads::media));
}

/// A JSON body answered with one fixed status (and documented so).
macro_rules! fixed_status {
    ($name:ident, $status:ident, $code:literal, $description:literal) => {
        #[derive(Debug)]
        pub(crate) struct $name<T>(pub T);

        impl<T: Serialize> Responder for $name<T> {
            type Body = actix_web::body::BoxBody;

            fn respond_to(self, _: &HttpRequest) -> HttpResponse {
                HttpResponse::build(StatusCode::$status).json(self.0)
            }
        }

        impl<T: Apiv2Schema> Apiv2Schema for $name<T> {
            fn name() -> Option<String> {
                T::name()
            }

            fn raw_schema() -> paperclip::v2::models::DefaultSchemaRaw {
                T::raw_schema()
            }
        }

        impl<T: Apiv2Schema> OperationModifier for $name<T> {
            fn update_response(op: &mut DefaultOperationRaw) {
                let mut schema = T::schema_with_ref();
                schema.retain_ref();
                op.responses.insert(
                    $code.into(),
                    Either::Right(Response {
                        description: Some($description.into()),
                        schema: Some(schema),
                        ..Default::default()
                    }),
                );
            }
        }
    };
}

fixed_status!(Created, CREATED, "201", "Created");
fixed_status!(Accepted, ACCEPTED, "202", "Accepted");

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

/// A route on its way out: it answers with `Deprecation` (RFC 9745) and
/// `Sunset` (RFC 8594) headers and a `Link` to its successor, and the spec
/// marks it `deprecated`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deprecated {
    /// The operation's `operation_id`.
    pub operation: &'static str,
    pub method: &'static str,
    /// The route pattern, as actix matches it.
    pub route: &'static str,
    /// When it was deprecated and when it goes (RFC 3339 dates).
    pub since: &'static str,
    pub sunset: &'static str,
    /// What to use instead (a path on this API).
    pub successor: &'static str,
}

/// Every deprecated route.
pub(crate) const DEPRECATED: &[Deprecated] = &[Deprecated {
    operation: "unregisterPushToken",
    method: "DELETE",
    route: "/api/v1/push-tokens/{token}",
    since: "2026-12-06",
    sunset: "2027-06-30",
    successor: "/api/v1/push-tokens/unregister",
}];

/// A problem one operation answers beyond those every route shares (the
/// extractors' 400/401/413/415/422/429 and the 500/503 of any failure).
/// Each route module lists its own, beside the `From` impls that produce
/// them; the OpenAPI document is completed from these lists.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RouteProblem {
    /// The operation's `operation_id`.
    pub operation: &'static str,
    pub status: u16,
    /// What it means, naming its `code`.
    pub description: &'static str,
}

/// Every route module's [`RouteProblem`]s.
pub(crate) fn problems() -> impl Iterator<Item = &'static RouteProblem> {
    [
        me::PROBLEMS,
        export::PROBLEMS,
        push_tokens::PROBLEMS,
        uploads::PROBLEMS,
    ]
    .into_iter()
    .flatten()
}
