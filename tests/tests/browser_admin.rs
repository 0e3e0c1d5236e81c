//! The admin console (`/admin`) in real headless Chromium against the real server (SQLite): an
//! admin logs in through the page's form, imports the legacy fixture dumps with live progress,
//! sees the per-key results, imports them again and sees nothing change, finds both runs in the
//! history, forces a sync of the affected users (through the `confirm()` dialog), resolves an
//! imported report, filters the system log and reads the analytics charts. Screenshots of each
//! tab go to `tests/artifacts/` (not committed).

use std::path::{Path, PathBuf};
use std::time::Duration;

use e2e::app::{Client as Http, PASSWORD, TestApp};
use e2e::browser::{Browser, Chromedriver};
use e2e::db::Backend;
use e2e::device::{Credentials, Device, DocIds};
use learnsync::model::{LogLevel, Role};
use learnsync::store::NewLog;
use serde_json::json;
use sync_core::DocumentId;

const WAIT: Duration = Duration::from_secs(30);
const TAB: &str = "\u{E004}";
const ENTER: &str = "\u{E007}";
const ARROW_RIGHT: &str = "\u{E014}";
const HOME: &str = "\u{E011}";
const END: &str = "\u{E010}";
const FIXTURES: [&str; 3] = ["learner-basic.json", "learner-messy.json", "admin.json"];

fn fixtures() -> Vec<PathBuf> {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../sync-core/tests/fixtures/localstorage");
    FIXTURES.iter().map(|f| dir.join(f)).collect()
}

/// The text of every body cell of a table, row by row.
async fn rows(browser: &Browser, table: &str) -> Vec<Vec<String>> {
    let value = browser
        .execute(
            "return Array.from(document.querySelectorAll(arguments[0] + ' tbody tr'))
               .map((tr) => Array.from(tr.cells).map((td) => td.textContent.trim()));",
            vec![json!(table)],
        )
        .await
        .unwrap();
    serde_json::from_value(value).unwrap()
}

/// Form controls on the page that a screen reader could not name (no label, no aria-label).
async fn unlabelled_controls(browser: &Browser) -> Vec<String> {
    let value = browser
        .execute(
            r#"return Array.from(document.querySelectorAll("input, select, textarea, button"))
                 .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute("aria-label")
                   && !el.getAttribute("aria-labelledby")
                   && !(el.tagName === "BUTTON" && el.textContent.trim()))
                 .map((el) => el.outerHTML.slice(0, 120));"#,
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(value).unwrap()
}

/// Opens a tab with a click and waits until its panel shows and its data has loaded.
async fn open_tab(browser: &Browser, tab: &str) {
    browser.click(&format!("#t-{tab}")).await.unwrap();
    browser
        .wait_for(
            &format!(
                "document.getElementById('t-{tab}').getAttribute('aria-selected') === 'true' \
                 && !document.getElementById('tab-{tab}').hidden \
                 && !document.getElementById('tab-{tab}').hasAttribute('aria-busy')"
            ),
            WAIT,
        )
        .await
        .unwrap();
}

/// Chooses the `<option>` whose text is `text` in the `<select>` `select` with a click.
async fn choose(browser: &Browser, select: &str, text: &str) {
    let index = browser
        .execute(
            "return Array.from(document.querySelector(arguments[0]).options)
               .findIndex((o) => o.text === arguments[1]) + 1;",
            vec![json!(select), json!(text)],
        )
        .await
        .unwrap();
    let index = index.as_u64().unwrap();
    assert!(index > 0, "no option {text:?} in {select}");
    browser
        .click(&format!("{select} > option:nth-child({index})"))
        .await
        .unwrap();
}

async fn shot(browser: &Browser, name: &str) {
    let path = browser.screenshot(&format!("admin-{name}")).await.unwrap();
    println!("screenshot: {}", path.display());
}

/// Marks a table's current rows, so that [`wait_fresh`] can tell when it was drawn again.
async fn mark_stale(browser: &Browser, table: &str) {
    browser
        .execute(
            "document.querySelectorAll(arguments[0] + ' tbody tr').forEach((tr) => tr.dataset.stale = '1');",
            vec![json!(table)],
        )
        .await
        .unwrap();
}

/// Waits until a table marked by [`mark_stale`] holds newly drawn rows only, and returns them.
async fn wait_fresh(browser: &Browser, table: &str) -> Vec<Vec<String>> {
    browser
        .wait_for(
            &format!(
                "document.querySelector('{table} tbody tr') && !document.querySelector('{table} tbody tr[data-stale]')"
            ),
            WAIT,
        )
        .await
        .unwrap();
    rows(browser, table).await
}

/// The row of `rows` whose first cells are `prefix`.
fn find_row<'a>(rows: &'a [Vec<String>], prefix: &[&str]) -> Option<&'a Vec<String>> {
    rows.iter()
        .find(|r| r.len() >= prefix.len() && r.iter().zip(prefix).all(|(a, b)| a == b))
}

/// The id of the focused element.
async fn focused(browser: &Browser) -> String {
    let id = browser
        .execute(
            "return document.activeElement ? document.activeElement.id : ''",
            vec![],
        )
        .await
        .unwrap();
    id.as_str().unwrap_or_default().to_string()
}

/// Text of an element.
async fn text(browser: &Browser, css: &str) -> String {
    let value = browser
        .execute(
            "const el = document.querySelector(arguments[0]); return el ? el.textContent.trim() : null;",
            vec![json!(css)],
        )
        .await
        .unwrap();
    value
        .as_str()
        .unwrap_or_else(|| panic!("no element {css}"))
        .to_string()
}

