//! The course progress document: one per user and course.
//!
//! Merge rules:
//! - completed lessons are a set (add wins): flat keys `"<attempt>/<lesson>"` in the genesis
//!   map `completed`, valued with the completion time (earliest wins on conflict);
//! - progress never goes backwards: `progress["<attempt>"]` is read as the maximum of its
//!   concurrent values, and a writer only writes a value higher than everything it has seen, so
//!   no sequential write can lower it;
//! - time spent adds up: `time_spent` is a counter created by the genesis, so increments from
//!   every device are summed by Automerge itself;
//! - `last_activity` moves only forwards (max);
//! - restarting a course is its own operation: `attempt` goes to current + 1. Two devices that
//!   restart concurrently write the same number and agree. Earlier attempts stay as history.

use std::collections::BTreeMap;

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ROOT, ReadDoc, ScalarValue, Value};

use super::{DocError, as_i64, max_f64, max_i64, require_map, scalar_entries, validate_key};

const EXPECTED: &str = "course";

/// A course document's state for the current attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct CourseProgress {
    /// The course id written by the genesis.
    pub course_id: String,
    /// The current attempt (1 for the first).
    pub attempt: u32,
    /// Completed lessons of the current attempt, with their completion time (epoch ms).
    pub completed: BTreeMap<String, i64>,
    /// Progress of the current attempt, percent 0–100.
    pub progress: f64,
    /// Seconds spent on the course, over all attempts and devices.
    pub time_spent_secs: i64,
    /// Last activity (epoch ms); `None` if never.
    pub last_activity: Option<i64>,
}

/// What a progress write did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ProgressOutcome {
    /// The progress went up to the value written.
    Raised,
    /// The document already had this value or a higher one; nothing written. Progress never
    /// goes backwards: to start over, [`restart`] the course.
    Kept {
        /// The progress the document keeps.
        current: f64,
    },
}

/// Reads the course document.
pub fn read<D: ReadDoc>(doc: &D) -> Result<CourseProgress, DocError> {
    let completed_map = require_map(doc, "completed", EXPECTED)?;
    let progress_map = require_map(doc, "progress", EXPECTED)?;
    let course_id = match super::identify(doc) {
        Some(super::DocSpec::Course { course_id }) => course_id,
        _ => return Err(DocError::WrongKind { expected: EXPECTED }),
    };
    let attempt = attempt(doc);
    let prefix = format!("{attempt}/");
    let mut completed = BTreeMap::new();
    for (key, values) in scalar_entries(doc, &completed_map) {
        if let Some(lesson) = key.strip_prefix(&prefix) {
            let at = values.iter().filter_map(as_i64).min().unwrap_or(0);
            completed.insert(lesson.to_string(), at);
        }
    }
    let progress = max_f64(doc, &progress_map, &attempt.to_string())
        .unwrap_or(0.0)
        .clamp(0.0, 100.0);
    let last_activity = max_i64(doc, &ROOT, "last_activity").filter(|t| *t > 0);
    Ok(CourseProgress {
        course_id,
        attempt,
        completed,
        progress,
        time_spent_secs: time_spent(doc),
        last_activity,
    })
}

/// Whether the current attempt has a completed lesson or any progress: what [`read`] shows as
/// a non-empty `completed` or a `progress` above zero, without reading everything else (the
/// legacy import asks it of every course document it writes; a whole [`read`] there cost about
/// 5% of the import's instructions).
pub fn has_progress<D: ReadDoc>(doc: &D) -> Result<bool, DocError> {
    let completed_map = require_map(doc, "completed", EXPECTED)?;
    let progress_map = require_map(doc, "progress", EXPECTED)?;
    let attempt = attempt(doc);
    let prefix = format!("{attempt}/");
    if doc.keys(&completed_map).any(|key| key.starts_with(&prefix)) {
        return Ok(true);
    }
    Ok(max_f64(doc, &progress_map, &attempt.to_string()).is_some_and(|p| p > 0.0))
}

/// Marks a lesson of the current attempt completed at `now_ms`. Idempotent: returns `false` if
/// it already was.
pub fn complete_lesson(
    doc: &mut AutoCommit,
    lesson_id: &str,
    now_ms: i64,
) -> Result<bool, DocError> {
    complete_lesson_in(doc, None, lesson_id, now_ms)
}

