//! The platform's records as the API shows them: users, courses, reports, logs, enrollments,
//! preferences, migration runs. The store returns them and the routes serialise them, so they
//! are the API types (with OpenAPI schemas); internal-only fields live in the store's records.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

/// A moment, stored as epoch milliseconds and shown as RFC 3339 text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ToSchema)]
#[schema(value_type = String, format = DateTime, example = "2024-09-02T10:00:00Z")]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self(now_ms())
    }

    /// RFC 3339 text in UTC with exactly three fractional digits
    /// (`2024-09-02T10:00:00.120Z`): fixed width, so clients may compare and sort the text.
    pub fn to_rfc3339(self) -> String {
        const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .ok()
            .and_then(|t| t.format(FORMAT).ok())
            .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_string())
    }

    /// Parses RFC 3339 text.
    pub fn parse(text: &str) -> Option<Self> {
        let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
        i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
            .ok()
            .map(Self)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Timestamp::parse(&text)
            .ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 timestamp"))
    }
}

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Declares a string enum stored and serialised in lowercase.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored text.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses the stored text.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// What a user may do.
    Role {
        /// Takes courses.
        Learner => "learner",
        /// Also creates and edits own courses.
        Teacher => "teacher",
        /// Everything, including the admin console.
        Admin => "admin",
    }
);

string_enum!(
    /// A catalog entry is a course or a subject (a group of courses).
    CourseKind {
        /// A course with lessons.
        Course => "course",
        /// A subject.
        Subject => "subject",
    }
);

string_enum!(
    /// Publication status of a catalog entry.
    CourseStatus {
        /// Only its author and admins see it.
        Draft => "draft",
        /// Everyone sees it.
        Published => "published",
        /// Soft-deleted.
        Archived => "archived",
    }
);

string_enum!(
    /// State of a course report in the moderation queue.
    ReportStatus {
        /// Waiting for a moderator.
        Pending => "pending",
        /// Acted upon.
        Resolved => "resolved",
        /// Rejected.
        Dismissed => "dismissed",
    }
);

string_enum!(
    /// Severity of a log entry.
    LogLevel {
        /// Diagnostics.
        Debug => "debug",
        /// Normal events.
        Info => "info",
        /// Something odd.
        Warn => "warn",
        /// A failure.
        Error => "error",
    }
);

string_enum!(
    /// An enrollment as the projection shows it.
    EnrollmentStatus {
        /// Enrolled, not finished.
        Active => "active",
        /// Explicitly unenrolled (progress kept).
        Unenrolled => "unenrolled",
        /// Progress reached 100 %.
        Completed => "completed",
    }
);

string_enum!(
    /// Where a legacy import was started.
    RunSource {
        /// `learnsync import`.
        Cli => "cli",
        /// The admin page.
        Admin => "admin",
        /// A browser client's first run.
        Client => "client",
    }
);

string_enum!(
    /// How a legacy import run ended.
    RunStatus {
        /// Still running.
        Running => "running",
        /// Everything imported.
        Succeeded => "succeeded",
        /// Some dumps or keys failed.
        Partial => "partial",
        /// Nothing could be imported.
        Failed => "failed",
    }
);

/// A user, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct User {
    /// Stable id.
    pub id: String,
    /// Login email; absent for placeholder accounts created by the legacy import.
    pub email: Option<String>,
    /// Name shown to people.
    pub display_name: String,
    /// What the user may do.
    pub role: Role,
    /// The user's id in the old app, if known.
    pub legacy_id: Option<String>,
    /// Disabled users cannot log in and their tokens stop working.
    pub disabled: bool,
    /// Whether the account can log in with a password (placeholders cannot).
    pub has_password: bool,
    /// When the account was created.
    pub created_at: Timestamp,
}

/// An API token's metadata (the secret is shown only once, when created).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ApiToken {
    /// Token id (use it to revoke).
    pub id: String,
    /// What the user called it.
    pub name: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// Last use, if any.
    pub last_used_at: Option<Timestamp>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
}

/// A lesson of a course.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Lesson {
    /// Lesson id, unique within the course.
    pub id: String,
    /// Title.
    pub title: String,
}

