//! The synced documents: deterministic genesis, typed accessors, merge rules, projection.
//!
//! The layout and its reasons are in `docs/documents.md`. In short: every document starts from a
//! genesis change that is byte-identical on every replica, so no replica ever creates an object a
//! concurrent replica could also create; below the skeleton, values live under flat keys and are
//! read with `get_all` and combined by their rule (max, min, add-wins, last-writer-wins).
//!
//! Typical use on a device:
//! ```
//! use sync_core::docs::{self, DocSpec, course};
//! let mut doc = docs::create(&DocSpec::Course { course_id: "algebra".into() }, [7; 16]).unwrap();
//! course::complete_lesson(&mut doc, "l1", 1_700_000_000_000).unwrap();
//! course::set_progress(&mut doc, 50.0, 1_700_000_000_000).unwrap();
//! docs::commit(&mut doc, 1_700_000_000_000);
//! assert_eq!(course::read(&doc).unwrap().progress, 50.0);
//! ```
//!
//! Readers take any [`ReadDoc`] (an `Automerge` or an `AutoCommit`); writers take an
//! `AutoCommit` and leave the change open until [`commit`] so that one user action is one change.

pub mod compaction;
pub mod course;
pub mod learning;
pub mod preferences;
pub mod projection;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{
    ActorId, AutoCommit, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, ScalarValue, Value,
};

use crate::ids::{DocumentId, UserNamespace};

/// Version of the document layout written into every genesis (`v`).
pub const SCHEMA_VERSION: u64 = 1;

/// Longest accepted course id, lesson id or preference key, in bytes. Keys are flat map keys
/// that every replica keeps forever, so they are bounded.
pub const MAX_ID_LEN: usize = 128;

/// The actor that authors every genesis change. No device or server may use it.
pub const GENESIS_ACTOR: [u8; 16] = [0; 16];

/// What kind of document this is; written into the genesis as `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocKind {
    /// Per-user settings: theme, language, any other key.
    Preferences,
    /// Per-user set of enrollments.
    Learning,
    /// Per-user, per-course progress.
    Course,
}

impl DocKind {
    /// The `kind` string stored in the document and in the `documents` table.
    pub fn as_str(self) -> &'static str {
        match self {
            DocKind::Preferences => "preferences",
            DocKind::Learning => "learning",
            DocKind::Course => "course",
        }
    }

    /// Parses the stored `kind` string.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "preferences" => Some(DocKind::Preferences),
            "learning" => Some(DocKind::Learning),
            "course" => Some(DocKind::Course),
            _ => None,
        }
    }
}

/// Everything needed to build a document's genesis.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DocSpec {
    /// The preferences document.
    Preferences,
    /// The learning index document.
    Learning,
    /// A course progress document for `course_id`.
    Course {
        /// The course (or subject) id, as in the `courses` table.
        course_id: String,
    },
}

impl DocSpec {
    /// The kind of document this spec builds.
    pub fn kind(&self) -> DocKind {
        match self {
            DocSpec::Preferences => DocKind::Preferences,
            DocSpec::Learning => DocKind::Learning,
            DocSpec::Course { .. } => DocKind::Course,
        }
    }

    /// The document id this spec has for a user, derived as described in `docs/documents.md`.
    pub fn document_id(&self, namespace: &UserNamespace) -> DocumentId {
        match self {
            DocSpec::Preferences => DocumentId::preferences(namespace),
            DocSpec::Learning => DocumentId::learning(namespace),
            DocSpec::Course { course_id } => {
                DocumentId::course(&DocumentId::learning(namespace), course_id)
            }
        }
    }
}

/// Why a document operation was refused. Nothing is written when an error is returned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DocError {
    /// The document does not have the skeleton of the expected kind.
    #[error("document is not a {expected} document")]
    WrongKind {
        /// The kind the caller expected.
        expected: &'static str,
    },
    /// The document has no recognisable LearnSync skeleton.
    #[error("document has no LearnSync genesis")]
    NoGenesis,
    /// An id or key is empty, too long or contains control characters.
    #[error("invalid {what}: {reason}")]
    InvalidKey {
        /// Which id: "course id", "lesson id", "preference key".
        what: &'static str,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A value is out of range or of the wrong shape.
    #[error("invalid value for {field}: {reason}")]
    InvalidValue {
        /// The field being written.
        field: String,
        /// Why it was refused.
        reason: String,
    },
    /// Automerge refused the operation (only on corrupt documents).
    #[error("automerge: {0}")]
    Automerge(String),
}

