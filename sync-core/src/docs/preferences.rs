//! The preferences document: theme, language and an open map of other settings.
//!
//! Merge rule: last writer wins per key. A write that has seen an earlier write simply replaces
//! it (causal order, Automerge's own). Two *concurrent* writes stay in the document as a
//! conflict; readers resolve it by the writers' wall clocks, recorded per actor in the `clock`
//! map, and fall back to Automerge's deterministic order on a tie. Every replica resolves the
//! same conflict the same way, because they all hold the same values and clocks.

use std::collections::BTreeMap;

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjId, ReadDoc, ScalarValue};
use serde_json::Value as Json;

use super::{DocError, require_map, scalar_entries, scalars, validate_key};

/// Largest accepted preference value (JSON text), in bytes.
pub const MAX_VALUE_BYTES: usize = 4096;

/// Most distinct settings keys a user may have; protects every replica's memory.
pub const MAX_KEYS: usize = 200;

/// Accepted values of `theme`.
pub const THEMES: [&str; 3] = ["light", "dark", "system"];

const EXPECTED: &str = "preferences";

/// Reads one setting, resolving concurrent writes as described in the module docs.
pub fn get<D: ReadDoc>(doc: &D, key: &str) -> Result<Option<Json>, DocError> {
    let settings = require_map(doc, "settings", EXPECTED)?;
    let clock = require_map(doc, "clock", EXPECTED)?;
    Ok(resolve(doc, &settings, &clock, key))
}

/// Reads every setting.
pub fn all<D: ReadDoc>(doc: &D) -> Result<BTreeMap<String, Json>, DocError> {
    let settings = require_map(doc, "settings", EXPECTED)?;
    let clock = require_map(doc, "clock", EXPECTED)?;
    // One walk of the map: a key with a single value needs no clocks.
    let mut out = BTreeMap::new();
    for (key, values) in scalar_entries(doc, &settings) {
        let value = match values.as_slice() {
            [] => None,
            [one] => from_scalar(one),
            _ => resolve(doc, &settings, &clock, &key),
        };
        if let Some(value) = value {
            out.insert(key, value);
        }
    }
    Ok(out)
}

/// The theme, if set and valid.
pub fn theme<D: ReadDoc>(doc: &D) -> Result<Option<String>, DocError> {
    Ok(valid_theme(get(doc, "theme")?.as_ref()))
}

/// The language tag, if set and valid.
pub fn language<D: ReadDoc>(doc: &D) -> Result<Option<String>, DocError> {
    Ok(valid_language(get(doc, "language")?.as_ref()))
}

/// `value` as a theme, if it is one (for readers that already hold [`all`]).
pub fn valid_theme(value: Option<&Json>) -> Option<String> {
    match value {
        Some(Json::String(s)) if THEMES.contains(&s.as_str()) => Some(s.clone()),
        _ => None,
    }
}

/// `value` as a language tag, if it is one (for readers that already hold [`all`]).
pub fn valid_language(value: Option<&Json>) -> Option<String> {
    match value {
        Some(Json::String(s)) if is_language_tag(s) => Some(s.clone()),
        _ => None,
    }
}

/// Checks a setting before it is written: key shape, value size, and the known keys' domains
/// (`theme` ∈ light/dark/system, `language` a BCP 47 tag).
pub fn validate(key: &str, value: &Json) -> Result<(), DocError> {
    validate_key("preference key", key)?;
    let size = serde_json::to_string(value)
        .map(|s| s.len())
        .unwrap_or(usize::MAX);
    if size > MAX_VALUE_BYTES {
        return Err(DocError::InvalidValue {
            field: key.into(),
            reason: format!("larger than {MAX_VALUE_BYTES} bytes"),
        });
    }
    match key {
        "theme" => match value {
            Json::String(s) if THEMES.contains(&s.as_str()) => Ok(()),
            _ => Err(DocError::InvalidValue {
                field: key.into(),
                reason: "must be one of light, dark, system".into(),
            }),
        },
        "language" => match value {
            Json::String(s) if is_language_tag(s) => Ok(()),
            _ => Err(DocError::InvalidValue {
                field: key.into(),
                reason: "must be a language tag such as ru or en-US".into(),
            }),
        },
        _ => Ok(()),
    }
}

