//! Lenient readers for the values the old app wrote: ids as numbers or strings, numbers as
//! text, progress as a fraction or a percentage, dates as ISO text or epoch time, strings bare
//! or JSON-quoted. Each reader returns `None` for what it cannot read; the caller keeps the raw
//! value and reports it, so nothing is dropped.

use serde_json::Value as Json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Epoch values below this are seconds, not milliseconds (1e11 ms is 1973; 1e11 s is the year
/// 5138), so both units the old app used are read correctly.
const SECONDS_BELOW: f64 = 1e11;

/// Latest accepted time (the year 3000), so a garbage number never becomes a date.
const MAX_MS: i64 = 32_503_680_000_000;

/// Decodes a `localStorage` value: JSON text, or the text itself when it is not JSON (the old
/// app wrote some values bare, e.g. `theme = dark`). A JSON string that itself holds JSON text
/// (double-encoded) is decoded again.
pub(crate) fn decode(raw: &str) -> Result<Json, String> {
    let mut value: Json = serde_json::from_str(raw).map_err(|e| format!("invalid JSON: {e}"))?;
    for _ in 0..3 {
        let Json::String(s) = &value else { break };
        let t = s.trim_start();
        if !(t.starts_with('[') || t.starts_with('{')) {
            break;
        }
        match serde_json::from_str::<Json>(s) {
            Ok(inner) => value = inner,
            Err(_) => break,
        }
    }
    Ok(value)
}

/// A plain string setting: a JSON string (even quoted twice) or the bare text.
pub(crate) fn setting(raw: &str) -> (String, bool) {
    let mut text = raw.trim().to_string();
    let mut quoted = false;
    for _ in 0..3 {
        match serde_json::from_str::<Json>(&text) {
            Ok(Json::String(s)) => {
                text = s.trim().to_string();
                quoted = true;
            }
            _ => break,
        }
    }
    (text, quoted)
}

/// An id: a non-empty string (trimmed) or an integral number.
pub(crate) fn id(value: &Json) -> Option<String> {
    match value {
        Json::String(s) => {
            let s = s.trim();
            (!s.is_empty()
                && s.len() <= crate::docs::MAX_ID_LEN
                && !s.chars().any(char::is_control))
            .then(|| s.to_string())
        }
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Some(i.to_string())
            } else if let Some(u) = n.as_u64() {
                Some(u.to_string())
            } else {
                let f = n.as_f64()?;
                (f.is_finite() && f.fract() == 0.0 && f.abs() < 9e15)
                    .then(|| (f as i64).to_string())
            }
        }
        _ => None,
    }
}

/// Non-empty text (trimmed); numbers are written as text.
pub(crate) fn text(value: &Json) -> Option<String> {
    match value {
        Json::String(s) => {
            let s = s.trim();
            (!s.is_empty()).then(|| s.to_string())
        }
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A number, or a string holding one (a trailing `%` is allowed).
fn number(value: &Json) -> Option<(f64, bool)> {
    match value {
        Json::Number(n) => Some((n.as_f64()?, n.is_f64())),
        Json::String(s) => {
            let s = s.trim().trim_end_matches('%').trim();
            let f: f64 = s.parse().ok()?;
            Some((f, s.contains('.') || s.contains('e') || s.contains('E')))
        }
        _ => None,
    }
    .filter(|(f, _)| f.is_finite())
}

/// Progress in percent (0–100). The old app wrote fractions (`0.66`) and percentages (`66`,
/// `"80"`, `"80%"`): a value written with a decimal point that is at most 1 is a fraction; any
/// other value is a percentage. Values outside 0–100 are refused.
pub(crate) fn progress(value: &Json) -> Option<f64> {
    let (f, decimal) = number(value)?;
    let percent = if decimal && (0.0..=1.0).contains(&f) {
        f * 100.0
    } else {
        f
    };
    // Round away floating noise (0.66 × 100 = 66.00000000000001).
    let percent = (percent * 1000.0).round() / 1000.0;
    (0.0..=100.0).contains(&percent).then_some(percent)
}

/// A point in time as epoch milliseconds: epoch ms or seconds (number or numeric text), RFC
/// 3339 text, or a bare date / date-time without offset (read as UTC).
pub(crate) fn timestamp(value: &Json) -> Option<i64> {
    let ms = match value {
        Json::Number(_) => epoch(number(value)?.0),
        Json::String(s) => {
            let s = s.trim();
            if let Ok(f) = s.parse::<f64>() {
                epoch(f)
            } else {
                iso(s)
            }
        }
        _ => None,
    }?;
    (0..=MAX_MS).contains(&ms).then_some(ms)
}

fn epoch(f: f64) -> Option<i64> {
    if !f.is_finite() || f < 0.0 {
        return None;
    }
    let ms = if f < SECONDS_BELOW { f * 1000.0 } else { f };
    (ms <= MAX_MS as f64).then_some(ms as i64)
}

fn iso(s: &str) -> Option<i64> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return to_ms(t);
    }
    // "2024-09-03", "2024-09-03T10:00:00", "2024-09-03 10:00:00.5": UTC.
    let (date, rest) = match s.split_once(['T', ' ']) {
        Some((d, r)) => (d, Some(r)),
        None => (s, None),
    };
    let mut parts = date.split('-');
    let year: i32 = parts.next()?.parse().ok()?;
    let month: u8 = parts.next()?.parse().ok()?;
    let day: u8 = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    let date =
        time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()?;
    let time = match rest.map(|r| r.trim_end_matches('Z')) {
        None | Some("") => time::Time::MIDNIGHT,
        Some(r) => {
            let (hms, frac) = r.split_once('.').unwrap_or((r, ""));
            let mut hms = hms.split(':');
            let h: u8 = hms.next()?.parse().ok()?;
            let m: u8 = hms.next().unwrap_or("0").parse().ok()?;
            let sec: u8 = hms.next().unwrap_or("0").parse().ok()?;
            let milli: u16 = if frac.is_empty() {
                0
            } else {
                let digits: String = frac.chars().take(3).collect();
                format!("{digits:0<3}").parse().ok()?
            };
            time::Time::from_hms_milli(h, m, sec, milli).ok()?
        }
    };
    to_ms(time::PrimitiveDateTime::new(date, time).assume_utc())
}

