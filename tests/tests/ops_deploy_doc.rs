//! `docs/deploy.md` cannot drift from the binary: its configuration reference is the exact
//! `--help` text of the `learnsync` binary (`cargo build -p learnsync` first), and every metric
//! the server records is described in its monitoring section.
//!
//! To regenerate the help blocks after changing an option:
//! `cargo build -p learnsync && LEARNSYNC_UPDATE_DOCS=1 cargo nextest run -p e2e --test ops_deploy_doc`
//! (or `scripts/gen-deploy-doc.sh`).

use e2e::process::learnsync_bin;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `learnsync <args> --help` with an empty environment: clap prints the current value of
/// every `env` variable in the help, so the operator's environment must not leak in.
fn help(args: &str) -> String {
    let out = Command::new(learnsync_bin())
        .args(args.split_whitespace())
        .arg("--help")
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "learnsync {args} --help failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim_end()
        .to_string()
}

const BEGIN: &str = "<!-- generated: learnsync ";
const END: &str = "<!-- end generated -->";

/// The doc with every generated block replaced by the binary's current help text; also
/// returns which commands the doc has blocks for.
fn regenerate(doc: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(doc.len());
    let mut commands = Vec::new();
    let mut rest = doc;
    while let Some(start) = rest.find(BEGIN) {
        let header_end = start
            + rest[start..]
                .find("-->")
                .expect("generated block header ends with -->")
            + 3;
        let header = &rest[start..header_end];
        let args = header[BEGIN.len()..header.len() - 3]
            .trim()
            .trim_end_matches("--help")
            .trim()
            .to_string();
        let end = header_end
            + rest[header_end..]
                .find(END)
                .unwrap_or_else(|| panic!("no {END} after {header}"));
        out.push_str(&rest[..header_end]);
        out.push_str("\n```text\n");
        out.push_str(&help(&args));
        out.push_str("\n```\n");
        commands.push(args);
        rest = &rest[end..];
    }
    out.push_str(rest);
    (out, commands)
}

#[test]
fn configuration_reference_is_the_binarys_own_help() {
    let path = root().join("docs/deploy.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let (expected, commands) = regenerate(&doc);
    for command in ["serve", "backup", "restore"] {
        assert!(
            commands.iter().any(|c| c == command),
            "docs/deploy.md has no generated block for `learnsync {command} --help`"
        );
    }
    if std::env::var_os("LEARNSYNC_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &expected).unwrap();
        return;
    }
    if doc != expected {
        let first = doc
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "docs/deploy.md is out of date with `learnsync … --help` (first difference at line {}):\n  doc:    {:?}\n  binary: {:?}\nregenerate: scripts/gen-deploy-doc.sh",
            first + 1,
            doc.lines().nth(first).unwrap_or(""),
            expected.lines().nth(first).unwrap_or("")
        );
    }
    // Every option really is in the doc (guards against an empty or truncated block).
    for flag in help("serve")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("--"))
    {
        let flag = flag.split_whitespace().next().unwrap_or_default();
        assert!(
            doc.contains(&format!("--{flag}")),
            "--{flag} is missing from docs/deploy.md"
        );
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_metric_the_server_records_is_documented() {
    let doc = std::fs::read_to_string(root().join("docs/deploy.md")).unwrap();
    let mut files = Vec::new();
    rust_files(&root().join("server/src"), &mut files);
    let mut names = std::collections::BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for macro_name in ["counter!(", "gauge!(", "histogram!("] {
            for (i, _) in text.match_indices(macro_name) {
                let after = text[i + macro_name.len()..].trim_start();
                if let Some(quoted) = after.strip_prefix('"')
                    && let Some(end) = quoted.find('"')
                {
                    names.insert(quoted[..end].to_string());
                }
            }
        }
    }
    assert!(
        names.len() >= 10,
        "found only {names:?}: the scan looks broken"
    );
    let missing: Vec<_> = names
        .iter()
        .filter(|n| !doc.contains(&format!("`{n}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics recorded by the server but not described in docs/deploy.md (monitoring): {missing:?}"
    );
}
