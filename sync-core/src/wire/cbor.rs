//! The part of CBOR (RFC 8949) automerge-repo uses, read and written by hand.
//!
//! Written here rather than taken from a CBOR crate for two reasons. The bytes must be exactly
//! what cbor-x writes (maps always with a 2-byte length, `undefined` for some absent values,
//! numbers from 2^32 on as float64), which general encoders do not do. And hostile input must
//! never make the reader allocate or recurse without bound: the [`Reader`] allocates nothing at
//! all, it only hands out slices of the input, and every length is checked against the bytes
//! that are actually left before anything trusts it.

use super::DecodeError;

/// Deepest nesting accepted anywhere in a frame. automerge-repo messages nest four levels
/// (`newHeads` → storage id → `heads` → hash); the margin is for fields of unknown messages.
pub(crate) const MAX_DEPTH: usize = 32;

/// The head of one data item: its major type and argument, with the payload not yet read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Head {
    /// Unsigned integer.
    Uint(u64),
    /// Negative integer `-1 - n`.
    Neg(u64),
    /// Byte string of this length.
    Bytes(u64),
    /// Text string of this many bytes.
    Text(u64),
    /// Array of this many items.
    Array(u64),
    /// Map of this many pairs.
    Map(u64),
    /// Tag; the tagged item follows.
    Tag(u64),
    /// `false` / `true`.
    Bool(bool),
    /// `null` (f6) or `undefined` (f7): automerge-repo means "absent" by both.
    Absent,
    /// Half, single or double precision float, widened.
    Float(f64),
    /// Any other simple value (no payload).
    Simple,
}

