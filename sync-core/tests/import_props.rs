//! Properties of the legacy import over arbitrary dumps: built from the old app's keys holding
//! random JSON of the shapes the app wrote (and garbage), or from random text.

use proptest::prelude::*;
use serde_json::{Value as Json, json};
use sync_core::docs::{DocSpec, commit, create, learning, preferences};
use sync_core::import::{self, KNOWN_KEYS, Outcome};

const NOW: i64 = 1_750_000_000_000;

fn scalar() -> impl Strategy<Value = Json> {
    prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (0.0f64..2.0).prop_map(|f| json!(f)),
        (0u32..200).prop_map(|n| json!(n)),
        "[a-z0-9 %:.-]{0,12}".prop_map(Json::String),
        Just(json!("2024-09-02T10:00:00Z")),
        Just(json!(1_725_264_000_000i64)),
    ]
}

fn value() -> impl Strategy<Value = Json> {
    scalar().prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("id".to_string()),
                    Just("courseId".to_string()),
                    Just("userId".to_string()),
                    Just("progress".to_string()),
                    Just("completedLessons".to_string()),
                    Just("enrolledAt".to_string()),
                    Just("status".to_string()),
                    Just("title".to_string()),
                    Just("lessons".to_string()),
                    Just("reason".to_string()),
                    Just("message".to_string()),
                    "[a-z]{1,6}",
                ],
                inner,
                0..6,
            )
            .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

/// A dump: some of the old app's keys and a stray one, each holding JSON text, bare text or
/// broken JSON.
fn dump() -> impl Strategy<Value = String> {
    prop::collection::btree_map(
        prop_oneof![
            prop::sample::select(KNOWN_KEYS.to_vec()).prop_map(str::to_string),
            "[a-zA-Z]{1,10}",
        ],
        prop_oneof![
            6 => value().prop_map(|v| v.to_string()),
            1 => "[a-z\"{\\[]{0,10}",
        ],
        0..8,
    )
    .prop_map(|m| {
        let map: serde_json::Map<String, Json> =
            m.into_iter().map(|(k, v)| (k, Json::String(v))).collect();
        Json::Object(map).to_string()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("IMPORT_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300)
    ))]

    /// Parsing and applying never panic, a second apply writes nothing, and every key of the
    /// dump shows up in a report or in the typed rows.
    #[test]
    fn any_dump_imports_idempotently(text in dump()) {
        let dump = import::parse(&text).unwrap();
        let user = dump.for_user(None);
        let mut prefs = create(&DocSpec::Preferences, [1; 16]).unwrap();
        let mut index = create(&DocSpec::Learning, [1; 16]).unwrap();
        let mut courses: Vec<_> = user
            .course_ids()
            .into_iter()
            .map(|id| {
                let doc = create(&DocSpec::Course { course_id: id.clone() }, [1; 16]).unwrap();
                (id, doc)
            })
            .collect();
        let mut report = import::Report::new();
        report.extend(user.apply_preferences(&mut prefs, NOW).unwrap());
        report.extend(user.apply_learning(&mut index, NOW).unwrap());
        for (id, doc) in courses.iter_mut() {
            report.extend(user.apply_course(id, doc, NOW).unwrap());
        }
        commit(&mut prefs, NOW);
        commit(&mut index, NOW);
        for (_, doc) in courses.iter_mut() {
            commit(doc, NOW);
        }
        let heads: Vec<_> = [prefs.get_heads(), index.get_heads()]
            .into_iter()
            .chain(courses.iter_mut().map(|(_, d)| d.get_heads()))
            .collect();

        let mut again = import::Report::new();
        again.extend(user.apply_preferences(&mut prefs, NOW + 1).unwrap());
        again.extend(user.apply_learning(&mut index, NOW + 1).unwrap());
        for (id, doc) in courses.iter_mut() {
            again.extend(user.apply_course(id, doc, NOW + 1).unwrap());
        }
        commit(&mut prefs, NOW + 1);
        commit(&mut index, NOW + 1);
        for (_, doc) in courses.iter_mut() {
            commit(doc, NOW + 1);
        }
        let heads_again: Vec<_> = [prefs.get_heads(), index.get_heads()]
            .into_iter()
            .chain(courses.iter_mut().map(|(_, d)| d.get_heads()))
            .collect();
        prop_assert_eq!(heads_again, heads);
        prop_assert_eq!(again.count(Outcome::Imported) + again.count(Outcome::Merged), 0);

        // Every enrollment parsed is in the index; nothing kept raw is lost.
        for course_id in user.enrollments().keys() {
            prop_assert!(learning::enrollment(&index, course_id).unwrap().is_some());
        }
        let legacy = preferences::legacy(&prefs).unwrap();
        for kept in user.kept() {
            if kept.raw.len() <= import::MAX_KEPT_IN_DOCUMENT {
                prop_assert!(legacy.values().any(|v| v == &kept.raw), "{} not kept", kept.key);
            }
        }
        for key in &dump.keys {
            let typed = dump.catalog.iter().any(|c| c.source == key)
                || (key == "moderationQueue" && !dump.reports.is_empty())
                || (key == "moderationData" && dump.reports.iter().any(|r| r.extra.contains_key("decidedIn")))
                || (key == "errorLog" && !dump.logs.is_empty());
            let reported = dump.report.rows().iter().chain(report.rows()).any(|r| {
                r.key == *key || r.key.starts_with(&format!("{key}/"))
            });
            let setting = (key == "theme" && dump.theme.is_some())
                || (key == "language" && dump.language.is_some());
            prop_assert!(typed || reported || setting, "key {} unaccounted for", key);
        }
    }

    /// Random text never panics the parser.
    #[test]
    fn any_text_parses_or_is_refused(text in any::<String>()) {
        let _ = import::parse(&text);
    }
}
