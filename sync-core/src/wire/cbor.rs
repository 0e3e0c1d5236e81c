//! The small subset of CBOR (RFC 8949) automerge-repo uses, read and written by hand so that
//! the bytes are exactly what the JavaScript implementation (cbor-x) produces and so that
//! hostile input can never make us allocate or recurse without bound.

use super::DecodeError;

/// Deepest nesting accepted (messages are at most three levels deep).
const MAX_DEPTH: usize = 16;

/// A decoded CBOR value. Maps keep their order; keys are text (cbor-x writes no other kind).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value<'a> {
    Uint(u64),
    /// A negative integer `-1 - n`.
    Neg(u64),
    Bytes(&'a [u8]),
    Text(&'a str),
    Array(Vec<Value<'a>>),
    Map(Vec<(Value<'a>, Value<'a>)>),
    Bool(bool),
    /// `null` (f6) or `undefined` (f7): both mean "absent" to automerge-repo.
    Absent,
    Float(f64),
}

/// Decodes exactly one item covering all of `input`.
pub(crate) fn decode(input: &[u8]) -> Result<Value<'_>, DecodeError> {
    let mut reader = Reader { input, pos: 0 };
    let value = reader.item(0)?;
    if reader.pos != input.len() {
        return Err(DecodeError::TrailingBytes(input.len() - reader.pos));
    }
    Ok(value)
}

struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self.input.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], DecodeError> {
        let remaining = (self.input.len() - self.pos) as u64;
        if n > remaining {
            return Err(DecodeError::Truncated);
        }
        let n = n as usize;
        let slice = &self.input[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    /// The argument of a head byte (the length or value), for additional info `info`.
    fn argument(&mut self, info: u8) -> Result<u64, DecodeError> {
        Ok(match info {
            0..=23 => u64::from(info),
            24 => u64::from(self.byte()?),
            25 => u64::from(u16::from_be_bytes(self.fixed::<2>()?)),
            26 => u64::from(u32::from_be_bytes(self.fixed::<4>()?)),
            27 => u64::from_be_bytes(self.fixed::<8>()?),
            31 => return Err(DecodeError::Unsupported("indefinite-length item")),
            _ => return Err(DecodeError::Unsupported("reserved additional information")),
        })
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let slice = self.take(N as u64)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    /// Checks a container length against the bytes left: every element needs at least one
    /// byte, so a claimed length larger than that is a lie and must not size an allocation.
    fn count(&self, n: u64, per_item: u64) -> Result<usize, DecodeError> {
        let remaining = (self.input.len() - self.pos) as u64;
        if n.saturating_mul(per_item) > remaining {
            return Err(DecodeError::Truncated);
        }
        Ok(n as usize)
    }

    fn item(&mut self, depth: usize) -> Result<Value<'a>, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        let head = self.byte()?;
        let major = head >> 5;
        let info = head & 0x1f;
        match major {
            0 => Ok(Value::Uint(self.argument(info)?)),
            1 => Ok(Value::Neg(self.argument(info)?)),
            2 => {
                let n = self.argument(info)?;
                Ok(Value::Bytes(self.take(n)?))
            }
            3 => {
                let n = self.argument(info)?;
                let bytes = self.take(n)?;
                std::str::from_utf8(bytes)
                    .map(Value::Text)
                    .map_err(|_| DecodeError::InvalidUtf8)
            }
            4 => {
                let n = self.argument(info)?;
                let n = self.count(n, 1)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.item(depth + 1)?);
                }
                Ok(Value::Array(items))
            }
            5 => {
                let n = self.argument(info)?;
                let n = self.count(n, 2)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let k = self.item(depth + 1)?;
                    let v = self.item(depth + 1)?;
                    entries.push((k, v));
                }
                Ok(Value::Map(entries))
            }
            6 => {
                // A tag: cbor-x with tagUint8Array:false sends none, but older clients tagged
                // typed arrays (tag 64); accept the tagged item itself.
                let _tag = self.argument(info)?;
                self.item(depth + 1)
            }
            _ => match info {
                20 => Ok(Value::Bool(false)),
                21 => Ok(Value::Bool(true)),
                22 | 23 => Ok(Value::Absent),
                25 => {
                    let bits = u16::from_be_bytes(self.fixed::<2>()?);
                    Ok(Value::Float(f16_to_f64(bits)))
                }
                26 => Ok(Value::Float(f64::from(f32::from_bits(u32::from_be_bytes(
                    self.fixed::<4>()?,
                ))))),
                27 => Ok(Value::Float(f64::from_bits(u64::from_be_bytes(
                    self.fixed::<8>()?,
                )))),
                _ => Err(DecodeError::Unsupported("simple value")),
            },
        }
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

/// Writes CBOR the way cbor-x does for automerge-repo messages.
pub(crate) struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Self {
        Self { out }
    }

    fn head(&mut self, major: u8, n: u64) {
        let m = major << 5;
        if n < 24 {
            self.out.push(m | n as u8);
        } else if n <= 0xff {
            self.out.push(m | 24);
            self.out.push(n as u8);
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

    /// A map header. cbor-x always writes objects with a 2-byte length (`b9 NN NN`).
    pub(crate) fn map(&mut self, len: usize) {
        self.out.push(0xb9);
        self.out.extend_from_slice(&(len as u16).to_be_bytes());
    }

    /// An array header with the minimal length encoding (as cbor-x writes arrays).
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

    /// A non-negative integer as JavaScript numbers travel: an unsigned integer below 2^32,
    /// a float64 from there on (cbor-x writes `Date.now()` that way).
    pub(crate) fn number(&mut self, n: u64) {
        if n < (1 << 32) {
            self.head(0, n);
        } else {
            self.out.push(0xfb);
            self.out
                .extend_from_slice(&(n as f64).to_bits().to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_checked_before_allocating() {
        // An array claiming 2^32 items in 6 bytes.
        assert_eq!(
            decode(&[0x9b, 0, 0, 0, 1, 0, 0, 0, 0]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode(&[0x5a, 0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn depth_is_bounded() {
        let deep = vec![0x81u8; 100];
        assert_eq!(decode(&deep), Err(DecodeError::TooDeep));
    }

    #[test]
    fn numbers_like_javascript() {
        let mut out = Vec::new();
        Writer::new(&mut out).number(1_767_225_600_123);
        assert_eq!(hex::encode(&out), "fb4279b76daa87b000");
        out.clear();
        Writer::new(&mut out).number((1 << 32) + 1);
        assert_eq!(hex::encode(&out), "fb41f0000000100000");
        out.clear();
        Writer::new(&mut out).number(70000);
        assert_eq!(hex::encode(&out), "1a00011170");
    }

    #[test]
    fn half_floats() {
        assert_eq!(decode(&[0xf9, 0x3c, 0x00]).unwrap(), Value::Float(1.0));
        assert_eq!(
            decode(&[0xf9, 0x7c, 0x00]).unwrap(),
            Value::Float(f64::INFINITY)
        );
    }
}
