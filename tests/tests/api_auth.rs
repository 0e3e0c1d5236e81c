//! Accounts, sessions, CSRF, API tokens, rate limits and disabled users, on both backends.

use clap::Parser;
use e2e::app::{PASSWORD, TestApp};
use e2e::both_backends;
use e2e::db::TestDb;
use learnsync::model::Role;
use reqwest::Method;
use serde_json::json;

both_backends!(register_login_me_logout, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let c = app.anonymous();
    let r = c
        .post(
            "/api/auth/register",
            &json!({ "email": "  Anna@Example.TEST ", "password": PASSWORD, "display_name": "Anna" }),
        )
        .await;
    let body = r.ok(201).clone();
    assert_eq!(
        body["email"], "anna@example.test",
        "stored lowercased and trimmed"
    );
    assert_eq!(body["display_name"], "Anna");
    assert_eq!(body["role"], "learner");
    assert!(body.get("password_hash").is_none() && body.get("doc_seed").is_none());
    let csrf = body["csrf_token"]
        .as_str()
        .expect("csrf in body")
        .to_string();
    assert_eq!(
        c.csrf().as_deref(),
        Some(csrf.as_str()),
        "csrf cookie matches the body"
    );
    let session = r.set_cookie("learnsync_session").expect("session cookie");
    assert!(session.contains("HttpOnly"), "{session}");
    assert!(session.contains("SameSite=Lax"), "{session}");
    assert!(
        !session.contains("Secure"),
        "not Secure unless configured: {session}"
    );
    let csrf_cookie = r.set_cookie("csrf_token").expect("csrf cookie");
    assert!(
        !csrf_cookie.contains("HttpOnly"),
        "scripts must read the csrf cookie"
    );
    // RFC 3339 timestamps.
    assert!(
        body["created_at"]
            .as_str()
            .is_some_and(|t| t.contains('T') && (t.ends_with('Z') || t.contains('+')))
    );

    let me = c.get("/api/auth/me").await;
    assert_eq!(me.ok(200)["id"], body["id"]);
    assert_eq!(me.body["email"], "anna@example.test");

    assert_eq!(c.post_empty("/api/auth/logout").await.status, 204);
    c.get("/api/auth/me").await.assert_error(401);
    assert_eq!(c.get("/api/auth/me").await.code(), Some("unauthorized"));

    // Log in again, with any case of the email.
    let r = c
        .post(
            "/api/auth/login",
            &json!({ "email": "ANNA@example.test", "password": PASSWORD }),
        )
        .await;
    assert_eq!(r.ok(200)["id"], body["id"]);
    assert!(
        r.body["csrf_token"].as_str().is_some_and(|t| t != csrf),
        "a new CSRF token per login"
    );
    assert_eq!(c.get("/api/auth/me").await.status, 200);
});

both_backends!(
    register_rejects_bad_and_duplicate_accounts,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let c = app.anonymous();
        let ok = json!({ "email": "a@example.test", "password": PASSWORD, "display_name": "A" });
        c.post("/api/auth/register", &ok).await.ok(201);
        let r = app
            .anonymous()
            .post(
                "/api/auth/register",
                &json!({ "email": "A@EXAMPLE.test", "password": PASSWORD, "display_name": "B" }),
            )
            .await;
        r.assert_error(409);
        assert_eq!(r.code(), Some("conflict"));
        for (body, field) in [
            (
                json!({ "email": "not-an-email", "password": PASSWORD, "display_name": "x" }),
                "email",
            ),
            (
                json!({ "email": "b@example.test", "password": "short", "display_name": "x" }),
                "password",
            ),
            (
                json!({ "email": "b@example.test", "password": PASSWORD, "display_name": "" }),
                "display_name",
            ),
            (
                json!({ "email": "b@example.test", "password": PASSWORD, "display_name": "x".repeat(101) }),
                "display_name",
            ),
            (
                json!({ "email": format!("{}@example.test", "b".repeat(300)), "password": PASSWORD, "display_name": "x" }),
                "email",
            ),
        ] {
            let r = app.anonymous().post("/api/auth/register", &body).await;
            r.assert_error(422);
            assert_eq!(r.body["error"]["details"]["field"], field, "{body}");
        }
        let r = app
            .anonymous()
            .post(
                "/api/auth/register",
                &json!({ "email": "c@example.test", "password": PASSWORD }),
            )
            .await;
        r.assert_error(422);
        let r = app
        .anonymous()
        .post("/api/auth/register", &json!({ "email": "c@example.test", "password": PASSWORD, "display_name": "c", "role": "admin" }))
        .await;
        assert!(
            r.status == 422 || r.status == 400,
            "cannot choose a role: {}",
            r.text
        );
        // Nothing of the rejected attempts was stored.
        let admin = app.user(Role::Admin).await;
        let users = admin.get("/api/admin/users?limit=100").await;
        let emails: Vec<_> = users.ok(200)["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["email"].clone())
            .collect();
        assert_eq!(emails.len(), 2, "{emails:?}");
    }
);