impl From<automerge::AutomergeError> for DocError {
    fn from(e: automerge::AutomergeError) -> Self {
        DocError::Automerge(e.to_string())
    }
}

/// Builds the genesis document for `spec`: actor [`GENESIS_ACTOR`], time 0, the full skeleton.
/// The bytes of this change are identical on every replica (a test pins its hash), which is
/// what lets offline devices create "the same" document independently.
pub fn genesis(spec: &DocSpec) -> AutoCommit {
    // Building the skeleton costs a few dozen microseconds of Automerge operations, paid for
    // every new document (a bulk import creates thousands a second); a copy of the finished
    // document costs a fraction of that. Per thread, so no lock; bounded by the course ids
    // seen, and emptied when it grows past that bound.
    const MAX_CACHED: usize = 1024;
    thread_local! {
        static BUILT: std::cell::RefCell<std::collections::HashMap<DocSpec, AutoCommit>> =
            std::cell::RefCell::new(std::collections::HashMap::new());
    }
    BUILT.with(|built| {
        let mut built = built.borrow_mut();
        if let Some(doc) = built.get(spec) {
            return doc.clone();
        }
        if built.len() >= MAX_CACHED {
            built.clear();
        }
        let doc = build_genesis(spec);
        built.insert(spec.clone(), doc.clone());
        doc
    })
}

fn build_genesis(spec: &DocSpec) -> AutoCommit {
    let mut doc = AutoCommit::new().with_actor(ActorId::from(GENESIS_ACTOR));
    // The operations below cannot fail on a fresh document with the root as target; should a
    // future automerge version disagree, the genesis hash test fails loudly.
    let build = |doc: &mut AutoCommit| -> Result<(), automerge::AutomergeError> {
        doc.put(ROOT, "kind", spec.kind().as_str())?;
        doc.put(ROOT, "v", SCHEMA_VERSION)?;
        match spec {
            DocSpec::Preferences => {
                doc.put_object(ROOT, "settings", ObjType::Map)?;
                doc.put_object(ROOT, "clock", ObjType::Map)?;
                doc.put_object(ROOT, "legacy", ObjType::Map)?;
            }
            DocSpec::Learning => {
                doc.put_object(ROOT, "status", ObjType::Map)?;
                doc.put_object(ROOT, "enrolled_at", ObjType::Map)?;
            }
            DocSpec::Course { course_id } => {
                doc.put(ROOT, "course", course_id.as_str())?;
                doc.put(ROOT, "attempt", 1u64)?;
                doc.put_object(ROOT, "completed", ObjType::Map)?;
                doc.put_object(ROOT, "progress", ObjType::Map)?;
                doc.put(ROOT, "time_spent", ScalarValue::counter(0))?;
                doc.put(ROOT, "last_activity", 0i64)?;
            }
        }
        Ok(())
    };
    if let Err(e) = build(&mut doc) {
        unreachable!("genesis operations on a fresh document failed: {e}");
    }
    doc.commit_with(CommitOptions::default().with_time(0));
    doc
}

/// The hash of `spec`'s genesis change: every replica of that document has it as its root.
pub fn genesis_hash(spec: &DocSpec) -> ChangeHash {
    let mut doc = genesis(spec);
    // A fresh genesis has exactly one head.
    doc.get_heads()[0]
}

/// A new document for `spec`, ready for edits by `actor` (16 random bytes the caller drew once
/// per device, or per server process). Refuses the genesis actor.
pub fn create(spec: &DocSpec, actor: [u8; 16]) -> Result<AutoCommit, DocError> {
    if actor == GENESIS_ACTOR {
        return Err(DocError::InvalidValue {
            field: "actor".into(),
            reason: "the all-zero actor is reserved for genesis changes".into(),
        });
    }
    let mut doc = genesis(spec);
    doc.set_actor(ActorId::from(actor));
    Ok(doc)
}

