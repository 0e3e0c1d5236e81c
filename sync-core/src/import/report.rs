//! What an import did, per legacy key: how many values were imported, merged, found unchanged
//! or skipped, and why. The admin page, the CLI summary and the run record all show this.

use serde::{Deserialize, Serialize};

/// Most notes kept per row; the rest are counted, so a dump with a million bad entries cannot
/// grow a report without bound.
const MAX_NOTES: usize = 20;

/// What happened to the values of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Written where nothing was before.
    Imported,
    /// Combined with what was there (another key of the dump, or state from sync).
    Merged,
    /// Already there: a re-import of the same dump reports only this (and skips).
    Unchanged,
    /// Not applied; the note says why and where the raw value is kept.
    Skipped,
    /// Could not be stored (storage error); a later run can retry.
    Failed,
}

impl Outcome {
    /// The lowercase name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Imported => "imported",
            Outcome::Merged => "merged",
            Outcome::Unchanged => "unchanged",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "failed",
        }
    }

    /// Whether values with this outcome changed anything.
    pub fn is_change(self) -> bool {
        matches!(self, Outcome::Imported | Outcome::Merged)
    }
}

/// One row of a report: a key (or `key/part`), an outcome, how many values had it, and notes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyReport {
    /// The `localStorage` key; `key/progress` for the course documents fed by an enrollment key.
    pub key: String,
    /// What happened.
    pub outcome: Outcome,
    /// How many values.
    pub count: u64,
    /// Why, for skipped values; how a messy value was read, for the others.
    pub notes: Vec<String>,
}

/// A report under construction: rows keyed by (key, outcome), in the order keys first appear.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    rows: Vec<KeyReport>,
    dropped_notes: Vec<(usize, u64)>,
}

impl Report {
    /// An empty report.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one value of `key` with `outcome`, with an optional note.
    pub fn record(&mut self, key: &str, outcome: Outcome, note: Option<String>) {
        self.add(key, outcome, 1, note);
    }

    /// Counts `count` values of `key` with `outcome`.
    pub fn add(&mut self, key: &str, outcome: Outcome, count: u64, note: Option<String>) {
        let index = match self
            .rows
            .iter()
            .position(|r| r.key == key && r.outcome == outcome)
        {
            Some(i) => i,
            None => {
                // Keep rows of one key together, in the order keys first appeared.
                let at = self
                    .rows
                    .iter()
                    .rposition(|r| r.key == key)
                    .map_or(self.rows.len(), |i| i + 1);
                self.rows.insert(
                    at,
                    KeyReport {
                        key: key.to_string(),
                        outcome,
                        count: 0,
                        notes: Vec::new(),
                    },
                );
                for (row, _) in &mut self.dropped_notes {
                    if *row >= at {
                        *row += 1;
                    }
                }
                at
            }
        };
        let row = &mut self.rows[index];
        row.count += count;
        if let Some(note) = note {
            if row.notes.contains(&note) {
                return;
            }
            if row.notes.len() < MAX_NOTES {
                row.notes.push(note);
            } else {
                match self.dropped_notes.iter_mut().find(|(r, _)| *r == index) {
                    Some((_, n)) => *n += 1,
                    None => self.dropped_notes.push((index, 1)),
                }
            }
        }
    }

    /// Adds every row of another report.
    pub fn extend(&mut self, rows: impl IntoIterator<Item = KeyReport>) {
        for row in rows {
            let mut notes = row.notes.into_iter();
            match notes.next() {
                None => self.add(&row.key, row.outcome, row.count, None),
                Some(first) => {
                    self.add(&row.key, row.outcome, row.count, Some(first));
                    for note in notes {
                        self.add(&row.key, row.outcome, 0, Some(note));
                    }
                }
            }
        }
    }

    /// How many values had `outcome`, over all keys.
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.rows
            .iter()
            .filter(|r| r.outcome == outcome)
            .map(|r| r.count)
            .sum()
    }

    /// Whether anything was imported or merged.
    pub fn changed(&self) -> bool {
        self.rows
            .iter()
            .any(|r| r.outcome.is_change() && r.count > 0)
    }

    /// The rows, with a last note saying how many notes were left out where there were too many.
    pub fn into_rows(self) -> Vec<KeyReport> {
        let mut rows = self.rows;
        for (index, n) in self.dropped_notes {
            if let Some(row) = rows.get_mut(index) {
                row.notes.push(format!("… and {n} more"));
            }
        }
        rows
    }

    /// The rows as they stand.
    pub fn rows(&self) -> &[KeyReport] {
        &self.rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_merge_by_key_and_outcome_and_stay_grouped() {
        let mut r = Report::new();
        r.record("a", Outcome::Imported, None);
        r.record("b", Outcome::Imported, Some("x".into()));
        r.record("a", Outcome::Skipped, Some("why".into()));
        r.record("a", Outcome::Imported, None);
        r.record("b", Outcome::Imported, Some("x".into()));
        let rows = r.into_rows();
        let shape: Vec<_> = rows
            .iter()
            .map(|r| (r.key.as_str(), r.outcome, r.count, r.notes.len()))
            .collect();
        assert_eq!(
            shape,
            vec![
                ("a", Outcome::Imported, 2, 0),
                ("a", Outcome::Skipped, 1, 1),
                ("b", Outcome::Imported, 2, 1),
            ]
        );
    }

    #[test]
    fn notes_are_capped() {
        let mut r = Report::new();
        for i in 0..30 {
            r.record("k", Outcome::Skipped, Some(format!("note {i}")));
        }
        r.record("j", Outcome::Imported, None);
        let rows = r.into_rows();
        assert_eq!(rows[0].count, 30);
        assert_eq!(rows[0].notes.len(), MAX_NOTES + 1);
        assert_eq!(rows[0].notes.last().unwrap(), "… and 10 more");
        assert!(rows[1].notes.is_empty());
    }
}
