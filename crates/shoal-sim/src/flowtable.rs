//! The transfers in progress and their rates: each node's flows out and in, each flow's bytes
//! left, and the time each is due to finish at its current rate.
//!
//! After a flow starts or ends, [`FlowTable::reshare`] gives new max-min fair rates
//! ([`flows::fair_rates`]). With [`FlowModel::Exact`] every flow is re-solved, which costs in
//! proportion to all flows in the run; with [`FlowModel::Local`] only the flows of the nodes the
//! change touched are, against what the other flows take of the shared caps (those keep their
//! rates until a change touches them). The local model is what makes large runs affordable;
//! `shoal-sim`'s agreement check compares its completion times with the exact model's.

use crate::flows::{self, Flow};
use shoal_core::content::PieceIndex;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

/// How rates are recomputed after a change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlowModel {
    /// Every flow, every time: the reference.
    Exact,
    /// The flows of the nodes a change touches.
    #[default]
    Local,
}

/// One transfer in progress.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Sender and receiver.
    pub flow: Flow,
    /// The piece it carries.
    pub piece: PieceIndex,
    left: f64,
    rate: f64,
    at: Duration,
    due: Option<Duration>,
}

/// All transfers in progress.
pub struct FlowTable {
    entries: BTreeMap<u64, Entry>,
    next_id: u64,
    out: Vec<Vec<u64>>,
    inn: Vec<Vec<u64>>,
    due: BTreeSet<(Duration, u64)>,
    upload: f64,
    download: f64,
    model: FlowModel,
}

impl FlowTable {
    /// An empty table for `nodes` nodes, each with these caps (bytes per second).
    pub fn new(nodes: u32, upload: f64, download: f64, model: FlowModel) -> Self {
        FlowTable {
            entries: BTreeMap::new(),
            next_id: 0,
            out: vec![Vec::new(); nodes as usize],
            inn: vec![Vec::new(); nodes as usize],
            due: BTreeSet::new(),
            upload,
            download,
            model,
        }
    }

