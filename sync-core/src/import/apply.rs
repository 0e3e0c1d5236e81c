//! Applying one user's part of a dump to that user's documents.
//!
//! Each function is an ordinary document edit: the server runs it inside its hub (so the change
//! is stored and fanned out like any other), the browser client inside its own replica. Each is
//! idempotent and never overwrites what the user set through sync (see the module docs of
//! [`super`]).

use std::collections::{BTreeMap, BTreeSet};

use automerge::AutoCommit;
use serde_json::Value as Json;

use super::{
    KeptValue, KeyReport, LegacyEnrollment, LegacySetting, MAX_KEPT_IN_DOCUMENT, Outcome, Report,
};
use crate::docs::course::{self, ProgressOutcome};
use crate::docs::{DocError, learning, preferences};

/// Most raw values one import keeps in a preferences document; the rest stay in the run record.
const MAX_KEPT_VALUES_IN_DOCUMENT: usize = 100;

/// The attempt legacy progress belongs to: the old app knew no restarts.
const LEGACY_ATTEMPT: u32 = 1;

/// One user's part of a dump, ready to apply to their documents.
#[derive(Debug, Clone, PartialEq)]
pub struct UserImport {
    enrollments: BTreeMap<String, LegacyEnrollment>,
    theme: Option<LegacySetting>,
    language: Option<LegacySetting>,
    kept: Vec<KeptValue>,
    catalog_ids: BTreeSet<String>,
}

impl UserImport {
    pub(super) fn new(
        enrollments: BTreeMap<String, LegacyEnrollment>,
        theme: Option<LegacySetting>,
        language: Option<LegacySetting>,
        kept: Vec<KeptValue>,
        catalog_ids: BTreeSet<String>,
    ) -> Self {
        Self {
            enrollments,
            theme,
            language,
            kept,
            catalog_ids,
        }
    }

    /// Only the enrollments: for the other users a shared browser's dump names, whose
    /// settings are not in it.
    pub fn enrollments_only(mut self) -> Self {
        self.theme = None;
        self.language = None;
        self.kept.clear();
        self
    }

    /// The enrollments to import, by course id.
    pub fn enrollments(&self) -> &BTreeMap<String, LegacyEnrollment> {
        &self.enrollments
    }

    /// The raw values this import keeps.
    pub fn kept(&self) -> &[KeptValue] {
        &self.kept
    }

    /// Whether there is anything to apply to the preferences document.
    pub fn has_preferences(&self) -> bool {
        self.theme.is_some() || self.language.is_some() || !self.kept.is_empty()
    }

    /// The courses whose progress document gets something (completed lessons or progress).
    pub fn course_ids(&self) -> Vec<String> {
        self.enrollments
            .values()
            .filter(|e| !e.completed.is_empty() || e.progress.is_some_and(|p| p > 0.0))
            .map(|e| e.course_id.clone())
            .collect()
    }

    /// Applies `theme`, `language` and the kept raw values to the preferences document.
    ///
    /// A setting the user already set through sync is not overwritten. The raw legacy value of
    /// every setting is recorded in the document's legacy map; that record is what makes a
    /// re-import a no-op even after the user changed the setting since.
    pub fn apply_preferences(
        &self,
        doc: &mut AutoCommit,
        now_ms: i64,
    ) -> Result<Vec<KeyReport>, DocError> {
        let mut report = Report::new();
        let mut legacy = preferences::legacy(doc)?;
        for (key, setting) in [("theme", &self.theme), ("language", &self.language)] {
            let Some(setting) = setting else { continue };
            let seen = legacy_holds(&legacy, key, &setting.raw);
            let Some(value) = &setting.value else {
                let note = setting.note.clone().unwrap_or_else(|| "not valid".into());
                keep(doc, &mut legacy, key, &setting.raw)?;
                report.record(
                    key,
                    Outcome::Skipped,
                    Some(format!("{note}; kept raw in the preferences document")),
                );
                continue;
            };
            if seen {
                report.record(key, Outcome::Unchanged, None);
                continue;
            }
            let json = Json::String(value.clone());
            match preferences::get(doc, key)? {
                None => {
                    preferences::set(doc, key, &json, now_ms)?;
                    keep(doc, &mut legacy, key, &setting.raw)?;
                    report.record(key, Outcome::Imported, setting.note.clone());
                }
                Some(current) if current == json => {
                    keep(doc, &mut legacy, key, &setting.raw)?;
                    report.record(key, Outcome::Unchanged, None);
                }
                Some(current) => {
                    keep(doc, &mut legacy, key, &setting.raw)?;
                    report.record(
                        key,
                        Outcome::Skipped,
                        Some(format!(
                            "already set to {current} through sync, which wins; the legacy value {value} is kept raw"
                        )),
                    );
                }
            }
        }
        let mut kept_here = 0;
        // Parsing already counted these values as skipped (in the dump's own report); here
        // they only gain a note saying where they are kept.
        for kept in &self.kept {
            let fits = kept.raw.len() <= MAX_KEPT_IN_DOCUMENT;
            if fits
                && (kept_here < MAX_KEPT_VALUES_IN_DOCUMENT
                    || legacy_holds(&legacy, &kept.key, &kept.raw))
            {
                keep(doc, &mut legacy, &kept.key, &kept.raw)?;
                kept_here += 1;
                report.add(
                    &kept.report_key,
                    Outcome::Skipped,
                    0,
                    Some("kept raw in the preferences document".into()),
                );
            } else {
                report.add(
                    &kept.report_key,
                    Outcome::Skipped,
                    0,
                    Some(format!(
                        "{}: kept in the run record only (too large for a document)",
                        kept.key
                    )),
                );
            }
        }
        Ok(report.into_rows())
    }

