//! Documents → the rows the server stores beside them.
//!
//! The document is the source of truth; `user_preferences` and `enrollments` rows are a
//! projection the server writes in the same transaction as the change, so REST, search,
//! analytics and admin queries work on ordinary tables. A learning index and a course progress
//! document each project their own columns of the `enrollments` row.

use std::collections::BTreeMap;

use automerge::ReadDoc;
use serde_json::Value as Json;

use super::{DocError, DocSpec, course, identify, learning, preferences};

/// The `user_preferences` row of a preferences document.
#[derive(Debug, Clone, PartialEq)]
pub struct PreferencesRow {
    /// `theme` if set and valid.
    pub theme: Option<String>,
    /// `language` if set and valid.
    pub language: Option<String>,
    /// Every setting, `theme` and `language` included.
    pub settings: BTreeMap<String, Json>,
}

/// The status columns of one `enrollments` row, from the learning index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentStatusRow {
    /// The course or subject id.
    pub course_id: String,
    /// Enrolled or explicitly unenrolled.
    pub status: learning::Status,
    /// First enrollment time (epoch ms).
    pub enrolled_at: Option<i64>,
}

/// The progress columns of one `enrollments` row, from a course document.
#[derive(Debug, Clone, PartialEq)]
pub struct CourseProgressRow {
    /// The course id.
    pub course_id: String,
    /// Current attempt.
    pub attempt: u32,
    /// Progress of the current attempt, percent.
    pub progress: f64,
    /// Completed lesson ids of the current attempt, sorted.
    pub completed_lessons: Vec<String>,
    /// Seconds spent over all attempts.
    pub time_spent_secs: i64,
    /// Last activity (epoch ms).
    pub last_activity: Option<i64>,
}

/// What a document projects to.
#[derive(Debug, Clone, PartialEq)]
pub enum Projection {
    /// The user's preferences row.
    Preferences(PreferencesRow),
    /// The status columns of every enrollment of the user.
    Learning(Vec<EnrollmentStatusRow>),
    /// The progress columns of one enrollment.
    Course(CourseProgressRow),
}

/// Projects a document by the kind its genesis declares. `Ok(None)` for documents without a
/// LearnSync skeleton (free-form documents project to nothing).
pub fn project<D: ReadDoc>(doc: &D) -> Result<Option<Projection>, DocError> {
    let Some(spec) = identify(doc) else {
        return Ok(None);
    };
    Ok(Some(match spec {
        DocSpec::Preferences => Projection::Preferences(preferences_row(doc)?),
        DocSpec::Learning => Projection::Learning(
            learning::enrollments(doc)?
                .into_iter()
                .map(|e| EnrollmentStatusRow {
                    course_id: e.course_id,
                    status: e.status,
                    enrolled_at: e.enrolled_at,
                })
                .collect(),
        ),
        DocSpec::Course { .. } => Projection::Course(course_row(doc)?),
    }))
}

/// The preferences row of a preferences document.
pub fn preferences_row<D: ReadDoc>(doc: &D) -> Result<PreferencesRow, DocError> {
    // Every setting resolved once; theme and language are two of them.
    let settings = preferences::all(doc)?;
    Ok(PreferencesRow {
        theme: preferences::valid_theme(settings.get("theme")),
        language: preferences::valid_language(settings.get("language")),
        settings,
    })
}

/// The progress columns of a course document.
pub fn course_row<D: ReadDoc>(doc: &D) -> Result<CourseProgressRow, DocError> {
    let p = course::read(doc)?;
    Ok(CourseProgressRow {
        course_id: p.course_id,
        attempt: p.attempt,
        progress: p.progress,
        completed_lessons: p.completed.into_keys().collect(),
        time_spent_secs: p.time_spent_secs,
        last_activity: p.last_activity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docs::{DocSpec, commit, create};
    use automerge::AutoCommit;
    use serde_json::json;

    #[test]
    fn projects_each_kind() {
        let mut prefs = create(&DocSpec::Preferences, [1; 16]).unwrap();
        preferences::set(&mut prefs, "theme", &json!("dark"), 1).unwrap();
        commit(&mut prefs, 1);
        match project(&prefs).unwrap() {
            Some(Projection::Preferences(row)) => {
                assert_eq!(row.theme.as_deref(), Some("dark"));
                assert_eq!(row.language, None);
                assert_eq!(row.settings.get("theme"), Some(&json!("dark")));
            }
            other => panic!("unexpected {other:?}"),
        }

        let mut idx = create(&DocSpec::Learning, [1; 16]).unwrap();
        learning::enroll(&mut idx, "c2", 5).unwrap();
        learning::enroll(&mut idx, "c1", 6).unwrap();
        commit(&mut idx, 6);
        match project(&idx).unwrap() {
            Some(Projection::Learning(rows)) => {
                assert_eq!(rows.len(), 2);
                assert_eq!(rows[0].course_id, "c1");
                assert_eq!(rows[0].enrolled_at, Some(6));
            }
            other => panic!("unexpected {other:?}"),
        }

        let mut c = create(
            &DocSpec::Course {
                course_id: "c1".into(),
            },
            [1; 16],
        )
        .unwrap();
        course::complete_lesson(&mut c, "b", 9).unwrap();
        course::complete_lesson(&mut c, "a", 9).unwrap();
        commit(&mut c, 9);
        match project(&c).unwrap() {
            Some(Projection::Course(row)) => {
                assert_eq!(row.completed_lessons, ["a", "b"]);
                assert_eq!(row.last_activity, Some(9));
            }
            other => panic!("unexpected {other:?}"),
        }

        assert_eq!(project(&AutoCommit::new()).unwrap(), None);
    }
}
