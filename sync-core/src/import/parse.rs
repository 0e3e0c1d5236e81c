//! Reading a whole dump into a [`Dump`]. Keys are handled in a fixed order (catalog, then
//! enrollments, then the rest), so the result never depends on the order of the dump's keys.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value as Json};
use sha2::{Digest, Sha256};

use super::values::{decode, field, id, progress, setting, text, timestamp};
use super::{
    CatalogEntry, CatalogKind, CatalogStatus, Dump, ImportError, KNOWN_KEYS, KeptValue,
    LegacyEnrollment, LegacyLesson, LegacyLog, LegacyReport, LegacySetting, LogSeverity,
    MAX_DUMP_BYTES, Outcome, ReportState,
};
use crate::docs::preferences::{THEMES, is_language_tag};

/// Reads a `JSON.stringify(localStorage)` dump. Fails only when the text is not a JSON object;
/// every problem inside it is reported per key and the value kept.
pub fn parse(text: &str) -> Result<Dump, ImportError> {
    if text.len() > MAX_DUMP_BYTES {
        return Err(ImportError::TooLarge);
    }
    let top: Json = serde_json::from_str(text).map_err(|e| ImportError::NotJson(e.to_string()))?;
    let Json::Object(map) = top else {
        return Err(ImportError::NotAnObject(kind_name(&top)));
    };
    let mut p = Parser::default();
    let mut keys: Vec<String> = map.keys().cloned().collect();
    keys.sort();
    p.dump.keys = keys;
    for key in KNOWN_KEYS {
        if let Some(value) = map.get(key) {
            p.key(key, value);
        }
    }
    for key in &p.dump.keys.clone() {
        if !KNOWN_KEYS.contains(&key.as_str()) {
            let raw = raw_text(&map[key]);
            p.keep(
                key,
                key,
                raw,
                "not a key of the old learnMode app; kept as it was".into(),
            );
        }
    }
    p.finish_reports();
    p.note_empty_keys();
    Ok(p.dump)
}

#[derive(Default)]
struct Parser {
    dump: Dump,
    catalog_seen: BTreeMap<String, usize>,
    log_seen: BTreeSet<String>,
    report_seen: BTreeMap<String, usize>,
    decisions: Vec<(String, Map<String, Json>, Json)>,
}

