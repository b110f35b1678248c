//! The fake's HTTP side: one hyper service answering the token endpoint and
//! the send endpoint from the shared state.

use super::{
    FAKE_FCM_CLIENT_EMAIL, FAKE_FCM_PROJECT, FcmReply, FcmRequest, OAuthRequest, State, lock,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::HeaderMap;
use hyper::{Method, StatusCode};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone)]
pub(super) struct Server {
    pub(super) state: Arc<Mutex<State>>,
    pub(super) public_pem: String,
    pub(super) token_url: String,
}

struct Request {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Request {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

struct Response {
    status: u16,
    retry_after: Option<String>,
    body: String,
}

impl Response {
    fn json(status: u16, body: &serde_json::Value) -> Self {
        Self {
            status,
            retry_after: None,
            body: body.to_string(),
        }
    }
}

const MAX_REQUEST_BYTES: usize = 1024 * 1024;

impl Server {
    /// Reads the whole body (at most [`MAX_REQUEST_BYTES`]) and answers.
    pub(super) async fn handle(
        &self,
        req: hyper::Request<Incoming>,
    ) -> hyper::Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let res = match Limited::new(body, MAX_REQUEST_BYTES).collect().await {
            Ok(body) => {
                self.answer(Request {
                    method: parts.method,
                    path: parts.uri.path().to_owned(),
                    headers: parts.headers,
                    body: body.to_bytes(),
                })
                .await
            }
            Err(_) => Response::json(
                413,
                &serde_json::json!({"error": {"code": 413, "status": "INVALID_ARGUMENT"}}),
            ),
        };
        let mut out = hyper::Response::builder()
            .status(StatusCode::from_u16(res.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header("content-type", "application/json; charset=UTF-8");
        if let Some(v) = res.retry_after {
            out = out.header("retry-after", v);
        }
        out.body(Full::new(Bytes::from(res.body)))
            .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new())))
    }

    async fn answer(&self, req: Request) -> Response {
        match (&req.method, req.path.as_str()) {
            (&Method::POST, "/token") => self.token(&req).await,
            (&Method::POST, path)
                if path.starts_with("/v1/projects/") && path.ends_with("/messages:send") =>
            {
                self.send(&req)
            }
            _ => Response::json(
                404,
                &serde_json::json!({"error": {"code": 404, "status": "NOT_FOUND"}}),
            ),
        }
    }

    async fn token(&self, req: &Request) -> Response {
        let delay = lock(&self.state).oauth_delay;
        tokio::time::sleep(delay).await;
        let form: HashMap<String, String> = url::form_urlencoded::parse(&req.body)
            .into_owned()
            .collect();
        let grant_type = form.get("grant_type").cloned().unwrap_or_default();
        let assertion = form.get("assertion").cloned().unwrap_or_default();
        let part = |i: usize| -> serde_json::Value {
            assertion
                .split('.')
                .nth(i)
                .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(serde_json::Value::Null)
        };
        let signature_valid = self.verify(&assertion);
        let mut s = lock(&self.state);
        let mut record = OAuthRequest {
            grant_type: grant_type.clone(),
            header: part(0),
            claims: part(1),
            signature_valid,
            issued: None,
            at: Instant::now(),
        };
        let res = if let Some((status, body)) = s.oauth_failure.clone() {
            Response::json(status, &body)
        } else if grant_type != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
            Response::json(
                400,
                &serde_json::json!({"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}),
            )
        } else if !signature_valid {
            Response::json(
                400,
                &serde_json::json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}),
            )
        } else {
            let token = format!("ya29.fake-{}", crate::unique_suffix());
            let lifetime = s.token_lifetime;
            s.issued.insert(
                token.clone(),
                Instant::now() + Duration::from_secs(lifetime),
            );
            record.issued = Some(token.clone());
            Response::json(
                200,
                &serde_json::json!({"access_token": token, "expires_in": lifetime, "token_type": "Bearer"}),
            )
        };
        s.oauth.push(record);
        res
    }

    /// RS256 with the handed-out key, audience the token endpoint, issued
    /// by the service account, not expired, scoped to FCM.
    fn verify(&self, assertion: &str) -> bool {
        let Ok(key) = jsonwebtoken::DecodingKey::from_rsa_pem(self.public_pem.as_bytes()) else {
            return false;
        };
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.set_audience(&[&self.token_url]);
        v.set_issuer(&[FAKE_FCM_CLIENT_EMAIL]);
        v.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
        jsonwebtoken::decode::<serde_json::Value>(assertion, &key, &v).is_ok_and(|d| {
            d.claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging"
        })
    }

    fn send(&self, req: &Request) -> Response {
        let body: serde_json::Value =
            serde_json::from_slice(&req.body).unwrap_or(serde_json::Value::Null);
        let token = body["message"]["token"].as_str().map(str::to_owned);
        let authorization = req.header("authorization");
        let mut s = lock(&self.state);
        let bearer_ok = authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .and_then(|t| s.issued.get(t))
            .is_some_and(|expires| Instant::now() < *expires);
        let expected_path = format!("/v1/projects/{FAKE_FCM_PROJECT}/messages:send");
        let reply = if !bearer_ok {
            FcmReply::error(
                401,
                "UNAUTHENTICATED",
                None,
                "Request had invalid authentication credentials. Expected OAuth 2 access token.",
            )
        } else if req.path != expected_path {
            FcmReply::error(
                403,
                "PERMISSION_DENIED",
                None,
                "Permission denied for this project.",
            )
        } else if let Some(retry_after) = s.outage.clone() {
            FcmReply::unavailable().with_retry_after(&retry_after)
        } else if token.is_none() {
            FcmReply::error(
                400,
                "INVALID_ARGUMENT",
                Some("INVALID_ARGUMENT"),
                "Recipient of the message is not set.",
            )
        } else if let Some(r) = token
            .as_ref()
            .and_then(|t| s.scripts.get_mut(t))
            .and_then(VecDeque::pop_front)
        {
            r
        } else if token.as_ref().is_some_and(|t| s.unregistered.contains(t)) {
            FcmReply::unregistered()
        } else {
            FcmReply::ok()
        };
        s.sends.push(FcmRequest {
            path: req.path.clone(),
            authorization,
            content_type: req.header("content-type"),
            body,
            token,
            status: reply.status,
            at: Instant::now(),
        });
        let n = s.sends.len();
        drop(s);
        let body = reply.body.unwrap_or_else(
            || serde_json::json!({"name": format!("projects/{FAKE_FCM_PROJECT}/messages/{n}")}),
        );
        let mut res = Response::json(reply.status, &body);
        res.retry_after = reply.retry_after;
        res
    }
}