both_backends!(
    login_failures_do_not_say_which_part_was_wrong,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let user = app.user(Role::Learner).await;
        let wrong_pw = app
            .anonymous()
            .post(
                "/api/auth/login",
                &json!({ "email": user.email(), "password": "wrong password" }),
            )
            .await;
        wrong_pw.assert_error(401);
        let no_user = app
            .anonymous()
            .post(
                "/api/auth/login",
                &json!({ "email": "ghost@example.test", "password": PASSWORD }),
            )
            .await;
        no_user.assert_error(401);
        assert_eq!(wrong_pw.body, no_user.body);
        assert_eq!(wrong_pw.code(), Some("invalid_credentials"));
    }
);

both_backends!(session_id_is_cycled_on_login, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let user = app.user(Role::Learner).await;
    // A second login from the same client gets a new session id (no fixation).
    let first = user
        .post(
            "/api/auth/login",
            &json!({ "email": user.email(), "password": PASSWORD }),
        )
        .await;
    first.ok(200);
    let id1 = first
        .cookie_pair("learnsync_session")
        .expect("session cookie set on login");
    let second = user
        .post(
            "/api/auth/login",
            &json!({ "email": user.email(), "password": PASSWORD }),
        )
        .await;
    let id2 = second
        .cookie_pair("learnsync_session")
        .expect("session cookie set on login");
    assert_ne!(id1, id2);
    assert!(user.has_session());
    // The old session id no longer works.
    let old = app.anonymous();
    let old_value = id1;
    let r = old
        .send(
            old.request(Method::GET, "/api/auth/me")
                .header("cookie", old_value),
        )
        .await;
    r.assert_error(401);
});

both_backends!(
    logout_ends_the_session_on_the_server,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let user = app.user(Role::Learner).await;
        // Keep the session cookie of a login: replaying it after logout must fail.
        let login = app.anonymous();
        let r = login
            .post(
                "/api/auth/login",
                &json!({ "email": user.email(), "password": PASSWORD }),
            )
            .await;
        let session_cookie = r.cookie_pair("learnsync_session").unwrap();
        assert_eq!(login.post_empty("/api/auth/logout").await.status, 204);
        let replay = app.anonymous();
        let r = replay
            .send(
                replay
                    .request(Method::GET, "/api/auth/me")
                    .header("cookie", session_cookie),
            )
            .await;
        r.assert_error(401);
    }
);

