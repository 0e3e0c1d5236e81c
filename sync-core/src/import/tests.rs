use automerge::AutoCommit;
use serde_json::json;

use super::*;
use crate::docs::{DocSpec, course, create, learning, preferences};

const BASIC: &str = include_str!("../../tests/fixtures/localstorage/learner-basic.json");
const MESSY: &str = include_str!("../../tests/fixtures/localstorage/learner-messy.json");
const ADMIN: &str = include_str!("../../tests/fixtures/localstorage/admin.json");

const NOW: i64 = 1_750_000_000_000;

/// One user's documents, as a device or the server holds them.
struct Docs {
    preferences: AutoCommit,
    learning: AutoCommit,
    courses: BTreeMap<String, AutoCommit>,
}

impl Docs {
    fn new() -> Self {
        Self {
            preferences: create(&DocSpec::Preferences, [1; 16]).unwrap(),
            learning: create(&DocSpec::Learning, [1; 16]).unwrap(),
            courses: BTreeMap::new(),
        }
    }

    fn apply(&mut self, import: &UserImport) -> Report {
        let mut report = Report::new();
        report.extend(
            import
                .apply_preferences(&mut self.preferences, NOW)
                .unwrap(),
        );
        report.extend(import.apply_learning(&mut self.learning, NOW).unwrap());
        for course_id in import.course_ids() {
            let doc = self.courses.entry(course_id.clone()).or_insert_with(|| {
                create(
                    &DocSpec::Course {
                        course_id: course_id.clone(),
                    },
                    [1; 16],
                )
                .unwrap()
            });
            report.extend(import.apply_course(&course_id, doc, NOW).unwrap());
        }
        report
    }

    fn heads(&mut self) -> Vec<Vec<automerge::ChangeHash>> {
        let mut all = vec![self.preferences.get_heads(), self.learning.get_heads()];
        all.extend(self.courses.values_mut().map(|d| d.get_heads()));
        all
    }

    fn commit(&mut self) {
        crate::docs::commit(&mut self.preferences, NOW);
        crate::docs::commit(&mut self.learning, NOW);
        for d in self.courses.values_mut() {
            crate::docs::commit(d, NOW);
        }
    }
}

fn rows(report: &Report, key: &str, outcome: Outcome) -> u64 {
    report
        .rows()
        .iter()
        .filter(|r| r.key == key && r.outcome == outcome)
        .map(|r| r.count)
        .sum()
}

#[test]
fn basic_fixture_maps_every_key() {
    let dump = parse(BASIC).unwrap();
    assert_eq!(dump.owner_hint().as_deref(), Some("u-anna"));
    let ids: Vec<_> = dump
        .catalog
        .iter()
        .map(|c| (c.id.as_str(), c.kind))
        .collect();
    assert_eq!(
        ids,
        vec![
            ("1", CatalogKind::Course),
            ("c-geo", CatalogKind::Course),
            ("s-phys", CatalogKind::Subject)
        ]
    );
    let algebra = &dump.catalog[0];
    assert_eq!(algebra.title, "Алгебра 7 класс");
    assert_eq!(algebra.lessons.len(), 3);
    assert_eq!(algebra.author.as_deref(), Some("u-teacher-1"));
    assert_eq!(algebra.created_at, Some(1_725_177_600_000));
    assert_eq!(dump.catalog[1].lessons[1].id, "2");
    assert_eq!(dump.catalog[2].extra["courses"], json!([1]));

    let import = dump.for_user(Some("u-anna"));
    let e = import.enrollments();
    assert_eq!(e.keys().collect::<Vec<_>>(), vec!["1", "c-geo", "s-phys"]);
    assert_eq!(e["1"].progress, Some(66.0));
    assert_eq!(e["c-geo"].progress, Some(50.0));
    assert_eq!(e["1"].enrolled_at, Some(1_725_271_200_000));
    assert_eq!(e["c-geo"].enrolled_at, Some(1_725_264_000_000));
    assert_eq!(e["1"].sources, vec!["userEnrollments", "courseEnrollments"]);
    assert_eq!(e["s-phys"].sources, vec!["subjectEnrollments"]);
    assert_eq!(import.course_ids(), vec!["1", "c-geo"]);

    let mut docs = Docs::new();
    let report = docs.apply(&import);
    assert_eq!(
        preferences::theme(&docs.preferences).unwrap().as_deref(),
        Some("dark")
    );
    assert_eq!(
        preferences::language(&docs.preferences).unwrap().as_deref(),
        Some("ru")
    );
    let enrolled = learning::enrollments(&docs.learning).unwrap();
    assert_eq!(enrolled.len(), 3);
    assert!(
        enrolled
            .iter()
            .all(|e| e.status == learning::Status::Active)
    );
    let algebra = course::read(&docs.courses["1"]).unwrap();
    assert_eq!(algebra.progress, 66.0);
    assert_eq!(
        algebra.completed.keys().collect::<Vec<_>>(),
        vec!["l1", "l2"]
    );
    let geo = course::read(&docs.courses["c-geo"]).unwrap();
    assert_eq!(geo.completed.keys().collect::<Vec<_>>(), vec!["1"]);

    assert_eq!(rows(&report, "userEnrollments", Outcome::Imported), 2);
    assert_eq!(rows(&report, "courseEnrollments", Outcome::Merged), 2);
    assert_eq!(rows(&report, "subjectEnrollments", Outcome::Imported), 1);
    assert_eq!(
        rows(&report, "userEnrollments/progress", Outcome::Imported),
        2
    );
    assert_eq!(rows(&report, "theme", Outcome::Imported), 1);
    assert_eq!(rows(&report, "language", Outcome::Imported), 1);
    assert_eq!(report.count(Outcome::Skipped), 0, "{report:#?}");
}