/// Commits the open change (if any) with the wall-clock time `now_ms` (stored in seconds, as
/// Automerge's JavaScript implementation does). Returns the new change's hash.
pub fn commit(doc: &mut AutoCommit, now_ms: i64) -> Option<ChangeHash> {
    if doc.pending_ops() == 0 {
        return None;
    }
    doc.commit_with(CommitOptions::default().with_time(now_ms.div_euclid(1000)))
}

/// The document's kind and, for course documents, its course id — read from the genesis
/// fields. `None` for documents without a LearnSync skeleton (e.g. free-form documents that
/// official JavaScript clients create).
pub fn identify<D: ReadDoc>(doc: &D) -> Option<DocSpec> {
    let kind = genesis_str(doc, &ROOT, "kind")?;
    match DocKind::parse(&kind)? {
        DocKind::Preferences => Some(DocSpec::Preferences),
        DocKind::Learning => Some(DocSpec::Learning),
        DocKind::Course => Some(DocSpec::Course {
            course_id: genesis_str(doc, &ROOT, "course")?,
        }),
    }
}

/// Whether `doc_id` is the id `spec` has for the user with `namespace`: how the server tells a
/// real course document of a user from a free-form document that merely looks like one.
pub fn belongs_to(doc_id: &DocumentId, spec: &DocSpec, namespace: &UserNamespace) -> bool {
    spec.document_id(namespace) == *doc_id
}

