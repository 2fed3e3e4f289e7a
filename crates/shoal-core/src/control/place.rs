//! Where a machine is, in a form small enough to gossip: hashed region, fault domain and rack.

use crate::labels::{Closeness, Labels};
use serde::{Deserialize, Serialize};

/// A machine's region, fault domain and rack, each as a 32-bit hash of the label's value
/// (0 when the label is absent).
///
/// Shuffles carry a place with every entry so that nodes can find machines near them without
/// exchanging full label sets; twelve bytes per entry keep passive views small at millions of
/// nodes. Two different values hash alike with probability 2^-32, which at worst puts a far
/// machine in a locality cache.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Place {
    /// Hash of the `region` label.
    pub region: u32,
    /// Hash of the `fd` (fault domain) label.
    pub fault_domain: u32,
    /// Hash of the `rack` label.
    pub rack: u32,
}

impl Place {
    /// The place described by `labels` (the keys `region`, `fd` and `rack`).
    pub fn from_labels(labels: &Labels) -> Self {
        Place {
            region: hash_label(labels.get("region")),
            fault_domain: hash_label(labels.get("fd")),
            rack: hash_label(labels.get("rack")),
        }
    }

    /// How close `other` is to this place, with the same rule as [`Labels::closeness`]: a level
    /// counts only if it and every level above it are known and equal.
    pub fn closeness(&self, other: &Place) -> Closeness {
        let same = |a: u32, b: u32| a != 0 && a == b;
        if !same(self.region, other.region) {
            Closeness::Remote
        } else if !same(self.fault_domain, other.fault_domain) {
            Closeness::Region
        } else if !same(self.rack, other.rack) {
            Closeness::FaultDomain
        } else {
            Closeness::Rack
        }
    }
}

fn hash_label(value: Option<&str>) -> u32 {
    let Some(value) = value else { return 0 };
    let hash = blake3::hash(value.as_bytes());
    let bytes = hash.as_bytes();
    // 0 means "absent"; a value that hashes to 0 is nudged to 1.
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]).max(1)
}

/// A peer together with its place: one line of a view, a shuffle or a join.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry<P> {
    /// The peer.
    pub peer: P,
    /// Where it is.
    pub place: Place,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(text: &str) -> Place {
        Place::from_labels(&text.parse().unwrap())
    }

    #[test]
    fn closeness_matches_the_labels_rule() {
        let cases = [
            "region=r1,fd=1,rack=1",
            "region=r1,fd=1,rack=2",
            "region=r1,fd=2,rack=1",
            "region=r2,fd=1,rack=1",
            "fd=1,rack=1",
            "",
        ];
        for a in cases {
            for b in cases {
                let la: Labels = a.parse().unwrap();
                let lb: Labels = b.parse().unwrap();
                assert_eq!(
                    place(a).closeness(&place(b)),
                    la.closeness(&lb),
                    "{a} vs {b}"
                );
            }
        }
    }
}
