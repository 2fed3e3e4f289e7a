//! Fleet queries in the simulated network: the source broadcasts a [`Query`] as the coordinator
//! does, every node's agent machine answers it in its health summary, parents add up their
//! children's answers, and the source's subtree holds the fleet's answer. Nodes answer with a
//! rollout agent only, so a network must run [`Network::enable_rollouts`] to be queried.

use crate::{Network, NodeId, rollouts};
use shoal_core::control::Directive;
use shoal_core::query::{Query, QueryAnswer};
use std::sync::Arc;
use std::time::Duration;

/// The fleet's answer to a query as the source holds it at one moment.
#[derive(Clone, Debug)]
pub struct FleetAnswer {
    /// Nodes the source counted when it asked.
    pub fleet_when_asked: u32,
    /// Nodes the source counts now.
    pub fleet: u32,
    /// The answers added up so far; `None` before the first reached the source.
    pub answer: Option<QueryAnswer>,
}

impl FleetAnswer {
    /// Whether every counted node has answered, by the coordinator's rule.
    pub fn is_complete(&self) -> bool {
        self.answer
            .as_ref()
            .is_some_and(|a| a.is_complete(self.fleet_when_asked, self.fleet))
    }
}

impl Network {
    /// The simulated wall clock now, in Unix seconds, for a query's expiry.
    pub fn unix_now(&self) -> u64 {
        (rollouts::UNIX_AT_START + self.now).as_secs()
    }

    /// Broadcasts `query` from the source now, as the coordinator does.
    ///
    /// # Panics
    ///
    /// If the source has crashed or not started.
    pub fn query(&mut self, query: Query) {
        let body = Directive::<NodeId>::Query(Arc::new(query)).encode();
        self.broadcast_body(false, body.into());
    }

    /// The fleet's answer to query `id` as the source holds it now, for a query asked when the
    /// source counted `fleet_when_asked` nodes.
    pub fn query_answer(&self, id: u64, fleet_when_asked: u32) -> FleetAnswer {
        let fleet = self.fleet();
        FleetAnswer {
            fleet_when_asked,
            fleet: fleet.as_ref().map_or(0, |s| s.nodes),
            answer: fleet.as_ref().and_then(|s| s.query(id)).cloned(),
        }
    }

    /// Broadcasts `query` and runs in steps of `step` until its answer is complete or `limit`
    /// has passed; the answer then, and how long after the broadcast it came.
    pub fn run_query(
        &mut self,
        query: Query,
        step: Duration,
        limit: Duration,
    ) -> (FleetAnswer, Duration) {
        let id = query.id;
        let start = self.now;
        let asked = self.fleet().map_or(0, |s| s.nodes);
        self.query(query);
        loop {
            let answer = self.query_answer(id, asked);
            if answer.is_complete() || self.now - start >= limit {
                return (answer, self.now - start);
            }
            self.run_for(step);
        }
    }
}