/// A cursor over one frame. Every method either consumes exactly what it read or fails.
pub(crate) struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(input: &'a [u8]) -> Self {
        Self { input, pos: 0 }
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.input.len() - self.pos
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self.input.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    /// The next `n` bytes. `n` is checked against what is left before it is used.
    pub(crate) fn take(&mut self, n: u64) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() as u64 {
            return Err(DecodeError::Truncated);
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.input[start..self.pos])
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64)?);
        Ok(out)
    }

    /// The argument of a head byte. Any width is accepted for any value (cbor-x writes
    /// 2-byte map lengths even for one entry; other encoders write minimal ones).
    fn argument(&mut self, info: u8) -> Result<u64, DecodeError> {
        Ok(match info {
            0..=23 => u64::from(info),
            24 => u64::from(self.byte()?),
            25 => u64::from(u16::from_be_bytes(self.fixed()?)),
            26 => u64::from(u32::from_be_bytes(self.fixed()?)),
            27 => u64::from_be_bytes(self.fixed()?),
            31 => return Err(DecodeError::Unsupported("indefinite-length item")),
            _ => return Err(DecodeError::Unsupported("reserved additional information")),
        })
    }

    /// Reads one head.
    pub(crate) fn head(&mut self) -> Result<Head, DecodeError> {
        let initial = self.byte()?;
        let info = initial & 0x1f;
        Ok(match initial >> 5 {
            0 => Head::Uint(self.argument(info)?),
            1 => Head::Neg(self.argument(info)?),
            2 => Head::Bytes(self.argument(info)?),
            3 => Head::Text(self.argument(info)?),
            4 => Head::Array(self.argument(info)?),
            5 => Head::Map(self.argument(info)?),
            6 => Head::Tag(self.argument(info)?),
            _ => match info {
                0..=19 => Head::Simple,
                20 => Head::Bool(false),
                21 => Head::Bool(true),
                22 | 23 => Head::Absent,
                24 => match self.byte()? {
                    // Two-byte simple values below 32 are not well-formed (RFC 8949 §3.3).
                    0..=31 => return Err(DecodeError::Unsupported("badly encoded simple value")),
                    _ => Head::Simple,
                },
                25 => Head::Float(f16_to_f64(u16::from_be_bytes(self.fixed()?))),
                26 => Head::Float(f64::from(f32::from_bits(u32::from_be_bytes(self.fixed()?)))),
                27 => Head::Float(f64::from_bits(u64::from_be_bytes(self.fixed()?))),
                31 => return Err(DecodeError::Unsupported("break outside an indefinite item")),
                _ => return Err(DecodeError::Unsupported("reserved additional information")),
            },
        })
    }

    /// Reads one head, looking through tags. cbor-x with `tagUint8Array: false` writes none,
    /// but automerge-repo before August 2023 tagged byte strings (tag 64); the tagged item is
    /// what matters. At most [`MAX_DEPTH`] tags in a row.
    pub(crate) fn untagged_head(&mut self) -> Result<Head, DecodeError> {
        for _ in 0..MAX_DEPTH {
            match self.head()? {
                Head::Tag(_) => continue,
                head => return Ok(head),
            }
        }
        Err(DecodeError::TooDeep)
    }

    /// The UTF-8 payload of a text head of `len` bytes.
    pub(crate) fn text(&mut self, len: u64, field: &'static str) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.take(len)?).map_err(|_| DecodeError::InvalidUtf8(field))
    }

    /// Checks a container's claimed size against the bytes left (each item takes at least
    /// one byte, each map entry two) so that the count can size a loop or an allocation.
    pub(crate) fn count(&self, n: u64, bytes_per_item: u64) -> Result<usize, DecodeError> {
        if n.saturating_mul(bytes_per_item) > self.remaining() as u64 {
            return Err(DecodeError::Truncated);
        }
        Ok(n as usize)
    }

    /// Skips one whole item, checking that it is well-formed and nests no deeper than
    /// [`MAX_DEPTH`] (`depth` is the item's own depth), and returns its bytes.
    pub(crate) fn item(&mut self, depth: usize) -> Result<&'a [u8], DecodeError> {
        let start = self.pos;
        self.skip(depth)?;
        Ok(&self.input[start..self.pos])
    }

    fn skip(&mut self, depth: usize) -> Result<(), DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        match self.head()? {
            Head::Bytes(n) | Head::Text(n) => {
                self.take(n)?;
            }
            Head::Array(n) => {
                for _ in 0..self.count(n, 1)? {
                    self.skip(depth + 1)?;
                }
            }
            Head::Map(n) => {
                for _ in 0..self.count(n, 2)? {
                    self.skip(depth + 1)?;
                    self.skip(depth + 1)?;
                }
            }
            Head::Tag(_) => self.skip(depth + 1)?,
            Head::Uint(_)
            | Head::Neg(_)
            | Head::Bool(_)
            | Head::Absent
            | Head::Float(_)
            | Head::Simple => {}
        }
        Ok(())
    }
}

fn f16_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((bits >> 10) & 0x1f);
    let frac = f64::from(bits & 0x3ff);
    match exp {
        0 => sign * frac * 2f64.powi(-24),
        31 if frac == 0.0 => sign * f64::INFINITY,
        31 => f64::NAN,
        _ => sign * (1.0 + frac / 1024.0) * 2f64.powi(exp - 15),
    }
}

/// The largest integer a JavaScript number holds exactly (2^53). cbor-x writes integers from
/// 2^32 up as float64, and float64 is exact up to here.
pub(crate) const MAX_SAFE_FLOAT_INTEGER: u64 = 1 << 53;

