//! Generated legacy dumps, with the mess of real ones, for tests, the CLI's bulk test and the
//! import benchmark. Deterministic: the same seed gives the same dump on every machine.

use serde_json::{Value as Json, json};

/// The shape of generated dumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Size of the shared catalog the dumps draw from (ids `c-0` …, the same in every dump, so
    /// a bulk import merges catalogs).
    pub catalog: usize,
    /// Enrollments per dump (at most `catalog`).
    pub enrollments: usize,
    /// Lessons per course.
    pub lessons: usize,
    /// Whether to include the messy shapes: invalid JSON, unknown keys, quoted strings,
    /// duplicates.
    pub messy: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            catalog: 20,
            enrollments: 5,
            lessons: 6,
            messy: true,
        }
    }
}

/// splitmix64: tiny, good enough for test data, and identical everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// The legacy user id of generated dump `seed`.
pub fn user_id(seed: u64) -> String {
    format!("u-gen-{seed}")
}

/// Generates the dump (`JSON.stringify(localStorage)` text) of the browser of user
/// [`user_id`]`(seed)`.
pub fn dump(seed: u64, options: &Options) -> String {
    let mut rng = Rng(seed ^ 0x005E_ED0F_1EA5);
    let user = user_id(seed);
    let base_ms: i64 = 1_700_000_000_000;
    let mut map = serde_json::Map::new();

    // The catalog: a prefix of the shared catalog, ids as numbers or strings.
    let catalog_len = options.catalog.max(1);
    let shown = 1 + rng.below(catalog_len);
    let courses: Vec<Json> = (0..shown).map(|i| course(i, options.lessons)).collect();
    map.insert(
        "learnModeCourses".into(),
        Json::String(Json::Array(courses).to_string()),
    );
    if rng.chance(30) {
        let subjects = json!([{ "id": "s-gen", "name": "Generated subject", "courses": [0, 1] }]);
        map.insert(
            "learnModeSubjects".into(),
            Json::String(subjects.to_string()),
        );
    }

    // Enrollments, in the three overlapping keys.
    let mut user_list = Vec::new();
    let mut by_course = serde_json::Map::new();
    let mut chosen = Vec::new();
    for _ in 0..options.enrollments.min(catalog_len) {
        let c = rng.below(catalog_len);
        if chosen.contains(&c) {
            continue;
        }
        chosen.push(c);
        let course_id: Json = if c.is_multiple_of(2) {
            json!(c)
        } else {
            json!(format!("c-{c}"))
        };
        let enrolled = base_ms + rng.below(10_000_000) as i64 * 1000;
        let enrolled_at: Json = match rng.below(3) {
            0 => json!(enrolled),
            1 => json!(iso(enrolled)),
            _ => json!(enrolled / 1000),
        };
        let done = rng.below(options.lessons + 1);
        let lessons: Vec<Json> = (0..done).map(|l| json!(format!("l{l}"))).collect();
        let fraction = done as f64 / options.lessons.max(1) as f64;
        let progress: Json = match rng.below(3) {
            0 => json!((fraction * 100.0).round() / 100.0),
            1 => json!((fraction * 100.0).round() as i64),
            _ => json!(format!("{}", (fraction * 100.0).round() as i64)),
        };
        let mut entry = json!({
            "courseId": course_id,
            "enrolledAt": enrolled_at,
            "progress": progress,
            "completedLessons": lessons,
        });
        if options.messy && rng.chance(10) {
            entry["timeSpent"] = json!(rng.below(5000));
        }
        user_list.push(entry);
        if rng.chance(60) {
            let key = match &course_id {
                Json::Number(n) => n.to_string(),
                other => other.as_str().unwrap_or_default().to_string(),
            };
            let mut users = vec![json!(user.clone())];
            if options.messy && rng.chance(20) {
                users.push(json!(user.clone()));
            }
            by_course.insert(key, Json::Array(users));
        }
    }
    let mut users = serde_json::Map::new();
    users.insert(user.clone(), Json::Array(user_list));
    map.insert(
        "userEnrollments".into(),
        Json::String(Json::Object(users).to_string()),
    );
    if !by_course.is_empty() {
        map.insert(
            "courseEnrollments".into(),
            Json::String(Json::Object(by_course).to_string()),
        );
    }
    if rng.chance(20) {
        let subjects = json!({ "s-gen": [{ "userId": user, "enrolledAt": iso(base_ms) }] });
        map.insert(
            "subjectEnrollments".into(),
            Json::String(subjects.to_string()),
        );
    }

    // Settings, bare or JSON-quoted.
    let theme = ["light", "dark", "system"][rng.below(3)];
    let theme = if options.messy && rng.chance(30) {
        format!("\"{theme}\"")
    } else {
        theme.to_string()
    };
    map.insert("theme".into(), Json::String(theme));
    let language = ["ru", "en", "en-US", "de", "kk"][rng.below(5)];
    map.insert("language".into(), Json::String(language.into()));

    // Reports and logs.
    if rng.chance(25) {
        let report_id = format!("r-{seed}");
        let queue = json!([{ "id": report_id, "courseId": rng.below(catalog_len), "reason": "spam", "reportedBy": user, "createdAt": iso(base_ms) }]);
        map.insert("moderationQueue".into(), Json::String(queue.to_string()));
        if rng.chance(50) {
            let decisions = json!({ report_id: { "status": "dismissed", "note": "not spam", "resolvedAt": base_ms + 1000 } });
            map.insert("moderationData".into(), Json::String(decisions.to_string()));
        }
    }
    if options.messy && rng.chance(15) {
        map.insert("errorLog".into(), Json::String("{not valid json".into()));
    } else {
        let n = rng.below(4);
        let log: Vec<Json> = (0..n)
            .map(|i| json!({ "timestamp": base_ms + i as i64 * 60_000, "message": format!("error {i} of {user}"), "url": "/learn" }))
            .collect();
        map.insert(
            "errorLog".into(),
            Json::String(Json::Array(log).to_string()),
        );
    }
    if options.messy && rng.chance(20) {
        map.insert(
            "someOtherAppKey".into(),
            Json::String(format!("cache {seed}")),
        );
    }
    Json::Object(map).to_string()
}

/// Catalog entry `i` of the shared generated catalog.
fn course(i: usize, lessons: usize) -> Json {
    let id: Json = if i.is_multiple_of(2) {
        json!(i)
    } else {
        json!(format!("c-{i}"))
    };
    let lessons: Vec<Json> = (0..lessons)
        .map(|l| json!({ "id": format!("l{l}"), "title": format!("Lesson {l}") }))
        .collect();
    let category = ["math", "physics", "languages"][i % 3];
    let level = ["beginner", "intermediate", "advanced"][i % 3];
    json!({
        "id": id,
        "title": format!("Generated course {i}"),
        "description": "Generated for import tests",
        "category": category,
        "level": level,
        "lessons": lessons,
        "createdAt": 1_690_000_000_000i64 + i as i64 * 86_400_000,
        "authorId": format!("u-teacher-{}", i % 4),
    })
}

fn iso(ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) {
        Ok(t) => t
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}