/// Whether `s` looks like a BCP 47 language tag (`ru`, `en-US`, `zh-Hant-TW`).
pub fn is_language_tag(s: &str) -> bool {
    let mut parts = s.split('-');
    let Some(primary) = parts.next() else {
        return false;
    };
    (2..=3).contains(&primary.len())
        && primary.chars().all(|c| c.is_ascii_alphabetic())
        && s.len() <= 35
        && parts.all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// Writes one setting as the document's current actor at wall-clock `now_ms`. Returns `false`
/// (and writes nothing) when the setting already reads as `value`.
pub fn set(doc: &mut AutoCommit, key: &str, value: &Json, now_ms: i64) -> Result<bool, DocError> {
    validate(key, value)?;
    let settings = require_map(doc, "settings", EXPECTED)?;
    let clock = require_map(doc, "clock", EXPECTED)?;
    if resolve(doc, &settings, &clock, key).as_ref() == Some(value) {
        return Ok(false);
    }
    if doc.length(&settings) >= MAX_KEYS && doc.get(&settings, key)?.is_none() {
        return Err(DocError::InvalidValue {
            field: key.into(),
            reason: format!("a user may have at most {MAX_KEYS} settings"),
        });
    }
    let actor = doc.get_actor().to_hex_string();
    doc.put(&settings, key, to_scalar(value))?;
    doc.put(&clock, clock_key(key, &actor), now_ms)?;
    Ok(true)
}

/// Removes a setting. Returns `false` if it was not set. A concurrent write of the same key on
/// another device survives the removal (Automerge removes only the values this replica saw).
pub fn remove(doc: &mut AutoCommit, key: &str) -> Result<bool, DocError> {
    validate_key("preference key", key)?;
    let settings = require_map(doc, "settings", EXPECTED)?;
    if doc.get(&settings, key)?.is_none() {
        return Ok(false);
    }
    doc.delete(&settings, key)?;
    Ok(true)
}

/// Keeps a raw legacy `localStorage` value that no field maps to, so nothing is ever dropped.
/// Idempotent: an identical value is not written again; a different value for the same key is
/// kept beside it under `"<key>@<n>"`. Returns whether anything was written.
pub fn keep_legacy(doc: &mut AutoCommit, key: &str, raw: &str) -> Result<bool, DocError> {
    Ok(keep_legacy_in(doc, key, raw)?.is_some())
}

/// [`keep_legacy`], answering with the slot written (`key` or `"<key>@<n>"`), if any: a caller
/// that holds the legacy map (the import, which keeps many values in a row) adds the slot to
/// its copy instead of reading the whole map again after every value.
pub fn keep_legacy_in(
    doc: &mut AutoCommit,
    key: &str,
    raw: &str,
) -> Result<Option<String>, DocError> {
    let legacy = require_map(doc, "legacy", EXPECTED)?;
    let mut slot = key.to_string();
    for n in 2.. {
        match doc.get(&legacy, slot.as_str())? {
            None => break,
            Some((automerge::Value::Scalar(s), _))
                if s.as_ref() == &ScalarValue::Str(raw.into()) =>
            {
                return Ok(None);
            }
            Some(_) => slot = format!("{key}@{n}"),
        }
    }
    doc.put(&legacy, slot.as_str(), raw)?;
    Ok(Some(slot))
}

/// The raw legacy values kept by [`keep_legacy`].
pub fn legacy<D: ReadDoc>(doc: &D) -> Result<BTreeMap<String, String>, DocError> {
    let legacy = require_map(doc, "legacy", EXPECTED)?;
    let mut out = BTreeMap::new();
    for (key, mut values) in scalar_entries(doc, &legacy) {
        if let Some(ScalarValue::Str(s)) = values.pop() {
            out.insert(key, s.to_string());
        }
    }
    Ok(out)
}

fn clock_key(key: &str, actor_hex: &str) -> String {
    format!("{key} {actor_hex}")
}

fn resolve<D: ReadDoc>(doc: &D, settings: &ObjId, clock: &ObjId, key: &str) -> Option<Json> {
    let mut candidates: Vec<(Json, ObjId)> = scalars(doc, settings, key)
        .into_iter()
        .filter_map(|(value, id)| Some((from_scalar(&value)?, id)))
        .collect();
    if candidates.len() <= 1 {
        // No rival: the clocks cannot change the answer.
        return candidates.pop().map(|(json, _)| json);
    }
    // (clock, op id) is a total order every replica agrees on; the op id (Lamport order) breaks
    // ties exactly as Automerge would.
    candidates
        .into_iter()
        .map(|(json, id)| {
            let written_at = match &id {
                ObjId::Id(_, actor, _) => {
                    super::max_i64(doc, clock, &clock_key(key, &actor.to_hex_string()))
                }
                ObjId::Root => None,
            }
            .unwrap_or(i64::MIN);
            ((written_at, id), json)
        })
        .max_by(|(a, _), (b, _)| a.cmp(b))
        .map(|(_, json)| json)
}

/// Scalars are stored natively so any automerge client can read them; arrays and objects are
/// stored as JSON text in a bytes value.
fn to_scalar(value: &Json) -> ScalarValue {
    match value {
        Json::Null => ScalarValue::Null,
        Json::Bool(b) => ScalarValue::Boolean(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                ScalarValue::Int(i)
            } else if let Some(u) = n.as_u64() {
                ScalarValue::Uint(u)
            } else {
                ScalarValue::F64(n.as_f64().unwrap_or(0.0))
            }
        }
        Json::String(s) => ScalarValue::Str(s.as_str().into()),
        Json::Array(_) | Json::Object(_) => ScalarValue::Bytes(value.to_string().into_bytes()),
    }
}