fn kind_name(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// A `localStorage` value is a string; a dump made by another tool may hold JSON directly.
fn raw_text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Parser {
    fn key(&mut self, key: &'static str, value: &Json) {
        let raw = raw_text(value);
        match key {
            "theme" | "language" => self.setting(key, &raw),
            _ => {
                let decoded = match value {
                    Json::String(s) => decode(s),
                    other => Ok(other.clone()),
                };
                match decoded {
                    Err(reason) => self.keep(key, key, raw, reason),
                    Ok(v) => match key {
                        "learnModeCourses" => self.catalog(key, v, CatalogKind::Course),
                        "learnModeSubjects" | "adminSubjects" => {
                            self.catalog(key, v, CatalogKind::Subject)
                        }
                        "userEnrollments" => self.user_enrollments(key, v),
                        "courseEnrollments" | "subjectEnrollments" => {
                            self.course_enrollments(key, v)
                        }
                        "moderationQueue" => self.moderation_queue(key, v),
                        "moderationData" => self.moderation_data(key, v),
                        "errorLog" => self.error_log(key, v),
                        _ => self.keep(key, key, raw, "not a key of the old app".into()),
                    },
                }
            }
        }
    }

    /// Keeps a raw value that could not be mapped, and reports it skipped.
    fn keep(&mut self, report_key: &str, key: &str, raw: String, reason: String) {
        self.dump
            .report
            .record(report_key, Outcome::Skipped, Some(reason.clone()));
        self.dump.kept.push(KeptValue {
            key: key.to_string(),
            report_key: report_key.to_string(),
            raw,
            reason,
        });
    }

    fn keep_json(&mut self, report_key: &str, key: String, value: &Json, reason: String) {
        self.keep(report_key, &key, value.to_string(), reason);
    }

    fn note(&mut self, key: &str, outcome: Outcome, note: String) {
        self.dump.report.add(key, outcome, 0, Some(note));
    }

    /// Reports keys that gave nothing at all (an empty list, an empty object), so every key of
    /// the dump appears in the report.
    fn note_empty_keys(&mut self) {
        let d = &self.dump;
        let empty: Vec<String> = d
            .keys
            .iter()
            .filter(|key| {
                let key = key.as_str();
                !(d.report.rows().iter().any(|r| r.key == key)
                    || d.catalog.iter().any(|c| c.source == key)
                    || (key == "moderationQueue" && !d.reports.is_empty())
                    || (key == "moderationData"
                        && d.reports.iter().any(|r| r.extra.contains_key("decidedIn")))
                    || (key == "errorLog" && !d.logs.is_empty())
                    || (key == "theme" && d.theme.is_some())
                    || (key == "language" && d.language.is_some())
                    || d.enrollments
                        .values()
                        .flat_map(|m| m.values())
                        .any(|e| e.sources.contains(&key)))
            })
            .cloned()
            .collect();
        for key in empty {
            self.note(&key, Outcome::Unchanged, "empty: nothing to import".into());
        }
    }

    // ---- settings ------------------------------------------------------------------------

    fn setting(&mut self, key: &'static str, raw: &str) {
        let (value, quoted) = setting(raw);
        let mut note = quoted.then(|| format!("JSON-quoted value read as {value}"));
        let valid = match key {
            "theme" => {
                let lower = value.to_ascii_lowercase();
                THEMES.contains(&lower.as_str()).then_some(lower)
            }
            _ => {
                let tag = value.replace('_', "-");
                if tag != value {
                    note = Some(format!("{value} read as the language tag {tag}"));
                }
                is_language_tag(&tag).then_some(tag)
            }
        };
        if valid.is_none() {
            note = Some(match key {
                "theme" => format!("{value:?} is not a theme (light, dark, system)"),
                _ => format!("{value:?} is not a language tag"),
            });
        }
        let setting = LegacySetting {
            raw: raw.to_string(),
            value: valid,
            note,
        };
        match key {
            "theme" => self.dump.theme = Some(setting),
            _ => self.dump.language = Some(setting),
        }
    }

    // ---- catalog -------------------------------------------------------------------------

    fn catalog(&mut self, key: &'static str, value: Json, kind: CatalogKind) {
        let items = match entries(value, &["title", "name", "lessons"]) {
            Ok(items) => items,
            Err(v) => {
                return self.keep_json(
                    key,
                    key.into(),
                    &v,
                    "expected a list of catalog entries".into(),
                );
            }
        };
        if items.is_empty() {
            self.note(key, Outcome::Unchanged, "empty".into());
        }
        for (i, (fallback_id, item)) in items.into_iter().enumerate() {
            let Json::Object(obj) = item else {
                self.keep_json(
                    key,
                    format!("{key}[{i}]"),
                    &item,
                    format!("entry {i} is not an object"),
                );
                continue;
            };
            let Some(entry_id) = field(&obj, &["id", "courseId", "subjectId", "_id"])
                .and_then(id)
                .or(fallback_id)
            else {
                self.keep_json(
                    key,
                    format!("{key}[{i}]"),
                    &Json::Object(obj),
                    format!("entry {i} has no usable id"),
                );
                continue;
            };
            let entry = self.catalog_entry(key, kind, entry_id.clone(), obj.clone());
            match self.catalog_seen.get(&entry_id) {
                Some(&at) if self.dump.catalog[at] == entry => {
                    self.note(key, Outcome::Unchanged, format!("{entry_id} is listed twice"));
                }
                Some(_) => self.keep_json(
                    key,
                    format!("{key}[{i}]"),
                    &Json::Object(obj),
                    format!("{entry_id} appears again with different content; the first is imported, this one kept"),
                ),
                None => {
                    self.catalog_seen
                        .insert(entry_id, self.dump.catalog.len());
                    self.dump.catalog.push(entry);
                }
            }
        }
    }

    fn catalog_entry(
        &mut self,
        key: &'static str,
        kind: CatalogKind,
        entry_id: String,
        mut obj: Map<String, Json>,
    ) -> CatalogEntry {
        for k in ["id", "courseId", "subjectId", "_id"] {
            obj.remove(k);
        }
        let title = take_text(&mut obj, &["title", "name"]).unwrap_or_else(|| {
            self.note(
                key,
                Outcome::Imported,
                format!("{entry_id} has no title; its id is used"),
            );
            entry_id.clone()
        });
        let description = take_text(&mut obj, &["description", "desc"]).unwrap_or_default();
        let category = take_text(&mut obj, &["category"]);
        let level = take_text(&mut obj, &["level", "difficulty"]);
        let default_status = CatalogStatus::Published;
        let status = match obj.get("status").and_then(text) {
            None => default_status,
            Some(s) => match catalog_status(&s) {
                Some(status) => {
                    obj.remove("status");
                    status
                }
                None => {
                    self.note(
                        key,
                        Outcome::Imported,
                        format!("{entry_id}: unknown status {s:?} read as published (kept)"),
                    );
                    default_status
                }
            },
        };
        let author = match take(
            &mut obj,
            &["authorId", "author", "createdBy", "teacherId", "ownerId"],
        ) {
            None => None,
            Some(v) => match id(&v) {
                Some(author) => Some(author),
                None => {
                    obj.insert("author".into(), v);
                    None
                }
            },
        };
        let created_at =
            take(&mut obj, &["createdAt", "created_at", "created", "date"]).and_then(|v| {
                timestamp(&v).or_else(|| {
                    obj.insert("createdAt".into(), v);
                    None
                })
            });
        let mut lessons = Vec::new();
        if let Some(list) = obj.remove("lessons") {
            let mut unmapped = Vec::new();
            let mut seen = BTreeSet::new();
            match list {
                Json::Array(items) => {
                    for item in items {
                        let lesson = match &item {
                            Json::Object(l) => {
                                field(l, &["id", "lessonId"]).and_then(id).map(|lid| {
                                    let title = field(l, &["title", "name"])
                                        .and_then(text)
                                        .unwrap_or_else(|| lid.clone());
                                    LegacyLesson { id: lid, title }
                                })
                            }
                            other => id(other).map(|lid| LegacyLesson {
                                title: lid.clone(),
                                id: lid,
                            }),
                        };
                        match lesson {
                            Some(l) if seen.insert(l.id.clone()) => lessons.push(l),
                            _ => unmapped.push(item),
                        }
                    }
                }
                other => unmapped.push(other),
            }
            if !unmapped.is_empty() {
                self.note(
                    key,
                    Outcome::Imported,
                    format!("{entry_id}: {} lesson entries without a usable or unique id kept in the entry's extra fields", unmapped.len()),
                );
                obj.insert("unmappedLessons".into(), Json::Array(unmapped));
            }
        }
        CatalogEntry {
            source: key,
            id: entry_id,
            kind,
            title,
            description,
            category,
            level,
            status,
            author,
            lessons,
            created_at,
            extra: obj,
        }
    }

    // ---- enrollments ---------------------------------------------------------------------

    fn user_enrollments(&mut self, key: &'static str, value: Json) {
        match value {
            // { "<user>": [ {courseId, …}, … ] } or { "<user>": { "<course>": {…} } }
            Json::Object(users) if !looks_like_entry(&users, &["courseId", "course_id"]) => {
                for (user, list) in users {
                    let user_id = id(&Json::String(user.clone()));
                    let items = match list {
                        Json::Array(items) => items.into_iter().map(|i| (None, i)).collect(),
                        Json::Object(map) if looks_like_entry(&map, &["courseId", "course_id"]) => {
                            vec![(None, Json::Object(map))]
                        }
                        Json::Object(map) => map.into_iter().map(|(k, v)| (Some(k), v)).collect(),
                        other => vec![(None, other)],
                    };
                    for (i, (course_key, item)) in items.into_iter().enumerate() {
                        self.enrollment_item(
                            key,
                            &format!("{key}.{user}[{i}]"),
                            user_id.clone(),
                            course_key,
                            item,
                        );
                    }
                }
            }
            // [ {userId, courseId, …}, … ] or a single entry
            Json::Array(items) => {
                for (i, item) in items.into_iter().enumerate() {
                    let user_id = match &item {
                        Json::Object(o) => field(o, &["userId", "user_id", "user"]).and_then(id),
                        _ => None,
                    };
                    self.enrollment_item(key, &format!("{key}[{i}]"), user_id, None, item);
                }
            }
            Json::Object(single) => {
                let user_id = field(&single, &["userId", "user_id", "user"]).and_then(id);
                self.enrollment_item(key, key, user_id, None, Json::Object(single));
            }
            other => self.keep_json(
                key,
                key.into(),
                &other,
                "expected enrollments per user".into(),
            ),
        }
    }

    fn course_enrollments(&mut self, key: &'static str, value: Json) {
        match value {
            // { "<course>": [ "<user>", {userId, enrolledAt}, … ] }
            Json::Object(courses) => {
                for (course, list) in courses {
                    let items = match list {
                        Json::Array(items) => items,
                        other => vec![other],
                    };
                    let mut listed = BTreeSet::new();
                    for (i, item) in items.into_iter().enumerate() {
                        let item = match item {
                            Json::Object(mut o) => {
                                if field(&o, &["courseId", "course_id", "subjectId"]).is_none() {
                                    o.insert("courseId".into(), Json::String(course.clone()));
                                }
                                Json::Object(o)
                            }
                            user => {
                                let Some(user_id) = id(&user) else {
                                    self.keep_json(
                                        key,
                                        format!("{key}.{course}[{i}]"),
                                        &user,
                                        format!("entry {i} of {course} names no user"),
                                    );
                                    continue;
                                };
                                if !listed.insert(user_id.clone()) {
                                    self.note(
                                        key,
                                        Outcome::Unchanged,
                                        format!("{user_id} listed twice in {course}"),
                                    );
                                    continue;
                                }
                                let mut o = Map::new();
                                o.insert("courseId".into(), Json::String(course.clone()));
                                o.insert("userId".into(), Json::String(user_id));
                                Json::Object(o)
                            }
                        };
                        let user_id = match &item {
                            Json::Object(o) => {
                                field(o, &["userId", "user_id", "user"]).and_then(id)
                            }
                            _ => None,
                        };
                        self.enrollment_item(
                            key,
                            &format!("{key}.{course}[{i}]"),
                            user_id,
                            None,
                            item,
                        );
                    }
                }
            }
            Json::Array(items) => self.user_enrollments(key, Json::Array(items)),
            other => self.keep_json(key, key.into(), &other, "expected users per course".into()),
        }
    }

    fn enrollment_item(
        &mut self,
        key: &'static str,
        path: &str,
        user: Option<String>,
        course_key: Option<String>,
        item: Json,
    ) {
        let mut obj = match item {
            Json::Object(o) => o,
            // A bare course id in a user's list.
            other => match id(&other) {
                Some(course) => {
                    let mut o = Map::new();
                    o.insert("courseId".into(), Json::String(course));
                    o
                }
                None => {
                    return self.keep_json(
                        key,
                        path.into(),
                        &other,
                        format!("{path} is not an enrollment"),
                    );
                }
            },
        };
        let original = Json::Object(obj.clone());
        let course = take(
            &mut obj,
            &["courseId", "course_id", "subjectId", "course", "id"],
        )
        .and_then(|v| id(&v))
        .or(course_key.and_then(|k| id(&Json::String(k))));
        let Some(course) = course else {
            return self.keep_json(
                key,
                path.into(),
                &original,
                format!("{path} names no course"),
            );
        };
        for k in ["userId", "user_id", "user"] {
            obj.remove(k);
        }
        let mut notes = Vec::new();
        let enrolled_at = take_time(
            &mut obj,
            &[
                "enrolledAt",
                "enrolled_at",
                "enrollDate",
                "startedAt",
                "date",
            ],
            &mut notes,
            &course,
        );
        let last_activity = take_time(
            &mut obj,
            &[
                "lastAccessed",
                "lastActivity",
                "lastAccess",
                "updatedAt",
                "lastVisited",
            ],
            &mut notes,
            &course,
        );
        let progress_value = take(&mut obj, &["progress", "percent", "completion"]);
        let progress = match progress_value {
            None => None,
            Some(v) => match progress(&v) {
                Some(p) => {
                    if !matches!(&v, Json::Number(n) if n.as_f64() == Some(p)) {
                        notes.push(format!("{course}: progress {v} read as {p} %"));
                    }
                    Some(p)
                }
                None => {
                    notes.push(format!(
                        "{course}: progress {v} is not 0–1 or 0–100; kept raw"
                    ));
                    obj.insert("progress".into(), v);
                    None
                }
            },
        };
        let mut completed = BTreeSet::new();
        if let Some(list) = take(
            &mut obj,
            &["completedLessons", "completed", "lessonsCompleted"],
        ) {
            let items = match list {
                Json::Array(items) => items,
                other => vec![other],
            };
            let mut unmapped = Vec::new();
            for l in items {
                match id(&l) {
                    Some(lesson) => {
                        if !completed.insert(lesson.clone()) {
                            notes.push(format!("{course}: lesson {lesson} listed twice"));
                        }
                    }
                    None => unmapped.push(l),
                }
            }
            if !unmapped.is_empty() {
                obj.insert("unmappedLessons".into(), Json::Array(unmapped));
            }
        }
        let mut unenrolled = false;
        if let Some(status) = obj.get("status").and_then(text) {
            match status.to_ascii_lowercase().as_str() {
                "active" | "enrolled" | "in_progress" | "in-progress" | "started" | "completed"
                | "done" | "finished" => {
                    obj.remove("status");
                }
                "unenrolled" | "dropped" | "cancelled" | "canceled" | "inactive" | "left"
                | "removed" => {
                    unenrolled = true;
                    obj.remove("status");
                }
                _ => notes.push(format!(
                    "{course}: unknown status {status:?} kept raw; enrolled"
                )),
            }
        }
        let entry = LegacyEnrollment {
            course_id: course.clone(),
            sources: vec![key],
            enrolled_at,
            progress,
            completed,
            last_activity,
            unenrolled,
            extra: Map::new(),
            notes,
        };
        if !obj.is_empty() {
            let who = user.as_deref().unwrap_or("-");
            let extra = Json::Object(obj);
            self.keep_json(
                key,
                format!("{key}/{who}/{course}"),
                &extra,
                format!(
                    "{course}: fields with no place in the documents ({}) kept raw",
                    field_names(&extra)
                ),
            );
        }
        let courses = self.dump.enrollments.entry(user).or_default();
        match courses.get_mut(&course) {
            Some(existing) => merge_enrollment(existing, entry),
            None => {
                courses.insert(course, entry);
            }
        }
    }

    // ---- moderation ----------------------------------------------------------------------

    fn moderation_queue(&mut self, key: &'static str, value: Json) {
        let items = match entries(value, &["courseId", "reason"]) {
            Ok(items) => items,
            Err(v) => {
                return self.keep_json(key, key.into(), &v, "expected a list of reports".into());
            }
        };
        if items.is_empty() {
            self.note(key, Outcome::Unchanged, "empty".into());
        }
        for (i, (fallback_id, item)) in items.into_iter().enumerate() {
            let Json::Object(mut obj) = item else {
                self.keep_json(
                    key,
                    format!("{key}[{i}]"),
                    &item,
                    format!("entry {i} is not an object"),
                );
                continue;
            };
            let original = Json::Object(obj.clone());
            let legacy_id = take(&mut obj, &["id", "reportId", "_id"])
                .and_then(|v| id(&v))
                .or(fallback_id)
                .unwrap_or_else(|| format!("h:{}", fingerprint(&original)));
            let Some(course_id) = take(&mut obj, &["courseId", "course_id", "course", "subjectId"])
                .and_then(|v| id(&v))
            else {
                self.keep_json(
                    key,
                    format!("{key}[{i}]"),
                    &original,
                    format!("report {legacy_id} names no course"),
                );
                continue;
            };
            let reason = take_text(&mut obj, &["reason", "type", "category"])
                .unwrap_or_else(|| "(no reason given)".into());
            let details = take_text(
                &mut obj,
                &["details", "description", "comment", "message", "text"],
            );
            let reporter = take(
                &mut obj,
                &["reportedBy", "reporterId", "reporter", "userId", "user"],
            )
            .and_then(|v| id(&v));
            let created_at = take(
                &mut obj,
                &["createdAt", "created_at", "date", "timestamp", "reportedAt"],
            )
            .and_then(|v| {
                timestamp(&v).or_else(|| {
                    obj.insert("createdAt".into(), v);
                    None
                })
            });
            let state = match obj.get("status").and_then(text) {
                None => ReportState::Pending,
                Some(s) => match report_state(&s) {
                    Some(st) => {
                        obj.remove("status");
                        st
                    }
                    None => ReportState::Pending,
                },
            };
            let report = LegacyReport {
                legacy_id: legacy_id.clone(),
                course_id,
                reason,
                details,
                reporter,
                state,
                note: None,
                resolved_by: None,
                resolved_at: None,
                created_at,
                extra: obj,
            };
            match self.report_seen.get(&legacy_id) {
                Some(&at) if self.dump.reports[at] == report => {
                    self.note(
                        key,
                        Outcome::Unchanged,
                        format!("report {legacy_id} listed twice"),
                    );
                }
                Some(_) => self.keep_json(
                    key,
                    format!("{key}[{i}]"),
                    &original,
                    format!("report {legacy_id} appears again with different content; kept"),
                ),
                None => {
                    self.report_seen.insert(legacy_id, self.dump.reports.len());
                    self.dump.reports.push(report);
                }
            }
        }
    }

    fn moderation_data(&mut self, key: &'static str, value: Json) {
        let items = match entries(value, &["status", "decision", "reportId"]) {
            Ok(items) => items,
            Err(v) => {
                return self.keep_json(key, key.into(), &v, "expected decisions per report".into());
            }
        };
        if items.is_empty() {
            self.note(key, Outcome::Unchanged, "empty".into());
        }
        for (i, (report_key, item)) in items.into_iter().enumerate() {
            let Json::Object(obj) = item else {
                self.keep_json(
                    key,
                    format!("{key}[{i}]"),
                    &item,
                    format!("entry {i} is not an object"),
                );
                continue;
            };
            let Some(report_id) = field(&obj, &["reportId", "id"]).and_then(id).or(report_key)
            else {
                self.keep_json(
                    key,
                    format!("{key}[{i}]"),
                    &Json::Object(obj),
                    format!("decision {i} names no report"),
                );
                continue;
            };
            let original = Json::Object(obj.clone());
            self.decisions.push((report_id, obj, original));
        }
    }

    /// Applies `moderationData` decisions to the reports they name (after both keys are read).
    fn finish_reports(&mut self) {
        for (report_id, mut obj, original) in std::mem::take(&mut self.decisions) {
            let key = "moderationData";
            let Some(&at) = self.report_seen.get(&report_id) else {
                self.keep_json(
                    key,
                    format!("{key}.{report_id}"),
                    &original,
                    format!(
                        "decision for report {report_id}, which is not in moderationQueue; kept"
                    ),
                );
                continue;
            };
            for k in ["reportId", "id"] {
                obj.remove(k);
            }
            let state = take_text(&mut obj, &["status", "decision", "action", "resolution"]);
            let resolved_by = take(
                &mut obj,
                &["resolvedBy", "moderator", "moderatorId", "by", "reviewedBy"],
            )
            .and_then(|v| id(&v));
            let note = take_text(&mut obj, &["note", "comment", "notes", "reason"]);
            let resolved_at = take(
                &mut obj,
                &["resolvedAt", "reviewedAt", "date", "at", "timestamp"],
            )
            .and_then(|v| {
                timestamp(&v).or_else(|| {
                    obj.insert("resolvedAt".into(), v);
                    None
                })
            });
            let report = &mut self.dump.reports[at];
            let state = match state.as_deref().map(report_state) {
                Some(Some(st)) => st,
                Some(None) => {
                    if let Some(s) = state {
                        obj.insert("status".into(), Json::String(s));
                    }
                    ReportState::Resolved
                }
                None => ReportState::Resolved,
            };
            report.state = state;
            report.resolved_by = resolved_by;
            report.note = note;
            report.resolved_at = resolved_at;
            if !obj.is_empty() {
                report.extra.insert("decision".into(), Json::Object(obj));
            }
            report
                .extra
                .insert("decidedIn".into(), Json::String(key.into()));
        }
    }

    // ---- logs ----------------------------------------------------------------------------

    fn error_log(&mut self, key: &'static str, value: Json) {
        let items = match value {
            Json::Array(items) => items,
            Json::Null => Vec::new(),
            other => vec![other],
        };
        if items.is_empty() {
            self.note(key, Outcome::Unchanged, "empty".into());
        }
        for item in items {
            let print = fingerprint(&item);
            if !self.log_seen.insert(print.clone()) {
                self.note(
                    key,
                    Outcome::Unchanged,
                    "an entry is listed twice; imported once".into(),
                );
                continue;
            }
            let (message, level, created_at, context) = match item {
                Json::Object(mut obj) => {
                    let message = take_text(
                        &mut obj,
                        &["message", "msg", "error", "text", "description"],
                    )
                    .unwrap_or_else(|| "(no message)".into());
                    let level = match obj
                        .get("level")
                        .or_else(|| obj.get("severity"))
                        .and_then(text)
                    {
                        None => LogSeverity::Error,
                        Some(l) => match l.to_ascii_lowercase().as_str() {
                            "error" | "err" | "fatal" | "critical" => LogSeverity::Error,
                            "warn" | "warning" => LogSeverity::Warn,
                            "info" | "log" | "notice" => LogSeverity::Info,
                            "debug" | "trace" | "verbose" => LogSeverity::Debug,
                            _ => LogSeverity::Error,
                        },
                    };
                    if level_known(&obj) {
                        obj.remove("level");
                        obj.remove("severity");
                    }
                    let created_at =
                        take(&mut obj, &["timestamp", "time", "date", "createdAt", "at"]).and_then(
                            |v| {
                                timestamp(&v).or_else(|| {
                                    obj.insert("timestamp".into(), v);
                                    None
                                })
                            },
                        );
                    (message, level, created_at, obj)
                }
                Json::String(s) => (s, LogSeverity::Error, None, Map::new()),
                other => (other.to_string(), LogSeverity::Error, None, Map::new()),
            };
            self.dump.logs.push(LegacyLog {
                fingerprint: print,
                level,
                message,
                created_at,
                context,
            });
        }
    }
}

fn level_known(obj: &Map<String, Json>) -> bool {
    obj.get("level")
        .or_else(|| obj.get("severity"))
        .and_then(text)
        .is_some_and(|l| {
            matches!(
                l.to_ascii_lowercase().as_str(),
                "error"
                    | "err"
                    | "fatal"
                    | "critical"
                    | "warn"
                    | "warning"
                    | "info"
                    | "log"
                    | "notice"
                    | "debug"
                    | "trace"
                    | "verbose"
            )
        })
}

fn catalog_status(s: &str) -> Option<CatalogStatus> {
    match s.to_ascii_lowercase().as_str() {
        "draft" => Some(CatalogStatus::Draft),
        "published" | "active" | "public" | "live" => Some(CatalogStatus::Published),
        "archived" | "deleted" | "hidden" | "inactive" => Some(CatalogStatus::Archived),
        _ => None,
    }
}

fn report_state(s: &str) -> Option<ReportState> {
    match s.to_ascii_lowercase().as_str() {
        "pending" | "open" | "new" | "queued" => Some(ReportState::Pending),
        "resolved" | "approved" | "removed" | "done" | "accepted" | "closed" | "fixed" => {
            Some(ReportState::Resolved)
        }
        "dismissed" | "rejected" | "ignored" | "declined" | "invalid" => {
            Some(ReportState::Dismissed)
        }
        _ => None,
    }
}

/// Merges a second mention of the same user's enrollment: add wins, earliest enrollment,
/// highest progress, union of lessons, latest activity.
pub(super) fn merge_enrollment(into: &mut LegacyEnrollment, other: LegacyEnrollment) {
    for s in other.sources {
        if !into.sources.contains(&s) {
            into.sources.push(s);
        }
    }
    into.enrolled_at = min_opt(into.enrolled_at, other.enrolled_at);
    into.progress = match (into.progress, other.progress) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    into.completed.extend(other.completed);
    into.last_activity = into.last_activity.max(other.last_activity);
    into.unenrolled = into.unenrolled && other.unenrolled;
    for n in other.notes {
        if !into.notes.contains(&n) {
            into.notes.push(n);
        }
    }
    for (k, v) in other.extra {
        into.extra.entry(k).or_insert(v);
    }
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A list of entries: an array, or an object mapping ids to entries (the id is the fallback
/// when an entry has none), or a single entry (an object with one of `entry_fields`).
fn entries(value: Json, entry_fields: &[&str]) -> Result<Vec<(Option<String>, Json)>, Json> {
    match value {
        Json::Array(items) => Ok(items.into_iter().map(|i| (None, i)).collect()),
        Json::Object(map) if looks_like_entry(&map, entry_fields) => {
            Ok(vec![(None, Json::Object(map))])
        }
        Json::Object(map) => Ok(map
            .into_iter()
            .map(|(k, v)| (id(&Json::String(k)), v))
            .collect()),
        Json::Null => Ok(Vec::new()),
        other => Err(other),
    }
}

fn looks_like_entry(map: &Map<String, Json>, entry_fields: &[&str]) -> bool {
    entry_fields
        .iter()
        .any(|f| map.get(*f).is_some_and(|v| !v.is_object()))
}

fn take(obj: &mut Map<String, Json>, names: &[&str]) -> Option<Json> {
    let name = names
        .iter()
        .find(|n| obj.get(**n).is_some_and(|v| !v.is_null()))?;
    let value = obj.remove(*name);
    for n in names {
        if obj.get(*n).is_some_and(Json::is_null) {
            obj.remove(*n);
        }
    }
    value
}

fn take_text(obj: &mut Map<String, Json>, names: &[&str]) -> Option<String> {
    let value = take(obj, names)?;
    match text(&value) {
        Some(t) => Some(t),
        None => {
            // Not text (an object, an empty string): keep it where it was.
            if let Some(name) = names.first() {
                obj.insert((*name).to_string(), value);
            }
            None
        }
    }
}

fn take_time(
    obj: &mut Map<String, Json>,
    names: &[&str],
    notes: &mut Vec<String>,
    course: &str,
) -> Option<i64> {
    let value = take(obj, names)?;
    match timestamp(&value) {
        Some(t) => Some(t),
        None => {
            notes.push(format!("{course}: {value} is not a date; kept raw"));
            if let Some(name) = names.first() {
                obj.insert((*name).to_string(), value);
            }
            None
        }
    }
}

fn field_names(v: &Json) -> String {
    match v {
        Json::Object(o) => o.keys().cloned().collect::<Vec<_>>().join(", "),
        _ => String::new(),
    }
}

/// A fingerprint of a JSON value that does not depend on key order (serde_json's map order
/// depends on crate features, which differ between the server and the wasm build).
pub(super) fn fingerprint(value: &Json) -> String {
    let mut canonical = String::new();
    write_canonical(value, &mut canonical);
    let digest = Sha256::digest(canonical.as_bytes());
    hex::encode(&digest[..16])
}

fn write_canonical(value: &Json, out: &mut String) {
    match value {
        Json::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Json::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}