    /// Flows in progress.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no flow is in progress.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Starts a flow of `bytes`; it has no rate until the next [`FlowTable::reshare`].
    pub fn add(&mut self, flow: Flow, piece: PieceIndex, bytes: f64, now: Duration) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.entries.insert(
            id,
            Entry {
                flow,
                piece,
                left: bytes,
                rate: 0.0,
                at: now,
                due: None,
            },
        );
        self.out[flow.from as usize].push(id);
        self.inn[flow.to as usize].push(id);
        id
    }

    /// Ends a flow, finished or not.
    pub fn remove(&mut self, id: u64) -> Option<Entry> {
        let e = self.entries.remove(&id)?;
        self.out[e.flow.from as usize].retain(|&f| f != id);
        self.inn[e.flow.to as usize].retain(|&f| f != id);
        if let Some(due) = e.due {
            self.due.remove(&(due, id));
        }
        Some(e)
    }

    /// Ends every flow to or from `node`.
    pub fn remove_node(&mut self, node: u32) {
        let ids: Vec<u64> = self.out[node as usize]
            .iter()
            .chain(&self.inn[node as usize])
            .copied()
            .collect();
        for id in ids {
            self.remove(id);
        }
    }

    /// Ends the flows between `a` and `b`, either way.
    pub fn remove_between(&mut self, a: u32, b: u32) {
        self.take_between(a, b, Duration::ZERO);
    }

    /// Ends the flows between `a` and `b`, either way, and returns each with the bytes it still
    /// had to send at `now`.
    pub fn take_between(&mut self, a: u32, b: u32, now: Duration) -> Vec<(Entry, f64)> {
        let ids: Vec<u64> = self.out[a as usize]
            .iter()
            .chain(&self.inn[a as usize])
            .copied()
            .filter(|id| {
                let f = self.entries[id].flow;
                (f.from == a && f.to == b) || (f.from == b && f.to == a)
            })
            .collect();
        ids.into_iter()
            .filter_map(|id| self.remove(id))
            .map(|e| {
                let left = (e.left - e.rate * now.saturating_sub(e.at).as_secs_f64()).max(0.0);
                (e, left)
            })
            .collect()
    }

    /// When the next flow finishes at the current rates.
    pub fn next_due(&self) -> Option<Duration> {
        self.due.first().map(|&(at, _)| at)
    }

    /// Takes the flows due by `now`, finished.
    pub fn take_due(&mut self, now: Duration) -> Vec<Entry> {
        let mut done = Vec::new();
        while let Some(&(at, id)) = self.due.first() {
            if at > now {
                break;
            }
            self.due.pop_first();
            if let Some(e) = self.remove(id) {
                done.push(e);
            }
        }
        done
    }

    /// New fair rates after flows of `nodes` started or ended (all flows under
    /// [`FlowModel::Exact`]).
    pub fn reshare(&mut self, nodes: &[u32], now: Duration) {
        if self.model == FlowModel::Exact {
            self.reshare_all(now);
            return;
        }
        let mut ids = BTreeSet::new();
        for &n in nodes {
            ids.extend(&self.out[n as usize]);
            ids.extend(&self.inn[n as usize]);
        }
        let ids: Vec<u64> = ids.into_iter().collect();
        if ids.is_empty() {
            return;
        }
        let chosen: BTreeSet<u64> = ids.iter().copied().collect();
        // What the flows left out take of each cap the chosen flows share.
        let mut up_left: HashMap<u32, f64> = HashMap::new();
        let mut down_left: HashMap<u32, f64> = HashMap::new();
        for id in &ids {
            let f = self.entries[id].flow;
            up_left.entry(f.from).or_insert_with(|| {
                self.upload
                    - self.out[f.from as usize]
                        .iter()
                        .filter(|o| !chosen.contains(o))
                        .map(|o| self.entries[o].rate)
                        .sum::<f64>()
            });
            down_left.entry(f.to).or_insert_with(|| {
                self.download
                    - self.inn[f.to as usize]
                        .iter()
                        .filter(|o| !chosen.contains(o))
                        .map(|o| self.entries[o].rate)
                        .sum::<f64>()
            });
        }
        let flows: Vec<Flow> = ids.iter().map(|id| self.entries[id].flow).collect();
        let rates = flows::fair_rates(
            &flows,
            |n| up_left.get(&n).copied().unwrap_or(0.0).max(0.0),
            |n| down_left.get(&n).copied().unwrap_or(0.0).max(0.0),
        );
        for (id, rate) in ids.into_iter().zip(rates) {
            if let Some(e) = self.entries.get_mut(&id) {
                set_rate(e, id, rate, now, &mut self.due);
            }
        }
    }

    /// Every flow re-solved at the full caps ([`FlowModel::Exact`]): walks the table in order
    /// instead of looking each flow up, since every flow takes part.
    fn reshare_all(&mut self, now: Duration) {
        let flows: Vec<Flow> = self.entries.values().map(|e| e.flow).collect();
        if flows.is_empty() {
            return;
        }
        let (upload, download) = (self.upload.max(0.0), self.download.max(0.0));
        let rates = flows::uniform_fair_rates(&flows, self.out.len() as u32, upload, download);
        for ((&id, e), rate) in self.entries.iter_mut().zip(rates) {
            set_rate(e, id, rate, now, &mut self.due);
        }
    }
}

/// Brings flow `id` to `now` at its old rate, then gives it `rate` and the time it is due at
/// that rate.
fn set_rate(e: &mut Entry, id: u64, rate: f64, now: Duration, due: &mut BTreeSet<(Duration, u64)>) {
    e.left = (e.left - e.rate * (now - e.at).as_secs_f64()).max(0.0);
    e.at = now;
    if e.rate == rate && e.due.is_some() {
        return;
    }
    e.rate = rate;
    if let Some(at) = e.due.take() {
        due.remove(&(at, id));
    }
    if rate > 0.0 {
        // Rounded up to the next microsecond so the flow is done when the time comes.
        let at = now + Duration::from_micros((e.left / rate * 1e6).ceil() as u64);
        e.due = Some(at);
        due.insert((at, id));
    }
}
