//! The learning index: which courses and subjects a user is enrolled in.
//!
//! Merge rule: enrollments are a set where add wins. Each course has a flat `status` key whose
//! concurrent values are combined: if any concurrent value is `active`, the course is active.
//! A later unenroll (one that has seen the enrollment) replaces it, and is kept as a status,
//! never a deletion, so the course's progress document is untouched and comes back on
//! re-enrolling. `enrolled_at` is written only when absent and reads as the earliest value.

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ReadDoc, ScalarValue};

use super::{DocError, as_i64, min_i64, require_map, scalar_entries, scalars, validate_key};

/// Most courses one learning index may hold (active or not); protects every replica.
pub const MAX_ENROLLMENTS: usize = 2000;

const EXPECTED: &str = "learning";

/// A course's enrollment status as the learning index records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// Enrolled.
    Active,
    /// Explicitly unenrolled; progress is kept.
    Unenrolled,
}

impl Status {
    /// The stored string.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Unenrolled => "unenrolled",
        }
    }
}

/// One course of the learning index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    /// The course or subject id.
    pub course_id: String,
    /// Current status after merging concurrent writes (add wins).
    pub status: Status,
    /// When the user first enrolled (epoch ms), if known.
    pub enrolled_at: Option<i64>,
}

/// All enrollments, sorted by course id.
pub fn enrollments<D: ReadDoc>(doc: &D) -> Result<Vec<Enrollment>, DocError> {
    // Both maps in one walk each (keys come in order), then joined: the same as
    // [`enrollment`] per course, without two lookups per course.
    let status_map = require_map(doc, "status", EXPECTED)?;
    let enrolled_at_map = require_map(doc, "enrolled_at", EXPECTED)?;
    let enrolled_at: std::collections::HashMap<String, Option<i64>> =
        scalar_entries(doc, &enrolled_at_map)
            .into_iter()
            .map(|(course_id, values)| (course_id, values.iter().filter_map(as_i64).min()))
            .collect();
    let mut out: Vec<Enrollment> = scalar_entries(doc, &status_map)
        .into_iter()
        .filter_map(|(course_id, values)| {
            let status = merged_status(values.iter())?;
            let enrolled_at = enrolled_at.get(&course_id).copied().flatten();
            Some(Enrollment {
                course_id,
                status,
                enrolled_at,
            })
        })
        .collect();
    out.sort_by(|a, b| a.course_id.cmp(&b.course_id));
    Ok(out)
}

/// The status concurrent values merge to: `min` picks Active over Unenrolled, so add wins.
/// `None` when no value is a status.
fn merged_status<'a>(values: impl Iterator<Item = &'a ScalarValue>) -> Option<Status> {
    values
        .filter_map(|v| match v {
            ScalarValue::Str(s) if s == "active" => Some(Status::Active),
            ScalarValue::Str(s) if s == "unenrolled" => Some(Status::Unenrolled),
            _ => None,
        })
        .min()
}

/// One course's enrollment, if the index mentions it.
pub fn enrollment<D: ReadDoc>(doc: &D, course_id: &str) -> Result<Option<Enrollment>, DocError> {
    let status_map = require_map(doc, "status", EXPECTED)?;
    let enrolled_at_map = require_map(doc, "enrolled_at", EXPECTED)?;
    let values = scalars(doc, &status_map, course_id);
    let Some(status) = merged_status(values.iter().map(|(v, _)| v)) else {
        return Ok(None);
    };
    Ok(Some(Enrollment {
        course_id: course_id.to_string(),
        status,
        enrolled_at: min_i64(doc, &enrolled_at_map, course_id),
    }))
}

/// Enrolls in `course_id` (again, if it was unenrolled). `enrolled_at` is the time to record
/// if the index has none yet (now, or the legacy enrollment date). Returns whether anything
/// was written.
pub fn enroll(doc: &mut AutoCommit, course_id: &str, enrolled_at: i64) -> Result<bool, DocError> {
    validate_key("course id", course_id)?;
    let Some(current) = enrollment(doc, course_id)? else {
        // A new course: written as the bulk path writes it, under the same cap.
        return enroll_absent(doc, &[(course_id, enrolled_at)])?
            .pop()
            .unwrap_or(Ok(()))
            .map(|()| true);
    };
    let status_map = require_map(doc, "status", EXPECTED)?;
    let enrolled_at_map = require_map(doc, "enrolled_at", EXPECTED)?;
    let mut changed = false;
    // Write `active` also when a concurrent conflict is present but already reads as active?
    // No: add wins already makes it read active, and writing would only add noise.
    if current.status != Status::Active {
        doc.put(&status_map, course_id, Status::Active.as_str())?;
        changed = true;
    }
    if current.enrolled_at.is_none() {
        doc.put(&enrolled_at_map, course_id, enrolled_at)?;
        changed = true;
    }
    Ok(changed)
}

