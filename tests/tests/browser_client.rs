//! The browser client (client-wasm + `/app/learnsync.js`) in real headless Chromium against the
//! real server, each browser on its own profile and its own cuttable network path
//! ([`NetLink`]):
//! - a page with the legacy learnMode keys imports them on first run; they reach the server
//!   (checked through REST), the legacy keys stay untouched and are marked migrated;
//! - two browsers of one user see each other's changes live;
//! - a full storage (`QuotaExceededError`) and corrupt stored documents are reported as events,
//!   never thrown into the page, and the state comes back from the server;
//! - one goes offline, both change things, it comes back, both converge with nothing lost;
//! - a reload with the server unreachable shows the last state from `localStorage`;
//! - `/app` for a learner: log in, enroll, complete a lesson, go offline, change the theme, come
//!   back; a second browser (phone-sized) shows the same state.
//!
//! Screenshots go to the artifacts directory.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use e2e::app::{Client as Http, PASSWORD, TestApp};
use e2e::browser::{Browser, Chromedriver, NetLink};
use e2e::db::Backend;
use e2e::wasm_pkg::package;
use learnsync::model::Role;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

fn addr(app: &TestApp) -> SocketAddr {
    app.base
        .trim_start_matches("http://")
        .parse()
        .expect("the test server listens on an IP address")
}

fn legacy_dump() -> serde_json::Map<String, Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sync-core/tests/fixtures/localstorage/learner-basic.json");
    let text = std::fs::read_to_string(&path).unwrap();
    match serde_json::from_str(&text).unwrap() {
        Value::Object(map) => map,
        other => panic!("{} is not an object: {other}", path.display()),
    }
}

/// Opens a same-origin page, stores `seed` in `localStorage` and logs `user` in with a fetch
/// (the session cookie), so that the next page load starts signed in.
async fn sign_in(browser: &Browser, link: &NetLink, user: &Http, seed: &Value) {
    browser.goto(&link.url("/app/app.css")).await.unwrap();
    let status = browser
        .eval(
            r#"
            for (const [k, v] of Object.entries(args[2])) localStorage.setItem(k, v);
            const r = await fetch("/api/auth/login", {
              method: "POST", headers: { "Content-Type": "application/json" },
              body: JSON.stringify({ email: args[0], password: args[1] }),
            });
            return r.status;
            "#,
            vec![json!(user.email()), json!(PASSWORD), seed.clone()],
        )
        .await
        .unwrap();
    assert_eq!(status, json!(200), "login failed");
}

/// Evaluates `expr` on `browser`'s client (`window.learnsync`) and returns its JSON.
async fn read(browser: &Browser, expr: &str) -> Value {
    browser
        .execute(
            &format!("const c = window.learnsync; return {expr};"),
            vec![],
        )
        .await
        .unwrap()
}

async fn act(browser: &Browser, code: &str) {
    browser
        .execute(
            &format!("const c = window.learnsync; {code}; return true;"),
            vec![],
        )
        .await
        .unwrap();
}

const SYNCED: &str =
    "window.learnsync && window.learnsync.ready && window.learnsync.status === 'synced'";

