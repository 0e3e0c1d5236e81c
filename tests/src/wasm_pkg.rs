//! The built browser client packages (`client-wasm/pkg`, `client-wasm/pkg-node`), refused when
//! missing or older than the sources they are built from: a stale package makes client tests
//! fail in ways that point nowhere near the cause.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::js::workspace_root;

/// `client-wasm/<dir>`; panics with "run scripts/build-wasm.sh" when it is missing or older than
/// `client-wasm/src`, `sync-core/src` or their manifests.
pub fn package(dir: &str) -> PathBuf {
    let root = workspace_root();
    let pkg = root.join("client-wasm").join(dir);
    let built = std::fs::metadata(pkg.join(".fingerprint"))
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} has not been built: run scripts/build-wasm.sh",
                pkg.display()
            )
        });
    for source in [
        "client-wasm/src",
        "client-wasm/Cargo.toml",
        "sync-core/src",
        "sync-core/Cargo.toml",
    ] {
        if let Some((path, modified)) = newest(&root.join(source))
            && modified > built
        {
            panic!(
                "{} is older than {}: run scripts/build-wasm.sh",
                pkg.display(),
                path.display()
            );
        }
    }
    pkg
}

fn newest(path: &Path) -> Option<(PathBuf, SystemTime)> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_file() {
        return Some((path.to_path_buf(), meta.modified().ok()?));
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(|entry| newest(&entry.ok()?.path()))
        .max_by_key(|(_, modified)| *modified)
}