/// Enrolls in several courses the index does not mention, each with its `enrolled_at`, in one
/// pass: the maps are looked up once, not twice per course, and nothing is read back. Callers
/// pass only courses for which [`enrollment`] is `None` (the legacy import reads the whole
/// index once with [`enrollments`]; [`enroll`] comes here for a new course). One answer per
/// course: refused ids and courses past [`MAX_ENROLLMENTS`] are refused alone.
pub fn enroll_absent(
    doc: &mut AutoCommit,
    courses: &[(&str, i64)],
) -> Result<Vec<Result<(), DocError>>, DocError> {
    let status_map = require_map(doc, "status", EXPECTED)?;
    let enrolled_at_map = require_map(doc, "enrolled_at", EXPECTED)?;
    let mut count = doc.length(&status_map);
    let mut outcomes = Vec::with_capacity(courses.len());
    for &(course_id, enrolled_at) in courses {
        if let Err(e) = validate_key("course id", course_id) {
            outcomes.push(Err(e));
            continue;
        }
        if count >= MAX_ENROLLMENTS {
            outcomes.push(Err(DocError::InvalidValue {
                field: "course id".into(),
                reason: format!("a user may have at most {MAX_ENROLLMENTS} enrollments"),
            }));
            continue;
        }
        doc.put(&status_map, course_id, Status::Active.as_str())?;
        doc.put(&enrolled_at_map, course_id, enrolled_at)?;
        count += 1;
        outcomes.push(Ok(()));
    }
    Ok(outcomes)
}

/// Unenrolls from `course_id`. The course stays in the index with status `unenrolled`; its
/// progress document is untouched. Returns `false` if the course was not active.
pub fn unenroll(doc: &mut AutoCommit, course_id: &str) -> Result<bool, DocError> {
    validate_key("course id", course_id)?;
    let status_map = require_map(doc, "status", EXPECTED)?;
    match enrollment(doc, course_id)? {
        Some(e) if e.status == Status::Active => {
            doc.put(&status_map, course_id, Status::Unenrolled.as_str())?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docs::{DocSpec, commit, create};

    fn device(n: u8) -> AutoCommit {
        create(&DocSpec::Learning, [n; 16]).unwrap()
    }

    #[test]
    fn enroll_unenroll_reenroll_keeps_first_date() {
        let mut doc = device(1);
        assert!(enroll(&mut doc, "c1", 100).unwrap());
        assert!(!enroll(&mut doc, "c1", 200).unwrap());
        assert!(unenroll(&mut doc, "c1").unwrap());
        assert!(!unenroll(&mut doc, "c1").unwrap());
        let e = enrollment(&doc, "c1").unwrap().unwrap();
        assert_eq!(e.status, Status::Unenrolled);
        assert!(enroll(&mut doc, "c1", 300).unwrap());
        commit(&mut doc, 300);
        let e = enrollment(&doc, "c1").unwrap().unwrap();
        assert_eq!((e.status, e.enrolled_at), (Status::Active, Some(100)));
        assert!(!unenroll(&mut doc, "never").unwrap());
    }

    #[test]
    fn concurrent_enroll_and_unenroll_add_wins() {
        let mut a = device(1);
        enroll(&mut a, "c1", 100).unwrap();
        commit(&mut a, 100);
        let mut b = device(2);
        b.merge(&mut a).unwrap();
        // a unenrolls while b, concurrently, re-confirms nothing... b enrolls in c2 and
        // unenrolls + re-enrolls c1 (an explicit add).
        unenroll(&mut a, "c1").unwrap();
        commit(&mut a, 200);
        unenroll(&mut b, "c1").unwrap();
        enroll(&mut b, "c1", 250).unwrap();
        commit(&mut b, 250);
        a.merge(&mut b).unwrap();
        b.merge(&mut a).unwrap();
        for doc in [&a, &b] {
            let e = enrollment(doc, "c1").unwrap().unwrap();
            assert_eq!(e.status, Status::Active);
            assert_eq!(e.enrolled_at, Some(100));
        }
    }

    /// `enroll_absent` writes what `enroll` writes, course by course, for courses the index
    /// lacks; a refused id or the cap refuses only its own course.
    #[test]
    fn enroll_absent_matches_enroll_and_refuses_alone() {
        let mut one_by_one = device(1);
        let mut together = device(1);
        enroll(&mut one_by_one, "c1", 100).unwrap();
        enroll(&mut one_by_one, "c3", 300).unwrap();
        let outcomes =
            enroll_absent(&mut together, &[("c1", 100), ("", 200), ("c3", 300)]).unwrap();
        assert!(outcomes[0].is_ok() && outcomes[2].is_ok());
        assert!(matches!(outcomes[1], Err(DocError::InvalidKey { .. })));
        assert_eq!(
            enrollments(&together).unwrap(),
            enrollments(&one_by_one).unwrap()
        );

        let mut full = device(2);
        let courses: Vec<String> = (0..MAX_ENROLLMENTS).map(|n| format!("c{n}")).collect();
        let dates: Vec<(&str, i64)> = courses.iter().map(|c| (c.as_str(), 1)).collect();
        assert!(
            enroll_absent(&mut full, &dates)
                .unwrap()
                .iter()
                .all(Result::is_ok)
        );
        let past = enroll_absent(&mut full, &[("one-more", 1)]).unwrap();
        assert!(matches!(past[0], Err(DocError::InvalidValue { .. })));
        assert_eq!(enrollments(&full).unwrap().len(), MAX_ENROLLMENTS);
    }

    #[test]
    fn two_devices_enroll_offline_earliest_date_wins() {
        let mut a = device(1);
        let mut b = device(2);
        enroll(&mut a, "c1", 500).unwrap();
        commit(&mut a, 500);
        enroll(&mut b, "c1", 400).unwrap();
        commit(&mut b, 400);
        a.merge(&mut b).unwrap();
        let e = enrollment(&a, "c1").unwrap().unwrap();
        assert_eq!((e.status, e.enrolled_at), (Status::Active, Some(400)));
    }
}
