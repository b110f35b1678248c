//! The ops console as production serves it: on its own listener
//! (`OPS_ADDR`), only to operators who sign in with the password whose
//! argon2 hash is `OPS_PASSWORD_HASH`, or with an ID token whose custom
//! claim `OPS_ADMIN_CLAIM` names their role.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use app::Role;
use test_support::spawn_app_with;

/// `name=value` of each `Set-Cookie` of `res`.
fn cookies(res: &reqwest::Response) -> Vec<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_its_own_listener_the_console_lets_in_only_who_signs_in() {
    let hash = ops_console::hash_password("correct horse battery").unwrap();
    let secret = "an ops session secret of 32+ chars";
    let app = spawn_app_with(
        Role::Serve,
        &[
            ("OPS_PASSWORD_HASH", hash.as_str()),
            ("OPS_SESSION_SECRET", secret),
            ("OPS_ADMIN_CLAIM", "ops"),
            ("OPS_ADDR", "127.0.0.1:0"),
        ],
    )
    .await;
    let port = app.ops_port.expect("a listener of its own");
    assert_ne!(port, app.port);
    let public = app.client.get(app.url("/ops")).send().await.unwrap();
    assert_eq!(public.status(), 404, "not on the public listener");

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let ops = format!("http://127.0.0.1:{port}/ops");
    let res = http.get(&ops).send().await.unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/ops/login");
    let res = http.get(format!("{ops}/login")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let csrf = cookies(&res)
        .into_iter()
        .next()
        .expect("a form token cookie");
    let token = csrf.split_once('=').unwrap().1.to_owned();

    let login = |password: &'static str| {
        http.post(format!("{ops}/login"))
            .header("cookie", csrf.clone())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "csrf={token}&password={}",
                password.replace(' ', "+")
            ))
            .send()
    };
    let wrong = login("correct horse staple").await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(
        cookies(&wrong)
            .iter()
            .all(|c| !c.starts_with(ops_console::SESSION_COOKIE))
    );
    let right = login("correct horse battery").await.unwrap();
    assert_eq!(right.status(), 303);
    let session = cookies(&right)
        .into_iter()
        .find(|c| c.starts_with(ops_console::SESSION_COOKIE))
        .expect("a session");
    let page = http
        .get(&ops)
        .header("cookie", format!("{csrf}; {session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("Signed in: admin operator")
    );
}

/// An ID token of this app's (local) project for `uid` with `claims`.
fn token(uid: &str, claims: serde_json::Value) -> String {
    let req = auth_adapter::DevTokenRequest {
        uid: uid.into(),
        email: Some(format!("{uid}@example.com")),
        email_verified: true,
        name: None,
        ttl: std::time::Duration::from_secs(600),
        claims: claims.as_object().cloned().unwrap_or_default(),
    };
    auth_adapter::mint_dev_token(
        test_support::TEST_DEV_TOKEN_SECRET,
        app::settings::LOCAL_PROJECT_ID,
        &req,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_with_the_operator_claim_signs_in_and_one_without_does_not() {
    let app = spawn_app_with(
        Role::Serve,
        &[
            ("OPS_SESSION_SECRET", "an ops session secret of 32+ chars"),
            ("OPS_ADMIN_CLAIM", "ops"),
        ],
    )
    .await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = http.get(app.url("/ops/login")).send().await.unwrap();
    let csrf = cookies(&res)
        .into_iter()
        .next()
        .expect("a form token cookie");
    let form_token = csrf.split_once('=').unwrap().1.to_owned();
    let login = |id_token: String| {
        http.post(app.url("/ops/login"))
            .header("cookie", csrf.clone())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("csrf={form_token}&id_token={id_token}"))
            .send()
    };
    let plain = login(token("mallory", serde_json::json!({})))
        .await
        .unwrap();
    assert_eq!(plain.status(), 401, "no claim: not an operator");
    let wrong = login(token("mallory", serde_json::json!({"ops": "root"})))
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401, "an unknown role: not an operator");
    let ok = login(token("olivia", serde_json::json!({"ops": "admin"})))
        .await
        .unwrap();
    assert_eq!(ok.status(), 303);
    let session = cookies(&ok)
        .into_iter()
        .find(|c| c.starts_with(ops_console::SESSION_COOKIE))
        .expect("a session");
    let page = http
        .get(app.url("/ops"))
        .header("cookie", format!("{csrf}; {session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("Signed in: olivia olivia@example.com")
    );
}
