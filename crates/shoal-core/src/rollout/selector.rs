//! Which nodes a stage covers, and the hash by which a node places itself in a wave.
//!
//! A node is in a stage when its labels match the stage's selector and its
//! [`node_hash`] for the rollout is at most the stage's threshold. The hash is BLAKE3 over the
//! rollout id and the node's id, so every node computes its own without asking anyone, a new
//! rollout reshuffles who goes first, and the coordinator never needs a list of machines.

use crate::labels::{Labels, MAX_LABEL_BYTES, MAX_LABELS};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Label requirements; all must match. Empty matches every node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector(BTreeMap<String, String>);

impl Selector {
    /// A selector of these `label = value` requirements.
    ///
    /// # Errors
    ///
    /// A message if there are more than [`MAX_LABELS`] requirements, or a key or value is empty.
    pub fn new(requirements: BTreeMap<String, String>) -> Result<Self, String> {
        if requirements.len() > MAX_LABELS {
            return Err(format!(
                "{} requirements; at most {MAX_LABELS} are allowed",
                requirements.len()
            ));
        }
        if let Some((k, v)) = requirements
            .iter()
            .find(|(k, v)| k.is_empty() || v.is_empty())
        {
            return Err(format!("empty label key or value in {k:?} = {v:?}"));
        }
        if let Some((k, v)) = requirements
            .iter()
            .find(|(k, v)| k.len() > MAX_LABEL_BYTES || v.len() > MAX_LABEL_BYTES)
        {
            return Err(format!(
                "{k:?} = {v:?}: label keys and values are at most {MAX_LABEL_BYTES} bytes"
            ));
        }
        Ok(Selector(requirements))
    }

    /// Whether a node with `labels` matches.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.0
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v.as_str()))
    }

    /// The value this selector requires for `key`, if any.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Whether it keeps the size limits; one from a peer that does not is refused.
    pub fn is_well_formed(&self) -> bool {
        self.0.len() <= MAX_LABELS
            && self
                .0
                .iter()
                .all(|(k, v)| k.len() <= MAX_LABEL_BYTES && v.len() <= MAX_LABEL_BYTES)
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("every node");
        }
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.write_str(&parts.join(","))
    }
}

/// A node's place in the order of a rollout: uniform over `u64`, independent between rollouts.
pub fn node_hash(rollout: u64, node: &[u8]) -> u64 {
    let mut hasher = blake3::Hasher::new_derive_key("shoal rollout wave v1");
    hasher.update(&rollout.to_le_bytes());
    hasher.update(node);
    let mut first = [0u8; 8];
    first.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// The hash threshold that admits `bp` basis points of the nodes (hash at most it).
pub fn fraction_threshold(bp: u16) -> u64 {
    if bp >= 10_000 {
        return u64::MAX;
    }
    let scaled = u128::from(u64::MAX) * u128::from(bp) / 10_000;
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_need_every_label() {
        let s = Selector::new(BTreeMap::from([
            ("region".to_owned(), "r1".to_owned()),
            ("fd".to_owned(), "2".to_owned()),
        ]))
        .unwrap();
        assert!(s.matches(&"region=r1,fd=2,rack=3".parse().unwrap()));
        assert!(!s.matches(&"region=r1,fd=1".parse().unwrap()));
        assert!(!s.matches(&"region=r1".parse().unwrap()));
        assert!(Selector::default().matches(&Labels::default()));
        let long = BTreeMap::from([("region".to_owned(), "r".repeat(65))]);
        assert!(
            Selector::new(long)
                .unwrap_err()
                .contains("at most 64 bytes")
        );
    }

    #[test]
    fn a_fraction_of_the_hash_space_admits_about_that_fraction() {
        let threshold = fraction_threshold(2000);
        let admitted = (0u32..100_000)
            .filter(|i| node_hash(7, &i.to_le_bytes()) <= threshold)
            .count();
        // Binomial(100000, 0.2): standard deviation about 126.
        assert!((19_400..=20_600).contains(&admitted), "{admitted}");
        assert_eq!(fraction_threshold(10_000), u64::MAX);
        assert_ne!(node_hash(1, b"a"), node_hash(2, b"a"));
    }
}
