//! Property tests for the merge rules: 2–5 devices start from nothing (their own genesis),
//! edit offline, merge in random order and direction (with repeats), and finally exchange
//! everything. Then every replica must be identical and the rules of `docs/documents.md` hold:
//! progress never lower than the highest accepted write of the current attempt, every lesson
//! completed in the current attempt present, time spent the sum of all reports, no enrollment
//! lost, preferences agreed everywhere.
//!
//! `PROPTEST_CASES` sets the number of schedules (the suite's default is small; the documented
//! long run uses 10,000+).

use std::collections::{BTreeMap, BTreeSet};

use automerge::{AutoCommit, ReadDoc};
use proptest::prelude::*;
use serde_json::json;
use sync_core::docs::{self, DocSpec, course, learning, preferences, projection};

const COURSES: [&str; 3] = ["c1", "c2", "s-phys"];
const LESSONS: [&str; 4] = ["l1", "l2", "l3", "1"];
const THEMES: [&str; 3] = ["light", "dark", "system"];

#[derive(Debug, Clone)]
enum Op {
    Enroll(usize),
    Unenroll(usize),
    Complete(usize),
    Progress(u8),
    AddTime(u16),
    Restart,
    Theme(usize),
    Setting(u8),
    /// Device `.0` receives everything device `.1` has (one direction).
    Merge(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..COURSES.len()).prop_map(Op::Enroll),
        1 => (0..COURSES.len()).prop_map(Op::Unenroll),
        3 => (0..LESSONS.len()).prop_map(Op::Complete),
        3 => (0u8..=100).prop_map(Op::Progress),
        2 => (0u16..600).prop_map(Op::AddTime),
        1 => Just(Op::Restart),
        2 => (0..THEMES.len()).prop_map(Op::Theme),
        1 => any::<u8>().prop_map(Op::Setting),
        4 => (0usize..5).prop_map(Op::Merge),
    ]
}

struct Device {
    prefs: AutoCommit,
    index: AutoCommit,
    course: AutoCommit,
}

impl Device {
    fn new(n: u8) -> Self {
        let actor = [n + 1; 16];
        Self {
            prefs: docs::create(&DocSpec::Preferences, actor).unwrap(),
            index: docs::create(&DocSpec::Learning, actor).unwrap(),
            course: docs::create(
                &DocSpec::Course {
                    course_id: "c1".into(),
                },
                actor,
            )
            .unwrap(),
        }
    }

    fn merge_from(&mut self, other: &mut Device) {
        self.prefs.merge(&mut other.prefs).unwrap();
        self.index.merge(&mut other.index).unwrap();
        self.course.merge(&mut other.course).unwrap();
    }
}

/// What the devices did, to check the final state against.
#[derive(Default)]
struct Truth {
    enrolled: BTreeSet<String>,
    unenrolled: BTreeSet<String>,
    time: i64,
    /// Accepted progress writes per attempt.
    progress: BTreeMap<u32, f64>,
    /// Completions per attempt.
    completed: BTreeMap<u32, BTreeSet<String>>,
    themes: BTreeSet<String>,
    max_attempt: u32,
}

fn run(devices: usize, schedule: Vec<(usize, Op)>) -> Result<(), TestCaseError> {
    let mut ds: Vec<Device> = (0..devices as u8).map(Device::new).collect();
    let mut truth = Truth {
        max_attempt: 1,
        ..Truth::default()
    };
    let mut now = 1_700_000_000_000i64;
    for (who, op) in schedule {
        let who = who % devices;
        now += 1_000;
        match op {
            Op::Merge(from) => {
                let from = from % devices;
                if from != who {
                    let (a, b) = pick_two(&mut ds, who, from);
                    a.merge_from(b);
                }
                continue;
            }
            Op::Enroll(c) => {
                learning::enroll(&mut ds[who].index, COURSES[c], now).unwrap();
                truth.enrolled.insert(COURSES[c].into());
            }
            Op::Unenroll(c) => {
                if learning::unenroll(&mut ds[who].index, COURSES[c]).unwrap() {
                    truth.unenrolled.insert(COURSES[c].into());
                }
            }
            Op::Complete(l) => {
                let attempt = course::read(&ds[who].course).unwrap().attempt;
                course::complete_lesson(&mut ds[who].course, LESSONS[l], now).unwrap();
                truth
                    .completed
                    .entry(attempt)
                    .or_default()
                    .insert(LESSONS[l].into());
            }
            Op::Progress(p) => {
                let attempt = course::read(&ds[who].course).unwrap().attempt;
                let p = f64::from(p);
                if course::set_progress(&mut ds[who].course, p, now).unwrap()
                    == course::ProgressOutcome::Raised
                {
                    let best = truth.progress.entry(attempt).or_insert(0.0);
                    *best = best.max(p);
                }
            }
            Op::AddTime(s) => {
                course::add_time(&mut ds[who].course, i64::from(s), now).unwrap();
                truth.time += i64::from(s);
            }
            Op::Restart => {
                let next = course::restart(&mut ds[who].course, now).unwrap();
                truth.max_attempt = truth.max_attempt.max(next);
            }
            Op::Theme(t) => {
                preferences::set(&mut ds[who].prefs, "theme", &json!(THEMES[t]), now).unwrap();
                truth.themes.insert(THEMES[t].into());
            }
            Op::Setting(v) => {
                preferences::set(&mut ds[who].prefs, "volume", &json!(v), now).unwrap();
            }
        }
        let d = &mut ds[who];
        docs::commit(&mut d.prefs, now);
        docs::commit(&mut d.index, now);
        docs::commit(&mut d.course, now);
    }

    // Everyone exchanges everything.
    for i in 0..devices {
        for j in 0..devices {
            if i != j {
                let (a, b) = pick_two(&mut ds, i, j);
                a.merge_from(b);
            }
        }
    }
    let first_heads = (
        ds[0].prefs.get_heads(),
        ds[0].index.get_heads(),
        ds[0].course.get_heads(),
    );
    let first = (
        projection::project(&ds[0].prefs).unwrap(),
        projection::project(&ds[0].index).unwrap(),
        projection::project(&ds[0].course).unwrap(),
    );
    for d in ds.iter_mut().skip(1) {
        prop_assert_eq!(
            (
                d.prefs.get_heads(),
                d.index.get_heads(),
                d.course.get_heads()
            ),
            first_heads.clone()
        );
        let mine = (
            projection::project(&d.prefs).unwrap(),
            projection::project(&d.index).unwrap(),
            projection::project(&d.course).unwrap(),
        );
        prop_assert_eq!(&mine, &first, "replicas read differently");
    }

    for d in &ds {
        readers_agree(d)?;
    }

    let d = &ds[0];
    let p = course::read(&d.course).unwrap();
    prop_assert_eq!(p.attempt, truth.max_attempt);
    prop_assert_eq!(p.time_spent_secs, truth.time, "time spent must add up");
    let expected_progress = truth.progress.get(&p.attempt).copied().unwrap_or(0.0);
    prop_assert_eq!(
        p.progress,
        expected_progress,
        "progress is the max accepted write"
    );
    let expected_lessons = truth.completed.get(&p.attempt).cloned().unwrap_or_default();
    prop_assert_eq!(
        p.completed.keys().cloned().collect::<BTreeSet<_>>(),
        expected_lessons,
        "completed lessons are add-wins"
    );
    for c in &truth.enrolled {
        let e = learning::enrollment(&d.index, c).unwrap();
        prop_assert!(e.is_some(), "enrollment in {} lost", c);
        if !truth.unenrolled.contains(c) {
            prop_assert_eq!(e.unwrap().status, learning::Status::Active);
        }
    }
    match preferences::theme(&d.prefs).unwrap() {
        Some(t) => prop_assert!(truth.themes.contains(&t)),
        None => prop_assert!(truth.themes.is_empty()),
    }
    Ok(())
}

