//! Slurm's network packing primitives (network byte order).
//!
//! The unpacker is the first thing that touches bytes from another host, so
//! it is written to be driven by a fuzzer: every length is checked against
//! both what is left and [`MAX_PACK_LEN`] before anything is sliced or
//! allocated, and it never panics.

/// Largest length field accepted or produced by `packmem`/`packstr`.
///
/// Slurm itself allows 1 GiB, but nothing this crate exchanges comes near
/// 1 MiB, and a small cap keeps a hostile length from costing memory.
pub const MAX_PACK_LEN: usize = 1 << 20;

/// Why a value could not be packed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackError {
    /// The byte string is longer than [`MAX_PACK_LEN`].
    #[error("cannot pack {len} bytes: the limit is {max}")]
    TooLong { len: usize, max: usize },
    /// C peers read a packed string with `strlen`, so an embedded NUL would
    /// silently cut it short on their side.
    #[error("cannot pack a string with a NUL byte at offset {at}")]
    InteriorNul { at: usize },
}

/// Why bytes could not be unpacked. `at` is the offset where the field starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnpackError {
    #[error("truncated at offset {at}: {needed} bytes needed, {remaining} left")]
    Truncated {
        at: usize,
        needed: usize,
        remaining: usize,
    },
    #[error("length {len} at offset {at} exceeds the limit of {max}")]
    TooLong { at: usize, len: u64, max: usize },
    #[error("string at offset {at} is not NUL-terminated")]
    MissingNul { at: usize },
    #[error("string at offset {at} contains a NUL byte before its end")]
    InteriorNul { at: usize },
    #[error("string at offset {at} is not valid UTF-8")]
    InvalidUtf8 { at: usize },
    #[error("{count} unexpected trailing bytes at offset {at}")]
    Trailing { at: usize, count: usize },
}

/// Builds a packed buffer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Packer {
    buf: Vec<u8>,
}

