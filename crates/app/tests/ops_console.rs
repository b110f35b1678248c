//! The ops console as production serves it: on its own listener
//! (`OPS_ADDR`), only to operators who sign in with the password whose
//! argon2 hash is `OPS_PASSWORD_HASH`.

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
