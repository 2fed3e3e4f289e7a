//! Machine labels (`region=eu1,fd=2,rack=7`) and the locality they describe.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// The most labels one machine carries.
pub const MAX_LABELS: usize = 16;
/// The longest label key or value, in bytes.
pub const MAX_LABEL_BYTES: usize = 64;

/// A machine's labels: short `key=value` pairs, ordered by key.
///
/// Three keys mean locality: `region`, `fd` (fault domain) and `rack`. Others are free for
/// operators (rollout plans select on them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    try_from = "BTreeMap<String, String>",
    into = "BTreeMap<String, String>"
)]
pub struct Labels(BTreeMap<String, String>);

/// Why text is not a valid label set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LabelsError {
    /// An entry has no `=`.
    #[error("label {0:?} is not key=value (example: region=eu1,fd=2,rack=7)")]
    NoEquals(String),
    /// A key or value is empty, too long, or has characters outside `[A-Za-z0-9._-]`.
    #[error(
        "label part {0:?} must be 1 to {MAX_LABEL_BYTES} characters of letters, digits, '.', '_' or '-'"
    )]
    BadPart(String),
    /// The same key twice.
    #[error("label key {0:?} is given twice")]
    Duplicate(String),
    /// More than [`MAX_LABELS`] labels.
    #[error("{0} labels given; at most {MAX_LABELS} are allowed")]
    TooMany(usize),
}

fn check_part(part: &str) -> Result<(), LabelsError> {
    let ok = !part.is_empty()
        && part.len() <= MAX_LABEL_BYTES
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(LabelsError::BadPart(part.to_owned()))
    }
}

impl TryFrom<BTreeMap<String, String>> for Labels {
    type Error = LabelsError;

    fn try_from(map: BTreeMap<String, String>) -> Result<Self, Self::Error> {
        if map.len() > MAX_LABELS {
            return Err(LabelsError::TooMany(map.len()));
        }
        for (key, value) in &map {
            check_part(key)?;
            check_part(value)?;
        }
        Ok(Self(map))
    }
}

impl From<Labels> for BTreeMap<String, String> {
    fn from(labels: Labels) -> Self {
        labels.0
    }
}

impl FromStr for Labels {
    type Err = LabelsError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut map = BTreeMap::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (key, value) = entry
                .split_once('=')
                .ok_or_else(|| LabelsError::NoEquals(entry.to_owned()))?;
            if map.insert(key.to_owned(), value.to_owned()).is_some() {
                return Err(LabelsError::Duplicate(key.to_owned()));
            }
        }
        Self::try_from(map)
    }
}

impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (key, value)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{key}={value}")?;
        }
        Ok(())
    }
}

/// How close two machines are, from the same rack (closest) to nothing in common.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Closeness {
    /// Different regions, or locality unknown.
    Remote,
    /// Same region.
    Region,
    /// Same region and fault domain.
    FaultDomain,
    /// Same region, fault domain and rack.
    Rack,
}

impl Labels {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// All labels in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// How close a machine with `other` labels is to this one. Each level counts only if every
    /// level above it matches too, so rack 7 of two different fault domains is not the same rack.
    pub fn closeness(&self, other: &Labels) -> Closeness {
        let same = |key| matches!((self.get(key), other.get(key)), (Some(a), Some(b)) if a == b);
        if !same("region") {
            Closeness::Remote
        } else if !same("fd") {
            Closeness::Region
        } else if !same("rack") {
            Closeness::FaultDomain
        } else {
            Closeness::Rack
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(text: &str) -> Labels {
        text.parse().unwrap()
    }

    #[test]
    fn parses_and_prints_in_key_order() {
        assert_eq!(
            labels("rack=7, region=eu1,fd=2").to_string(),
            "fd=2,rack=7,region=eu1"
        );
        assert_eq!(labels("").to_string(), "");
    }

    #[test]
    fn refuses_bad_text_naming_it() {
        assert_eq!(
            "rack".parse::<Labels>(),
            Err(LabelsError::NoEquals("rack".into()))
        );
        assert_eq!(
            "a=1,a=2".parse::<Labels>(),
            Err(LabelsError::Duplicate("a".into()))
        );
        assert_eq!(
            "a=b c".parse::<Labels>(),
            Err(LabelsError::BadPart("b c".into()))
        );
        assert_eq!("=x".parse::<Labels>(), Err(LabelsError::BadPart("".into())));
        let many: Vec<String> = (0..17).map(|i| format!("k{i}=v")).collect();
        assert_eq!(
            many.join(",").parse::<Labels>(),
            Err(LabelsError::TooMany(17))
        );
    }

    #[test]
    fn closeness_needs_every_level_above_to_match() {
        let me = labels("region=r1,fd=2,rack=7");
        assert_eq!(
            me.closeness(&labels("region=r1,fd=2,rack=7")),
            Closeness::Rack
        );
        assert_eq!(
            me.closeness(&labels("region=r1,fd=2,rack=8")),
            Closeness::FaultDomain
        );
        assert_eq!(
            me.closeness(&labels("region=r1,fd=3,rack=7")),
            Closeness::Region
        );
        assert_eq!(
            me.closeness(&labels("region=r2,fd=2,rack=7")),
            Closeness::Remote
        );
        assert_eq!(me.closeness(&Labels::default()), Closeness::Remote);
    }
}