/// The whole-document readers (one walk per map, what every stored write's projection uses)
/// must say what the per-key readers and Automerge's own per-key values say, conflicts
/// included: concurrent completions read as the earliest, concurrent statuses as add-wins,
/// concurrent settings by their writers' clocks.
fn readers_agree(d: &Device) -> Result<(), TestCaseError> {
    let one_by_one: Vec<learning::Enrollment> = COURSES
        .iter()
        .filter_map(|c| learning::enrollment(&d.index, c).unwrap())
        .collect();
    prop_assert_eq!(learning::enrollments(&d.index).unwrap(), one_by_one);

    let all = preferences::all(&d.prefs).unwrap();
    for key in ["theme", "volume"] {
        prop_assert_eq!(
            all.get(key).cloned(),
            preferences::get(&d.prefs, key).unwrap()
        );
    }
    match projection::project(&d.prefs).unwrap() {
        Some(projection::Projection::Preferences(row)) => {
            prop_assert_eq!(row.theme, preferences::theme(&d.prefs).unwrap());
            prop_assert_eq!(row.language, preferences::language(&d.prefs).unwrap());
        }
        other => prop_assert!(false, "not a preferences row: {:?}", other),
    }

    let p = course::read(&d.course).unwrap();
    let (_, completed) = d.course.get(automerge::ROOT, "completed").unwrap().unwrap();
    for lesson in LESSONS {
        let key = format!("{}/{lesson}", p.attempt);
        let earliest = d
            .course
            .get_all(&completed, key.as_str())
            .unwrap()
            .into_iter()
            .filter_map(|(v, _)| v.as_i64())
            .min();
        prop_assert_eq!(
            p.completed.get(lesson).copied(),
            earliest,
            "lesson {}",
            lesson
        );
    }
    Ok(())
}

fn pick_two(ds: &mut [Device], a: usize, b: usize) -> (&mut Device, &mut Device) {
    assert_ne!(a, b);
    if a < b {
        let (l, r) = ds.split_at_mut(b);
        (&mut l[a], &mut r[0])
    } else {
        let (l, r) = ds.split_at_mut(a);
        (&mut r[0], &mut l[b])
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn devices_converge_and_merge_rules_hold(
        devices in 2usize..=5,
        schedule in prop::collection::vec((0usize..5, op()), 0..60),
    ) {
        run(devices, schedule)?;
    }
}

/// The case DESIGN.md calls out: two devices that never synced both enroll in the same course
/// and make progress offline; nothing either wrote is hidden after they merge.
#[test]
fn two_offline_devices_enrolling_in_the_same_course_lose_nothing() {
    let mut a = Device::new(0);
    let mut b = Device::new(1);
    for (d, lesson, p, t) in [(&mut a, "l1", 30.0, 100), (&mut b, "l2", 60.0, 50)] {
        learning::enroll(&mut d.index, "c1", 1).unwrap();
        course::complete_lesson(&mut d.course, lesson, 2).unwrap();
        course::set_progress(&mut d.course, p, 2).unwrap();
        course::add_time(&mut d.course, t, 2).unwrap();
        docs::commit(&mut d.index, 2);
        docs::commit(&mut d.course, 2);
    }
    a.merge_from(&mut b);
    let p = course::read(&a.course).unwrap();
    assert_eq!(p.completed.len(), 2);
    assert_eq!(p.progress, 60.0);
    assert_eq!(p.time_spent_secs, 150);
    assert_eq!(
        learning::enrollment(&a.index, "c1")
            .unwrap()
            .unwrap()
            .status,
        learning::Status::Active
    );
}