#[test]
fn messy_fixture_keeps_what_it_cannot_map() {
    let dump = parse(MESSY).unwrap();
    assert_eq!(dump.owner_hint().as_deref(), Some("u-boris"));
    let import = dump.for_user(Some("u-boris"));
    let e = import.enrollments();
    assert_eq!(e.keys().collect::<Vec<_>>(), vec!["1", "999", "c-geo"]);
    assert_eq!(e["1"].progress, Some(80.0));
    assert_eq!(
        e["1"].completed.iter().collect::<Vec<_>>(),
        vec!["l1", "l3"]
    );
    assert!(e["1"].notes.iter().any(|n| n.contains("listed twice")));
    let kept: Vec<_> = dump.kept.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(kept, vec!["errorLog", "someOtherAppKey"]);
    assert!(dump.logs.is_empty());

    let mut docs = Docs::new();
    let mut report = dump.report.clone();
    report.extend(docs.apply(&import).into_rows());
    assert_eq!(
        preferences::theme(&docs.preferences).unwrap().as_deref(),
        Some("light")
    );
    assert_eq!(
        preferences::language(&docs.preferences).unwrap().as_deref(),
        Some("en-US")
    );
    let legacy = preferences::legacy(&docs.preferences).unwrap();
    assert_eq!(legacy["someOtherAppKey"], "keep me");
    assert_eq!(legacy["errorLog"], "{not valid json");
    assert_eq!(legacy["theme"], "\"light\"");
    assert_eq!(learning::enrollments(&docs.learning).unwrap().len(), 3);
    assert_eq!(rows(&report, "errorLog", Outcome::Skipped), 1);
    assert_eq!(rows(&report, "someOtherAppKey", Outcome::Skipped), 1);
    let notes: Vec<_> = report.rows().iter().flat_map(|r| r.notes.clone()).collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("999 is not in this dump's catalog")),
        "{notes:?}"
    );
    assert!(notes.iter().any(|n| n.contains("JSON-quoted")), "{notes:?}");
}

#[test]
fn admin_fixture_gives_reports_logs_and_subjects() {
    let dump = parse(ADMIN).unwrap();
    assert_eq!(dump.owner_hint(), None);
    assert_eq!(dump.catalog.len(), 1);
    assert_eq!(dump.catalog[0].status, CatalogStatus::Draft);
    assert_eq!(dump.catalog[0].title, "Химия");
    assert_eq!(dump.reports.len(), 2);
    let r1 = &dump.reports[0];
    assert_eq!((r1.legacy_id.as_str(), r1.course_id.as_str()), ("r1", "1"));
    assert_eq!(r1.state, ReportState::Resolved);
    assert_eq!(r1.note.as_deref(), Some("removed link"));
    assert_eq!(r1.resolved_by.as_deref(), Some("u-admin"));
    assert_eq!(r1.resolved_at, Some(1_727_859_600_000));
    let r2 = &dump.reports[1];
    assert_eq!(r2.state, ReportState::Pending);
    assert_eq!(r2.created_at, Some(1_727_784_000_000));
    assert_eq!(r2.reporter.as_deref(), Some("u-boris"));
    assert_eq!(dump.logs.len(), 2);
    assert_eq!(dump.logs[0].level, LogSeverity::Error);
    assert_eq!(dump.logs[0].context["stack"], json!("at Lesson.svelte:42"));
    assert_eq!(dump.logs[1].level, LogSeverity::Warn);
    assert_eq!(dump.logs[1].created_at, Some(1_728_113_460_000));
    assert!(dump.kept.is_empty());
}

