//! A fixed-length set of piece indices: which pieces a machine has.

use serde::{Deserialize, Serialize};

/// A set of piece indices `0..len`, one bit each, most significant bit first within a byte (the
/// BitTorrent convention, so a hex dump reads left to right).
///
/// Bits past `len` in the last byte are always zero; [`Bitfield::from_bytes`] refuses any that
/// are set, so two equal sets always have equal bytes. Deserializing checks the same invariants,
/// so a bitfield decoded from a peer is always well-formed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawBitfield")]
pub struct Bitfield {
    len: u32,
    /// A boxed slice, not a vector: its length never changes, and a capacity would cost eight
    /// bytes in every peer of every simulated node.
    #[serde(with = "serde_bytes_vec")]
    bytes: Box<[u8]>,
}

/// A bitfield as decoded, before its invariants are checked.
#[derive(Deserialize)]
struct RawBitfield {
    len: u32,
    #[serde(with = "serde_bytes_vec")]
    bytes: Box<[u8]>,
}

impl TryFrom<RawBitfield> for Bitfield {
    type Error = BitfieldError;

    fn try_from(raw: RawBitfield) -> Result<Self, Self::Error> {
        let field = Self {
            len: raw.len,
            bytes: raw.bytes,
        };
        field.check()?;
        Ok(field)
    }
}

/// Why bytes are not a bitfield of the expected length.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BitfieldError {
    /// The byte count does not match the bit count.
    #[error("bitfield of {len} bits needs {expected} bytes, got {got}")]
    WrongLength {
        /// Bits expected.
        len: u32,
        /// Bytes needed for them.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// Bits past the end are set.
    #[error("bitfield has bits set past its length of {0}")]
    TrailingBits(u32),
}

impl Bitfield {
    /// An empty set over `len` pieces.
    pub fn new(len: u32) -> Self {
        Self {
            len,
            bytes: vec![0; byte_len(len)].into_boxed_slice(),
        }
    }

    /// A full set over `len` pieces.
    pub fn full(len: u32) -> Self {
        let mut field = Self::new(len);
        for i in 0..len {
            field.insert(i);
        }
        field
    }

    /// Reads a bitfield of `len` bits from its bytes.
    ///
    /// # Errors
    ///
    /// A byte count that does not fit `len`, or bits set past `len`.
    pub fn from_bytes(len: u32, bytes: &[u8]) -> Result<Self, BitfieldError> {
        let field = Self {
            len,
            bytes: bytes.into(),
        };
        field.check()?;
        Ok(field)
    }

    fn check(&self) -> Result<(), BitfieldError> {
        let expected = byte_len(self.len);
        if self.bytes.len() != expected {
            return Err(BitfieldError::WrongLength {
                len: self.len,
                expected,
                got: self.bytes.len(),
            });
        }
        let used = self.len % 8;
        if used != 0 && self.bytes[expected - 1] & (0xff >> used) != 0 {
            return Err(BitfieldError::TrailingBits(self.len));
        }
        Ok(())
    }

    /// The number of pieces the set ranges over.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the set ranges over no pieces at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether piece `i` is in the set; `false` for indices past the end.
    pub fn contains(&self, i: u32) -> bool {
        i < self.len && self.bytes[(i / 8) as usize] & (0x80 >> (i % 8)) != 0
    }

    /// Adds piece `i`; returns whether it was new.
    ///
    /// # Panics
    ///
    /// If `i` is past the end.
    pub fn insert(&mut self, i: u32) -> bool {
        assert!(
            i < self.len,
            "bit {i} past the end of a bitfield of {}",
            self.len
        );
        let was = self.contains(i);
        self.bytes[(i / 8) as usize] |= 0x80 >> (i % 8);
        !was
    }

    /// Removes piece `i`; returns whether it was present.
    ///
    /// # Panics
    ///
    /// If `i` is past the end.
    pub fn remove(&mut self, i: u32) -> bool {
        assert!(
            i < self.len,
            "bit {i} past the end of a bitfield of {}",
            self.len
        );
        let was = self.contains(i);
        self.bytes[(i / 8) as usize] &= !(0x80 >> (i % 8));
        was
    }

