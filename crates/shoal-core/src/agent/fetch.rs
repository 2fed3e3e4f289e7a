//! Which announced releases a node fetches, and when it looks for more swarm peers.
//!
//! A node fetches every release the coordinator announces, once: [`Fetch::announced`] asks the
//! driver to add it to the store ([`Output::Add`]). Once added, and every
//! [`REFRESH`] while any release here is incomplete, the node asks membership for swarm peers
//! ([`Output::FindPeers`]); a complete node only serves, and peers find it.

use crate::content::RootHash;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// How often a node with an incomplete release looks for more swarm peers.
pub const REFRESH: Duration = Duration::from_secs(5);

/// What the driver must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Add this announced release to the store and join its swarm; then report
    /// [`Fetch::added`].
    Add(RootHash),
    /// Ask membership for swarm peers and connect to them.
    FindPeers,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Adding,
    Fetching,
    Complete,
}

/// The fetch policy of one node. See the module documentation.
#[derive(Debug, Default)]
pub struct Fetch {
    releases: BTreeMap<RootHash, State>,
    next_refresh: Option<Duration>,
    out: VecDeque<Output>,
}

impl Fetch {
    /// A node holding nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A release already in the store when the node starts.
    pub fn held(&mut self, root: RootHash, complete: bool, now: Duration) {
        let state = if complete {
            State::Complete
        } else {
            State::Fetching
        };
        self.releases.insert(root, state);
        self.schedule(now);
    }

    /// The coordinator announced `root` (its manifest verified by the driver).
    pub fn announced(&mut self, root: RootHash) {
        if self.releases.contains_key(&root) {
            return;
        }
        self.releases.insert(root, State::Adding);
        self.out.push_back(Output::Add(root));
    }

    /// The store took `root` (`true`) or could not (`false`: a later announcement tries again).
    pub fn added(&mut self, root: RootHash, ok: bool, now: Duration) {
        if self.releases.get(&root) != Some(&State::Adding) {
            return;
        }
        if !ok {
            self.releases.remove(&root);
            return;
        }
        self.releases.insert(root, State::Fetching);
        self.out.push_back(Output::FindPeers);
        self.next_refresh = Some(now + REFRESH);
    }

    /// Every piece of `root` is verified here.
    pub fn completed(&mut self, root: RootHash) {
        if let Some(state) = self.releases.get_mut(&root) {
            *state = State::Complete;
        }
        if !self.incomplete() {
            self.next_refresh = None;
        }
    }

    /// Whether any release here is still being fetched.
    pub fn incomplete(&self) -> bool {
        self.releases.values().any(|s| *s == State::Fetching)
    }

    /// Feeds time in.
    pub fn handle_timeout(&mut self, now: Duration) {
        if self.next_refresh.is_some_and(|t| t <= now) {
            self.next_refresh = None;
            if self.incomplete() {
                self.out.push_back(Output::FindPeers);
            }
            self.schedule(now);
        }
    }

    /// When [`Fetch::handle_timeout`] is next due, if ever.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.next_refresh
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    fn schedule(&mut self, now: Duration) {
        if self.incomplete() && self.next_refresh.is_none() {
            self.next_refresh = Some(now + REFRESH);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs(f: &mut Fetch) -> Vec<Output> {
        std::iter::from_fn(|| f.poll_output()).collect()
    }

    const A: RootHash = RootHash([1; 32]);
    const B: RootHash = RootHash([2; 32]);

    #[test]
    fn an_announced_release_is_added_once_then_peers_are_found_every_refresh_until_complete() {
        let mut f = Fetch::new();
        f.announced(A);
        f.announced(A);
        assert_eq!(outputs(&mut f), vec![Output::Add(A)]);
        assert_eq!(
            f.poll_timeout(),
            None,
            "refreshing before the release is added"
        );
        f.added(A, true, Duration::ZERO);
        assert_eq!(outputs(&mut f), vec![Output::FindPeers]);
        assert_eq!(f.poll_timeout(), Some(REFRESH));
        f.handle_timeout(REFRESH - Duration::from_millis(1));
        assert!(outputs(&mut f).is_empty(), "refreshed early");
        f.handle_timeout(REFRESH);
        assert_eq!(outputs(&mut f), vec![Output::FindPeers]);
        assert_eq!(f.poll_timeout(), Some(2 * REFRESH));
        f.completed(A);
        assert_eq!(f.poll_timeout(), None);
        f.handle_timeout(10 * REFRESH);
        assert!(
            outputs(&mut f).is_empty(),
            "a complete node looked for peers"
        );
        f.announced(A);
        assert!(outputs(&mut f).is_empty(), "a held release added again");
    }

    #[test]
    fn a_release_the_store_refused_is_tried_again_at_its_next_announcement() {
        let mut f = Fetch::new();
        f.announced(A);
        f.added(A, false, Duration::ZERO);
        assert_eq!(outputs(&mut f), vec![Output::Add(A)]);
        assert_eq!(f.poll_timeout(), None);
        f.announced(A);
        assert_eq!(outputs(&mut f), vec![Output::Add(A)]);
    }

    #[test]
    fn releases_held_at_start_are_refreshed_while_incomplete() {
        let mut f = Fetch::new();
        f.held(A, true, Duration::ZERO);
        assert_eq!(f.poll_timeout(), None);
        f.held(B, false, Duration::ZERO);
        assert_eq!(f.poll_timeout(), Some(REFRESH));
        f.handle_timeout(REFRESH);
        assert_eq!(outputs(&mut f), vec![Output::FindPeers]);
        f.completed(B);
        assert_eq!(f.poll_timeout(), None);
    }
}