#[test]
fn importing_twice_changes_nothing() {
    for text in [BASIC, MESSY, ADMIN] {
        let dump = parse(text).unwrap();
        let import = dump.for_user(None);
        let mut docs = Docs::new();
        docs.apply(&import);
        docs.commit();
        let before = docs.heads();
        let again = docs.apply(&import);
        docs.commit();
        assert_eq!(docs.heads(), before, "a second import wrote something");
        assert!(!again.changed(), "{again:#?}");
    }
}

#[test]
fn synced_values_win_over_legacy_ones() {
    let dump = parse(BASIC).unwrap();
    let import = dump.for_user(None);
    let mut docs = Docs::new();
    // The user already chose a theme, left course 1 and made more progress in c-geo on a
    // synced device before the import runs.
    preferences::set(&mut docs.preferences, "theme", &json!("light"), NOW - 10).unwrap();
    learning::enroll(&mut docs.learning, "1", NOW - 10).unwrap();
    learning::unenroll(&mut docs.learning, "1").unwrap();
    let mut geo = create(
        &DocSpec::Course {
            course_id: "c-geo".into(),
        },
        [2; 16],
    )
    .unwrap();
    course::set_progress(&mut geo, 90.0, NOW - 10).unwrap();
    docs.courses.insert("c-geo".into(), geo);

    let report = docs.apply(&import);
    assert_eq!(
        preferences::theme(&docs.preferences).unwrap().as_deref(),
        Some("light")
    );
    assert_eq!(
        preferences::legacy(&docs.preferences).unwrap()["theme"],
        "dark"
    );
    assert_eq!(
        learning::enrollment(&docs.learning, "1")
            .unwrap()
            .unwrap()
            .status,
        learning::Status::Unenrolled
    );
    let geo = course::read(&docs.courses["c-geo"]).unwrap();
    assert_eq!(geo.progress, 90.0);
    assert_eq!(geo.completed.len(), 1, "lessons still merge in");
    assert_eq!(rows(&report, "theme", Outcome::Skipped), 1);
    assert_eq!(
        rows(&report, "userEnrollments/progress", Outcome::Merged),
        1
    );

    // Changing the theme after the import does not make a re-import write the old one back.
    preferences::set(&mut docs.preferences, "theme", &json!("system"), NOW + 10).unwrap();
    docs.commit();
    let before = docs.heads();
    docs.apply(&import);
    docs.commit();
    assert_eq!(docs.heads(), before);
}

#[test]
fn legacy_progress_goes_to_attempt_one_only() {
    let dump = parse(BASIC).unwrap();
    let import = dump.for_user(None);
    let mut doc = create(
        &DocSpec::Course {
            course_id: "1".into(),
        },
        [3; 16],
    )
    .unwrap();
    course::restart(&mut doc, NOW).unwrap();
    import.apply_course("1", &mut doc, NOW).unwrap();
    let state = course::read(&doc).unwrap();
    assert_eq!(state.attempt, 2);
    assert_eq!(state.progress, 0.0, "the new attempt starts from zero");
    assert!(state.completed.is_empty());
}

#[test]
fn two_devices_importing_the_same_dump_offline_agree() {
    let dump = parse(BASIC).unwrap();
    let import = dump.for_user(None);
    let mut a = Docs::new();
    let mut b = Docs::new();
    b.preferences.set_actor(automerge::ActorId::from([2u8; 16]));
    b.learning.set_actor(automerge::ActorId::from([2u8; 16]));
    a.apply(&import);
    b.apply(&import);
    a.preferences.merge(&mut b.preferences).unwrap();
    a.learning.merge(&mut b.learning).unwrap();
    assert_eq!(
        preferences::theme(&a.preferences).unwrap().as_deref(),
        Some("dark")
    );
    assert_eq!(learning::enrollments(&a.learning).unwrap().len(), 3);
    assert_eq!(preferences::legacy(&a.preferences).unwrap().len(), 2);
}