both_backends!(
    csrf_is_required_for_cookie_writes_only,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let teacher = app.user(Role::Teacher).await;
        let body = json!({ "title": "CSRF course" });
        // Cookie without the header.
        let url = format!("{}/api/courses", app.base);
        let raw = reqwest::Client::builder().build().unwrap();
        let cookie_header = {
            let r = app.anonymous();
            let login = r
                .post(
                    "/api/auth/login",
                    &json!({ "email": teacher.email(), "password": PASSWORD }),
                )
                .await;
            ["learnsync_session", "csrf_token"]
                .iter()
                .map(|name| login.cookie_pair(name).expect("cookie set on login"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let csrf = cookie_header
            .split("; ")
            .find_map(|c| c.strip_prefix("csrf_token="))
            .unwrap()
            .to_string();
        let no_header = raw
            .post(&url)
            .header("cookie", &cookie_header)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(no_header.status(), 403);
        let v: serde_json::Value = no_header.json().await.unwrap();
        assert_eq!(v["error"]["code"], "csrf_failed");
        let wrong = raw
            .post(&url)
            .header("cookie", &cookie_header)
            .header("x-csrf-token", "forged")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 403);
        // Reads need no token.
        let read = raw
            .get(format!("{}/api/auth/me", app.base))
            .header("cookie", &cookie_header)
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 200);
        let right = raw
            .post(&url)
            .header("cookie", &cookie_header)
            .header("x-csrf-token", &csrf)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(right.status(), 201);
        // A bearer request needs none.
        let mobile = teacher.bearer().await;
        let r = mobile
            .post("/api/courses", &json!({ "title": "Bearer course" }))
            .await;
        r.ok(201);
        // Nothing from the rejected attempts.
        let mine = teacher
            .get(&format!("/api/courses?author={}&limit=100", teacher.id()))
            .await;
        let titles: Vec<_> = mine.ok(200)["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["title"].clone())
            .collect();
        assert_eq!(titles.len(), 2, "{titles:?}");
    }
);

both_backends!(api_tokens_create_list_revoke, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let user = app.user(Role::Learner).await;
    // From a session.
    let r = user
        .post("/api/auth/tokens", &json!({ "name": "laptop" }))
        .await;
    let created = r.ok(201).clone();
    let secret = created["token"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    // From an app with no session, with email and password.
    let app_client = app.anonymous();
    let r = app_client
        .post(
            "/api/auth/tokens",
            &json!({ "email": user.email(), "password": PASSWORD, "name": "phone" }),
        )
        .await;
    let phone = r.ok(201)["token"].as_str().unwrap().to_string();
    assert!(
        !app_client.has_session(),
        "a token request does not log a browser in"
    );
    let r = app
        .anonymous()
        .post(
            "/api/auth/tokens",
            &json!({ "email": user.email(), "password": "wrong password", "name": "x" }),
        )
        .await;
    r.assert_error(401);
    app.anonymous()
        .post("/api/auth/tokens", &json!({ "name": "x" }))
        .await
        .assert_error(401);

    let mobile = user.with_bearer(&phone);
    assert_eq!(mobile.get("/api/auth/me").await.ok(200)["id"], user.id());
    let list = mobile.get("/api/auth/tokens").await;
    let tokens = list.ok(200).as_array().unwrap().clone();
    assert_eq!(tokens.len(), 2);
    assert!(
        tokens
            .iter()
            .all(|t| t.get("token").is_none() && t.get("token_hash").is_none()),
        "secrets never listed"
    );
    assert!(!list.text.contains(&secret) && !list.text.contains(&phone));
    // The phone's token was used just now.
    let phone_row = tokens.iter().find(|t| t["name"] == "phone").unwrap();
    assert!(phone_row["last_used_at"].is_string());

    // Someone else cannot revoke it.
    let other = app.user(Role::Learner).await;
    other
        .delete(&format!("/api/auth/tokens/{id}"))
        .await
        .assert_error(404);
    assert_eq!(
        user.with_bearer(&secret).get("/api/auth/me").await.status,
        200
    );
    assert_eq!(
        user.delete(&format!("/api/auth/tokens/{id}")).await.status,
        204
    );
    user.with_bearer(&secret)
        .get("/api/auth/me")
        .await
        .assert_error(401);
    user.delete(&format!("/api/auth/tokens/{id}"))
        .await
        .assert_error(404);
    // Garbage bearer tokens are 401, never 500.
    for bad in ["", "x", "' OR 1=1 --", &"a".repeat(5000)] {
        let c = app.anonymous().with_bearer(bad);
        assert_eq!(c.get("/api/auth/me").await.status, 401, "{bad:.20}");
    }
});

both_backends!(
    disabled_users_cannot_log_in_and_tokens_stop,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let admin = app.user(Role::Admin).await;
        let user = app.user(Role::Learner).await;
        let mobile = user.bearer().await;
        assert_eq!(mobile.get("/api/auth/me").await.status, 200);
        let r = admin
            .patch(
                &format!("/api/admin/users/{}", user.id()),
                &json!({ "disabled": true }),
            )
            .await;
        assert_eq!(r.ok(200)["disabled"], true);
        mobile.get("/api/auth/me").await.assert_error(401);
        user.get("/api/auth/me").await.assert_error(401);
        app.anonymous()
            .post(
                "/api/auth/login",
                &json!({ "email": user.email(), "password": PASSWORD }),
            )
            .await
            .assert_error(401);
        app.anonymous()
            .post(
                "/api/auth/tokens",
                &json!({ "email": user.email(), "password": PASSWORD, "name": "x" }),
            )
            .await
            .assert_error(401);
        // Enabled again: the token works again, login too.
        admin
            .patch(
                &format!("/api/admin/users/{}", user.id()),
                &json!({ "disabled": false }),
            )
            .await
            .ok(200);
        assert_eq!(mobile.get("/api/auth/me").await.status, 200);
        app.anonymous()
            .post(
                "/api/auth/login",
                &json!({ "email": user.email(), "password": PASSWORD }),
            )
            .await
            .ok(200);
    }
);