    /// Applies the enrollments to the learning index. A course the index already has keeps
    /// its status (an unenroll made through sync stays); a new one is enrolled with the
    /// earliest legacy date, or unenrolled when every legacy source said so.
    pub fn apply_learning(
        &self,
        doc: &mut AutoCommit,
        now_ms: i64,
    ) -> Result<Vec<KeyReport>, DocError> {
        let mut report = Report::new();
        // The index is read once, and the courses it lacks are enrolled together: looking each
        // course up before and again inside `enroll` made this 12% of the import's instructions.
        let known: BTreeSet<String> = learning::enrollments(doc)?
            .into_iter()
            .map(|e| e.course_id)
            .collect();
        let (present, absent): (Vec<&LegacyEnrollment>, Vec<&LegacyEnrollment>) = self
            .enrollments
            .values()
            .partition(|e| known.contains(&e.course_id));
        for e in present {
            for source in &e.sources {
                report.record(source, Outcome::Unchanged, None);
            }
        }
        let dates: Vec<(&str, i64)> = absent
            .iter()
            .map(|e| (e.course_id.as_str(), e.enrolled_at.unwrap_or(now_ms)))
            .collect();
        let enrolled = learning::enroll_absent(doc, &dates)?;
        for (e, enrolled) in absent.into_iter().zip(enrolled) {
            let primary = e.sources.first().copied().unwrap_or("userEnrollments");
            let mut notes = e.notes.clone();
            if !self.catalog_ids.is_empty() && !self.catalog_ids.contains(&e.course_id) {
                notes.push(format!(
                    "{} is not in this dump's catalog; enrolled anyway",
                    e.course_id
                ));
            }
            let enrolled = enrolled.and_then(|()| {
                if e.unenrolled {
                    learning::unenroll(doc, &e.course_id)?;
                }
                Ok(())
            });
            match enrolled {
                Ok(()) => {
                    record_notes(&mut report, primary, Outcome::Imported, notes);
                    for source in e.sources.iter().skip(1) {
                        report.record(source, Outcome::Merged, None);
                    }
                }
                Err(err @ (DocError::InvalidKey { .. } | DocError::InvalidValue { .. })) => {
                    report.record(
                        primary,
                        Outcome::Skipped,
                        Some(format!("{}: {err}", e.course_id)),
                    );
                }
                Err(other) => return Err(other),
            }
        }
        Ok(report.into_rows())
    }

    /// Applies one course's completed lessons and progress to its progress document, in
    /// attempt 1. Progress only goes up; a higher value from sync is kept.
    pub fn apply_course(
        &self,
        course_id: &str,
        doc: &mut AutoCommit,
        now_ms: i64,
    ) -> Result<Vec<KeyReport>, DocError> {
        let mut report = Report::new();
        let Some(e) = self.enrollments.get(course_id) else {
            return Ok(Vec::new());
        };
        let key = format!(
            "{}/progress",
            e.sources.first().copied().unwrap_or("userEnrollments")
        );
        let at = e.last_activity.or(e.enrolled_at).unwrap_or(now_ms);
        let had_state = course::has_progress(doc)?;
        let mut wrote = false;
        let mut notes = Vec::new();
        let lessons: Vec<&str> = e.completed.iter().map(String::as_str).collect();
        let completed = course::complete_lessons_in(doc, Some(LEGACY_ATTEMPT), &lessons, at)?;
        for (lesson, outcome) in lessons.iter().zip(completed) {
            match outcome {
                Ok(true) => wrote = true,
                Ok(false) => {}
                Err(err @ (DocError::InvalidKey { .. } | DocError::InvalidValue { .. })) => {
                    notes.push(format!("{course_id}: lesson {lesson}: {err}"));
                }
                Err(other) => return Err(other),
            }
        }
        if let Some(p) = e.progress {
            match course::set_progress_in(doc, Some(LEGACY_ATTEMPT), p, at)? {
                ProgressOutcome::Raised => wrote = true,
                ProgressOutcome::Kept { current } if current > p => notes.push(format!(
                    "{course_id}: kept the higher progress {current} % from sync (legacy {p} %)"
                )),
                ProgressOutcome::Kept { .. } => {}
            }
        }
        let outcome = match (wrote, had_state) {
            (false, _) => Outcome::Unchanged,
            (true, false) => Outcome::Imported,
            (true, true) => Outcome::Merged,
        };
        record_notes(&mut report, &key, outcome, notes);
        Ok(report.into_rows())
    }
}

fn record_notes(report: &mut Report, key: &str, outcome: Outcome, notes: Vec<String>) {
    report.record(key, outcome, None);
    for note in notes {
        report.add(key, outcome, 0, Some(note));
    }
}

/// Whether the legacy map holds `raw` under `key` or one of its `key@n` slots.
fn legacy_holds(legacy: &BTreeMap<String, String>, key: &str, raw: &str) -> bool {
    legacy.iter().any(|(k, v)| {
        v == raw
            && (k == key
                || k.strip_prefix(key)
                    .and_then(|rest| rest.strip_prefix('@'))
                    .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit())))
    })
}

fn keep(
    doc: &mut AutoCommit,
    legacy: &mut BTreeMap<String, String>,
    key: &str,
    raw: &str,
) -> Result<(), DocError> {
    if legacy_holds(legacy, key, raw) {
        return Ok(());
    }
    // The map after the put is the map before it plus the slot written (`legacy` reads each
    // key's winning value, and the put leaves `raw` the only one): no need to read it again.
    if let Some(slot) = preferences::keep_legacy_in(doc, key, raw)? {
        legacy.insert(slot, raw.to_string());
    }
    Ok(())
}