/// Marks a lesson completed in a given attempt (the legacy import records into attempt 1).
pub fn complete_lesson_in(
    doc: &mut AutoCommit,
    attempt_no: Option<u32>,
    lesson_id: &str,
    now_ms: i64,
) -> Result<bool, DocError> {
    complete_lessons_in(doc, attempt_no, &[lesson_id], now_ms)?
        .pop()
        .unwrap_or(Ok(false))
}

/// Marks several lessons of one attempt completed at `now_ms`, in one pass: the bulk import
/// completes a course's lessons together, and looking up the `completed` map and the last
/// activity once per lesson cost more than the puts. Per lesson id, in order: `Ok(true)` if
/// newly completed, `Ok(false)` if it already was, `Err` for an id that is not a valid key
/// (the others still apply). An `Err` of the whole call means the document is not a course.
pub fn complete_lessons_in(
    doc: &mut AutoCommit,
    attempt_no: Option<u32>,
    lesson_ids: &[&str],
    now_ms: i64,
) -> Result<Vec<Result<bool, DocError>>, DocError> {
    let completed_map = require_map(doc, "completed", EXPECTED)?;
    let attempt_no = attempt_no.unwrap_or_else(|| attempt(doc));
    let mut outcomes = Vec::with_capacity(lesson_ids.len());
    let mut wrote = false;
    for lesson_id in lesson_ids {
        if let Err(e) = validate_key("lesson id", lesson_id) {
            outcomes.push(Err(e));
            continue;
        }
        let key = format!("{attempt_no}/{lesson_id}");
        if doc.get(&completed_map, key.as_str())?.is_some() {
            outcomes.push(Ok(false));
            continue;
        }
        doc.put(&completed_map, key, now_ms)?;
        wrote = true;
        outcomes.push(Ok(true));
    }
    if wrote {
        touch(doc, now_ms)?;
    }
    Ok(outcomes)
}

/// Raises the current attempt's progress to `percent` (0–100). Never lowers it.
pub fn set_progress(
    doc: &mut AutoCommit,
    percent: f64,
    now_ms: i64,
) -> Result<ProgressOutcome, DocError> {
    set_progress_in(doc, None, percent, now_ms)
}

/// Raises the progress of a given attempt (the current one if `None`). The legacy import
/// records into attempt 1: legacy progress belongs to the attempt the old app knew, and must
/// not reappear in an attempt the user started over with.
pub fn set_progress_in(
    doc: &mut AutoCommit,
    attempt_no: Option<u32>,
    percent: f64,
    now_ms: i64,
) -> Result<ProgressOutcome, DocError> {
    if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
        return Err(DocError::InvalidValue {
            field: "progress".into(),
            reason: "must be a number from 0 to 100".into(),
        });
    }
    if attempt_no == Some(0) {
        return Err(DocError::InvalidValue {
            field: "attempt".into(),
            reason: "attempts are numbered from 1".into(),
        });
    }
    let progress_map = require_map(doc, "progress", EXPECTED)?;
    let key = attempt_no.unwrap_or_else(|| attempt(doc)).to_string();
    let current = max_f64(doc, &progress_map, &key).unwrap_or(0.0);
    if percent <= current {
        return Ok(ProgressOutcome::Kept { current });
    }
    doc.put(&progress_map, key, percent)?;
    touch(doc, now_ms)?;
    Ok(ProgressOutcome::Raised)
}

/// Adds `seconds` of learning time. Refuses negative or absurd values (more than a day at once).
pub fn add_time(doc: &mut AutoCommit, seconds: i64, now_ms: i64) -> Result<(), DocError> {
    if !(0..=86_400).contains(&seconds) {
        return Err(DocError::InvalidValue {
            field: "time_spent".into(),
            reason: "must be between 0 and 86400 seconds per report".into(),
        });
    }
    if seconds == 0 {
        return Ok(());
    }
    // The counter was created by the genesis, so every device increments the same object.
    doc.increment(ROOT, "time_spent", seconds)?;
    touch(doc, now_ms)?;
    Ok(())
}

/// Starts a new attempt: completed lessons and progress start from zero in the new attempt,
/// the earlier ones stay as history. Returns the new attempt number.
pub fn restart(doc: &mut AutoCommit, now_ms: i64) -> Result<u32, DocError> {
    require_map(doc, "completed", EXPECTED)?;
    let next = attempt(doc).saturating_add(1);
    doc.put(ROOT, "attempt", u64::from(next))?;
    touch(doc, now_ms)?;
    Ok(next)
}