#[test]
fn dumps_that_are_not_objects_are_refused() {
    assert!(matches!(parse("not json"), Err(ImportError::NotJson(_))));
    assert_eq!(parse("[1,2]"), Err(ImportError::NotAnObject("an array")));
    assert_eq!(parse("\"x\""), Err(ImportError::NotAnObject("a string")));
    let empty = parse("{}").unwrap();
    assert!(empty.keys.is_empty() && empty.catalog.is_empty());
}

#[test]
fn odd_shapes_are_read_or_kept() {
    let text = json!({
        "learnModeCourses": json!({ "7": { "title": "Seven" }, "x": "not an object" }).to_string(),
        "userEnrollments": json!([{ "userId": 5, "courseId": 7, "progress": "0.5", "enrolledAt": "2024-01-02" }, 42, { "progress": 1 }]).to_string(),
        "courseEnrollments": json!({ "7": "5" }).to_string(),
        "theme": "purple",
        "language": "pt_BR",
        "moderationData": json!({ "nope": { "status": "resolved" } }).to_string(),
        "errorLog": json!("just one message").to_string(),
    })
    .to_string();
    let dump = parse(&text).unwrap();
    assert_eq!(dump.catalog.len(), 1);
    assert_eq!(dump.catalog[0].id, "7");
    assert_eq!(dump.catalog[0].title, "Seven");
    let import = dump.for_user(Some("5"));
    let e = &import.enrollments()["7"];
    assert_eq!(e.progress, Some(50.0));
    assert_eq!(e.enrolled_at, Some(1_704_153_600_000));
    assert_eq!(e.sources, vec!["userEnrollments", "courseEnrollments"]);
    // The bare 42 in the list is a course id of the dump's own (unnamed) user.
    assert!(import.enrollments().contains_key("42"));
    assert_eq!(dump.theme.as_ref().unwrap().value, None);
    assert_eq!(
        dump.language.as_ref().unwrap().value.as_deref(),
        Some("pt-BR")
    );
    assert_eq!(dump.logs.len(), 1);
    assert_eq!(dump.logs[0].message, "just one message");
    let kept: Vec<_> = dump.kept.iter().map(|k| k.key.as_str()).collect();
    assert!(kept.contains(&"learnModeCourses[1]"), "{kept:?}");
    assert!(kept.contains(&"userEnrollments[2]"), "{kept:?}");
    assert!(kept.contains(&"moderationData.nope"), "{kept:?}");

    let mut docs = Docs::new();
    let report = docs.apply(&import);
    assert_eq!(preferences::theme(&docs.preferences).unwrap(), None);
    assert_eq!(
        preferences::legacy(&docs.preferences).unwrap()["theme"],
        "purple"
    );
    assert_eq!(rows(&report, "theme", Outcome::Skipped), 1);
}

#[test]
fn generated_dumps_parse_apply_and_reimport_cleanly() {
    for seed in 0..200 {
        let text = generate::dump(seed, &generate::Options::default());
        let dump = parse(&text).unwrap();
        assert_eq!(dump.owner_hint(), Some(generate::user_id(seed)));
        let import = dump.for_user(dump.owner_hint().as_deref());
        let mut docs = Docs::new();
        let first = docs.apply(&import);
        assert!(first.changed(), "seed {seed}");
        docs.commit();
        let before = docs.heads();
        let second = docs.apply(&import);
        docs.commit();
        assert_eq!(docs.heads(), before, "seed {seed}");
        assert!(!second.changed(), "seed {seed}: {second:#?}");
        // Every key of the dump is accounted for: in the report, or as typed rows for the
        // server's tables.
        let mut typed: Vec<&str> = dump.catalog.iter().map(|c| c.source).collect();
        if !dump.reports.is_empty() {
            typed.push("moderationQueue");
        }
        if dump
            .reports
            .iter()
            .any(|r| r.extra.contains_key("decidedIn"))
        {
            typed.push("moderationData");
        }
        if !dump.logs.is_empty() {
            typed.push("errorLog");
        }
        for key in &dump.keys {
            let reported = dump.report.rows().iter().any(|r| &r.key == key)
                || first.rows().iter().any(|r| r.key == *key)
                || typed.contains(&key.as_str());
            assert!(reported, "seed {seed}: key {key} not reported");
        }
    }
}