fn course<'a>(enrollments: &'a Value, id: &str) -> &'a Value {
    enrollments
        .as_array()
        .and_then(|list| list.iter().find(|e| e["courseId"] == id))
        .unwrap_or(&Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_import_live_sync_offline_and_reload_with_the_server_down() {
    package("pkg"); // the server serves it at /app/pkg
    let app = TestApp::spawn(Backend::Postgres).await;
    let anna = app.user(Role::Learner).await;
    let driver = Chromedriver::start().await.unwrap();
    let link_a = NetLink::start(addr(&app)).await.unwrap();
    let link_b = NetLink::start(addr(&app)).await.unwrap();

    // --- A: first run with the legacy keys -----------------------------------------------------
    let dump = legacy_dump();
    let a = driver.launch_new("client-a").await.unwrap();
    a.route_through(&link_a);
    sign_in(&a, &link_a, &anna, &Value::Object(dump.clone())).await;
    a.goto(&link_a.url("/app")).await.unwrap();
    if let Err(e) = a
        .wait_for(
            &format!("{SYNCED} && localStorage.getItem('learnsync:migrated')"),
            WAIT,
        )
        .await
    {
        let log = a
            .execute(
                "return { log: window.learnsyncLog, unsynced: window.learnsync.unsynced() }",
                vec![],
            )
            .await
            .unwrap();
        panic!("{e:#}\nevents: {log}");
    }
    // The import reached the server.
    let prefs = anna.get("/api/preferences").await;
    let prefs = prefs.ok(200);
    assert_eq!(prefs["theme"], "dark", "{prefs}");
    assert_eq!(prefs["language"], "ru", "{prefs}");
    let enrollments = anna.get("/api/enrollments").await;
    let items = enrollments.ok(200)["items"].clone();
    let mut ids: Vec<&str> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["course_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["1", "c-geo", "s-phys"], "{items}");
    let algebra = items
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["course_id"] == "1")
        .unwrap();
    assert_eq!(
        algebra["completed_lessons"],
        json!(["l1", "l2"]),
        "{algebra}"
    );
    // The run was recorded; the legacy keys are untouched, and marked migrated.
    let stored = a
        .eval(
            "const o = {}; for (const k of args[0]) o[k] = localStorage.getItem(k); \
             return { keys: o, migrated: JSON.parse(localStorage.getItem('learnsync:migrated')) };",
            vec![json!(dump.keys().collect::<Vec<_>>())],
        )
        .await
        .unwrap();
    for (k, v) in &dump {
        assert_eq!(&stored["keys"][k], v, "legacy key {k} changed");
    }
    assert!(stored["migrated"]["at"].is_string(), "{stored}");
    assert!(stored["migrated"]["runId"].is_string(), "{stored}");
    a.wait_for("navigator.serviceWorker.controller", WAIT)
        .await
        .unwrap();
    a.screenshot("client-a-imported").await.unwrap();

    // --- B: the same user's second browser sees A's state, then live changes both ways ---------
    let b = driver.launch_new("client-b").await.unwrap();
    b.route_through(&link_b);
    sign_in(&b, &link_b, &anna, &json!({})).await;
    b.goto(&link_b.url("/app")).await.unwrap();
    b.wait_for(
        &format!("{SYNCED} && window.learnsync.preferences().theme === 'dark' && window.learnsync.enrollments().length === 3"),
        WAIT,
    )
    .await
    .unwrap();
    // Nothing legacy on B: nothing imported or marked there.
    assert_eq!(
        b.execute("return localStorage.getItem('learnsync:migrated')", vec![])
            .await
            .unwrap(),
        Value::Null
    );

    act(&a, "c.setPreference('fontSize', 20)").await;
    b.wait_for("window.learnsync.preferences().fontSize === 20", WAIT)
        .await
        .unwrap();
    act(&b, "c.enroll('algebra')").await;
    a.wait_for(
        "window.learnsync.enrollments().some((e) => e.courseId === 'algebra')",
        WAIT,
    )
    .await
    .unwrap();

    // --- B's storage full: reported, nothing thrown into the page, the change still syncs --------
    b.execute(
        "window.realSetItem = Storage.prototype.setItem; \
         Storage.prototype.setItem = function (k, v) { \
           if (k.startsWith('learnsync:doc:')) throw new DOMException('full', 'QuotaExceededError'); \
           return window.realSetItem.call(this, k, v); };",
        vec![],
    )
    .await
    .unwrap();
    act(&b, "c.setPreference('fullStorage', true)").await;
    a.wait_for("window.learnsync.preferences().fullStorage === true", WAIT)
        .await
        .unwrap();
    b.wait_for(
        "window.learnsyncLog.some((e) => e.type === 'error' && e.v.kind === 'quota')",
        WAIT,
    )
    .await
    .unwrap();
    b.execute("Storage.prototype.setItem = window.realSetItem;", vec![])
        .await
        .unwrap();

    // --- B's stored documents corrupted: reported at the next load and fetched again -----------
    b.execute(
        "for (const k of Object.keys(localStorage)) \
           if (k.startsWith('learnsync:doc:')) localStorage.setItem(k, 'bm90IGF1dG9tZXJnZQ==');",
        vec![],
    )
    .await
    .unwrap();
    b.refresh().await.unwrap();
    b.wait_for(
        &format!(
            "{SYNCED} && window.learnsync.preferences().fullStorage === true \
             && window.learnsync.enrollments().some((e) => e.courseId === 'algebra') \
             && window.learnsyncLog.some((e) => e.type === 'error' && e.v.kind === 'corrupt')"
        ),
        WAIT,
    )
    .await
    .unwrap();

    // --- A offline: both change things, A comes back, nothing lost --------------------------------
    a.set_offline(true).await.unwrap();
    a.wait_for("window.learnsync.status === 'offline'", WAIT)
        .await
        .unwrap();
    act(
        &a,
        "c.setTheme('light'); c.completeLesson('algebra', 'l1'); c.addTime('algebra', 60)",
    )
    .await;
    act(&b, "c.setLanguage('en'); c.completeLesson('algebra', 'l2')").await;
    b.wait_for(SYNCED, WAIT).await.unwrap();
    a.screenshot("client-a-offline").await.unwrap();
    a.set_offline(false).await.unwrap();
    let converged = "(() => { const c = window.learnsync; const p = c.preferences(); \
        const al = c.enrollments().find((e) => e.courseId === 'algebra'); \
        return c.status === 'synced' && p.theme === 'light' && p.language === 'en' && p.fontSize === 20 \
          && al && al.progress && al.progress.completed.l1 && al.progress.completed.l2 \
          && al.progress.timeSpentSecs === 60; })()";
    a.wait_for(converged, WAIT).await.unwrap();
    b.wait_for(converged, WAIT).await.unwrap();
    let state_a = read(&a, "({ p: c.preferences(), e: c.enrollments() })").await;
    let state_b = read(&b, "({ p: c.preferences(), e: c.enrollments() })").await;
    assert_eq!(state_a, state_b);
    let algebra = course(&state_a["e"], "algebra");
    assert_eq!(algebra["status"], "active", "{state_a}");
    // And the server has it.
    let enrollments = anna.get("/api/enrollments").await;
    let items = enrollments.ok(200)["items"].clone();
    let algebra = items
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["course_id"] == "algebra")
        .unwrap()
        .clone();
    assert_eq!(
        algebra["completed_lessons"],
        json!(["l1", "l2"]),
        "{algebra}"
    );
    assert_eq!(algebra["time_spent_secs"], 60, "{algebra}");
    let prefs = anna.get("/api/preferences").await;
    assert_eq!(prefs.ok(200)["theme"], "light");

    // --- A reloads with the server unreachable: the last state, from localStorage ----------------
    a.set_offline(true).await.unwrap();
    a.refresh().await.unwrap();
    a.wait_for("window.appReady && window.learnsync.ready", WAIT)
        .await
        .unwrap();
    let reloaded = read(
        &a,
        "({ status: c.status, p: c.preferences(), e: c.enrollments() })",
    )
    .await;
    assert_eq!(reloaded["p"], state_a["p"], "{reloaded}");
    assert_eq!(reloaded["e"], state_a["e"], "{reloaded}");
    assert_ne!(reloaded["status"], "synced");
    let page = a
        .execute(
            "return { theme: document.documentElement.dataset.theme, \
              mine: document.querySelector('#my-courses').textContent, \
              pill: document.querySelector('#sync-status').dataset.status }",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(page["theme"], "light", "{page}");
    assert!(page["mine"].as_str().unwrap().contains("algebra"), "{page}");
    // The legacy course's title from the catalog the server imported (cached for offline).
    assert!(
        page["mine"].as_str().unwrap().contains("Алгебра 7 класс"),
        "{page}"
    );
    assert_ne!(page["pill"], "synced", "{page}");
    a.screenshot("client-a-reloaded-offline").await.unwrap();

    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_learner_enrolls_completes_goes_offline_changes_theme_and_a_second_browser_agrees() {
    package("pkg");
    let app = TestApp::spawn(Backend::Sqlite).await;
    let teacher = app.user(Role::Teacher).await;
    teacher
        .post(
            "/api/courses",
            &json!({"id": "algebra", "title": "Algebra", "status": "published",
                    "lessons": [{"id": "l1", "title": "Equations"}, {"id": "l2", "title": "Functions"}]}),
        )
        .await
        .ok(201);
    let anna = app.user(Role::Learner).await;
    let driver = Chromedriver::start().await.unwrap();
    let link_a = NetLink::start(addr(&app)).await.unwrap();
    let link_b = NetLink::start(addr(&app)).await.unwrap();

    let a = driver.launch_new("app-a").await.unwrap();
    a.route_through(&link_a);
    a.goto(&link_a.url("/app")).await.unwrap();
    login_through_the_form(&a, &anna).await;
    a.wait_for(
        "document.querySelector('#catalog [data-catalog=\"algebra\"]')",
        WAIT,
    )
    .await
    .unwrap();
    a.click("button[data-enroll=\"algebra\"]").await.unwrap();
    a.wait_for(
        "document.querySelector('#my-courses [data-course=\"algebra\"]')",
        WAIT,
    )
    .await
    .unwrap();
    a.click("#my-courses button[data-complete=\"algebra\"][data-lesson-id=\"l1\"]")
        .await
        .unwrap();
    a.wait_for(
        "document.querySelector('#my-courses [data-lesson=\"l1\"]').classList.contains('done')",
        WAIT,
    )
    .await
    .unwrap();
    a.wait_for(
        "document.querySelector('#sync-status').dataset.status === 'synced'",
        WAIT,
    )
    .await
    .unwrap();
    a.screenshot("app-a-enrolled").await.unwrap();

    // Offline: the indicator says so; the theme changes at once anyway.
    a.set_offline(true).await.unwrap();
    a.wait_for(
        "document.querySelector('#sync-status').dataset.status === 'offline'",
        WAIT,
    )
    .await
    .unwrap();
    a.execute(
        "const s = document.querySelector('#theme'); s.focus(); s.value = 'dark'; \
         s.dispatchEvent(new Event('change', { bubbles: true }));",
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(
        a.execute("return document.documentElement.dataset.theme", vec![])
            .await
            .unwrap(),
        json!("dark")
    );
    a.screenshot("app-a-offline-dark").await.unwrap();
    // A reload while offline: the page (service worker), the cached catalog and the documents.
    a.refresh().await.unwrap();
    let offline_view = a
        .wait_for(
            "window.appReady && !document.querySelector('#learner-view').hidden \
             && document.querySelector('#sync-status').dataset.status === 'offline' \
             && document.querySelector('#catalog-note').textContent !== '' \
             && { theme: document.documentElement.dataset.theme, \
                  pill: document.querySelector('#sync-status').dataset.status, \
                  catalog: document.querySelector('#catalog').textContent, \
                  note: document.querySelector('#catalog-note').textContent, \
                  done: document.querySelector('#my-courses [data-lesson=\"l1\"]').classList.contains('done') }",
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(offline_view["theme"], "dark", "{offline_view}");
    assert_eq!(offline_view["pill"], "offline", "{offline_view}");
    assert_eq!(offline_view["done"], json!(true), "{offline_view}");
    assert!(
        offline_view["catalog"]
            .as_str()
            .unwrap()
            .contains("Algebra")
            && offline_view["note"]
                .as_str()
                .unwrap()
                .contains("saved catalog"),
        "{offline_view}"
    );
    a.set_offline(false).await.unwrap();
    a.wait_for(
        "document.querySelector('#sync-status').dataset.status === 'synced'",
        WAIT,
    )
    .await
    .unwrap();

    // A second browser of the same user, phone-sized.
    let b = driver.launch_new("app-b").await.unwrap();
    b.route_through(&link_b);
    b.set_window_size(390, 844).await.unwrap();
    b.goto(&link_b.url("/app")).await.unwrap();
    login_through_the_form(&b, &anna).await;
    b.wait_for(
        "document.documentElement.dataset.theme === 'dark' \
         && document.querySelector('#my-courses [data-lesson=\"l1\"]')?.classList.contains('done') \
         && document.querySelector('#sync-status').dataset.status === 'synced'",
        WAIT,
    )
    .await
    .unwrap();
    let view = b
        .execute(
            "return { mine: document.querySelector('#my-courses').textContent, \
              theme: document.querySelector('#theme').value, \
              wide: document.documentElement.scrollWidth > window.innerWidth }",
            vec![],
        )
        .await
        .unwrap();
    assert!(view["mine"].as_str().unwrap().contains("Algebra"), "{view}");
    assert!(view["mine"].as_str().unwrap().contains("50 %"), "{view}");
    assert_eq!(view["theme"], "dark", "{view}");
    assert_eq!(
        view["wide"],
        json!(false),
        "the page scrolls sideways on a phone: {view}"
    );
    b.screenshot("app-b-phone").await.unwrap();

    // Logging out on B forgets the account on that device only.
    b.click("#logout").await.unwrap();
    b.wait_for(
        "window.appReady && !document.querySelector('#login-view').hidden \
         && document.querySelector('#learner-view').hidden \
         && !Object.keys(localStorage).some((k) => k.startsWith('learnsync:doc:'))",
        WAIT,
    )
    .await
    .unwrap();

    // The server agrees.
    let prefs = anna.get("/api/preferences").await;
    assert_eq!(prefs.ok(200)["theme"], "dark");
    let enrollments = anna.get("/api/enrollments").await;
    let items = enrollments.ok(200)["items"].clone();
    assert_eq!(items[0]["course_id"], "algebra", "{items}");
    assert_eq!(items[0]["completed_lessons"], json!(["l1"]), "{items}");
    assert_eq!(items[0]["progress"], 50.0, "{items}");

    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// Logs in at the keyboard: email, Tab, password, Enter.
async fn login_through_the_form(browser: &Browser, user: &Http) {
    browser
        .wait_for("!document.querySelector('#login-view').hidden", WAIT)
        .await
        .unwrap();
    browser
        .type_into("#login-email", user.email())
        .await
        .unwrap();
    browser
        .type_into("#login-password", &format!("{PASSWORD}\u{E007}"))
        .await
        .unwrap();
    browser
        .wait_for(
            "!document.querySelector('#learner-view').hidden && window.learnsync.status === 'synced'",
            WAIT,
        )
        .await
        .unwrap();
}