/// Moves `last_activity` forward to `now_ms` (never back).
pub fn touch(doc: &mut AutoCommit, now_ms: i64) -> Result<bool, DocError> {
    if max_i64(doc, &ROOT, "last_activity").unwrap_or(0) >= now_ms {
        return Ok(false);
    }
    doc.put(ROOT, "last_activity", now_ms)?;
    Ok(true)
}

fn attempt<D: ReadDoc>(doc: &D) -> u32 {
    max_i64(doc, &ROOT, "attempt")
        .and_then(|a| u32::try_from(a).ok())
        .filter(|a| *a >= 1)
        .unwrap_or(1)
}

fn time_spent<D: ReadDoc>(doc: &D) -> i64 {
    // Prefer the genesis counter; a rival value written by a foreign client is ignored.
    let mut total = None;
    if let Ok(values) = doc.get_all(ROOT, "time_spent") {
        for (value, id) in values {
            if let Value::Scalar(s) = value
                && let ScalarValue::Counter(c) = s.as_ref()
            {
                let n = i64::from(c);
                if super::is_genesis_op(&id) {
                    return n.max(0);
                }
                total = Some(n);
            }
        }
    }
    total.unwrap_or(0).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docs::{DocSpec, commit, create};

    fn device(n: u8) -> AutoCommit {
        create(
            &DocSpec::Course {
                course_id: "c1".into(),
            },
            [n; 16],
        )
        .unwrap()
    }

    #[test]
    fn progress_never_goes_backwards() {
        let mut doc = device(1);
        assert_eq!(
            set_progress(&mut doc, 40.0, 1).unwrap(),
            ProgressOutcome::Raised
        );
        assert_eq!(
            set_progress(&mut doc, 30.0, 2).unwrap(),
            ProgressOutcome::Kept { current: 40.0 }
        );
        assert!(set_progress(&mut doc, 101.0, 2).is_err());
        assert!(set_progress(&mut doc, f64::NAN, 2).is_err());
        commit(&mut doc, 2);
        assert_eq!(read(&doc).unwrap().progress, 40.0);
    }

    #[test]
    fn concurrent_progress_merges_to_max_and_time_adds_up() {
        let mut a = device(1);
        let mut b = device(2);
        set_progress(&mut a, 70.0, 10).unwrap();
        add_time(&mut a, 60, 10).unwrap();
        complete_lesson(&mut a, "l1", 10).unwrap();
        commit(&mut a, 10);
        set_progress(&mut b, 20.0, 20).unwrap();
        add_time(&mut b, 30, 20).unwrap();
        complete_lesson(&mut b, "l2", 20).unwrap();
        commit(&mut b, 20);
        a.merge(&mut b).unwrap();
        b.merge(&mut a).unwrap();
        for doc in [&a, &b] {
            let p = read(doc).unwrap();
            assert_eq!(p.progress, 70.0);
            assert_eq!(p.time_spent_secs, 90);
            assert_eq!(
                p.completed.keys().cloned().collect::<Vec<_>>(),
                ["l1", "l2"]
            );
            assert_eq!(p.last_activity, Some(20));
        }
        // b now writes 50: lower than what it has seen, so it is refused.
        assert!(matches!(
            set_progress(&mut b, 50.0, 30).unwrap(),
            ProgressOutcome::Kept { .. }
        ));
    }

    #[test]
    fn lessons_completed_together_read_as_one_by_one() {
        let mut one_by_one = device(1);
        let mut together = device(2);
        complete_lesson_in(&mut one_by_one, Some(1), "l0", 5).unwrap();
        complete_lesson_in(&mut together, Some(1), "l0", 5).unwrap();
        let ids = ["l1", "", "l0", "l2"];
        let outcomes = complete_lessons_in(&mut together, Some(1), &ids, 10).unwrap();
        assert!(matches!(
            outcomes.as_slice(),
            [
                Ok(true),
                Err(DocError::InvalidKey { .. }),
                Ok(false),
                Ok(true)
            ]
        ));
        for id in ids {
            let _ = complete_lesson_in(&mut one_by_one, Some(1), id, 10);
        }
        commit(&mut one_by_one, 10);
        commit(&mut together, 10);
        assert_eq!(read(&together).unwrap(), read(&one_by_one).unwrap());
        assert_eq!(read(&together).unwrap().last_activity, Some(10));
        // Again: nothing new, nothing written.
        let heads = together.get_heads();
        let again = complete_lessons_in(&mut together, Some(1), &["l1", "l2"], 20).unwrap();
        assert!(matches!(again.as_slice(), [Ok(false), Ok(false)]));
        commit(&mut together, 20);
        assert_eq!(together.get_heads(), heads);
        // Not a course document: the whole call fails.
        let mut learning = create(&DocSpec::Learning, [3; 16]).unwrap();
        assert!(complete_lessons_in(&mut learning, None, &["l1"], 1).is_err());
    }

    #[test]
    fn restart_is_its_own_operation() {
        let mut a = device(1);
        complete_lesson(&mut a, "l1", 1).unwrap();
        set_progress(&mut a, 100.0, 1).unwrap();
        commit(&mut a, 1);
        let mut b = device(2);
        b.merge(&mut a).unwrap();
        assert_eq!(restart(&mut a, 5).unwrap(), 2);
        commit(&mut a, 5);
        assert_eq!(restart(&mut b, 6).unwrap(), 2);
        commit(&mut b, 6);
        a.merge(&mut b).unwrap();
        let p = read(&a).unwrap();
        assert_eq!((p.attempt, p.progress), (2, 0.0));
        assert!(p.completed.is_empty());
        assert!(complete_lesson(&mut a, "l1", 7).unwrap());
        commit(&mut a, 7);
        assert_eq!(read(&a).unwrap().completed.len(), 1);
    }

    #[test]
    fn progress_of_an_earlier_attempt_stays_out_of_the_current_one() {
        let mut doc = device(1);
        set_progress(&mut doc, 30.0, 1).unwrap();
        restart(&mut doc, 2).unwrap();
        assert_eq!(
            set_progress_in(&mut doc, Some(1), 80.0, 3).unwrap(),
            ProgressOutcome::Raised
        );
        assert_eq!(
            set_progress_in(&mut doc, Some(1), 50.0, 4).unwrap(),
            ProgressOutcome::Kept { current: 80.0 }
        );
        assert!(set_progress_in(&mut doc, Some(0), 10.0, 4).is_err());
        commit(&mut doc, 4);
        let p = read(&doc).unwrap();
        assert_eq!((p.attempt, p.progress), (2, 0.0));
    }

    /// `has_progress` says what `read` says of the current attempt, through a lesson, progress,
    /// a restart (earlier attempts do not count) and a lesson of the new attempt.
    #[test]
    fn has_progress_agrees_with_read() {
        let agrees = |doc: &AutoCommit| {
            let p = read(doc).unwrap();
            let expected = !p.completed.is_empty() || p.progress > 0.0;
            assert_eq!(has_progress(doc).unwrap(), expected, "{p:?}");
            expected
        };
        let mut doc = device(1);
        assert!(!agrees(&doc));
        set_progress(&mut doc, 10.0, 1).unwrap();
        assert!(agrees(&doc));
        restart(&mut doc, 2).unwrap();
        assert!(!agrees(&doc));
        complete_lesson_in(&mut doc, Some(1), "l1", 3).unwrap();
        assert!(!agrees(&doc));
        complete_lesson(&mut doc, "l2", 4).unwrap();
        assert!(agrees(&doc));
        let mut other = device(2);
        complete_lesson(&mut other, "l1", 5).unwrap();
        assert!(agrees(&other));
        assert!(has_progress(&create(&DocSpec::Learning, [3; 16]).unwrap()).is_err());
    }

    #[test]
    fn complete_lesson_is_idempotent_and_validated() {
        let mut doc = device(1);
        assert!(complete_lesson(&mut doc, "l1", 1).unwrap());
        assert!(!complete_lesson(&mut doc, "l1", 2).unwrap());
        assert!(complete_lesson(&mut doc, "", 2).is_err());
        assert!(add_time(&mut doc, -1, 2).is_err());
    }

    #[test]
    fn wrong_kind_is_an_error() {
        let doc = create(&DocSpec::Learning, [1; 16]).unwrap();
        assert!(matches!(read(&doc), Err(DocError::WrongKind { .. })));
    }
}