both_backends!(
    login_is_rate_limited_per_email_and_address,
    |backend| async move {
        let app = TestApp::spawn_with(backend, |c| c.login_attempts_per_minute = 3).await;
        let user = app.user(Role::Learner).await;
        for _ in 0..3 {
            app.anonymous()
                .post(
                    "/api/auth/login",
                    &json!({ "email": user.email(), "password": "wrong password" }),
                )
                .await
                .assert_error(401);
        }
        let r = app
            .anonymous()
            .post(
                "/api/auth/login",
                &json!({ "email": user.email(), "password": PASSWORD }),
            )
            .await;
        r.assert_error(429);
        assert_eq!(r.code(), Some("rate_limited"));
        let retry: u64 = r
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry));
        // Token requests with a password count against the same limit.
        app.anonymous()
            .post(
                "/api/auth/tokens",
                &json!({ "email": user.email(), "password": PASSWORD, "name": "x" }),
            )
            .await
            .assert_error(429);
        // An existing session is unaffected.
        assert_eq!(user.get("/api/auth/me").await.status, 200);
    }
);

both_backends!(secure_cookies_when_configured, |backend| async move {
    let app = TestApp::spawn_with(backend, |c| c.secure_cookies = true).await;
    let r = app
        .anonymous()
        .post(
            "/api/auth/register",
            &json!({ "email": "s@example.test", "password": PASSWORD, "display_name": "S" }),
        )
        .await;
    r.ok(201);
    let cookies = r.set_cookies();
    assert!(cookies.len() >= 2);
    assert!(cookies.iter().all(|c| c.contains("Secure")), "{cookies:?}");
});

both_backends!(first_admin_from_the_cli, |backend| async move {
    let db = TestDb::new(backend).await;
    let cli = learnsync::cli::Cli::try_parse_from([
        "learnsync",
        "admin",
        "create-user",
        "--database-url",
        db.url(),
        "--email",
        "Root@Example.test",
        "--password",
        PASSWORD,
        "--display-name",
        "Root",
        "--role",
        "admin",
    ])
    .unwrap();
    learnsync::cli::run(cli).await.expect("create-user");
    // Twice is an error, not a second account.
    let again = learnsync::cli::Cli::try_parse_from([
        "learnsync",
        "admin",
        "create-user",
        "--database-url",
        db.url(),
        "--email",
        "root@example.test",
        "--password",
        PASSWORD,
        "--role",
        "admin",
    ])
    .unwrap();
    assert!(learnsync::cli::run(again).await.is_err());
    let bad_role = learnsync::cli::Cli::try_parse_from([
        "learnsync",
        "admin",
        "create-user",
        "--database-url",
        db.url(),
        "--email",
        "x@example.test",
        "--password",
        PASSWORD,
        "--role",
        "superuser",
    ])
    .unwrap();
    assert!(learnsync::cli::run(bad_role).await.is_err());

    let mut config = learnsync::Config::for_tests(db.url());
    config.listen = "127.0.0.1:0".parse().unwrap();
    let app = learnsync::Application::build(config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let cancel = app.shutdown_token();
    let server = tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let r = http
        .post(format!("{base}/api/auth/login"))
        .json(&json!({ "email": "root@example.test", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let me: serde_json::Value = http
        .get(format!("{base}/api/auth/me"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "admin");
    assert_eq!(me["display_name"], "Root");
    let users = http
        .get(format!("{base}/api/admin/users"))
        .send()
        .await
        .unwrap();
    assert_eq!(users.status(), 200);
    cancel.cancel();
    server.await.unwrap().unwrap();
});

both_backends!(
    migrate_command_prepares_an_empty_database,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let cli = learnsync::cli::Cli::try_parse_from([
            "learnsync",
            "migrate",
            "--database-url",
            db.url(),
        ])
        .unwrap();
        learnsync::cli::run(cli).await.expect("migrate");
        let cli = learnsync::cli::Cli::try_parse_from([
            "learnsync",
            "migrate",
            "--database-url",
            db.url(),
        ])
        .unwrap();
        learnsync::cli::run(cli).await.expect("migrate twice");
        let store = learnsync::store::connect(db.url(), 2, "t")
            .await
            .unwrap()
            .store();
        assert_eq!(store.user("x").await.unwrap(), None, "tables exist");
    }
);

both_backends!(
    registration_is_rate_limited_per_address,
    |backend| async move {
        let app = TestApp::spawn_with(backend, |c| c.registrations_per_minute = 2).await;
        for n in 0..2 {
            app.anonymous()
            .post(
                "/api/auth/register",
                &json!({ "email": format!("r{n}@example.test"), "password": PASSWORD, "display_name": "R" }),
            )
            .await
            .ok(201);
        }
        let r = app
            .anonymous()
            .post(
                "/api/auth/register",
                &json!({ "email": "r3@example.test", "password": PASSWORD, "display_name": "R" }),
            )
            .await;
        r.assert_error(429);
        assert!(r.header("retry-after").is_some());
        assert_eq!(
            app.state
                .store
                .user_by_email("r3@example.test")
                .await
                .unwrap(),
            None,
            "nothing stored"
        );
    }
);