fn from_scalar(value: &ScalarValue) -> Option<Json> {
    Some(match value {
        ScalarValue::Null => Json::Null,
        ScalarValue::Boolean(b) => Json::Bool(*b),
        ScalarValue::Int(i) => Json::from(*i),
        ScalarValue::Uint(u) => Json::from(*u),
        ScalarValue::F64(f) => serde_json::Number::from_f64(*f).map(Json::Number)?,
        ScalarValue::Str(s) => Json::String(s.to_string()),
        ScalarValue::Bytes(b) => serde_json::from_slice(b).ok()?,
        ScalarValue::Timestamp(t) => Json::from(*t),
        ScalarValue::Counter(c) => Json::from(i64::from(c)),
        ScalarValue::Unknown { .. } => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docs::{DocSpec, commit, create};
    use serde_json::json;

    fn device(n: u8) -> AutoCommit {
        create(&DocSpec::Preferences, [n; 16]).unwrap()
    }

    #[test]
    fn set_and_read() {
        let mut doc = device(1);
        assert!(set(&mut doc, "theme", &json!("dark"), 10).unwrap());
        assert!(!set(&mut doc, "theme", &json!("dark"), 11).unwrap());
        assert!(set(&mut doc, "language", &json!("ru"), 12).unwrap());
        assert!(set(&mut doc, "notifications", &json!({"email": true}), 12).unwrap());
        commit(&mut doc, 12);
        assert_eq!(theme(&doc).unwrap().as_deref(), Some("dark"));
        assert_eq!(language(&doc).unwrap().as_deref(), Some("ru"));
        assert_eq!(
            get(&doc, "notifications").unwrap(),
            Some(json!({"email": true}))
        );
        assert_eq!(all(&doc).unwrap().len(), 3);
    }

    #[test]
    fn invalid_values_are_refused_and_nothing_written() {
        let mut doc = device(1);
        assert!(set(&mut doc, "theme", &json!("purple"), 1).is_err());
        assert!(set(&mut doc, "language", &json!("not a tag!"), 1).is_err());
        assert!(set(&mut doc, "", &json!(1), 1).is_err());
        assert!(set(&mut doc, "big", &json!("x".repeat(MAX_VALUE_BYTES)), 1).is_err());
        assert_eq!(doc.pending_ops(), 0);
    }

    #[test]
    fn concurrent_writes_resolve_by_wall_clock_everywhere() {
        let mut a = device(1);
        let mut b = device(2);
        // b writes later in wall-clock time but with fewer operations (lower Lamport counter).
        set(&mut a, "x", &json!(0), 1).unwrap();
        commit(&mut a, 1);
        set(&mut a, "theme", &json!("light"), 100).unwrap();
        commit(&mut a, 100);
        set(&mut b, "theme", &json!("dark"), 200).unwrap();
        commit(&mut b, 200);
        a.merge(&mut b).unwrap();
        b.merge(&mut a).unwrap();
        assert_eq!(theme(&a).unwrap().as_deref(), Some("dark"));
        assert_eq!(theme(&b).unwrap().as_deref(), Some("dark"));
    }

    #[test]
    fn a_causally_later_write_wins_whatever_the_clock() {
        let mut a = device(1);
        let mut b = device(2);
        set(&mut a, "theme", &json!("light"), 1_000).unwrap();
        commit(&mut a, 1_000);
        b.merge(&mut a).unwrap();
        // b's clock is behind, but b saw a's write: b's write replaces it.
        set(&mut b, "theme", &json!("dark"), 10).unwrap();
        commit(&mut b, 10);
        a.merge(&mut b).unwrap();
        assert_eq!(theme(&a).unwrap().as_deref(), Some("dark"));
    }

    #[test]
    fn remove_deletes_and_is_idempotent() {
        let mut doc = device(1);
        set(&mut doc, "volume", &json!(3), 1).unwrap();
        assert!(remove(&mut doc, "volume").unwrap());
        assert!(!remove(&mut doc, "volume").unwrap());
        assert_eq!(get(&doc, "volume").unwrap(), None);
    }

    #[test]
    fn legacy_values_are_kept_idempotently() {
        let mut doc = device(1);
        assert!(keep_legacy(&mut doc, "someOtherAppKey", "keep me").unwrap());
        assert!(!keep_legacy(&mut doc, "someOtherAppKey", "keep me").unwrap());
        assert!(keep_legacy(&mut doc, "someOtherAppKey", "another").unwrap());
        let kept = legacy(&doc).unwrap();
        assert_eq!(
            kept.get("someOtherAppKey").map(String::as_str),
            Some("keep me")
        );
        assert_eq!(
            kept.get("someOtherAppKey@2").map(String::as_str),
            Some("another")
        );
        assert!(!keep_legacy(&mut doc, "someOtherAppKey", "another").unwrap());
    }

    /// The import keeps its copy of the legacy map by adding the slots `keep_legacy_in` names;
    /// that copy must equal the map read back.
    #[test]
    fn the_slots_named_rebuild_the_legacy_map() {
        let mut doc = device(1);
        let mut copy = legacy(&doc).unwrap();
        for (key, raw) in [
            ("a", "1"),
            ("a", "1"),
            ("a", "2"),
            ("b", "1"),
            ("a", "3"),
            ("a", "2"),
        ] {
            if let Some(slot) = keep_legacy_in(&mut doc, key, raw).unwrap() {
                copy.insert(slot, raw.to_string());
            }
            assert_eq!(copy, legacy(&doc).unwrap());
        }
        assert_eq!(copy.get("a@3").map(String::as_str), Some("3"));
        assert_eq!(copy.len(), 4);
    }

    #[test]
    fn language_tags() {
        for ok in ["ru", "en", "en-US", "zh-Hant-TW", "fil"] {
            assert!(is_language_tag(ok), "{ok}");
        }
        for bad in ["", "e", "english", "en_US", "en-", "ru-toolongsubtag"] {
            assert!(!is_language_tag(bad), "{bad}");
        }
    }
}
