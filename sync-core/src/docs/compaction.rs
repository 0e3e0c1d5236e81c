//! Folding a document's stored chunks (a snapshot and the change rows written since) into one
//! snapshot: what storage compaction computes, without the storage.

use automerge::{Automerge, AutomergeError, LoadOptions, OnPartialLoad, ReadDoc};

use super::DocError;

/// What folding a document's stored chunks gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Folded {
    /// The new snapshot: the document of the snapshot and every chunk, saved.
    Snapshot(Vec<u8>),
    /// A change's dependencies are not among the chunks: the rows must stay until they arrive.
    MissingDeps,
    /// A chunk automerge cannot read: the rows stay (never dropped); the reason, for the log.
    UnreadableChunk(String),
}

/// Loads `snapshot` followed by `chunks` in one pass and saves the result.
///
/// Why one pass: automerge applies the changes of one load as a batch, where loading the
/// chunks one `load_incremental` at a time applied them one by one — for a document compacted
/// after 64 small changes, about half of a compaction's CPU (BENCHMARKS.md, 2026-12-04, fifth
/// session). And why `load_with_options` rather than `load_incremental`: the latter skips a
/// chunk it cannot parse and reports success, which would fold a row's change away unread; a
/// strict load refuses the whole fold instead.
///
/// Fails only when the snapshot itself does not load (the document is corrupt).
pub fn fold_stored(snapshot: Option<&[u8]>, chunks: &[&[u8]]) -> Result<Folded, DocError> {
    let len = snapshot.map_or(0, <[u8]>::len) + chunks.iter().map(|c| c.len()).sum::<usize>();
    let mut all = Vec::with_capacity(len);
    all.extend_from_slice(snapshot.unwrap_or_default());
    for chunk in chunks {
        all.extend_from_slice(chunk);
    }
    let strict = || LoadOptions::new().on_partial_load(OnPartialLoad::Error);
    match Automerge::load_with_options(&all, strict()) {
        // With a snapshot first, automerge queues changes whose dependencies are missing
        // instead of failing.
        Ok(doc) if !doc.get_missing_deps(&[]).is_empty() => Ok(Folded::MissingDeps),
        Ok(doc) => Ok(Folded::Snapshot(doc.save())),
        Err(e) => {
            // Only on this path: tell a corrupt snapshot from a bad chunk.
            if let Some(snapshot) = snapshot
                && let Err(bad) = Automerge::load_with_options(snapshot, strict())
            {
                return Err(DocError::Automerge(format!("snapshot: {bad}")));
            }
            Ok(match e {
                AutomergeError::MissingDeps => Folded::MissingDeps,
                other => Folded::UnreadableChunk(other.to_string()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use automerge::transaction::Transactable;
    use automerge::{AutoCommit, ROOT};

    use super::*;

    /// A document with `n` changes after its first, its first saved, and each change's bytes.
    fn history(n: usize) -> (Automerge, Vec<u8>, Vec<Vec<u8>>) {
        let mut doc = AutoCommit::new();
        doc.put(ROOT, "start", 0).unwrap();
        let snapshot = doc.save();
        let mut chunks = Vec::new();
        for i in 0..n {
            let heads = doc.get_heads();
            doc.put(ROOT, format!("k{}", i % 5), i as i64).unwrap();
            chunks.push(doc.save_after(&heads));
        }
        (doc.document().clone(), snapshot, chunks)
    }

    fn load(bytes: &[u8]) -> Automerge {
        Automerge::load(bytes).unwrap()
    }

    #[test]
    fn a_snapshot_and_its_changes_fold_into_the_same_document() {
        let (doc, snapshot, chunks) = history(64);
        let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let Folded::Snapshot(folded) = fold_stored(Some(&snapshot), &refs).unwrap() else {
            panic!("not folded");
        };
        let folded = load(&folded);
        assert_eq!(folded.get_heads(), doc.get_heads());
        assert_eq!(folded.hydrate(None), doc.hydrate(None));
        assert_eq!(folded.get_changes(&[]).len(), 65);
    }

    #[test]
    fn change_rows_alone_fold_and_a_change_stored_twice_is_harmless() {
        let (doc, _, _) = history(10);
        let mut rows: Vec<Vec<u8>> = doc
            .get_changes(&[])
            .iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect();
        rows.push(rows[3].clone());
        let refs: Vec<&[u8]> = rows.iter().map(Vec::as_slice).collect();
        let Folded::Snapshot(folded) = fold_stored(None, &refs).unwrap() else {
            panic!("not folded");
        };
        assert_eq!(load(&folded).get_heads(), doc.get_heads());
    }

    #[test]
    fn a_chunk_that_does_not_parse_stops_the_fold() {
        let (_, snapshot, mut chunks) = history(5);
        chunks.insert(2, b"not automerge".to_vec());
        let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        assert!(matches!(
            fold_stored(Some(&snapshot), &refs).unwrap(),
            Folded::UnreadableChunk(_)
        ));
        // The same chunk one `load_incremental` at a time goes unnoticed: why the strict load.
        let mut doc = load(&snapshot);
        assert!(doc.load_incremental(b"not automerge").is_ok());
    }

    #[test]
    fn a_change_whose_dependency_is_not_stored_stops_the_fold() {
        let (_, snapshot, chunks) = history(5);
        let without_first: Vec<&[u8]> = chunks[1..].iter().map(Vec::as_slice).collect();
        assert_eq!(
            fold_stored(Some(&snapshot), &without_first).unwrap(),
            Folded::MissingDeps
        );
        assert_eq!(
            fold_stored(None, &without_first).unwrap(),
            Folded::MissingDeps
        );
    }

    #[test]
    fn a_corrupt_snapshot_is_an_error() {
        let (_, mut snapshot, chunks) = history(3);
        let last = snapshot.len() - 1;
        snapshot[last] ^= 0xff;
        let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        assert!(fold_stored(Some(&snapshot), &refs).is_err());
    }
}
