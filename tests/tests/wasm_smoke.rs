//! The wasm pipeline end to end: `client-wasm`, built by `scripts/build-wasm.sh`, answers the same
//! under Node (`client-wasm/pkg-node`) and in headless Chromium (`client-wasm/pkg`) as `sync-core`
//! natively, and the official automerge-repo accepts the ids it derives. Also checks the browser
//! harness the client tests stand on (two profiles at once, offline and online, reopening a
//! profile), and prints GOALS.md P8 figures (bundle size, cold load) without asserting on time.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use e2e::browser::{Chromedriver, NetLink, Profile, StaticSite};
use e2e::js::{NodeCommand, js_dir};
use e2e::wasm_pkg::package;
use serde_json::{Value, json};
use sync_core::ids::{DocumentId, UserNamespace};

const COURSES: [&str; 3] = ["rust-101", "c1", "café ☕ β"];
const WAIT: Duration = Duration::from_secs(20);

/// The ids `sync-core` derives natively: the learning id and, per course, its id and bytes.
fn native() -> (String, Vec<(String, String)>) {
    let learning = DocumentId::learning(&UserNamespace::from_bytes(*b"smoke-test-ns-16"));
    let courses = COURSES
        .iter()
        .map(|course| {
            let id = DocumentId::course(&learning, course);
            (id.to_string(), hex(id.as_bytes()))
        })
        .collect();
    (learning.to_string(), courses)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn assert_thrown(value: &Value, message: &str) {
    assert_eq!(value["threw"], json!(true), "expected a throw, got {value}");
    assert_eq!(
        value["isError"],
        json!(true),
        "thrown value is not an Error: {value}"
    );
    assert_eq!(value["message"], json!(message), "{value}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_loads_pkg_node_and_derives_what_sync_core_derives() {
    let pkg = package("pkg-node");
    let (learning, expected) = native();

    let mut node = NodeCommand::new("wasm_smoke.mjs")
        .arg(&pkg)
        .arg(&learning)
        .args(COURSES)
        .spawn()
        .unwrap();
    let result = node.recv_type("result", WAIT).await.unwrap();
    node.finish(WAIT).await.unwrap();

    let ids: Vec<Value> = expected.iter().map(|(id, _)| json!(id)).collect();
    let bytes: Vec<Value> = expected.iter().map(|(_, hex)| json!(hex)).collect();
    assert_eq!(result["derived"], Value::Array(ids), "{result}");
    // The official client reads our ids as the same 16 bytes.
    assert_eq!(
        result["automergeRepoValid"],
        json!([true, true, true]),
        "{result}"
    );
    assert_eq!(
        result["automergeRepoBytes"],
        Value::Array(bytes),
        "{result}"
    );
    assert_eq!(result["validLearning"], json!(true));
    assert_eq!(result["validGarbage"], json!(false));
    assert_thrown(
        &result["badLearning"],
        "learningDocumentId is not a document id: not a bs58check string",
    );
    assert_thrown(&result["emptyCourse"], "courseId must not be empty");
    println!(
        "P8 node: require(pkg-node) took {:.1} ms",
        result["loadMs"].as_f64().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_loads_pkg_and_derives_what_sync_core_derives() {
    let pkg = package("pkg");
    let (learning, expected) = native();
    let site = StaticSite::serve(&[("/pkg", pkg.clone()), ("/", js_dir().join("pages"))])
        .await
        .unwrap();
    let driver = Chromedriver::start().await.unwrap();
    let browser = driver.launch_new("wasm-smoke").await.unwrap();

    // Cold: a fresh profile, nothing cached.
    browser.goto(&site.url("/wasm_smoke.html")).await.unwrap();
    let cold = browser.wait_for("window.smoke", WAIT).await.unwrap();
    assert_eq!(
        cold["ok"],
        json!(true),
        "page failed to load the wasm: {cold}"
    );

    let result = browser
        .eval(
            r#"
            const wasm = window.smoke.wasm;
            const thrown = (f) => {
              try { return { threw: false, value: f() }; }
              catch (e) { return { threw: true, isError: e instanceof Error, message: e.message }; }
            };
            return {
              derived: args[1].map((course) => wasm.courseDocumentId(args[0], course)),
              validLearning: wasm.isValidDocumentId(args[0]),
              validGarbage: wasm.isValidDocumentId("not-an-id"),
              badLearning: thrown(() => wasm.courseDocumentId("not-an-id", "rust-101")),
              emptyCourse: thrown(() => wasm.courseDocumentId(args[0], "")),
            };
            "#,
            vec![json!(learning), json!(COURSES)],
        )
        .await
        .unwrap();
    let ids: Vec<Value> = expected.iter().map(|(id, _)| json!(id)).collect();
    assert_eq!(result["derived"], Value::Array(ids), "{result}");
    assert_eq!(result["validLearning"], json!(true));
    assert_eq!(result["validGarbage"], json!(false));
    assert_thrown(
        &result["badLearning"],
        "learningDocumentId is not a document id: not a bs58check string",
    );
    assert_thrown(&result["emptyCourse"], "courseId must not be empty");

    let status = browser
        .execute(
            "return document.getElementById('status').textContent",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        status.as_str().unwrap().starts_with("client-wasm ready"),
        "{status}"
    );
    let shot = browser.screenshot("wasm-smoke").await.unwrap();

    // Warm: the same profile reloads (HTTP cache and V8's code cache may help).
    browser.refresh().await.unwrap();
    let warm = browser.wait_for("window.smoke", WAIT).await.unwrap();
    assert_eq!(warm["ok"], json!(true), "{warm}");
    browser.close().await.unwrap();

    let wasm = std::fs::metadata(pkg.join("client_wasm_bg.wasm"))
        .unwrap()
        .len();
    println!(
        "P8 bundle: client_wasm_bg.wasm {wasm} bytes raw (gzipped size: scripts/build-wasm.sh)"
    );
    println!("P8 cold load (fresh profile): {}", cold["timing"]);
    println!("P8 reload (same profile):    {}", warm["timing"]);
    println!("screenshot: {}", shot.display());
}

/// Echoes text frames; the harness test watches a WebSocket die when the link is cut.
async fn echo(ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(|mut socket: WebSocket| async move {
        while let Some(Ok(message)) = socket.recv().await {
            if let Message::Text(text) = message
                && socket.send(Message::Text(text)).await.is_err()
            {
                break;
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_harness_profiles_offline_and_reopening() {
    let pages = js_dir().join("pages");
    let router = axum::Router::new()
        .route("/echo", get(echo))
        .fallback_service(tower_http::services::ServeDir::new(&pages));
    let site = StaticSite::serve_router(router).await.unwrap();
    let driver = Chromedriver::start().await.unwrap();

    // Two devices at once, each with its own profile and its own network path.
    let profile_a = Profile::new("device-a").unwrap();
    let link_a = NetLink::start(site.addr()).await.unwrap();
    let link_b = NetLink::start(site.addr()).await.unwrap();
    let a = driver.launch(&profile_a).await.unwrap();
    let b = driver.launch_new("device-b").await.unwrap();
    a.route_through(&link_a);
    b.route_through(&link_b);
    assert!(
        driver.launch(&profile_a).await.is_err(),
        "a profile serves one browser at a time"
    );

    a.goto(&link_a.url("/wasm_smoke.html")).await.unwrap();
    b.goto(&link_b.url("/wasm_smoke.html")).await.unwrap();
    a.execute("localStorage.setItem('who', 'a')", vec![])
        .await
        .unwrap();
    // Same page, other profile: nothing shared.
    assert_eq!(
        b.execute("return localStorage.getItem('who')", vec![])
            .await
            .unwrap(),
        Value::Null
    );

    // An open WebSocket on each device, through its link.
    let open_socket = r#"
        window.events = [];
        addEventListener("offline", () => events.push("offline"));
        addEventListener("online", () => events.push("online"));
        const ws = new WebSocket(args[0]);
        window.ws = ws;
        ws.onmessage = (m) => events.push("echo " + m.data);
        ws.onclose = (e) => events.push("close " + e.code);
        await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
        ws.send("hello");
    "#;
    a.eval(open_socket, vec![json!(link_a.ws_url("/echo"))])
        .await
        .unwrap();
    b.eval(open_socket, vec![json!(link_b.ws_url("/echo"))])
        .await
        .unwrap();
    a.wait_for("events.includes('echo hello')", WAIT)
        .await
        .unwrap();
    b.wait_for("events.includes('echo hello')", WAIT)
        .await
        .unwrap();

    // A goes offline: its socket dies, requests fail, the page is told; B is unaffected.
    a.set_offline(true).await.unwrap();
    assert!(!link_a.is_up() && link_b.is_up());
    a.wait_for(
        "events.includes('offline') && ws.readyState === WebSocket.CLOSED",
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(
        a.execute("return navigator.onLine", vec![]).await.unwrap(),
        json!(false)
    );
    let fetch_offline = a
        .eval(
            "try { await fetch('/wasm_smoke.html?offline', { cache: 'no-store' }); return 'ok'; } catch (e) { return e.name; }",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        fetch_offline,
        json!("TypeError"),
        "fetch succeeded while offline"
    );
    b.eval("ws.send('still here')", vec![]).await.unwrap();
    b.wait_for("events.includes('echo still here')", WAIT)
        .await
        .unwrap();
    assert_eq!(
        b.execute("return navigator.onLine", vec![]).await.unwrap(),
        json!(true)
    );

    // Back online: new connections work again.
    a.set_offline(false).await.unwrap();
    a.wait_for("events.includes('online') && navigator.onLine", WAIT)
        .await
        .unwrap();
    let reconnected = a
        .eval(
            r#"
            const ws2 = new WebSocket(args[0]);
            await new Promise((resolve, reject) => { ws2.onopen = resolve; ws2.onerror = reject; });
            const echoed = new Promise((resolve) => { ws2.onmessage = (m) => resolve(m.data); });
            ws2.send("back");
            return await echoed;
            "#,
            vec![json!(link_a.ws_url("/echo"))],
        )
        .await
        .unwrap();
    assert_eq!(reconnected, json!("back"));
    let page = a
        .eval(
            "const r = await fetch('/wasm_smoke.html?online', { cache: 'no-store' }); return r.status;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(page, json!(200));

    // Closing and reopening device A on its profile keeps its localStorage (same origin: same
    // link, same port).
    a.close().await.unwrap();
    let a = driver.launch(&profile_a).await.unwrap();
    a.goto(&link_a.url("/wasm_smoke.html")).await.unwrap();
    assert_eq!(
        a.execute("return localStorage.getItem('who')", vec![])
            .await
            .unwrap(),
        json!("a")
    );

    // A failing wait says what it waited for, with a screenshot.
    let err = a
        .wait_for("window.neverSet", Duration::from_millis(200))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("window.neverSet") && err.contains("screenshot: "),
        "{err}"
    );

    a.close().await.unwrap();
    b.close().await.unwrap();
}