/// Checks a course id, lesson id or preference key.
pub fn validate_key(what: &'static str, key: &str) -> Result<(), DocError> {
    if key.is_empty() {
        return Err(DocError::InvalidKey {
            what,
            reason: "empty",
        });
    }
    if key.len() > MAX_ID_LEN {
        return Err(DocError::InvalidKey {
            what,
            reason: "longer than 128 bytes",
        });
    }
    if key.chars().any(char::is_control) {
        return Err(DocError::InvalidKey {
            what,
            reason: "contains control characters",
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reading helpers shared by the document modules.

/// A text field written by the genesis (actor zero). Looking for the genesis value rather than
/// the winner means a buggy client that overwrote `kind` cannot change what the document is.
fn genesis_str<D: ReadDoc>(doc: &D, obj: &ObjId, key: &str) -> Option<String> {
    let values = doc.get_all(obj, key).ok()?;
    let mut fallback = None;
    for (value, id) in values {
        if let Value::Scalar(s) = value
            && let ScalarValue::Str(text) = s.as_ref()
        {
            if is_genesis_op(&id) {
                return Some(text.to_string());
            }
            fallback = Some(text.to_string());
        }
    }
    fallback
}

fn is_genesis_op(id: &ObjId) -> bool {
    matches!(id, ObjId::Id(_, actor, _) if actor.to_bytes() == GENESIS_ACTOR)
}

/// The skeleton map at `key` of the root: the one the genesis created. If a client replaced it
/// (creating a rival map), the genesis map is still the one every LearnSync replica uses.
fn skeleton_map<D: ReadDoc>(doc: &D, key: &str) -> Option<ObjId> {
    let values = doc.get_all(ROOT, key).ok()?;
    let mut fallback = None;
    for (value, id) in values {
        if let Value::Object(ObjType::Map) = value {
            if is_genesis_op(&id) {
                return Some(id);
            }
            fallback = Some(id);
        }
    }
    fallback
}

/// Like [`skeleton_map`] but an error when the skeleton is missing (wrong document kind).
fn require_map<D: ReadDoc>(doc: &D, key: &str, expected: &'static str) -> Result<ObjId, DocError> {
    skeleton_map(doc, key).ok_or(DocError::WrongKind { expected })
}

/// All concurrent scalar values at `obj[key]`, in Automerge's op order (the last one is the
/// value Automerge itself would show).
fn scalars<D: ReadDoc>(doc: &D, obj: &ObjId, key: &str) -> Vec<(ScalarValue, ObjId)> {
    match doc.get_all(obj, key) {
        Ok(values) => values
            .into_iter()
            .filter_map(|(v, id)| match v {
                Value::Scalar(s) => Some((s.into_owned(), id)),
                Value::Object(_) => None,
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Every key of the map `obj` with its concurrent scalar values (as [`scalars`] gives them,
/// without their op ids), in key order, in one walk of the map. Reading key by key costs an
/// Automerge lookup per key; a key without a conflict has exactly one visible value, which the
/// walk already holds, so only conflicting keys pay a lookup. The projection of every stored
/// write reads whole maps this way.
fn scalar_entries<D: ReadDoc>(doc: &D, obj: &ObjId) -> Vec<(String, Vec<ScalarValue>)> {
    doc.map_range(obj, ..)
        .map(|item| {
            let values = if item.conflict {
                scalars(doc, obj, &item.key)
                    .into_iter()
                    .map(|(v, _)| v)
                    .collect()
            } else {
                match Value::from(item.value) {
                    Value::Scalar(s) => vec![s.into_owned()],
                    Value::Object(_) => Vec::new(),
                }
            };
            (item.key.into_owned(), values)
        })
        .collect()
}

fn as_f64(value: &ScalarValue) -> Option<f64> {
    match value {
        ScalarValue::F64(f) if f.is_finite() => Some(*f),
        ScalarValue::Int(i) => Some(*i as f64),
        ScalarValue::Uint(u) => Some(*u as f64),
        _ => None,
    }
}

fn as_i64(value: &ScalarValue) -> Option<i64> {
    match value {
        ScalarValue::Int(i) => Some(*i),
        ScalarValue::Uint(u) => i64::try_from(*u).ok(),
        ScalarValue::Timestamp(t) => Some(*t),
        ScalarValue::F64(f) if f.is_finite() && f.fract() == 0.0 => Some(*f as i64),
        _ => None,
    }
}

/// The maximum numeric value among the concurrent values at `obj[key]`.
fn max_f64<D: ReadDoc>(doc: &D, obj: &ObjId, key: &str) -> Option<f64> {
    scalars(doc, obj, key)
        .iter()
        .filter_map(|(v, _)| as_f64(v))
        .reduce(f64::max)
}

/// The maximum integer value among the concurrent values at `obj[key]`.
fn max_i64<D: ReadDoc>(doc: &D, obj: &ObjId, key: &str) -> Option<i64> {
    scalars(doc, obj, key)
        .iter()
        .filter_map(|(v, _)| as_i64(v))
        .max()
}

/// The minimum integer value among the concurrent values at `obj[key]`.
fn min_i64<D: ReadDoc>(doc: &D, obj: &ObjId, key: &str) -> Option<i64> {
    scalars(doc, obj, key)
        .iter()
        .filter_map(|(v, _)| as_i64(v))
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genesis_is_deterministic_and_pinned() {
        // Pinned so that an automerge upgrade that changes genesis bytes is caught: devices
        // with the old genesis would otherwise never merge with devices on the new one.
        let prefs = genesis_hash(&DocSpec::Preferences);
        assert_eq!(prefs, genesis_hash(&DocSpec::Preferences));
        let course_a = genesis_hash(&DocSpec::Course {
            course_id: "a".into(),
        });
        let course_b = genesis_hash(&DocSpec::Course {
            course_id: "b".into(),
        });
        assert_ne!(course_a, course_b);
        assert_eq!(
            prefs.to_string(),
            PINNED_PREFERENCES_GENESIS,
            "the preferences genesis changed"
        );
    }

    const PINNED_PREFERENCES_GENESIS: &str =
        "f2186c97b77c99e8757a12d9996da2ce35ea2197ced6f30f35a2d518f0801b4c";

    #[test]
    fn identify_reads_genesis() {
        for spec in [
            DocSpec::Preferences,
            DocSpec::Learning,
            DocSpec::Course {
                course_id: "c-geo".into(),
            },
        ] {
            let doc = create(&spec, [1; 16]).unwrap();
            assert_eq!(identify(&doc), Some(spec));
        }
        assert_eq!(identify(&AutoCommit::new()), None);
    }

    #[test]
    fn genesis_actor_is_refused() {
        assert!(create(&DocSpec::Learning, GENESIS_ACTOR).is_err());
    }

    #[test]
    fn validate_key_bounds() {
        assert!(validate_key("course id", "c-1").is_ok());
        assert!(validate_key("course id", "").is_err());
        assert!(validate_key("course id", &"x".repeat(129)).is_err());
        assert!(validate_key("course id", "a\nb").is_err());
    }
}
