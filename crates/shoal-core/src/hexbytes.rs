//! Serde helpers that write fixed-size byte arrays as hex in human-readable formats (JSON) and as
//! raw bytes in binary ones (postcard).

use serde::de::{Error as _, Visitor};
use serde::{Deserializer, Serializer};
use std::fmt;

/// Serializes `bytes` as a hex string for human-readable formats, raw bytes otherwise.
pub(crate) fn serialize<S: Serializer, const N: usize>(
    bytes: &[u8; N],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    if serializer.is_human_readable() {
        serializer.serialize_str(&hex::encode(bytes))
    } else {
        serializer.serialize_bytes(bytes)
    }
}

/// The inverse of [`serialize`]: accepts exactly `N` bytes, as hex or raw.
pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
    deserializer: D,
) -> Result<[u8; N], D::Error> {
    struct ArrayVisitor<const N: usize>;

    impl<const N: usize> Visitor<'_> for ArrayVisitor<N> {
        type Value = [u8; N];

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{N} bytes, or {} hex digits", N * 2)
        }

        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
            let mut out = [0u8; N];
            hex::decode_to_slice(s, &mut out)
                .map_err(|_| E::custom(format!("expected {} hex digits, got {s:?}", N * 2)))?;
            Ok(out)
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
            v.try_into().map_err(|_| E::invalid_length(v.len(), &self))
        }
    }

    if deserializer.is_human_readable() {
        deserializer.deserialize_str(ArrayVisitor::<N>)
    } else {
        deserializer
            .deserialize_bytes(ArrayVisitor::<N>)
            .map_err(D::Error::custom)
    }
}