impl Packer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
        }
    }

    pub fn pack8(&mut self, value: u8) {
        self.buf.push(value);
    }

    pub fn pack16(&mut self, value: u16) {
        self.buf.extend_from_slice(&value.to_be_bytes());
    }

    pub fn pack32(&mut self, value: u32) {
        self.buf.extend_from_slice(&value.to_be_bytes());
    }

    pub fn pack64(&mut self, value: u64) {
        self.buf.extend_from_slice(&value.to_be_bytes());
    }

    pub fn packbool(&mut self, value: bool) {
        self.pack8(u8::from(value));
    }

    /// u32 length, then the bytes.
    pub fn packmem(&mut self, bytes: &[u8]) -> Result<(), PackError> {
        let len = checked_len(bytes.len())?;
        self.pack32(len);
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// `None` is a bare u32 0; a string is u32 (len + 1), its bytes, NUL.
    pub fn packstr(&mut self, value: Option<&str>) -> Result<(), PackError> {
        let Some(s) = value else {
            self.pack32(0);
            return Ok(());
        };
        if let Some(at) = s.bytes().position(|b| b == 0) {
            return Err(PackError::InteriorNul { at });
        }
        let len = checked_len(s.len().saturating_add(1))?;
        self.pack32(len);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
        Ok(())
    }

    /// Appends already-packed bytes (a body packed elsewhere).
    pub fn extend_raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

fn checked_len(len: usize) -> Result<u32, PackError> {
    if len > MAX_PACK_LEN {
        return Err(PackError::TooLong {
            len,
            max: MAX_PACK_LEN,
        });
    }
    u32::try_from(len).map_err(|_| PackError::TooLong {
        len,
        max: MAX_PACK_LEN,
    })
}

/// Reads packed values from a byte slice, front to back.
#[derive(Debug, Clone)]
pub struct Unpacker<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Unpacker<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Offset of the next byte to be read.
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The unread tail, without consuming it.
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    /// Takes exactly `n` raw bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], UnpackError> {
        let at = self.pos;
        let end = at.checked_add(n);
        match end.and_then(|end| self.buf.get(at..end)) {
            Some(slice) => {
                self.pos = at + n;
                Ok(slice)
            }
            None => Err(UnpackError::Truncated {
                at,
                needed: n,
                remaining: self.remaining(),
            }),
        }
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], UnpackError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub fn unpack8(&mut self) -> Result<u8, UnpackError> {
        Ok(self.take_array::<1>()?[0])
    }

    pub fn unpack16(&mut self) -> Result<u16, UnpackError> {
        Ok(u16::from_be_bytes(self.take_array()?))
    }

    pub fn unpack32(&mut self) -> Result<u32, UnpackError> {
        Ok(u32::from_be_bytes(self.take_array()?))
    }

    pub fn unpack64(&mut self) -> Result<u64, UnpackError> {
        Ok(u64::from_be_bytes(self.take_array()?))
    }

    /// Any non-zero byte is true, as in Slurm.
    pub fn unpackbool(&mut self) -> Result<bool, UnpackError> {
        Ok(self.unpack8()? != 0)
    }

    /// Reads a u32 length and checks it before anything is sliced, so a
    /// failed call leaves the position where the length field started.
    fn unpack_len(&mut self) -> Result<(usize, usize), UnpackError> {
        let at = self.pos;
        let raw = self.unpack32()?;
        let len = usize::try_from(raw).unwrap_or(usize::MAX);
        if len > MAX_PACK_LEN {
            self.pos = at;
            return Err(UnpackError::TooLong {
                at,
                len: u64::from(raw),
                max: MAX_PACK_LEN,
            });
        }
        if len > self.remaining() {
            let remaining = self.remaining();
            self.pos = at;
            return Err(UnpackError::Truncated {
                at,
                needed: len,
                remaining,
            });
        }
        Ok((at, len))
    }

    /// u32 length, then that many bytes.
    pub fn unpackmem(&mut self) -> Result<&'a [u8], UnpackError> {
        let (_, len) = self.unpack_len()?;
        self.take(len)
    }

    /// The inverse of [`Packer::packstr`]: length 0 is `None`.
    pub fn unpackstr(&mut self) -> Result<Option<&'a str>, UnpackError> {
        let (at, len) = self.unpack_len()?;
        if len == 0 {
            return Ok(None);
        }
        let bytes = self.take(len)?;
        let (text, last) = match bytes.split_last() {
            Some((&last, text)) => (text, last),
            None => return Err(UnpackError::MissingNul { at }),
        };
        if last != 0 {
            self.pos = at;
            return Err(UnpackError::MissingNul { at });
        }
        if text.contains(&0) {
            self.pos = at;
            return Err(UnpackError::InteriorNul { at });
        }
        match std::str::from_utf8(text) {
            Ok(s) => Ok(Some(s)),
            Err(_) => {
                self.pos = at;
                Err(UnpackError::InvalidUtf8 { at })
            }
        }
    }

    /// Like [`Self::unpackstr`] but owned.
    pub fn unpackstring(&mut self) -> Result<Option<String>, UnpackError> {
        Ok(self.unpackstr()?.map(str::to_owned))
    }

    /// Fails if anything is left: a message with trailing bytes was not
    /// packed the way we think it was.
    pub fn finish(&self) -> Result<(), UnpackError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(UnpackError::Trailing {
                at: self.pos,
                count,
            }),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic xorshift64*, so failures reproduce without a seed file.
    pub(crate) struct Rng(u64);

    impl Rng {
        pub(crate) fn new(seed: u64) -> Self {
            Self(seed | 1)
        }

        pub(crate) fn next_u64(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        pub(crate) fn below(&mut self, n: usize) -> usize {
            let n = u64::try_from(n.max(1)).expect("usize fits u64");
            usize::try_from(self.next_u64() % n).expect("below a usize")
        }

        pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next_u64().to_le_bytes()[0]).collect()
        }
    }

    #[test]
    fn integers_are_big_endian() {
        let mut p = Packer::new();
        p.pack8(0xab);
        p.pack16(0x1234);
        p.pack32(0xdead_beef);
        p.pack64(0x0102_0304_0506_0708);
        p.packbool(true);
        p.packbool(false);
        assert_eq!(
            p.as_bytes(),
            [
                0xab, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 1, 0
            ]
        );
        let bytes = p.into_bytes();
        let mut u = Unpacker::new(&bytes);
        assert_eq!(u.unpack8().unwrap(), 0xab);
        assert_eq!(u.unpack16().unwrap(), 0x1234);
        assert_eq!(u.unpack32().unwrap(), 0xdead_beef);
        assert_eq!(u.unpack64().unwrap(), 0x0102_0304_0506_0708);
        assert!(u.unpackbool().unwrap());
        assert!(!u.unpackbool().unwrap());
        u.finish().unwrap();
    }

    #[test]
    fn strings_carry_their_nul_and_none_is_zero() {
        let mut p = Packer::new();
        p.packstr(Some("vm")).unwrap();
        p.packstr(None).unwrap();
        p.packstr(Some("")).unwrap();
        p.packmem(&[9, 8]).unwrap();
        assert_eq!(
            p.as_bytes(),
            [
                0, 0, 0, 3, b'v', b'm', 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 2, 9, 8
            ]
        );
        let bytes = p.into_bytes();
        let mut u = Unpacker::new(&bytes);
        assert_eq!(u.unpackstr().unwrap(), Some("vm"));
        assert_eq!(u.unpackstr().unwrap(), None);
        assert_eq!(u.unpackstr().unwrap(), Some(""));
        assert_eq!(u.unpackmem().unwrap(), [9, 8]);
        u.finish().unwrap();
    }

    #[test]
    fn pack_rejects_nul_and_oversize() {
        let mut p = Packer::new();
        assert_eq!(
            p.packstr(Some("a\0b")),
            Err(PackError::InteriorNul { at: 1 })
        );
        let big = vec![0u8; MAX_PACK_LEN + 1];
        assert!(matches!(p.packmem(&big), Err(PackError::TooLong { .. })));
        assert!(p.is_empty());
    }

    #[test]
    fn unpack_rejects_bad_lengths_and_strings() {
        let mut u = Unpacker::new(&[0, 0, 0, 5, 1, 2]);
        assert_eq!(
            u.unpackmem(),
            Err(UnpackError::Truncated {
                at: 0,
                needed: 5,
                remaining: 2
            })
        );
        assert_eq!(u.position(), 0);

        let mut u = Unpacker::new(&[0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(u.unpackstr(), Err(UnpackError::TooLong { .. })));

        let mut u = Unpacker::new(&[0, 0, 0, 2, b'a', b'b']);
        assert_eq!(u.unpackstr(), Err(UnpackError::MissingNul { at: 0 }));

        let mut u = Unpacker::new(&[0, 0, 0, 3, 0, b'b', 0]);
        assert_eq!(u.unpackstr(), Err(UnpackError::InteriorNul { at: 0 }));

        let mut u = Unpacker::new(&[0, 0, 0, 2, 0xff, 0]);
        assert_eq!(u.unpackstr(), Err(UnpackError::InvalidUtf8 { at: 0 }));

        let u = Unpacker::new(&[1]);
        assert_eq!(u.finish(), Err(UnpackError::Trailing { at: 0, count: 1 }));

        let mut u = Unpacker::new(&[1, 2, 3]);
        assert!(u.unpack32().is_err());
        assert!(u.take(usize::MAX).is_err());
        assert_eq!(u.remaining(), 3);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng::new(0x5eed_1234);
        for _ in 0..20_000 {
            let len = rng.below(64);
            let mut data = rng.bytes(len);
            // Plant plausible small lengths so the string paths get exercised.
            if len >= 4 && rng.below(2) == 0 {
                let l = u32::try_from(rng.below(len)).expect("a test length fits u32");
                data[..4].copy_from_slice(&l.to_be_bytes());
            }
            let mut u = Unpacker::new(&data);
            for _ in 0..16 {
                let before = u.position();
                let ok = match rng.below(7) {
                    0 => u.unpack8().is_ok(),
                    1 => u.unpack16().is_ok(),
                    2 => u.unpack32().is_ok(),
                    3 => u.unpack64().is_ok(),
                    4 => u.unpackmem().is_ok(),
                    5 => u.unpackstr().is_ok(),
                    _ => u.unpackbool().is_ok(),
                };
                assert!(u.position() <= data.len());
                if !ok {
                    assert_eq!(u.position(), before, "failed reads must not consume");
                }
            }
        }
    }
}
