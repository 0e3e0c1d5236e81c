//! Results: one row per measured figure, LearnSync beside the reference peer of the same run,
//! printed as a Markdown table and written as JSON.

use std::path::PathBuf;

use serde::Serialize;

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// GOALS.md id and scenario, e.g. `P1 propagation`.
    pub scenario: String,
    /// What was measured, with its unit.
    pub metric: String,
    /// LearnSync's figure.
    pub learnsync: Option<f64>,
    /// The reference peer's figure.
    pub reference: Option<f64>,
    /// Whether lower is better (for the ratio's direction).
    pub lower_is_better: bool,
    /// Correctness, failures, load.
    pub note: String,
}

impl Row {
    /// How many times better LearnSync is than the reference (>1 = better).
    pub fn advantage(&self) -> Option<f64> {
        match (self.learnsync, self.reference) {
            (Some(l), Some(r)) if l > 0.0 && r > 0.0 => {
                Some(if self.lower_is_better { r / l } else { l / r })
            }
            _ => None,
        }
    }
}

/// All rows of a run.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Rows in order.
    pub rows: Vec<Row>,
    /// Machine description.
    pub machine: String,
    /// Command line.
    pub command: String,
}

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

impl Report {
    /// Adds a row.
    pub fn push(&mut self, row: Row) {
        println!(
            "{:<28} {:<40} learnsync {:>10}  reference {:>10}  {}",
            row.scenario,
            row.metric,
            fmt(row.learnsync),
            fmt(row.reference),
            row.note
        );
        self.rows.push(row);
    }

    /// The Markdown table.
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "| scenario | metric | LearnSync | reference | LearnSync advantage | notes |\n|---|---|---:|---:|---:|---|\n",
        );
        for r in &self.rows {
            let adv = r
                .advantage()
                .map(|a| format!("{a:.1}×"))
                .unwrap_or_else(|| "—".into());
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                r.scenario,
                r.metric,
                fmt(r.learnsync),
                fmt(r.reference),
                adv,
                r.note
            ));
        }
        out
    }

    /// Writes `<dir>/<name>.json` and `<dir>/<name>.md`.
    pub fn write(&self, dir: &PathBuf, name: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join(format!("{name}.json")),
            serde_json::to_vec_pretty(self).unwrap_or_default(),
        )?;
        std::fs::write(
            dir.join(format!("{name}.md")),
            format!(
                "Machine: {}\n\nCommand: `{}`\n\n{}",
                self.machine,
                self.command,
                self.markdown()
            ),
        )
    }
}

/// A short description of this machine.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| format!("{:.0} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem}")
}