/// Appends CBOR to a buffer the way cbor-x writes automerge-repo messages.
pub(crate) struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Self {
        Self { out }
    }

    /// A head with the shortest argument, as cbor-x writes strings, byte strings and arrays.
    fn head(&mut self, major: u8, n: u64) {
        let m = major << 5;
        if n < 24 {
            self.out.push(m | n as u8);
        } else if n <= 0xff {
            self.out.extend_from_slice(&[m | 24, n as u8]);
        } else if n <= 0xffff {
            self.out.push(m | 25);
            self.out.extend_from_slice(&(n as u16).to_be_bytes());
        } else if n <= 0xffff_ffff {
            self.out.push(m | 26);
            self.out.extend_from_slice(&(n as u32).to_be_bytes());
        } else {
            self.out.push(m | 27);
            self.out.extend_from_slice(&n.to_be_bytes());
        }
    }

    /// A map header. cbor-x (with `useRecords: false`) writes every object with a 2-byte
    /// length, `b9 00 NN`, however few keys it has, and a 4-byte one from 65,536 keys on.
    pub(crate) fn map(&mut self, len: usize) {
        if let Ok(len) = u16::try_from(len) {
            self.out.push(0xb9);
            self.out.extend_from_slice(&len.to_be_bytes());
        } else {
            self.out.push(0xba);
            self.out.extend_from_slice(&(len as u32).to_be_bytes());
        }
    }

    pub(crate) fn array(&mut self, len: usize) {
        self.head(4, len as u64);
    }

    pub(crate) fn text(&mut self, s: &str) {
        self.head(3, s.len() as u64);
        self.out.extend_from_slice(s.as_bytes());
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.head(2, b.len() as u64);
        self.out.extend_from_slice(b);
    }

    pub(crate) fn bool(&mut self, b: bool) {
        self.out.push(if b { 0xf5 } else { 0xf4 });
    }

    /// `undefined`, which a JavaScript object literal writes for a key it always has but that
    /// has no value (a storage-less Repo's `storageId`).
    pub(crate) fn undefined(&mut self) {
        self.out.push(0xf7);
    }

    /// A non-negative integer as a JavaScript number travels: an unsigned integer below 2^32
    /// and a float64 from there to 2^53, byte for byte as cbor-x writes it. Above 2^53 no
    /// JavaScript number is exact, so the value is written as a 64-bit unsigned integer (what
    /// cbor-x writes for a `BigInt`), which keeps it exact for Rust peers.
    pub(crate) fn number(&mut self, n: u64) {
        if n < (1 << 32) {
            self.head(0, n);
        } else if n <= MAX_SAFE_FLOAT_INTEGER {
            self.out.push(0xfb);
            self.out
                .extend_from_slice(&(n as f64).to_bits().to_be_bytes());
        } else {
            self.out.push(0x1b);
            self.out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        hex::encode(bytes)
    }

    fn write(f: impl FnOnce(&mut Writer<'_>)) -> String {
        let mut out = Vec::new();
        f(&mut Writer::new(&mut out));
        hex(&out)
    }

    /// Values from cbor-x 1.6.9 (`new Encoder({tagUint8Array: false, useRecords: false})`).
    #[test]
    fn numbers_like_cbor_x() {
        for (n, expected) in [
            (0u64, "00"),
            (23, "17"),
            (24, "1818"),
            (255, "18ff"),
            (256, "190100"),
            (65_535, "19ffff"),
            (65_536, "1a00010000"),
            (4_294_967_295, "1affffffff"),
            (4_294_967_296, "fb41f0000000000000"),
            (4_294_967_297, "fb41f0000000100000"),
            (1_767_225_600_123, "fb4279b76daa87b000"),
            (9_007_199_254_740_991, "fb433fffffffffffff"),
            (9_007_199_254_740_992, "fb4340000000000000"),
            // No JavaScript number holds this exactly: cbor-x writes a BigInt this way.
            (9_007_199_254_740_993, "1b0020000000000001"),
        ] {
            assert_eq!(write(|w| w.number(n)), expected, "{n}");
        }
    }

    /// Header widths from cbor-x 1.6.9.
    #[test]
    fn headers_like_cbor_x() {
        assert_eq!(write(|w| w.map(0)), "b90000");
        assert_eq!(write(|w| w.map(30)), "b9001e");
        assert_eq!(write(|w| w.array(0)), "80");
        assert_eq!(write(|w| w.array(24)), "9818");
        assert_eq!(&write(|w| w.text(&"a".repeat(23)))[..2], "77");
        assert_eq!(&write(|w| w.text(&"a".repeat(24)))[..4], "7818");
        assert_eq!(&write(|w| w.text(&"a".repeat(256)))[..6], "790100");
        assert_eq!(&write(|w| w.text(&"a".repeat(65_536)))[..10], "7a00010000");
        // Length counts UTF-8 bytes: 12 × "é" is 24 bytes.
        assert_eq!(&write(|w| w.text(&"é".repeat(12)))[..4], "7818");
        assert_eq!(write(|w| w.bytes(&[0, 0, 0])), "43000000");
        assert_eq!(&write(|w| w.bytes(&[0; 24]))[..4], "5818");
        assert_eq!(&write(|w| w.bytes(&[0; 256]))[..6], "590100");
    }

    #[test]
    fn every_header_width_reads_the_same() {
        for bytes in [
            &[0x61, b'a'][..],
            &[0x78, 1, b'a'],
            &[0x79, 0, 1, b'a'],
            &[0x7a, 0, 0, 0, 1, b'a'],
            &[0x7b, 0, 0, 0, 0, 0, 0, 0, 1, b'a'],
        ] {
            let mut r = Reader::new(bytes);
            assert_eq!(r.head().unwrap(), Head::Text(1));
            assert_eq!(r.text(1, "t").unwrap(), "a");
            assert_eq!(r.remaining(), 0);
        }
    }

    #[test]
    fn lengths_are_checked_against_the_input() {
        // An array claiming 2^32 items, a byte string claiming 4 GiB, a map claiming 2^64 - 1.
        for bytes in [
            &[0x9b, 0, 0, 0, 1, 0, 0, 0, 0][..],
            &[0x5a, 0xff, 0xff, 0xff, 0xff],
            &[0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ] {
            assert_eq!(Reader::new(bytes).item(0), Err(DecodeError::Truncated));
        }
    }

    #[test]
    fn depth_is_bounded() {
        let deep = vec![0x81u8; 100];
        assert_eq!(Reader::new(&deep).item(0), Err(DecodeError::TooDeep));
        let tags = [vec![0xc1u8; 100], vec![0x00]].concat();
        assert_eq!(Reader::new(&tags).item(0), Err(DecodeError::TooDeep));
        assert_eq!(
            Reader::new(&tags).untagged_head(),
            Err(DecodeError::TooDeep)
        );
        let ok = [vec![0x81u8; MAX_DEPTH], vec![0x00]].concat();
        assert_eq!(Reader::new(&ok).item(0).unwrap().len(), ok.len());
    }

    #[test]
    fn floats_of_every_width() {
        for (bytes, value) in [
            (&[0xf9, 0x3c, 0x00][..], 1.0),
            (&[0xf9, 0x7c, 0x00], f64::INFINITY),
            (&[0xf9, 0x00, 0x01], 2f64.powi(-24)),
            (&[0xfa, 0x47, 0xc3, 0x50, 0x00], 100_000.0),
            (
                &[0xfb, 0x42, 0x79, 0xb7, 0x6d, 0xaa, 0x87, 0xb0, 0x00],
                1_767_225_600_123.0,
            ),
        ] {
            assert_eq!(Reader::new(bytes).head().unwrap(), Head::Float(value));
        }
    }

    #[test]
    fn simple_values() {
        assert_eq!(Reader::new(&[0xf6]).head().unwrap(), Head::Absent);
        assert_eq!(Reader::new(&[0xf7]).head().unwrap(), Head::Absent);
        assert_eq!(Reader::new(&[0xf5]).head().unwrap(), Head::Bool(true));
        assert_eq!(Reader::new(&[0xf8, 0xff]).head().unwrap(), Head::Simple);
        assert!(Reader::new(&[0xf8, 0x10]).head().is_err());
        assert!(Reader::new(&[0xff]).head().is_err());
        assert!(Reader::new(&[0x1c]).head().is_err());
        assert!(Reader::new(&[0xbf]).head().is_err());
    }
}
