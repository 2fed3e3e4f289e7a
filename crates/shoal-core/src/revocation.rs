//! Revoked onboarding tokens.
//!
//! An administrator revokes a token that leaked (`shoal token revoke`). The coordinator keeps
//! the list, refuses the token at admission and every certificate issued against it at renewal,
//! and broadcasts the whole list to the mesh
//! ([`Directive::Revoked`](crate::control::Directive::Revoked)); every node keeps the newest list
//! it has seen and refuses peers whose certificate was issued against a listed token.
//!
//! A token stays listed until it has expired and so has every certificate issued against it
//! before the revocation: [`keep_until`] is the later of the token's expiry and one certificate
//! lifetime after the revocation, since a listed token's certificates are never renewed.
//!
//! A newer list reaches the links that are already up too: [`CUT_OFF_AFTER`] after it arrives,
//! each member cuts the control-plane links of peers it revokes.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long after a newer list arrives a member cuts its control-plane links to peers the list
/// revokes (new links are refused at once). The wait lets the broadcast, which travels over
/// those links, reach the revoked nodes as well: they learn why they are cut off, and keep the
/// list so that a restart with the revoked admission says so instead of trying to join. In the
/// simulator a fleet query, broadcast down the tree and answered up it, comes back from 100,000
/// nodes within 5.5 s (`cargo bench -p shoal-sim --bench query`), so the broadcast alone has
/// reached them well within this; a lost eager push is repaired after the 0.5 s graft timeout.
pub const CUT_OFF_AFTER: Duration = Duration::from_secs(10);

/// The most tokens listed at once. A list this long is 98 KiB in a broadcast.
pub const MAX_REVOKED_TOKENS: usize = 4096;

/// One revoked token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    /// The token's id ([`TokenClaims::id`](crate::admission::TokenClaims::id)).
    #[serde(with = "crate::hexbytes")]
    pub id: [u8; 16],
    /// Until when it stays listed (Unix seconds).
    pub until_unix_secs: u64,
}

/// Why a token could not be revoked.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum RevocationError {
    /// The list is full of tokens that must stay listed.
    #[error(
        "{MAX_REVOKED_TOKENS} tokens are revoked and still listed: no more can be until some \
         expire; issue tokens with shorter --ttl"
    )]
    Full,
}

/// Until when a token revoked at `now_unix_secs` that expires at `token_expires_unix_secs`
/// stays listed, when certificates live `certificate_ttl_secs`.
pub fn keep_until(
    token_expires_unix_secs: u64,
    now_unix_secs: u64,
    certificate_ttl_secs: u64,
) -> u64 {
    token_expires_unix_secs.max(now_unix_secs.saturating_add(certificate_ttl_secs))
}

/// The revocation list: revoked token ids, sorted, each with how long it stays listed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocations {
    /// Grows with every change, so a node keeps the newest list it receives.
    pub generation: u64,
    entries: Vec<Revoked>,
}

impl Revocations {
    /// Lists token `id` until `until_unix_secs`, first dropping entries past their time. Returns
    /// whether the list changed (a token listed already keeps the later of its two times).
    ///
    /// # Errors
    ///
    /// [`RevocationError::Full`] when [`MAX_REVOKED_TOKENS`] tokens are listed.
    pub fn revoke(
        &mut self,
        id: [u8; 16],
        until_unix_secs: u64,
        now_unix_secs: u64,
    ) -> Result<bool, RevocationError> {
        self.prune(now_unix_secs);
        let changed = match self.entries.binary_search_by(|e| e.id.cmp(&id)) {
            Ok(i) if self.entries[i].until_unix_secs >= until_unix_secs => false,
            Ok(i) => {
                self.entries[i].until_unix_secs = until_unix_secs;
                true
            }
            Err(_) if self.entries.len() >= MAX_REVOKED_TOKENS => {
                return Err(RevocationError::Full);
            }
            Err(i) => {
                self.entries.insert(
                    i,
                    Revoked {
                        id,
                        until_unix_secs,
                    },
                );
                true
            }
        };
        if changed {
            self.generation += 1;
        }
        self.check_invariants();
        Ok(changed)
    }

    /// Drops entries whose time has passed. Returns whether any was dropped.
    pub fn prune(&mut self, now_unix_secs: u64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.until_unix_secs >= now_unix_secs);
        let changed = self.entries.len() != before;
        if changed {
            self.generation += 1;
        }
        changed
    }

    /// Whether token `id` is listed.
    pub fn is_revoked(&self, id: &[u8; 16]) -> bool {
        self.entries.binary_search_by(|e| e.id.cmp(id)).is_ok()
    }

    /// The listed tokens, sorted by id.
    pub fn entries(&self) -> &[Revoked] {
        &self.entries
    }

    /// Whether a list received from elsewhere keeps the bounds: sorted by id without repeats,
    /// at most [`MAX_REVOKED_TOKENS`] long.
    pub fn is_well_formed(&self) -> bool {
        self.entries.len() <= MAX_REVOKED_TOKENS
            && self.entries.windows(2).all(|w| w[0].id < w[1].id)
    }

    /// Checks [`is_well_formed`](Self::is_well_formed).
    ///
    /// # Panics
    ///
    /// If it does not hold.
    pub fn check_invariants(&self) {
        assert!(self.is_well_formed(), "the revocation list lost its order");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_listed_sorted_until_their_time() {
        let mut list = Revocations::default();
        assert!(list.revoke([3; 16], 100, 10).unwrap());
        assert!(list.revoke([1; 16], 50, 10).unwrap());
        assert!(
            !list.revoke([3; 16], 90, 10).unwrap(),
            "an earlier time changes nothing"
        );
        assert_eq!(list.generation, 2);
        assert!(list.is_revoked(&[1; 16]) && list.is_revoked(&[3; 16]));
        assert!(!list.is_revoked(&[2; 16]));
        assert!(list.prune(60));
        assert!(!list.is_revoked(&[1; 16]));
        assert_eq!(list.entries().len(), 1);
        assert_eq!(list.generation, 3);
    }

    #[test]
    fn a_full_list_refuses_until_entries_expire() {
        let mut list = Revocations::default();
        for n in 0..MAX_REVOKED_TOKENS as u128 {
            list.revoke(n.to_be_bytes(), 100, 0).unwrap();
        }
        assert_eq!(list.revoke([0xff; 16], 100, 0), Err(RevocationError::Full));
        assert!(list.revoke([0xff; 16], 200, 101).unwrap());
        assert_eq!(list.entries().len(), 1);
    }

    #[test]
    fn a_token_stays_listed_as_long_as_its_certificates_can_live() {
        assert_eq!(keep_until(10, 5, 1000), 1005);
        assert_eq!(keep_until(5000, 5, 1000), 5000);
    }

    #[test]
    fn an_unsorted_list_from_elsewhere_is_not_well_formed() {
        let mut list = Revocations::default();
        list.revoke([1; 16], 10, 0).unwrap();
        list.revoke([2; 16], 10, 0).unwrap();
        assert!(list.is_well_formed());
        list.entries.swap(0, 1);
        assert!(!list.is_well_formed());
    }
}
