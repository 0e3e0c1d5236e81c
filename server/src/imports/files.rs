//! Turning uploaded or local files into dumps: a `.json` file is one dump, a `.zip` holds many
//! (its `.json` entries), a directory holds both. Shared by the CLI and the admin upload, so
//! both accept exactly the same inputs.

use std::io::Read;

use sync_core::import::MAX_DUMP_BYTES;

use super::DumpInput;

/// Most dumps one run takes (a zip of many thousands is split into several runs).
pub const MAX_DUMPS: usize = 20_000;

/// Most bytes the `.json` entries of one zip may expand to. Each entry is capped at
/// `MAX_DUMP_BYTES`, but a small archive of highly compressible entries could otherwise expand
/// to MAX_DUMPS × 32 MiB in memory (a zip bomb). 1 GiB holds 20,000 dumps of 50 KiB.
pub const MAX_ZIP_EXPANDED_BYTES: usize = 1 << 30;

/// The dumps in one file: the file itself, or the `.json` entries of a zip. A file that cannot
/// be read becomes a dump with an error, so the run records it.
pub fn read_dumps(name: &str, bytes: Vec<u8>) -> Vec<DumpInput> {
    if bytes.starts_with(b"PK\x03\x04") || name.to_ascii_lowercase().ends_with(".zip") {
        return read_zip(name, &bytes, MAX_ZIP_EXPANDED_BYTES);
    }
    vec![DumpInput {
        name: name.to_string(),
        text: text(bytes),
    }]
}

fn text(bytes: Vec<u8>) -> Result<String, String> {
    if bytes.len() > MAX_DUMP_BYTES {
        return Err(format!("larger than {MAX_DUMP_BYTES} bytes"));
    }
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
    // Some editors save JSON with a byte order mark.
    Ok(text
        .strip_prefix('\u{feff}')
        .map(str::to_string)
        .unwrap_or(text))
}

fn read_zip(name: &str, bytes: &[u8], max_expanded: usize) -> Vec<DumpInput> {
    let mut archive = match zip::ZipArchive::new(std::io::Cursor::new(bytes)) {
        Ok(a) => a,
        Err(e) => {
            return vec![DumpInput {
                name: name.to_string(),
                text: Err(format!("not a readable zip archive: {e}")),
            }];
        }
    };
    let mut out = Vec::new();
    let mut expanded = 0usize;
    for i in 0..archive.len() {
        let mut entry = match archive.by_index(i) {
            Ok(e) => e,
            Err(e) => {
                out.push(DumpInput {
                    name: format!("{name}#{i}"),
                    text: Err(format!("unreadable zip entry: {e}")),
                });
                continue;
            }
        };
        let entry_name = entry.name().to_string();
        let lower = entry_name.to_ascii_lowercase();
        if entry.is_dir() || !lower.ends_with(".json") || lower.contains("__macosx/") {
            continue;
        }
        let label = format!("{name}/{entry_name}");
        // Read at most one byte more than allowed: a zip bomb's declared size cannot be trusted.
        let room = MAX_DUMP_BYTES.min(max_expanded.saturating_sub(expanded));
        let mut data = Vec::new();
        let read = (&mut entry).take(room as u64 + 1).read_to_end(&mut data);
        expanded += data.len();
        if expanded > max_expanded {
            out.push(DumpInput {
                name: label,
                text: Err(format!(
                    "the archive expands to more than {max_expanded} bytes: split it into smaller archives"
                )),
            });
            break;
        }
        out.push(DumpInput {
            name: label,
            text: match read {
                Ok(_) => text(data),
                Err(e) => Err(format!("unreadable zip entry: {e}")),
            },
        });
        if out.len() > MAX_DUMPS {
            break;
        }
    }
    if out.is_empty() {
        out.push(DumpInput {
            name: name.to_string(),
            text: Err("the zip archive holds no .json file".into()),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut buf = std::io::Cursor::new(Vec::new());
        let mut w = zip::ZipWriter::new(&mut buf);
        for (name, data) in entries {
            w.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap();
        buf.into_inner()
    }

    #[test]
    fn json_files_and_zip_entries() {
        let one = read_dumps("a.json", b"\xef\xbb\xbf{}".to_vec());
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].text.as_deref(), Ok("{}"));
        let many = read_dumps(
            "dumps.zip",
            zip(&[
                ("x/a.json", b"{}"),
                ("notes.txt", b"hi"),
                ("__MACOSX/x/._a.json", b"?"),
                ("b.JSON", b"{\"theme\":\"dark\"}"),
            ]),
        );
        let names: Vec<_> = many.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, vec!["dumps.zip/x/a.json", "dumps.zip/b.JSON"]);
    }

    #[test]
    fn unreadable_files_become_failed_dumps() {
        assert!(
            read_dumps("a.json", vec![0xff, 0xfe])
                .remove(0)
                .text
                .is_err()
        );
        assert!(
            read_dumps("a.zip", b"PK\x03\x04garbage".to_vec())
                .remove(0)
                .text
                .is_err()
        );
        let empty = read_dumps("a.zip", zip(&[("readme.txt", b"x")]));
        assert_eq!(empty.len(), 1);
        assert!(empty[0].text.as_ref().unwrap_err().contains("no .json"));
    }

    #[test]
    fn a_zip_expanding_beyond_the_limit_stops_with_an_error() {
        let big = vec![b' '; 1000];
        let bomb = zip(&[("a.json", &big), ("b.json", &big), ("c.json", &big)]);
        assert!(bomb.len() < 1000, "the entries compress");
        let dumps = read_zip("bomb.zip", &bomb, 2500);
        let names: Vec<_> = dumps.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["bomb.zip/a.json", "bomb.zip/b.json", "bomb.zip/c.json"]
        );
        assert!(dumps[0].text.is_ok() && dumps[1].text.is_ok());
        let error = dumps[2].text.as_ref().unwrap_err();
        assert!(error.contains("more than 2500 bytes"), "{error}");
        // Exactly at the limit is fine.
        assert!(
            read_zip("ok.zip", &bomb, 3000)
                .iter()
                .all(|d| d.text.is_ok())
        );
    }
}