    /// Adds every member of `other` to this set.
    ///
    /// # Panics
    ///
    /// If the two sets have different lengths.
    pub fn union_with(&mut self, other: &Bitfield) {
        assert_eq!(
            self.len, other.len,
            "union of bitfields of different lengths"
        );
        for (a, b) in self.bytes.iter_mut().zip(&other.bytes) {
            *a |= b;
        }
    }

    /// How many pieces are in the set.
    pub fn count(&self) -> u32 {
        self.bytes.iter().map(|b| b.count_ones()).sum()
    }

    /// Whether every piece is in the set.
    pub fn is_full(&self) -> bool {
        self.count() == self.len
    }

    /// The pieces in the set, in order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(|&i| self.contains(i))
    }

    /// The pieces not in the set, in order.
    pub fn missing(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(|&i| !self.contains(i))
    }

    /// The pieces `other` holds that this set lacks, in order. Eight bytes at a time: a stretch
    /// where `other` has nothing new costs one test per 64 pieces.
    ///
    /// # Panics
    ///
    /// If the two sets have different lengths.
    pub fn missing_in<'a>(&'a self, other: &'a Bitfield) -> impl Iterator<Item = u32> + 'a {
        assert_eq!(self.len, other.len, "bitfields of different lengths");
        let word = |bytes: &[u8]| {
            let mut w = [0u8; 8];
            w[..bytes.len()].copy_from_slice(bytes);
            u64::from_be_bytes(w)
        };
        self.bytes
            .chunks(8)
            .zip(other.bytes.chunks(8))
            .enumerate()
            .flat_map(move |(at, (mine, theirs))| {
                let mut bits = word(theirs) & !word(mine);
                std::iter::from_fn(move || {
                    if bits == 0 {
                        return None;
                    }
                    // Piece 0 is the high bit.
                    let lead = bits.leading_zeros();
                    bits &= !(1u64 << 63 >> lead);
                    Some(at as u32 * 64 + lead)
                })
            })
    }
}

impl std::fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bitfield({}/{})", self.count(), self.len)
    }
}

fn byte_len(bits: u32) -> usize {
    bits.div_ceil(8) as usize
}

/// Serializes the bytes as one byte string instead of a sequence of numbers.
mod serde_bytes_vec {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Box<[u8]>, D::Error> {
        // One allocation of exactly the decoded length.
        Ok(Box::from(&*bytes::Bytes::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn missing_in_is_the_plain_difference(
            len in 1u32..200,
            mine in prop::collection::vec(any::<u32>(), 0..50),
            theirs in prop::collection::vec(any::<u32>(), 0..50),
        ) {
            let mut a = Bitfield::new(len);
            let mut b = Bitfield::new(len);
            for i in mine { a.insert(i % len); }
            for i in theirs { b.insert(i % len); }
            let plain: Vec<u32> = (0..len).filter(|&i| b.contains(i) && !a.contains(i)).collect();
            prop_assert_eq!(a.missing_in(&b).collect::<Vec<_>>(), plain);
        }
    }

    #[test]
    fn insert_remove_count() {
        let mut f = Bitfield::new(10);
        assert!(f.insert(0));
        assert!(!f.insert(0));
        assert!(f.insert(9));
        assert_eq!(f.count(), 2);
        assert_eq!(f.iter().collect::<Vec<_>>(), vec![0, 9]);
        assert_eq!(f.as_bytes(), &[0x80, 0x40]);
        assert!(f.remove(9));
        assert_eq!(f.missing().count(), 9);
        assert!(!f.contains(10));
        assert!(Bitfield::full(10).is_full());
    }

    #[test]
    fn malformed_bytes_are_refused() {
        assert!(matches!(
            Bitfield::from_bytes(10, &[0]),
            Err(BitfieldError::WrongLength { .. })
        ));
        assert_eq!(
            Bitfield::from_bytes(10, &[0, 0x20]),
            Err(BitfieldError::TrailingBits(10))
        );
        assert!(Bitfield::from_bytes(10, &[0xff, 0xc0]).unwrap().is_full());
    }

    #[test]
    fn decoding_checks_the_invariants() {
        let good = postcard::to_stdvec(&Bitfield::full(10)).unwrap();
        assert!(postcard::from_bytes::<Bitfield>(&good).unwrap().is_full());
        let mut bad = good.clone();
        *bad.last_mut().unwrap() = 0xff;
        assert!(postcard::from_bytes::<Bitfield>(&bad).is_err());
    }
}