/// A catalog entry.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Course {
    /// Stable id (legacy courses keep their old id).
    pub id: String,
    /// Course or subject.
    pub kind: CourseKind,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Category, e.g. `math`.
    pub category: Option<String>,
    /// Level, e.g. `beginner`.
    pub level: Option<String>,
    /// Publication status.
    pub status: CourseStatus,
    /// The author's user id.
    pub author_id: Option<String>,
    /// Lessons in order.
    pub lessons: Vec<Lesson>,
    /// Fields from the legacy data that no column holds (kept, never dropped).
    #[schema(value_type = Object)]
    pub extra: Json,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
}

/// A report about a course, in the moderation queue.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Report {
    /// Report id.
    pub id: String,
    /// The reported course.
    pub course_id: String,
    /// Who reported it.
    pub reporter_id: Option<String>,
    /// Why.
    pub reason: String,
    /// More text.
    pub details: Option<String>,
    /// Moderation state.
    pub status: ReportStatus,
    /// The moderator's note.
    pub note: Option<String>,
    /// The moderator.
    pub resolved_by: Option<String>,
    /// When it was resolved or dismissed.
    pub resolved_at: Option<Timestamp>,
    /// Filed at.
    pub created_at: Timestamp,
}

/// One entry of the system log.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LogEntry {
    /// Sequence number.
    pub id: i64,
    /// Severity.
    pub level: LogLevel,
    /// Where it came from: `client` (reported by apps), `audit` (admin actions), `sync`,
    /// `legacy-import` (the old app's `errorLog`, imported).
    pub source: String,
    /// For people.
    pub message: String,
    /// Structured details.
    #[schema(value_type = Option<Object>)]
    pub context: Option<Json>,
    /// The user concerned.
    pub user_id: Option<String>,
    /// The request that wrote it.
    pub request_id: Option<String>,
    /// When.
    pub created_at: Timestamp,
}

/// A learner's enrollment, projected from the synced documents.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Enrollment {
    /// The course.
    pub course_id: String,
    /// Active, unenrolled or completed.
    pub status: EnrollmentStatus,
    /// First enrollment.
    pub enrolled_at: Option<Timestamp>,
    /// Percent 0–100 of the current attempt.
    pub progress: f64,
    /// Lessons completed in the current attempt.
    pub completed_lessons: Vec<String>,
    /// Seconds spent, all attempts.
    pub time_spent_secs: i64,
    /// Last activity.
    pub last_activity: Option<Timestamp>,
    /// Current attempt (1 for the first).
    pub attempt: i64,
    /// When progress reached 100 %.
    pub completed_at: Option<Timestamp>,
}

/// A learner's preferences, projected from the synced preferences document.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Preferences {
    /// `light`, `dark` or `system`.
    pub theme: Option<String>,
    /// A language tag.
    pub language: Option<String>,
    /// Every setting, theme and language included.
    #[schema(value_type = Object)]
    pub settings: Json,
    /// Last change.
    pub updated_at: Option<Timestamp>,
}

/// A legacy import run.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct MigrationRun {
    /// Run id.
    pub id: String,
    /// Who started it.
    pub actor_id: Option<String>,
    /// CLI, admin page or browser client.
    pub source: RunSource,
    /// What was imported (file names, user).
    pub label: String,
    /// Outcome.
    pub status: RunStatus,
    /// A dry run changes nothing.
    pub dry_run: bool,
    /// Dumps in the run.
    pub dumps_total: i64,
    /// Dumps processed so far.
    pub dumps_done: i64,
    /// Counts per key and outcome.
    #[schema(value_type = Object)]
    pub counts: Json,
    /// Per-dump, per-key results (a list).
    #[schema(value_type = Vec<Object>)]
    pub report: Json,
    /// Errors (a list).
    #[schema(value_type = Vec<Object>)]
    pub errors: Json,
    /// Started.
    pub started_at: Timestamp,
    /// Finished, if it has.
    pub finished_at: Option<Timestamp>,
}

/// A connected device, as the admin console lists it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Device {
    /// Connection id.
    pub conn_id: String,
    /// Server instance holding the connection.
    pub instance_id: String,
    /// The user.
    pub user_id: String,
    /// The device's automerge-repo peer id.
    pub peer_id: String,
    /// Remote address.
    pub remote_addr: String,
    /// User agent.
    pub user_agent: String,
    /// Connected since.
    pub connected_at: Timestamp,
    /// Last sync message.
    pub last_sync_at: Option<Timestamp>,
}

/// One page of a list, with the cursor for the next page.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Page<T> {
    /// This page's items.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}