fn to_ms(t: OffsetDateTime) -> Option<i64> {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// The first of `names` present (not null) in `obj`.
pub(crate) fn field<'a>(
    obj: &'a serde_json::Map<String, Json>,
    names: &[&str],
) -> Option<&'a Json> {
    names
        .iter()
        .filter_map(|n| obj.get(*n))
        .find(|v| !v.is_null())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_as_numbers_or_strings() {
        assert_eq!(id(&json!(1)), Some("1".into()));
        assert_eq!(id(&json!(" 1 ")), Some("1".into()));
        assert_eq!(id(&json!(1.0)), Some("1".into()));
        assert_eq!(id(&json!(1.5)), None);
        assert_eq!(id(&json!("")), None);
        assert_eq!(id(&json!(null)), None);
        assert_eq!(id(&json!([1])), None);
    }

    #[test]
    fn progress_fraction_or_percent() {
        assert_eq!(progress(&json!(0.66)), Some(66.0));
        assert_eq!(progress(&json!(50)), Some(50.0));
        assert_eq!(progress(&json!("80")), Some(80.0));
        assert_eq!(progress(&json!("80%")), Some(80.0));
        assert_eq!(progress(&json!("0.5")), Some(50.0));
        assert_eq!(progress(&json!(1)), Some(1.0));
        assert_eq!(progress(&json!(1.0)), Some(100.0));
        assert_eq!(progress(&json!(0)), Some(0.0));
        assert_eq!(progress(&json!(120)), None);
        assert_eq!(progress(&json!(-1)), None);
        assert_eq!(progress(&json!("lots")), None);
    }

    #[test]
    fn dates_iso_or_epoch() {
        let ms = 1_725_264_000_000;
        assert_eq!(timestamp(&json!(ms)), Some(ms));
        assert_eq!(timestamp(&json!("1725264000000")), Some(ms));
        assert_eq!(timestamp(&json!(1_725_264_000)), Some(ms));
        assert_eq!(timestamp(&json!("2024-09-02T08:00:00Z")), Some(ms));
        assert_eq!(timestamp(&json!("2024-09-02T08:00:00.000Z")), Some(ms));
        assert_eq!(timestamp(&json!("2024-09-02T10:00:00+02:00")), Some(ms));
        assert_eq!(timestamp(&json!("2024-09-02T08:00:00")), Some(ms));
        assert_eq!(timestamp(&json!("2024-09-02")), Some(ms - 8 * 3_600_000));
        assert_eq!(timestamp(&json!("yesterday")), None);
        assert_eq!(timestamp(&json!(-5)), None);
        assert_eq!(timestamp(&json!(1e300)), None);
        assert_eq!(timestamp(&json!("2024-13-40")), None);
    }

    #[test]
    fn settings_bare_or_quoted() {
        assert_eq!(setting("dark"), ("dark".into(), false));
        assert_eq!(setting("\"light\""), ("light".into(), true));
        assert_eq!(setting("\"\\\"light\\\"\""), ("light".into(), true));
    }

    #[test]
    fn decode_unwraps_double_encoded_json() {
        assert_eq!(decode("[1]").unwrap(), json!([1]));
        assert_eq!(decode("\"[1]\"").unwrap(), json!([1]));
        assert_eq!(decode("\"plain\"").unwrap(), json!("plain"));
        assert!(decode("{not json").is_err());
    }
}