/// The `<title>`s of a chart's bars (`label: value`).
async fn chart_bars(browser: &Browser, chart: &str) -> Vec<String> {
    let value = browser
        .execute(
            "return Array.from(document.querySelectorAll(arguments[0] + ' svg rect.bar title')).map((t) => t.textContent);",
            vec![json!(chart)],
        )
        .await
        .unwrap();
    serde_json::from_value(value).unwrap()
}

/// The bars that are not 0.
fn nonzero(titles: &[String]) -> Vec<String> {
    titles
        .iter()
        .filter(|t| !t.ends_with(": 0"))
        .cloned()
        .collect()
}

/// A daily series from the API as the chart labels its days (`MM-DD` for a month, else the
/// whole date).
async fn nonzero_days(admin: &Http, path: &str, short: bool) -> Vec<String> {
    let series = admin.get(path).await;
    series.ok(200)["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["count"] != 0)
        .map(|p| {
            let day = p["day"].as_str().unwrap();
            format!("{}: {}", if short { &day[5..] } else { day }, p["count"])
        })
        .collect()
}

/// The placeholder account the import made for a legacy user id.
async fn legacy_user(admin: &Http, legacy_id: &str) -> String {
    let users = admin.get("/api/admin/users?limit=100").await;
    users.ok(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["legacy_id"] == legacy_id)
        .unwrap_or_else(|| panic!("no account for {legacy_id}: {}", users.text))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The scopes of the audited forced syncs so far.
async fn forced_syncs(admin: &Http) -> Vec<String> {
    let logs = admin.get("/api/admin/logs?source=audit&limit=100").await;
    let mut scopes: Vec<String> = logs.ok(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["message"] == "forced sync")
        .map(|l| l["context"]["scope"].as_str().unwrap().to_string())
        .collect();
    scopes.sort();
    scopes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_imports_resyncs_moderates_filters_and_charts() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin: Http = app.user(Role::Admin).await;
    let driver = Chromedriver::start().await.unwrap();
    let browser = driver.launch_new("admin").await.unwrap();

    // Log in through the page's own form, at the keyboard.
    browser.goto(&app.url("/admin")).await.unwrap();
    browser
        .wait_for(
            "!document.getElementById('login-view').hidden && document.activeElement.id === 'login-email'",
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(unlabelled_controls(&browser).await, Vec::<String>::new());
    browser
        .type_into("#login-email", admin.email())
        .await
        .unwrap();
    browser.press_keys(TAB).await.unwrap();
    assert_eq!(focused(&browser).await, "login-password");
    browser.press_keys(PASSWORD).await.unwrap();
    shot(&browser, "login").await;
    browser.press_keys(ENTER).await.unwrap();
    let whoami = browser
        .wait_for(
            "!document.getElementById('console').hidden && document.getElementById('whoami').textContent",
            WAIT,
        )
        .await
        .unwrap();
    assert!(whoami.as_str().unwrap().contains(admin.email()), "{whoami}");
    assert_eq!(unlabelled_controls(&browser).await, Vec::<String>::new());

    // The tabs at the keyboard: focus lands on the selected tab, arrows move between tabs, and
    // Tab leaves the tab list for the panel (one tab stop for the whole list).
    browser
        .wait_for("document.activeElement.id === 't-migrate'", WAIT)
        .await
        .unwrap();
    browser.press_keys(ARROW_RIGHT).await.unwrap();
    assert_eq!(focused(&browser).await, "t-sync");
    browser
        .wait_for("!document.getElementById('tab-sync').hidden && document.getElementById('tab-migrate').hidden", WAIT)
        .await
        .unwrap();
    browser.press_keys(END).await.unwrap();
    assert_eq!(focused(&browser).await, "t-users");
    browser.press_keys(HOME).await.unwrap();
    assert_eq!(focused(&browser).await, "t-migrate");
    browser.press_keys(TAB).await.unwrap();
    assert_eq!(focused(&browser).await, "migrate-files");

    // Migration: three dumps; the progress climbs to 100 %.
    browser
        .execute(
            "window.percents = [];
             // Every server-sent event the page receives, to tell the live stream from polling.
             window.sse = [];
             const Source = window.EventSource;
             window.EventSource = function (url) {
               const source = new Source(url);
               for (const name of ['progress', 'finished']) source.addEventListener(name, () => sse.push(name));
               return source;
             };
             new MutationObserver(() => percents.push(document.getElementById('migrate-percent').textContent))
               .observe(document.getElementById('migrate-percent'), { childList: true, characterData: true, subtree: true });",
            vec![],
        )
        .await
        .unwrap();
    browser
        .choose_files("#migrate-files", &fixtures())
        .await
        .unwrap();
    browser.click("#migrate-start").await.unwrap();
    let finished = "window.percents[0] === '0 %' && !document.getElementById('migrate-start').disabled \
        && !document.getElementById('migrate-results').hidden && document.getElementById('migrate-bar').value === 100";
    browser.wait_for(finished, WAIT).await.unwrap();
    let percents: Vec<String> = serde_json::from_value(
        browser
            .execute("return window.percents", vec![])
            .await
            .unwrap(),
    )
    .unwrap();
    let numbers: Vec<u32> = percents
        .iter()
        .map(|p| p.trim_end_matches(" %").parse().unwrap())
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[0] <= w[1]) && numbers.last() == Some(&100),
        "progress went {percents:?}"
    );
    assert_eq!(text(&browser, "#migrate-percent").await, "100 %");
    assert_eq!(text(&browser, "#migrate-status").await, "succeeded");
    let sse: Vec<String> =
        serde_json::from_value(browser.execute("return window.sse", vec![]).await.unwrap())
            .unwrap();
    assert_eq!(
        sse.last().map(String::as_str),
        Some("finished"),
        "the page followed the run over server-sent events: {sse:?}"
    );

    // Per-key results, dump by dump.
    let results = rows(&browser, "#migrate-table").await;
    for expected in [
        ["learner-basic.json", "userEnrollments", "imported", "2"],
        ["learner-basic.json", "theme", "imported", "1"],
        ["learner-messy.json", "userEnrollments", "imported", "2"],
        ["learner-messy.json", "errorLog", "skipped", "1"],
        ["learner-messy.json", "someOtherAppKey", "skipped", "1"],
        ["admin.json", "moderationQueue", "imported", "2"],
        ["admin.json", "errorLog", "imported", "2"],
    ] {
        assert!(
            find_row(&results, &expected).is_some(),
            "no row {expected:?} in {results:#?}"
        );
    }
    let messy_log = find_row(&results, &["learner-messy.json", "errorLog"]).unwrap();
    assert!(
        !messy_log[4].is_empty(),
        "a skipped key says why: {messy_log:?}"
    );
    browser
        .execute(
            "document.getElementById('migrate-results').scrollIntoView()",
            vec![],
        )
        .await
        .unwrap();
    shot(&browser, "migration-results").await;

    // Force a sync of the affected users: Cancel in the dialog does nothing, OK does it.
    let anna = legacy_user(&admin, "u-anna").await;
    let boris = legacy_user(&admin, "u-boris").await;
    browser.click("#migrate-resync").await.unwrap();
    let question = browser.wait_for_dialog(WAIT).await.unwrap();
    assert_eq!(question, "Force a full resync of 2 user(s)?");
    browser.answer_dialog(false).await.unwrap();
    assert_eq!(forced_syncs(&admin).await, Vec::<String>::new());
    assert_eq!(text(&browser, "#migrate-resync-status").await, "");
    browser.click("#migrate-resync").await.unwrap();
    browser.wait_for_dialog(WAIT).await.unwrap();
    browser.answer_dialog(true).await.unwrap();
    browser
        .wait_for(
            "document.getElementById('migrate-resync-status').textContent === 'resync sent to 2 user(s)'",
            WAIT,
        )
        .await
        .unwrap();
    let mut affected = vec![anna.clone(), boris.clone()];
    affected.sort();
    assert_eq!(forced_syncs(&admin).await, affected);

    // The same dumps again: nothing imported or merged, nobody to resync.
    browser
        .execute(
            "window.percents = []; document.getElementById('migrate-files').value = '';",
            vec![],
        )
        .await
        .unwrap();
    mark_stale(&browser, "#migrate-table").await;
    browser
        .choose_files("#migrate-files", &fixtures())
        .await
        .unwrap();
    browser.click("#migrate-start").await.unwrap();
    browser.wait_for(finished, WAIT).await.unwrap();
    let again = wait_fresh(&browser, "#migrate-table").await;
    assert!(!again.is_empty());
    // Rows with a count of 0 only carry a note about the dump itself (e.g. "u-boris listed
    // twice in 1", merged within the dump): true on every run, no change.
    for row in &again {
        assert!(
            row[2] == "unchanged" || row[2] == "skipped" || (row[3] == "0" && !row[4].is_empty()),
            "the second run changed something: {row:?} in {again:#?}"
        );
    }
    assert!(
        find_row(&again, &["admin.json", "errorLog", "unchanged", "2"]).is_some(),
        "{again:#?}"
    );
    assert!(
        find_row(
            &again,
            &["learner-basic.json", "userEnrollments", "unchanged"]
        )
        .is_some(),
        "{again:#?}"
    );
    let resync_disabled = browser
        .execute(
            "return document.getElementById('migrate-resync').disabled",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(resync_disabled, json!(true));

    // Both runs in the history, newest first.
    browser
        .wait_for(
            "document.querySelectorAll('#runs-table tbody tr').length === 2",
            WAIT,
        )
        .await
        .unwrap();
    let runs = rows(&browser, "#runs-table").await;
    for run in &runs {
        assert_eq!(run[1], "admin", "{runs:#?}");
        assert_eq!(run[2], "learner-basic.json and 2 more", "{runs:#?}");
        assert_eq!(run[3], "succeeded", "{runs:#?}");
        assert_eq!(run[4], "3/3", "{runs:#?}");
    }
    assert!(
        !runs[0][5].contains("imported") && runs[0][5].contains("unchanged"),
        "{runs:#?}"
    );
    assert!(runs[1][5].contains("imported 22"), "{runs:#?}");
    browser
        .execute(
            "document.getElementById('runs-table').scrollIntoView()",
            vec![],
        )
        .await
        .unwrap();
    shot(&browser, "migration-history").await;

    // Sync & devices: a forced sync of everyone, confirmed.
    open_tab(&browser, "sync").await;
    browser.type_into("#resync-user", "all").await.unwrap();
    browser
        .click("#resync-form button[type=submit]")
        .await
        .unwrap();
    let question = browser.wait_for_dialog(WAIT).await.unwrap();
    assert!(
        question.contains("EVERY device of every user"),
        "{question}"
    );
    browser.answer_dialog(true).await.unwrap();
    browser
        .wait_for(
            "document.getElementById('resync-status').textContent.startsWith('Sync epoch')",
            WAIT,
        )
        .await
        .unwrap();
    assert!(forced_syncs(&admin).await.contains(&"all".to_string()));
    assert_eq!(
        rows(&browser, "#devices-table").await,
        vec![vec!["No device is connected.".to_string()]]
    );
    shot(&browser, "sync").await;

    // Moderation: the imported pending report, resolved with a note.
    open_tab(&browser, "moderation").await;
    browser
        .wait_for(
            "document.querySelector('#reports-table tbody tr[data-id]')",
            WAIT,
        )
        .await
        .unwrap();
    let pending = rows(&browser, "#reports-table").await;
    assert_eq!(
        pending.len(),
        1,
        "one imported report is still pending: {pending:#?}"
    );
    assert_eq!(pending[0][1], "c-geo");
    assert!(
        pending[0][2].starts_with("Неверный ответ в уроке 2"),
        "{pending:#?}"
    );
    let report_id = browser
        .execute(
            "return document.querySelector('#reports-table tbody tr[data-id]').dataset.id",
            vec![],
        )
        .await
        .unwrap();
    let report_id = report_id.as_str().unwrap().to_string();
    let row = format!("#reports-table tr[data-id=\"{report_id}\"]");
    assert_eq!(unlabelled_controls(&browser).await, Vec::<String>::new());
    browser
        .type_into(&format!("{row} textarea"), "answer fixed in lesson 2")
        .await
        .unwrap();
    shot(&browser, "moderation").await;
    mark_stale(&browser, "#reports-table").await;
    browser
        .click(&format!("{row} button[data-act=resolved]"))
        .await
        .unwrap();
    assert_eq!(
        wait_fresh(&browser, "#reports-table").await,
        vec![vec!["Nothing here.".to_string()]]
    );
    let resolved = admin
        .get("/api/admin/reports?status=resolved&limit=100")
        .await;
    let resolved = resolved.ok(200)["items"].as_array().unwrap().clone();
    let mine = resolved
        .iter()
        .find(|r| r["id"] == report_id.as_str())
        .unwrap_or_else(|| panic!("{report_id} not resolved: {resolved:#?}"));
    assert_eq!(mine["status"], "resolved");
    assert_eq!(mine["note"], "answer fixed in lesson 2");
    assert_eq!(mine["resolved_by"], admin.id());
    mark_stale(&browser, "#reports-table").await;
    choose(&browser, "#reports-status", "Resolved").await;
    let done = wait_fresh(&browser, "#reports-table").await;
    let mut notes: Vec<&str> = done.iter().map(|r| r[4].as_str()).collect();
    notes.sort();
    assert_eq!(
        notes,
        vec!["answer fixed in lesson 2", "removed link"],
        "{done:#?}"
    );
    shot(&browser, "moderation-resolved").await;

    // System logs: the imported errorLog entries, by level.
    open_tab(&browser, "logs").await;
    browser
        .wait_for("document.querySelector('#logs-table tbody tr')", WAIT)
        .await
        .unwrap();
    for (level, message) in [
        ("error", "TypeError: cannot read properties of undefined"),
        ("warn", "Slow network"),
    ] {
        mark_stale(&browser, "#logs-table").await;
        choose(&browser, "#logs-level", level).await;
        choose(&browser, "#logs-source", "legacy-import").await;
        browser
            .click("#logs-form button[type=submit]")
            .await
            .unwrap();
        let shown = wait_fresh(&browser, "#logs-table").await;
        assert_eq!(shown.len(), 1, "{level}: {shown:#?}");
        assert_eq!(shown[0][1], level);
        assert_eq!(shown[0][2], "legacy-import");
        assert!(shown[0][3].starts_with(message), "{shown:#?}");
        assert!(
            shown[0][3].contains("admin.json"),
            "the context names the dump: {shown:#?}"
        );
        shot(&browser, &format!("logs-{level}")).await;
    }
    // A level alone: every source, that level only, as many as the API has.
    mark_stale(&browser, "#logs-table").await;
    choose(&browser, "#logs-source", "Any").await;
    choose(&browser, "#logs-level", "info").await;
    browser
        .click("#logs-form button[type=submit]")
        .await
        .unwrap();
    let info = wait_fresh(&browser, "#logs-table").await;
    let api_info = admin.get("/api/admin/logs?level=info&limit=50").await;
    let api_info = api_info.ok(200)["items"].as_array().unwrap().len();
    assert!(api_info > 0);
    assert_eq!(info.len(), api_info, "{info:#?}");
    assert!(info.iter().all(|r| r[1] == "info"), "{info:#?}");
    assert!(
        info.iter()
            .any(|r| r[2] == "audit" && r[3].starts_with("forced sync")),
        "{info:#?}"
    );

    // Analytics: the per-course chart and table hold the imported enrollments.
    open_tab(&browser, "analytics").await;
    browser
        .wait_for(
            "document.querySelector('#chart-progress svg rect.bar')",
            WAIT,
        )
        .await
        .unwrap();
    let api_courses = admin.get("/api/admin/analytics/courses?limit=20").await;
    let api_courses = api_courses.ok(200).as_array().unwrap().clone();
    let mut ids: Vec<&str> = api_courses
        .iter()
        .map(|c| c["course_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["1", "999", "c-geo", "s-phys"]);
    let bars: Vec<String> = serde_json::from_value(
        browser
            .execute(
                "return Array.from(document.querySelectorAll('#chart-progress svg rect.bar title')).map((t) => t.textContent);",
                vec![],
            )
            .await
            .unwrap(),
    )
    .unwrap();
    let expected: Vec<String> = api_courses
        .iter()
        .map(|c| {
            let label = c["title"]
                .as_str()
                .unwrap_or(c["course_id"].as_str().unwrap());
            format!(
                "{label}: {}",
                c["average_progress"].as_f64().unwrap().round()
            )
        })
        .collect();
    assert_eq!(bars, expected);
    assert!(
        bars.contains(&"Алгебра 7 класс: 73".to_string()),
        "{bars:?}"
    );
    // The table: one row per course with its id, in the API's order.
    let table = rows(&browser, "#courses-table").await;
    let table_ids: Vec<&str> = table.iter().map(|r| r[1].as_str()).collect();
    let api_ids: Vec<&str> = api_courses
        .iter()
        .map(|c| c["course_id"].as_str().unwrap())
        .collect();
    assert_eq!(table_ids, api_ids, "{table:#?}");
    let algebra = find_row(&table, &["Алгебра 7 класс", "1"]).unwrap();
    assert_eq!(algebra[2..], ["2", "2", "0", "73.0 %"], "{table:#?}");
    // The daily charts hold the API's points (enrollments whose date the old app did not keep
    // count from the import).
    for (chart, path) in [
        (
            "#chart-enrollments",
            "/api/admin/analytics/enrollments?days=30",
        ),
        (
            "#chart-completions",
            "/api/admin/analytics/enrollments?days=30&metric=completions",
        ),
        ("#chart-active", "/api/admin/analytics/active-users?days=30"),
    ] {
        let titles = chart_bars(&browser, chart).await;
        assert_eq!(titles.len(), 30, "{chart}: one bar a day");
        let expected = nonzero_days(&admin, path, true).await;
        assert_eq!(nonzero(&titles), expected, "{chart}: {titles:?}");
        if chart == "#chart-enrollments" {
            assert!(
                !expected.is_empty(),
                "imported enrollments without a date count today"
            );
        }
    }
    shot(&browser, "analytics").await;

    // One course's enrollments and completions, over a year.
    mark_stale(&browser, "#courses-table").await;
    choose(&browser, "#analytics-course", "Алгебра 7 класс (1)").await;
    wait_fresh(&browser, "#courses-table").await;
    let label = browser
        .execute(
            "return document.querySelector('#chart-enrollments svg').getAttribute('aria-label')",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(label, "Enrollments per day of Алгебра 7 класс (1)");
    let one = nonzero_days(
        &admin,
        "/api/admin/analytics/enrollments?days=30&course_id=1",
        true,
    )
    .await;
    assert_eq!(one.len(), 1, "u-boris's enrollment in 1 has no date: today");
    assert_eq!(
        nonzero(&chart_bars(&browser, "#chart-enrollments").await),
        one
    );
    mark_stale(&browser, "#courses-table").await;
    choose(&browser, "#analytics-days", "A year").await;
    wait_fresh(&browser, "#courses-table").await;
    let year = chart_bars(&browser, "#chart-enrollments").await;
    assert_eq!(year.len(), 366);
    assert_eq!(
        nonzero(&year),
        nonzero_days(
            &admin,
            "/api/admin/analytics/enrollments?days=366&course_id=1",
            false
        )
        .await
    );
    let selected = browser
        .execute(
            "return document.getElementById('analytics-course').value",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(selected, "1", "the course stays chosen");

    // Users: the placeholder accounts of the legacy users.
    open_tab(&browser, "users").await;
    browser
        .wait_for(
            "document.querySelector('#users-table tbody tr[data-id]')",
            WAIT,
        )
        .await
        .unwrap();
    let users = rows(&browser, "#users-table").await;
    for (legacy, id) in [("u-anna", &anna), ("u-boris", &boris)] {
        let row = users
            .iter()
            .find(|r| r[2] == legacy)
            .unwrap_or_else(|| panic!("{users:#?}"));
        assert_eq!(row[1], "(placeholder)");
        assert_eq!(&row[5], id);
    }
    assert_eq!(unlabelled_controls(&browser).await, Vec::<String>::new());

    // A refused action says why on the tab the admin is looking at: no disabling oneself.
    browser
        .click(&format!(
            "#users-table tr[data-id=\"{}\"] button[data-act=toggle]",
            admin.id()
        ))
        .await
        .unwrap();
    let error = browser
        .wait_for(
            "document.querySelector('#tab-users [role=alert]').textContent",
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(error, "admins cannot disable or demote themselves");
    let me = admin.get("/api/auth/me").await;
    assert_eq!(me.ok(200)["disabled"], json!(false), "{}", me.text);
    shot(&browser, "users").await;

    browser.close().await.unwrap();
}

/// Logs `admin` in through the form at `path` and waits for the console.
async fn log_in(browser: &Browser, app: &TestApp, admin: &Http, path: &str) {
    browser.goto(&app.url(path)).await.unwrap();
    browser
        .wait_for("!document.getElementById('login-view').hidden", WAIT)
        .await
        .unwrap();
    browser
        .type_into("#login-email", admin.email())
        .await
        .unwrap();
    browser
        .type_into("#login-password", PASSWORD)
        .await
        .unwrap();
    browser
        .click("#login-form button[type=submit]")
        .await
        .unwrap();
    browser
        .wait_for("!document.getElementById('console').hidden", WAIT)
        .await
        .unwrap();
}

/// Ids of elements a hostile dump tried to inject (they must never exist).
const INJECTED: &str = "document.querySelectorAll('[id^=pwn], [data-pwn]').length";

/// A connected device shows in the devices table and gets a forced sync of its user; tab
/// addresses; logging out; a hostile dump's markup shows as text on every tab, never as HTML.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_sees_devices_tab_addresses_and_inert_dump_markup() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin: Http = app.user(Role::Admin).await;
    let learner: Http = app.user(Role::Learner).await;
    let ids = learner.get("/api/sync/documents").await;
    let ids = ids.ok(200);
    let ids = DocIds {
        preferences: DocumentId::parse(ids["preferences"].as_str().unwrap()).unwrap(),
        learning: DocumentId::parse(ids["learning"].as_str().unwrap()).unwrap(),
    };
    let token = learner.create_token("phone").await;
    let mut phone = Device::new(&app.base, Credentials::Bearer(token), ids);
    phone.connect().await;
    phone.synced().await;

    let driver = Chromedriver::start().await.unwrap();
    let browser = driver.launch_new("admin-devices").await.unwrap();
    // A tab's own address opens that tab after logging in.
    log_in(&browser, &app, &admin, "/admin/sync").await;
    browser
        .wait_for(
            "document.getElementById('t-sync').getAttribute('aria-selected') === 'true' \
             && document.querySelector('#devices-table tbody tr')",
            WAIT,
        )
        .await
        .unwrap();
    let devices = rows(&browser, "#devices-table").await;
    assert_eq!(devices.len(), 1, "{devices:#?}");
    assert_eq!(devices[0][0], learner.id());
    assert!(devices[0][3].starts_with("127.0.0.1"), "{devices:#?}");

    // Forced sync of that user: the device is told at once.
    browser
        .type_into("#resync-user", learner.id())
        .await
        .unwrap();
    browser
        .click("#resync-form button[type=submit]")
        .await
        .unwrap();
    let question = browser.wait_for_dialog(WAIT).await.unwrap();
    assert!(question.contains(learner.id()), "{question}");
    browser.answer_dialog(true).await.unwrap();
    let status = browser
        .wait_for("document.getElementById('resync-status').textContent", WAIT)
        .await
        .unwrap();
    assert!(
        status
            .as_str()
            .unwrap()
            .starts_with("Sync epoch 1: 1 connected device(s) told now"),
        "{status}"
    );
    phone
        .wait_for("the forced resync", WAIT, |c| c.epoch() == 1)
        .await;
    shot(&browser, "devices").await;

    // Switching tabs updates the address; a reload stays on the tab.
    open_tab(&browser, "logs").await;
    assert!(
        browser
            .current_url()
            .await
            .unwrap()
            .ends_with("/admin/logs")
    );
    browser.refresh().await.unwrap();
    browser
        .wait_for(
            "!document.getElementById('console').hidden \
             && document.getElementById('t-logs').getAttribute('aria-selected') === 'true'",
            WAIT,
        )
        .await
        .unwrap();

    // A dump whose every text is markup: a course title, a course id, a report reason, a log
    // message, an unknown key and the file name.
    let hostile = json!({
        "learnModeCourses": json!([{ "id": "x-1", "title": "<img id=pwn-title src=x>", "lessons": [] }]).to_string(),
        "userEnrollments": json!({ "u-eve": [
            { "courseId": "x-1", "progress": 40 },
            { "courseId": "<b id=pwn-course>", "progress": 5 },
        ]}).to_string(),
        "moderationQueue": json!([{ "id": "m1", "courseId": "x-1", "reason": "<img id=pwn-reason src=x>", "reportedBy": "u-eve" }]).to_string(),
        "errorLog": json!([{ "message": "<img id=pwn-log src=x>", "level": "error" }]).to_string(),
        "<i id=pwn-key>": "<i data-pwn>",
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("<b id=pwn-file>.json");
    std::fs::write(&file, hostile.to_string()).unwrap();
    open_tab(&browser, "migrate").await;
    browser
        .choose_files("#migrate-files", &[file])
        .await
        .unwrap();
    browser.click("#migrate-start").await.unwrap();
    browser
        .wait_for(
            "!document.getElementById('migrate-results').hidden && document.getElementById('migrate-status').textContent === 'succeeded'",
            WAIT,
        )
        .await
        .unwrap();
    browser
        .wait_for(
            "document.querySelectorAll('#runs-table tbody tr').length === 1",
            WAIT,
        )
        .await
        .unwrap();
    let results = rows(&browser, "#migrate-table").await;
    assert!(
        find_row(
            &results,
            &["<b id=pwn-file>.json", "<i id=pwn-key>", "skipped"]
        )
        .is_some(),
        "{results:#?}"
    );
    assert_eq!(
        rows(&browser, "#runs-table").await[0][2],
        "<b id=pwn-file>.json"
    );
    assert_eq!(
        browser
            .execute(&format!("return {INJECTED}"), vec![])
            .await
            .unwrap(),
        json!(0)
    );

    open_tab(&browser, "moderation").await;
    browser
        .wait_for(
            "document.querySelector('#reports-table tbody tr[data-id]')",
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(
        rows(&browser, "#reports-table").await[0][2],
        "<img id=pwn-reason src=x>"
    );
    assert_eq!(
        browser
            .execute(&format!("return {INJECTED}"), vec![])
            .await
            .unwrap(),
        json!(0)
    );
    // Dismissed with a note, at the keyboard.
    let report_id = browser
        .execute(
            "return document.querySelector('#reports-table tbody tr[data-id]').dataset.id",
            vec![],
        )
        .await
        .unwrap();
    let report_id = report_id.as_str().unwrap().to_string();
    let row = format!("#reports-table tr[data-id=\"{report_id}\"]");
    browser
        .type_into(&format!("{row} textarea"), "not a real report")
        .await
        .unwrap();
    // Tab past Resolve to Dismiss, then Enter.
    browser
        .press_keys(&format!("{TAB}{TAB}{ENTER}"))
        .await
        .unwrap();
    browser
        .wait_for(
            "document.querySelector('#reports-table tbody tr:not([data-id])')",
            WAIT,
        )
        .await
        .unwrap();
    let dismissed = admin.get("/api/admin/reports?status=dismissed").await;
    let dismissed = dismissed.ok(200)["items"].as_array().unwrap().clone();
    assert_eq!(dismissed.len(), 1, "{dismissed:#?}");
    assert_eq!(dismissed[0]["id"], report_id.as_str());
    assert_eq!(dismissed[0]["note"], "not a real report");

    open_tab(&browser, "logs").await;
    browser
        .wait_for("document.querySelector('#logs-table tbody tr')", WAIT)
        .await
        .unwrap();
    let logs = rows(&browser, "#logs-table").await;
    assert!(
        logs.iter()
            .any(|r| r[2] == "legacy-import" && r[3].starts_with("<img id=pwn-log src=x>")),
        "{logs:#?}"
    );
    assert_eq!(
        browser
            .execute(&format!("return {INJECTED}"), vec![])
            .await
            .unwrap(),
        json!(0)
    );

    open_tab(&browser, "analytics").await;
    browser
        .wait_for("document.querySelector('#courses-table tbody tr') && document.querySelector('#chart-progress svg')", WAIT)
        .await
        .unwrap();
    let courses = rows(&browser, "#courses-table").await;
    assert!(
        find_row(&courses, &["<img id=pwn-title src=x>", "x-1"]).is_some(),
        "{courses:#?}"
    );
    assert!(
        find_row(&courses, &["<b id=pwn-course>", "<b id=pwn-course>"]).is_some(),
        "{courses:#?}"
    );
    assert_eq!(
        browser
            .execute(&format!("return {INJECTED}"), vec![])
            .await
            .unwrap(),
        json!(0)
    );
    shot(&browser, "hostile-dump").await;

    // The legacy user's placeholder made a teacher from the users tab.
    open_tab(&browser, "users").await;
    let eve = legacy_user(&admin, "u-eve").await;
    choose(&browser, &format!("#role-{eve}"), "teacher").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let users = admin.get("/api/admin/users?role=teacher").await;
        if users.ok(200)["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["id"] == eve.as_str())
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the role did not change: {}",
            users.text
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        browser
            .execute(&format!("return {INJECTED}"), vec![])
            .await
            .unwrap(),
        json!(0)
    );

    // Logging out ends the session: the form is back and the API refuses the old cookie.
    browser.click("#logout").await.unwrap();
    browser
        .wait_for("!document.getElementById('login-view').hidden && document.getElementById('console').hidden", WAIT)
        .await
        .unwrap();
    let me = browser
        .eval("return (await fetch('/api/auth/me')).status;", vec![])
        .await
        .unwrap();
    assert_eq!(me, json!(401));
    assert_eq!(text(&browser, "#whoami").await, "");

    browser.close().await.unwrap();
    phone.disconnect().await;
}

/// Whether the page scrolls sideways (it must not on a phone: wide tables scroll in their box).
async fn overflows(browser: &Browser) -> bool {
    let value = browser
        .execute(
            "return document.documentElement.scrollWidth > window.innerWidth",
            vec![],
        )
        .await
        .unwrap();
    value == json!(true)
}

/// On a phone-sized screen: a learner is turned away, an admin pages through a filtered log
/// ("Older entries" continues the filter on screen even after the form changed), and no tab
/// scrolls sideways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_pages_through_logs_on_a_phone() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin: Http = app.user(Role::Admin).await;
    let learner: Http = app.user(Role::Learner).await;
    let base = learnsync::model::now_ms() - 3_600_000;
    let logs: Vec<NewLog> = (0..100)
        .map(|i| {
            let (level, n) = if i % 10 < 7 {
                (LogLevel::Error, i / 10 * 7 + i % 10)
            } else {
                (LogLevel::Info, i / 10 * 3 + i % 10 - 7)
            };
            NewLog {
                level,
                source: "client".into(),
                message: format!("{} {n:03}", level.as_str()),
                context: None,
                user_id: Some(learner.id().to_string()),
                request_id: None,
                legacy_key: None,
                created_at: base + i64::from(i) * 1000,
            }
        })
        .collect();
    assert_eq!(app.state.store.insert_logs(&logs).await.unwrap(), 100);

    let driver = Chromedriver::start().await.unwrap();
    let browser = driver.launch_new("admin-phone").await.unwrap();
    browser.set_window_size(390, 844).await.unwrap();

    // A wrong password is refused with the server's reason, then a learner cannot use the
    // console either.
    browser.goto(&app.url("/admin/logs")).await.unwrap();
    browser
        .wait_for("!document.getElementById('login-view').hidden", WAIT)
        .await
        .unwrap();
    browser
        .type_into("#login-email", admin.email())
        .await
        .unwrap();
    browser
        .type_into("#login-password", &format!("not the password{ENTER}"))
        .await
        .unwrap();
    let wrong = browser
        .wait_for("document.getElementById('login-error').textContent", WAIT)
        .await
        .unwrap();
    let wrong_api = app
        .anonymous()
        .post(
            "/api/auth/login",
            &json!({ "email": "nobody@example.test", "password": "x" }),
        )
        .await;
    assert_eq!(
        wrong, wrong_api.body["error"]["message"],
        "{}",
        wrong_api.text
    );
    browser
        .execute(
            "document.getElementById('login-email').value = ''; document.getElementById('login-password').value = '';",
            vec![],
        )
        .await
        .unwrap();
    browser
        .type_into("#login-email", learner.email())
        .await
        .unwrap();
    browser
        .type_into("#login-password", &format!("{PASSWORD}{ENTER}"))
        .await
        .unwrap();
    let refused = browser
        .wait_for("document.getElementById('login-error').textContent", WAIT)
        .await
        .unwrap();
    assert_eq!(
        refused,
        "This console is for admins. Log in with an admin account."
    );
    assert!(
        browser
            .execute("return document.getElementById('console').hidden", vec![])
            .await
            .unwrap()
            == json!(true)
    );
    assert!(!overflows(&browser).await);

    // The admin, on the same page.
    browser
        .execute("document.getElementById('login-email').value = ''", vec![])
        .await
        .unwrap();
    log_in(&browser, &app, &admin, "/admin/logs").await;
    browser
        .wait_for("document.querySelector('#logs-table tbody tr')", WAIT)
        .await
        .unwrap();
    mark_stale(&browser, "#logs-table").await;
    choose(&browser, "#logs-level", "error").await;
    choose(&browser, "#logs-source", "client").await;
    browser
        .click("#logs-form button[type=submit]")
        .await
        .unwrap();
    let first = wait_fresh(&browser, "#logs-table").await;
    let expected: Vec<String> = (0..70).rev().map(|n| format!("error {n:03}")).collect();
    let messages =
        |rows: &[Vec<String>]| -> Vec<String> { rows.iter().map(|r| r[3].clone()).collect() };
    assert_eq!(messages(&first), expected[..50]);
    assert!(!overflows(&browser).await, "the logs tab scrolls sideways");
    shot(&browser, "phone-logs").await;

    // The form changes, but "Older entries" continues what is on screen.
    choose(&browser, "#logs-level", "info").await;
    browser.click("#logs-more").await.unwrap();
    browser
        .wait_for(
            "document.querySelectorAll('#logs-table tbody tr').length > 50 && document.getElementById('logs-more').hidden",
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(messages(&rows(&browser, "#logs-table").await), expected);
    // Filter applies the form: the info entries now.
    mark_stale(&browser, "#logs-table").await;
    browser
        .click("#logs-form button[type=submit]")
        .await
        .unwrap();
    let info = wait_fresh(&browser, "#logs-table").await;
    let expected_info: Vec<String> = (0..30).rev().map(|n| format!("info {n:03}")).collect();
    assert_eq!(messages(&info), expected_info);

    for tab in ["migrate", "sync", "moderation", "analytics", "users"] {
        open_tab(&browser, tab).await;
        assert!(!overflows(&browser).await, "the {tab} tab scrolls sideways");
    }
    shot(&browser, "phone-users").await;
    browser.close().await.unwrap();
}

/// Waits until the migration form is idle again after a start and returns the status line.
async fn migration_done(browser: &Browser) -> String {
    let status = browser
        .wait_for(
            "!document.getElementById('migrate-start').disabled \
             && (document.getElementById('migrate-error').textContent \
                 || (!document.getElementById('migrate-results').hidden \
                     && document.getElementById('migrate-bar').value === 100 \
                     && document.getElementById('migrate-status').textContent))",
            WAIT,
        )
        .await
        .unwrap();
    status.as_str().unwrap().to_string()
}

/// A dry run changes nothing and says so; an upload tied to an unknown user is refused with
/// the reason and no progress bar; a dump that is not a JSON object fails alone, with its
/// reason in the results, while the others are imported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_dry_run_and_bad_uploads() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin: Http = app.user(Role::Admin).await;
    let driver = Chromedriver::start().await.unwrap();
    let browser = driver.launch_new("admin-dry-run").await.unwrap();
    log_in(&browser, &app, &admin, "/admin/migrate").await;
    let basic = fixtures().remove(0);

    // Dry run.
    browser.click("#migrate-dry").await.unwrap();
    browser
        .choose_files("#migrate-files", std::slice::from_ref(&basic))
        .await
        .unwrap();
    browser.click("#migrate-start").await.unwrap();
    assert_eq!(
        migration_done(&browser).await,
        "succeeded (dry run: nothing changed)"
    );
    let results = rows(&browser, "#migrate-table").await;
    assert!(
        find_row(
            &results,
            &["learner-basic.json", "userEnrollments", "imported", "2"]
        )
        .is_some(),
        "a dry run shows what would change: {results:#?}"
    );
    let resync_disabled = browser
        .execute(
            "return document.getElementById('migrate-resync').disabled",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(resync_disabled, json!(true));
    let users = admin.get("/api/admin/users?limit=100").await;
    assert_eq!(
        users.ok(200)["items"].as_array().unwrap().len(),
        1,
        "a dry run creates no account: {}",
        users.text
    );
    let courses = admin.get("/api/admin/analytics/courses").await;
    assert_eq!(courses.ok(200), &json!([]));
    browser
        .wait_for(
            "document.querySelectorAll('#runs-table tbody tr').length === 1",
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(
        rows(&browser, "#runs-table").await[0][2],
        "learner-basic.json (dry run)"
    );
    shot(&browser, "dry-run").await;
    browser.click("#migrate-dry").await.unwrap();

    // Tied to a user who does not exist: refused, nothing started.
    browser
        .type_into("#migrate-user", "nobody@example.test")
        .await
        .unwrap();
    browser.click("#migrate-start").await.unwrap();
    assert_eq!(migration_done(&browser).await, "user not found");
    let progress_hidden = browser
        .execute(
            "return document.getElementById('migrate-progress').hidden",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(progress_hidden, json!(true));
    let runs = admin.get("/api/admin/migrations").await;
    assert_eq!(runs.ok(200)["items"].as_array().unwrap().len(), 1);

    // A broken dump next to a good one.
    browser
        .execute(
            "document.getElementById('migrate-user').value = ''; document.getElementById('migrate-files').value = '';",
            vec![],
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "[1, 2]").unwrap();
    browser
        .choose_files("#migrate-files", &[broken, basic])
        .await
        .unwrap();
    mark_stale(&browser, "#migrate-table").await;
    browser.click("#migrate-start").await.unwrap();
    assert_eq!(migration_done(&browser).await, "partial");
    let results = wait_fresh(&browser, "#migrate-table").await;
    let failed = results
        .iter()
        .find(|r| r[0] == "broken.json")
        .unwrap_or_else(|| panic!("{results:#?}"));
    assert!(failed[1].contains("not a JSON object"), "{results:#?}");
    assert!(
        find_row(
            &results,
            &["learner-basic.json", "userEnrollments", "imported", "2"]
        )
        .is_some(),
        "{results:#?}"
    );
    assert_eq!(text(&browser, "#migrate-error").await, "");
    browser
        .wait_for(
            "document.querySelectorAll('#runs-table tbody tr').length === 2",
            WAIT,
        )
        .await
        .unwrap();
    let runs = rows(&browser, "#runs-table").await;
    assert_eq!(runs[0][3], "partial", "{runs:#?}");
    assert!(runs[0][5].ends_with("1 dump(s) failed"), "{runs:#?}");
    browser
        .execute(
            "document.getElementById('migrate-results').scrollIntoView()",
            vec![],
        )
        .await
        .unwrap();
    shot(&browser, "partial").await;
    browser.close().await.unwrap();
}
