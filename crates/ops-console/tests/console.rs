//! The console against the real queue on Redis, through actix' test
//! service: what the pages show, what the buttons do, and what is refused.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use actix_web::http::{StatusCode, header};
use actix_web::{App, test};
use ops_console::{CSRF_COOKIE, OpsConsole};
use ports::{JobQueue, NewJob};
use queue_adapter::{JobState, QueueSettings, RedisJobQueue, RedisSettings};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use test_support::TestRedis;

fn queue(redis: &TestRedis) -> RedisJobQueue {
    let pool = queue_adapter::build_pool(&RedisSettings::new(redis.url())).unwrap();
    RedisJobQueue::new(pool, QueueSettings::new(redis.prefix()))
}

const LOCAL: &str = "127.0.0.1:50000";

/// A form POST from `peer` with `cookies`.
fn form_post(
    uri: &str,
    body: String,
    peer: SocketAddr,
    cookies: &[actix_web::cookie::Cookie<'static>],
) -> actix_http::Request {
    let mut r = test::TestRequest::post()
        .uri(uri)
        .peer_addr(peer)
        .insert_header((header::CONTENT_TYPE, "application/x-www-form-urlencoded"))
        .set_payload(body);
    for c in cookies {
        r = r.cookie(c.clone());
    }
    r.to_request()
}

/// A GET from `peer` with `cookies`.
fn page_get(
    uri: &str,
    peer: SocketAddr,
    cookies: &[actix_web::cookie::Cookie<'static>],
) -> actix_http::Request {
    let mut r = test::TestRequest::get().uri(uri).peer_addr(peer);
    for c in cookies {
        r = r.cookie(c.clone());
    }
    r.to_request()
}

/// A dead job on queue "mail" whose error and payload try to inject markup.
async fn dead_job(q: &RedisJobQueue) -> String {
    let job = NewJob::new(
        "email:welcome",
        1,
        &serde_json::json!({"to": "<script>alert(1)</script>"}),
    )
    .unwrap()
    .on_queue("mail");
    let id = q.enqueue(job).await.unwrap().to_string();
    let leased = q
        .fetch_many("mail", Duration::from_secs(30), 1)
        .await
        .unwrap();
    q.fail("mail", leased[0].lease(), "550 <b>no such user</b>", None)
        .await
        .unwrap();
    id
}

fn body_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[actix_web::test]
async fn pages_show_queues_and_jobs_escaped_with_a_strict_csp() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let id = dead_job(&q).await;
    let app = test::init_service(
        App::new().configure(ops_console::configure(OpsConsole::new(Arc::new(q.clone())))),
    )
    .await;
    let peer: SocketAddr = LOCAL.parse().unwrap();

    let res = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/ops")
            .peer_addr(peer)
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let csp = res
        .headers()
        .get(header::CONTENT_SECURITY_POLICY)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(
        res.response()
            .cookies()
            .any(|c| c.name() == CSRF_COOKIE && c.http_only() == Some(true))
    );
    let page = body_text(&test::read_body(res).await);
    assert!(page.contains("href=\"/ops/queues/mail\""), "{page}");
    assert!(page.contains("running"));
    assert!(
        page.contains("0 processed, 1 failed in the last hour"),
        "the last hour's chart: {page}"
    );

    let res = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/ops/queues/mail?state=dead")
            .peer_addr(peer)
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let page = body_text(&test::read_body(res).await);
    assert!(page.contains(&id), "the dead job is listed");
    assert!(page.contains("email:welcome"));
    assert!(
        page.contains("550 &lt;b&gt;no such user&lt;/b&gt;"),
        "the error, escaped"
    );
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "the payload, escaped"
    );
    assert!(!page.contains("<script>alert"), "nothing injected");

    for uri in [
        "/ops/queues/mail?state=sleeping",
        "/ops/queues/Not%20A%20Queue",
    ] {
        let res = test::call_service(
            &app,
            test::TestRequest::get()
                .uri(uri)
                .peer_addr(peer)
                .to_request(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{uri}");
    }
    for asset in ["/ops/assets/ops.css", "/ops/assets/ops.js"] {
        let res = test::call_service(
            &app,
            test::TestRequest::get()
                .uri(asset)
                .peer_addr(peer)
                .to_request(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK, "{asset}");
    }
}

#[actix_web::test]
async fn actions_need_loopback_and_the_form_token_and_then_act() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let id = dead_job(&q).await;
    let app = test::init_service(
        App::new().configure(ops_console::configure(OpsConsole::new(Arc::new(q.clone())))),
    )
    .await;
    let peer: SocketAddr = LOCAL.parse().unwrap();
    let res = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/ops")
            .peer_addr(peer)
            .to_request(),
    )
    .await;
    let cookie = res
        .response()
        .cookies()
        .find(|c| c.name() == CSRF_COOKIE)
        .unwrap()
        .into_owned();
    let token = cookie.value().to_owned();
    let retry = format!("/ops/jobs/{id}/retry");
    let post = |uri: &str, form: &str, peer: SocketAddr, with_cookie: bool| {
        let cookies = if with_cookie {
            std::slice::from_ref(&cookie)
        } else {
            &[]
        };
        form_post(uri, form.to_owned(), peer, cookies)
    };
    let dead_count = || async {
        q.list("mail", JobState::Dead, None, 10)
            .await
            .unwrap()
            .jobs
            .len()
    };

    // Refused, and nothing changed: no token, a wrong token, no cookie,
    // and a peer that is not this machine (with a good token).
    let wrong = "0".repeat(64);
    for (form, peer_addr, with_cookie) in [
        ("back=%2Fops".to_owned(), LOCAL, true),
        (format!("csrf={wrong}&back=%2Fops"), LOCAL, true),
        (format!("csrf={token}&back=%2Fops"), LOCAL, false),
        (format!("csrf={token}&back=%2Fops"), "10.1.2.3:40000", true),
    ] {
        let res = test::call_service(
            &app,
            post(&retry, &form, peer_addr.parse().unwrap(), with_cookie),
        )
        .await;
        assert!(
            matches!(
                res.status(),
                StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST
            ),
            "{form} from {peer_addr}: {}",
            res.status()
        );
        assert_eq!(dead_count().await, 1, "nothing changed");
    }
    let res = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/ops")
            .peer_addr("10.1.2.3:40000".parse().unwrap())
            .to_request(),
    )
    .await;
    assert_eq!(
        res.status(),
        StatusCode::FORBIDDEN,
        "pages too are loopback only"
    );

    // With the token: the dead job runs again; the redirect stays on /ops.
    let form = format!("csrf={token}&back=https%3A%2F%2Fevil.example%2F");
    let res = test::call_service(&app, post(&retry, &form, peer, true)).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        res.headers().get(header::LOCATION).unwrap(),
        "/ops",
        "no open redirect"
    );
    assert_eq!(dead_count().await, 0);
    assert_eq!(
        q.list("mail", JobState::Pending, None, 10)
            .await
            .unwrap()
            .jobs
            .len(),
        1
    );
    let res = test::call_service(&app, post(&retry, &format!("csrf={token}"), peer, true)).await;
    assert_eq!(res.status(), StatusCode::CONFLICT, "not dead any more");

    // Pause and resume from the overview's buttons.
    let res = test::call_service(
        &app,
        post(
            "/ops/queues/mail/pause",
            &format!("csrf={token}&back=%2Fops%2Fqueues%2Fmail"),
            peer,
            true,
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        res.headers().get(header::LOCATION).unwrap(),
        "/ops/queues/mail"
    );
    assert!(q.stats("mail").await.unwrap().paused);
    let res = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/ops/fragments/queues")
            .peer_addr(peer)
            .to_request(),
    )
    .await;
    let fragment = body_text(&test::read_body(res).await);
    assert!(
        fragment.contains("paused") && fragment.contains("Resume"),
        "{fragment}"
    );
    let res = test::call_service(
        &app,
        post(
            "/ops/queues/mail/resume",
            &format!("csrf={token}"),
            peer,
            true,
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(!q.stats("mail").await.unwrap().paused);

    // Delete.
    let res = test::call_service(
        &app,
        post(
            &format!("/ops/jobs/{id}/delete"),
            &format!("csrf={token}"),
            peer,
            true,
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(q.stats("mail").await.unwrap().pending, 0);
}

#[actix_web::test]
async fn dead_letters_are_shown_and_replayed_onto_their_stream() {
    use fred::prelude::*;
    let redis = TestRedis::new().await;
    let client = streams_adapter::connect(redis.url(), Duration::from_secs(5))
        .await
        .unwrap();
    let stream = streams_adapter::stream_key(redis.prefix(), "users");
    // A dead letter as a consumer group leaves it.
    let dead_id: String = client
        .xadd(
            format!("{stream}:dead"),
            false,
            None,
            "*",
            vec![
                ("type", "user.future"),
                ("event", "{\"id\": \"e1\", \"note\": \"<img src=x>\"}"),
                ("original_id", "1-0"),
                ("group", "welcome-mail"),
                ("consumer", "c1"),
                ("reason", "unknown to this consumer: <b>user.future</b>"),
                ("deliveries", "5"),
            ],
        )
        .await
        .unwrap();
    // A group that has not read the two entries written after it began.
    let _: () = client
        .xgroup_create(&stream, "lagging", "$", true)
        .await
        .unwrap();
    for n in 0..2 {
        let _: String = client
            .xadd(
                &stream,
                false,
                None,
                "*",
                vec![("type", "user.created"), ("n", &*n.to_string())],
            )
            .await
            .unwrap();
    }
    let console = OpsConsole::new(Arc::new(queue(&redis))).with_events(
        Arc::new(streams_adapter::StreamAdmin::new(
            client.clone(),
            redis.prefix(),
        )),
        vec!["users".to_owned()],
    );
    let app = test::init_service(App::new().configure(ops_console::configure(console))).await;
    let peer: SocketAddr = LOCAL.parse().unwrap();
    let res = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/ops/events")
            .peer_addr(peer)
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let cookie = res
        .response()
        .cookies()
        .find(|c| c.name() == CSRF_COOKIE)
        .unwrap()
        .into_owned();
    let token = cookie.value().to_owned();
    let page = body_text(&test::read_body(res).await);
    assert!(
        page.contains(&dead_id) && page.contains("welcome-mail"),
        "{page}"
    );
    assert!(
        page.contains("&lt;b&gt;user.future&lt;/b&gt;") && page.contains("&lt;img src=x&gt;"),
        "escaped: {page}"
    );
    assert!(page.contains("2 entries, 1 dead letters"), "{page}");
    assert!(
        page.contains("data-lag=\"lagging\"><span class=\"bad\">2</span>"),
        "the group's lag: {page}"
    );

    let post =
        |uri: String, form: String| form_post(&uri, form, peer, std::slice::from_ref(&cookie));
    let replay = format!("/ops/events/users/replay/{dead_id}");
    let res = test::call_service(&app, post(replay.clone(), "back=%2Fops%2Fevents".into())).await;
    assert!(matches!(
        res.status(),
        StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST
    ));
    for (uri, status) in [
        (
            "/ops/events/users/replay/not-an-id".to_owned(),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("/ops/events/orders/replay/{dead_id}"),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let res = test::call_service(&app, post(uri.clone(), format!("csrf={token}"))).await;
        assert_eq!(res.status(), status, "{uri}");
    }
    let len: u64 = client.xlen(&stream).await.unwrap();
    assert_eq!(len, 2, "nothing replayed by a refused request");

    let res = test::call_service(
        &app,
        post(replay.clone(), format!("csrf={token}&back=%2Fops%2Fevents")),
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let entries: Vec<(String, std::collections::HashMap<String, String>)> =
        client.xrange(&stream, "-", "+", None).await.unwrap();
    assert_eq!(entries.len(), 3);
    let entries = [entries[2].clone()];
    assert_eq!(entries[0].1["type"], "user.future");
    assert!(
        !entries[0].1.contains_key("reason"),
        "only the original fields"
    );
    let res = test::call_service(&app, post(replay, format!("csrf={token}"))).await;
    assert_eq!(res.status(), StatusCode::CONFLICT, "once");
    let res = test::call_service(
        &app,
        post(
            "/ops/events/users/replay-all".into(),
            format!("csrf={token}"),
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CONFLICT, "nothing left to replay");
}

mod sign_in {
    use super::*;
    use ops_console::{Access, Role, SESSION_COOKIE, SignIn, TokenSignIn, hash_password};
    use ports_testing::FakeTokenVerifier;

    /// Tokens the fake verifier knows: one per value of the `ops` claim.
    fn verifier() -> Arc<FakeTokenVerifier> {
        let v = Arc::new(FakeTokenVerifier::new());
        for (token, claim) in [
            ("tok-admin", Some(serde_json::json!(true))),
            ("tok-viewer", Some(serde_json::json!("viewer"))),
            ("tok-wrong", Some(serde_json::json!("superuser"))),
            ("tok-none", None),
        ] {
            let mut id = domain::VerifiedIdentity::new(domain::FirebaseUid::parse(token).unwrap());
            if let Some(c) = claim {
                id.custom_claims.insert("ops".into(), c);
            }
            v.allow(token, id);
        }
        v
    }

    const FAR: &str = "10.20.30.40:50000";

    fn console(q: &RedisJobQueue) -> OpsConsole {
        OpsConsole::new(Arc::new(q.clone())).with_access(Access::SignIn(SignIn {
            passwords: vec![
                (Role::Admin, hash_password("correct horse battery").unwrap()),
                (
                    Role::Viewer,
                    hash_password("look but do not touch").unwrap(),
                ),
            ],
            session_key: b"a session key of thirty-two bytes!".to_vec(),
            session_ttl: Duration::from_secs(3600),
            secure_cookies: true,
            token: Some(TokenSignIn {
                verifier: verifier(),
                claim: "ops".into(),
            }),
        }))
    }

    fn form(
        uri: &str,
        body: String,
        cookies: &[actix_web::cookie::Cookie<'static>],
    ) -> actix_http::Request {
        form_post(uri, body, FAR.parse().unwrap(), cookies)
    }

    fn get(uri: &str, cookies: &[actix_web::cookie::Cookie<'static>]) -> actix_http::Request {
        page_get(uri, FAR.parse().unwrap(), cookies)
    }

    #[actix_web::test]
    async fn an_address_that_keeps_failing_to_sign_in_is_stopped_for_a_while() {
        let redis = TestRedis::new().await;
        let q = queue(&redis);
        let app =
            test::init_service(App::new().configure(ops_console::configure(console(&q)))).await;
        let res = test::call_service(&app, get("/ops/login", &[])).await;
        let csrf = res
            .response()
            .cookies()
            .find(|c| c.name() == CSRF_COOKIE)
            .unwrap()
            .into_owned();
        let token = csrf.value().to_owned();
        let guesser: SocketAddr = "10.9.9.9:40000".parse().unwrap();
        let try_password = |peer: SocketAddr, password: &str| {
            form_post(
                "/ops/login",
                format!("csrf={token}&password={}", password.replace(' ', "+")),
                peer,
                std::slice::from_ref(&csrf),
            )
        };
        for n in 0..ops_console::MAX_FAILED_SIGN_INS {
            let res = test::call_service(&app, try_password(guesser, &format!("guess {n}"))).await;
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        }
        // Now even the right password is refused from that address...
        let res = test::call_service(&app, try_password(guesser, "correct horse battery")).await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(res.response().cookies().all(|c| c.name() != SESSION_COOKIE));
        // ...but not from another.
        let other: SocketAddr = FAR.parse().unwrap();
        let res = test::call_service(&app, try_password(other, "correct horse battery")).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
    }

    /// A CSRF cookie and its token, from the sign-in page.
    async fn csrf_of<S>(app: &S) -> (actix_web::cookie::Cookie<'static>, String)
    where
        S: actix_web::dev::Service<
                actix_http::Request,
                Response = actix_web::dev::ServiceResponse,
                Error = actix_web::Error,
            >,
    {
        let res = test::call_service(app, get("/ops/login", &[])).await;
        let csrf = res
            .response()
            .cookies()
            .find(|c| c.name() == CSRF_COOKIE)
            .unwrap()
            .into_owned();
        let token = csrf.value().to_owned();
        (csrf, token)
    }

    #[actix_web::test]
    async fn behind_a_proxy_the_throttle_stops_the_guesser_not_every_operator() {
        let redis = TestRedis::new().await;
        let q = queue(&redis);
        let app =
            test::init_service(App::new().configure(ops_console::configure(
                console(&q).with_trusted_proxies(vec![
                    domain::network::Cidr::parse("10.0.0.0/8").unwrap(),
                ]),
            )))
            .await;
        let (csrf, token) = csrf_of(&app).await;
        // Every request comes from the ingress; X-Forwarded-For names the client.
        let ingress: SocketAddr = "10.0.0.2:40000".parse().unwrap();
        let via = |client: &str, password: &str| {
            let mut r = test::TestRequest::post()
                .uri("/ops/login")
                .peer_addr(ingress)
                .insert_header((header::CONTENT_TYPE, "application/x-www-form-urlencoded"))
                .insert_header(("x-forwarded-for", client.to_owned()))
                .set_payload(format!(
                    "csrf={token}&password={}",
                    password.replace(' ', "+")
                ));
            r = r.cookie(csrf.clone());
            r.to_request()
        };
        for n in 0..ops_console::MAX_FAILED_SIGN_INS {
            let res = test::call_service(&app, via("203.0.113.66", &format!("guess {n}"))).await;
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        }
        let res = test::call_service(&app, via("203.0.113.66", "correct horse battery")).await;
        assert_eq!(
            res.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "the guesser is stopped"
        );
        let res = test::call_service(&app, via("198.51.100.7", "correct horse battery")).await;
        assert_eq!(
            res.status(),
            StatusCode::SEE_OTHER,
            "an operator behind the same ingress is not"
        );
    }

    /// Signs in with `password` (or `id_token=`) and returns the session cookie.
    async fn sign_in<S>(app: &S, body: &str) -> actix_web::cookie::Cookie<'static>
    where
        S: actix_web::dev::Service<
                actix_http::Request,
                Response = actix_web::dev::ServiceResponse,
                Error = actix_web::Error,
            >,
    {
        let (csrf, token) = csrf_of(app).await;
        let res = test::call_service(
            app,
            form(
                "/ops/login",
                format!("csrf={token}&{body}"),
                std::slice::from_ref(&csrf),
            ),
        )
        .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{body}");
        res.response()
            .cookies()
            .find(|c| c.name() == SESSION_COOKIE)
            .unwrap()
            .into_owned()
    }

    #[actix_web::test]
    async fn signing_out_ends_the_operators_sessions_on_every_instance() {
        let redis = TestRedis::new().await;
        let q = queue(&redis);
        let fred = streams_adapter::connect(redis.url(), Duration::from_secs(5))
            .await
            .unwrap();
        let shared = || {
            console(&q).with_session_store(Arc::new(streams_adapter::RedisCache::new(
                fred.clone(),
                redis.prefix(),
            )))
        };
        // Two instances of the console, one Redis.
        let one = test::init_service(App::new().configure(ops_console::configure(shared()))).await;
        let two = test::init_service(App::new().configure(ops_console::configure(shared()))).await;
        let here = sign_in(&one, "password=correct+horse+battery").await;
        let there = sign_in(&two, "password=correct+horse+battery").await;
        let viewer = sign_in(&two, "password=look+but+do+not+touch").await;
        for (app, cookie) in [(&one, &here), (&two, &there), (&one, &there)] {
            let res = test::call_service(app, get("/ops", std::slice::from_ref(cookie))).await;
            assert_eq!(res.status(), StatusCode::OK);
        }
        let (csrf, token) = csrf_of(&one).await;
        let res = test::call_service(
            &one,
            form(
                "/ops/logout",
                format!("csrf={token}"),
                &[csrf, here.clone()],
            ),
        )
        .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        // The cookie kept after signing out, and the same operator's
        // session in another browser, no longer open anything anywhere.
        for (app, cookie) in [(&one, &here), (&two, &here), (&two, &there)] {
            let res = test::call_service(app, get("/ops", std::slice::from_ref(cookie))).await;
            assert_eq!(res.status(), StatusCode::SEE_OTHER);
            assert_eq!(res.headers().get(header::LOCATION).unwrap(), "/ops/login");
        }
        // Another operator is not signed out.
        let res = test::call_service(&one, get("/ops", &[viewer])).await;
        assert_eq!(res.status(), StatusCode::OK);
        // Signing in again works.
        let again = sign_in(&two, "password=correct+horse+battery").await;
        let res = test::call_service(&one, get("/ops", &[again])).await;
        assert_eq!(res.status(), StatusCode::OK);
    }

    #[actix_web::test]
    async fn a_session_from_a_token_ends_when_the_token_would() {
        let redis = TestRedis::new().await;
        let q = queue(&redis);
        let v = verifier();
        let mut id = domain::VerifiedIdentity::new(domain::FirebaseUid::parse("short").unwrap());
        id.custom_claims
            .insert("ops".into(), serde_json::json!("admin"));
        id.expires_at = Some(chrono::Utc::now() + chrono::Duration::seconds(120));
        v.allow("tok-short", id);
        let c = OpsConsole::new(Arc::new(q.clone())).with_access(Access::SignIn(SignIn {
            passwords: vec![],
            session_key: b"a session key of thirty-two bytes!".to_vec(),
            session_ttl: Duration::from_secs(8 * 3600),
            secure_cookies: true,
            token: Some(TokenSignIn {
                verifier: v,
                claim: "ops".into(),
            }),
        }));
        let app = test::init_service(App::new().configure(ops_console::configure(c))).await;
        let session = sign_in(&app, "id_token=tok-short").await;
        let max_age = session.max_age().unwrap().whole_seconds();
        assert!(
            (1..=120).contains(&max_age),
            "a session of {max_age} s outlives its token's 120 s"
        );
    }

    fn token_value(c: &actix_web::cookie::Cookie<'_>) -> String {
        c.value().to_owned()
    }

    #[actix_web::test]
    async fn only_signed_in_operators_get_in_and_only_admins_act() {
        let redis = TestRedis::new().await;
        let q = queue(&redis);
        let id = dead_job(&q).await;
        let app =
            test::init_service(App::new().configure(ops_console::configure(console(&q)))).await;
        let dead = || async {
            q.list("mail", JobState::Dead, None, 10)
                .await
                .unwrap()
                .jobs
                .len()
        };

        // No session: pages send to the sign-in page, actions are refused.
        let res = test::call_service(&app, get("/ops", &[])).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(res.headers().get(header::LOCATION).unwrap(), "/ops/login");
        let res = test::call_service(&app, get("/ops/login", &[])).await;
        assert_eq!(res.status(), StatusCode::OK);
        let csrf = res
            .response()
            .cookies()
            .find(|c| c.name() == CSRF_COOKIE)
            .unwrap()
            .into_owned();
        let token = csrf.value().to_owned();
        let retry = format!("/ops/jobs/{id}/retry");
        let res = test::call_service(
            &app,
            form(&retry, format!("csrf={token}"), std::slice::from_ref(&csrf)),
        )
        .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(dead().await, 1);

        // A wrong password, or no form token: no session.
        let res = test::call_service(
            &app,
            form(
                "/ops/login",
                format!("csrf={token}&password=guess"),
                std::slice::from_ref(&csrf),
            ),
        )
        .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert!(res.response().cookies().all(|c| c.name() != SESSION_COOKIE));
        let res = test::call_service(
            &app,
            form(
                "/ops/login",
                "csrf=&password=correct+horse+battery".into(),
                std::slice::from_ref(&csrf),
            ),
        )
        .await;
        assert!(matches!(
            res.status(),
            StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST
        ));
        assert!(res.response().cookies().all(|c| c.name() != SESSION_COOKIE));

        // A viewer looks but cannot act.
        let res = test::call_service(
            &app,
            form(
                "/ops/login",
                format!("csrf={token}&password=look+but+do+not+touch"),
                std::slice::from_ref(&csrf),
            ),
        )
        .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        let viewer = res
            .response()
            .cookies()
            .find(|c| c.name() == SESSION_COOKIE)
            .unwrap()
            .into_owned();
        assert_eq!(
            (viewer.http_only(), viewer.secure(), viewer.same_site()),
            (
                Some(true),
                Some(true),
                Some(actix_web::cookie::SameSite::Strict)
            )
        );
        let res = test::call_service(
            &app,
            get(
                "/ops/queues/mail?state=dead",
                &[csrf.clone(), viewer.clone()],
            ),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(body_text(&test::read_body(res).await).contains(&id));
        let res = test::call_service(
            &app,
            form(
                &retry,
                format!("csrf={token}"),
                &[csrf.clone(), viewer.clone()],
            ),
        )
        .await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert_eq!(dead().await, 1, "nothing changed");

        // A session cookie someone edited is no session.
        let forged = actix_web::cookie::Cookie::new(
            SESSION_COOKIE,
            viewer.value().replacen(".viewer.", ".admin.", 1),
        );
        let res = test::call_service(
            &app,
            form(&retry, format!("csrf={token}"), &[csrf.clone(), forged]),
        )
        .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(dead().await, 1);

        // An admin acts.
        let res = test::call_service(
            &app,
            form(
                "/ops/login",
                format!("csrf={token}&password=correct+horse+battery"),
                std::slice::from_ref(&csrf),
            ),
        )
        .await;
        let admin = res
            .response()
            .cookies()
            .find(|c| c.name() == SESSION_COOKIE)
            .unwrap()
            .into_owned();
        let res = test::call_service(&app, get("/ops", &[csrf.clone(), admin.clone()])).await;
        let page = body_text(&test::read_body(res).await);
        assert!(
            page.contains("Signed in: admin operator from 10.20.30.40"),
            "{page}"
        );
        let res = test::call_service(
            &app,
            form(
                &retry,
                format!("csrf={token}"),
                &[csrf.clone(), admin.clone()],
            ),
        )
        .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(dead().await, 0);

        // A Firebase ID token signs in when its `ops` claim names a role.
        for (token, status) in [
            ("tok-none", StatusCode::UNAUTHORIZED),
            ("tok-wrong", StatusCode::UNAUTHORIZED),
            ("not-a-token", StatusCode::UNAUTHORIZED),
        ] {
            let res = test::call_service(
                &app,
                form(
                    "/ops/login",
                    format!(
                        "csrf={token_csrf}&id_token={token}",
                        token_csrf = token_value(&csrf)
                    ),
                    std::slice::from_ref(&csrf),
                ),
            )
            .await;
            assert_eq!(res.status(), status, "{token}");
            assert!(
                res.response().cookies().all(|c| c.name() != SESSION_COOKIE),
                "{token}"
            );
        }
        let res = test::call_service(
            &app,
            form(
                "/ops/login",
                format!("csrf={token}&id_token=tok-viewer"),
                std::slice::from_ref(&csrf),
            ),
        )
        .await;
        let by_token = res
            .response()
            .cookies()
            .find(|c| c.name() == SESSION_COOKIE)
            .unwrap()
            .into_owned();
        let res = test::call_service(
            &app,
            form(&retry, format!("csrf={token}"), &[csrf.clone(), by_token]),
        )
        .await;
        assert_eq!(
            res.status(),
            StatusCode::FORBIDDEN,
            "a viewer by claim cannot act either"
        );
        let res = test::call_service(
            &app,
            form(
                "/ops/login",
                format!("csrf={token}&id_token=tok-admin"),
                std::slice::from_ref(&csrf),
            ),
        )
        .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        let by_token = res
            .response()
            .cookies()
            .find(|c| c.name() == SESSION_COOKIE)
            .unwrap()
            .into_owned();
        let res = test::call_service(&app, get("/ops", &[csrf.clone(), by_token])).await;
        assert!(body_text(&test::read_body(res).await).contains("Signed in: tok-admin"));

        // Signing out clears the session.
        let res = test::call_service(
            &app,
            form(
                "/ops/logout",
                format!("csrf={token}"),
                &[csrf.clone(), admin],
            ),
        )
        .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        let cleared = res
            .response()
            .cookies()
            .find(|c| c.name() == SESSION_COOKIE)
            .unwrap();
        assert_eq!(cleared.value(), "");
    }
}

#[actix_web::test]
async fn a_job_has_its_own_page_runs_now_and_dead_jobs_retry_by_kind() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let dead = dead_job(&q).await;
    // Two more dead jobs on "mail", one of another kind.
    for kind in ["email:digest", "email:welcome"] {
        let id = q
            .enqueue(
                NewJob::new(kind, 1, &serde_json::json!({}))
                    .unwrap()
                    .on_queue("mail"),
            )
            .await
            .unwrap();
        let leased = q
            .fetch_many("mail", Duration::from_secs(30), 1)
            .await
            .unwrap();
        assert_eq!(leased[0].id, id);
        q.fail("mail", leased[0].lease(), "550", None)
            .await
            .unwrap();
    }
    let later = chrono::Utc::now() + chrono::Duration::hours(2);
    let scheduled = q
        .enqueue(
            NewJob::new("report", 1, &serde_json::json!({"day": 1}))
                .unwrap()
                .run_at(later),
        )
        .await
        .unwrap()
        .to_string();
    let app = test::init_service(
        App::new().configure(ops_console::configure(OpsConsole::new(Arc::new(q.clone())))),
    )
    .await;
    let peer: SocketAddr = LOCAL.parse().unwrap();
    let get = |uri: String| page_get(&uri, peer, &[]);

    let res = test::call_service(&app, get(format!("/ops/jobs/{dead}"))).await;
    assert_eq!(res.status(), StatusCode::OK);
    let cookie = res
        .response()
        .cookies()
        .find(|c| c.name() == CSRF_COOKIE)
        .unwrap()
        .into_owned();
    let token = cookie.value().to_owned();
    let page = body_text(&test::read_body(res).await);
    assert!(
        page.contains("email:welcome") && page.contains("550 &lt;b&gt;no such user&lt;/b&gt;"),
        "{page}"
    );
    assert!(
        page.contains("/retry") && !page.contains("/run-now"),
        "a dead job retries, it does not run now"
    );
    let res = test::call_service(
        &app,
        get("/ops/jobs/01234567-89ab-7def-8123-456789abcdef".into()),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    let post =
        |uri: String, form: String| form_post(&uri, form, peer, std::slice::from_ref(&cookie));
    let res = test::call_service(&app, get(format!("/ops/jobs/{scheduled}"))).await;
    assert!(body_text(&test::read_body(res).await).contains("/run-now"));
    let res = test::call_service(
        &app,
        post(
            format!("/ops/jobs/{scheduled}/run-now"),
            format!("csrf={token}"),
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        q.job(&scheduled).await.unwrap().unwrap().summary.state,
        JobState::Pending
    );

    // The dead tab filtered by kind, then every dead job of that kind retried.
    let res = test::call_service(
        &app,
        get("/ops/queues/mail?state=dead&kind=email%3Awelcome".into()),
    )
    .await;
    let page = body_text(&test::read_body(res).await);
    assert_eq!(page.matches("href=\"/ops/jobs/").count(), 2, "{page}");
    assert!(!page.contains("email:digest"), "only the kind asked for");
    assert!(page.contains("/ops/queues/mail/retry-kind"));
    let res = test::call_service(
        &app,
        post(
            "/ops/queues/mail/retry-kind".into(),
            format!("csrf={token}&kind=email%3Awelcome"),
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let left = q.list("mail", JobState::Dead, None, 10).await.unwrap().jobs;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].kind, "email:digest");
}

#[actix_web::test]
async fn push_tokens_in_job_payloads_are_shown_as_fingerprints() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let token = "dQw4w9WgXcQ:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx";
    let fingerprint = domain::PushToken::parse(token).unwrap().fingerprint();
    let job = NewJob::new(
        "push:send-device",
        1,
        &serde_json::json!({"uid": "u1", "token": token, "message": {"title": "Hi"}}),
    )
    .unwrap()
    .on_queue("push");
    let id = q.enqueue(job).await.unwrap().to_string();
    let app = test::init_service(
        App::new().configure(ops_console::configure(OpsConsole::new(Arc::new(q.clone())))),
    )
    .await;
    let peer: SocketAddr = LOCAL.parse().unwrap();
    for uri in [
        "/ops/queues/push?state=pending".to_owned(),
        format!("/ops/jobs/{id}"),
    ] {
        let res = test::call_service(&app, page_get(&uri, peer, &[])).await;
        assert_eq!(res.status(), StatusCode::OK, "{uri}");
        let page = body_text(&test::read_body(res).await);
        assert!(page.contains(&id), "{uri}: the job is shown");
        assert!(!page.contains(token), "{uri}: the token is shown: {page}");
        assert!(page.contains(&fingerprint), "{uri}: {page}");
    }
}

#[actix_web::test]
async fn on_loopback_a_request_a_proxy_forwarded_is_not_local() {
    let redis = TestRedis::new().await;
    let q = queue(&redis);
    let app = test::init_service(
        App::new().configure(ops_console::configure(OpsConsole::new(Arc::new(q.clone())))),
    )
    .await;
    let peer: SocketAddr = LOCAL.parse().unwrap();
    let res = test::call_service(&app, page_get("/ops", peer, &[])).await;
    assert_eq!(res.status(), StatusCode::OK, "loopback is local");
    for (name, value) in [
        ("x-forwarded-for", "203.0.113.9"),
        ("forwarded", "for=203.0.113.9"),
        ("x-real-ip", "203.0.113.9"),
    ] {
        let req = test::TestRequest::get()
            .uri("/ops")
            .peer_addr(peer)
            .insert_header((name, value))
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{name}");
    }
}
