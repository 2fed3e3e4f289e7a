//! Max-min fair sharing of nodes' upload and download caps among piece transfers.
//!
//! Every transfer (a flow) crosses two resources: its sender's upload and its receiver's
//! download. [`fair_rates`] gives the max-min fair allocation, the one TCP-like congestion
//! control converges to when every flow has the same round trip: no flow can go faster without
//! slowing one that is already slower. It fills by bottleneck: the resource whose capacity left,
//! shared equally among its flows not yet fixed, is smallest fixes those flows at that share;
//! their other resource loses what they take; repeat. Shares only grow as the filling goes on
//! (a fixed flow takes the smallest share, so what it leaves its other resource is at least that
//! resource's share), so a resource's entry in the heap can stay as a lower bound of its share:
//! a popped entry below the share goes back with the share, and one equal to it is the next
//! bottleneck. A new entry is pushed only when rounding leaves a share below its entry, so each
//! resource is in the heap about once, and the bottlenecks come in the same order, with the same
//! rates to the bit, as with an entry pushed at every change.
//!
//! [`reference_rates`] is the textbook progressive filling (every unfixed flow grows together
//! until some resource is full), kept to check [`fair_rates`] against.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// One transfer: from a sender's upload to a receiver's download.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// The sending node.
    pub from: u32,
    /// The receiving node.
    pub to: u32,
}

/// A resource: a node's upload (`2 * node`) or download (`2 * node + 1`).
fn up(node: u32) -> u64 {
    u64::from(node) * 2
}

fn down(node: u32) -> u64 {
    u64::from(node) * 2 + 1
}

/// A resource's fair share in the heap, smallest first, ties by resource id; with the resource's
/// place in [`fair_rates`]'s tables, which plays no part in the order.
struct Share(f64, u64, u32);

impl PartialEq for Share {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Share {}

impl PartialOrd for Share {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Share {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .0
            .total_cmp(&self.0)
            .then_with(|| other.1.cmp(&self.1))
    }
}

/// The max-min fair rate of each flow, in the units of the caps, given each node's upload cap
/// `upload(node)` and download cap `download(node)`.
///
/// The resources live in flat tables indexed in the order they first appear, and each
/// resource's flows in one shared array (compressed rows), so a solve allocates a handful of
/// vectors however many flows it has.
pub fn fair_rates(
    flows: &[Flow],
    upload: impl Fn(u32) -> f64,
    download: impl Fn(u32) -> f64,
) -> Vec<f64> {
    let mut index: HashMap<u64, u32> = HashMap::with_capacity(flows.len());
    let mut resources = Resources::default();
    // Each flow's two resources: its sender's upload, its receiver's download.
    let mut ends: Vec<[u32; 2]> = Vec::with_capacity(flows.len());
    for flow in flows {
        let mut pair = [0; 2];
        for (slot, (id, cap)) in [
            (up(flow.from), upload(flow.from)),
            (down(flow.to), download(flow.to)),
        ]
        .into_iter()
        .enumerate()
        {
            let r = *index.entry(id).or_insert_with(|| resources.push(id, cap));
            resources.unfixed[r as usize] += 1;
            pair[slot] = r;
        }
        ends.push(pair);
    }
    resources.fill(&ends)
}

/// [`fair_rates`] for flows among nodes `0..nodes` with the same caps everywhere, with every
/// node's two resources at fixed places: no map to build. The same rates to the bit.
pub fn uniform_fair_rates(flows: &[Flow], nodes: u32, upload: f64, download: f64) -> Vec<f64> {
    let mut resources = Resources::default();
    for node in 0..nodes {
        resources.push(up(node), upload);
        resources.push(down(node), download);
    }
    let ends: Vec<[u32; 2]> = flows
        .iter()
        .map(|f| {
            let pair = [up(f.from) as u32, down(f.to) as u32];
            resources.unfixed[pair[0] as usize] += 1;
            resources.unfixed[pair[1] as usize] += 1;
            pair
        })
        .collect();
    resources.fill(&ends)
}

/// The resources of a solve, by place: id, capacity left and flows not yet fixed.
#[derive(Default)]
struct Resources {
    ids: Vec<u64>,
    left: Vec<f64>,
    unfixed: Vec<u32>,
}

impl Resources {
    /// Adds a resource with no flows yet; its place.
    fn push(&mut self, id: u64, cap: f64) -> u32 {
        self.ids.push(id);
        self.left.push(cap);
        self.unfixed.push(0);
        (self.ids.len() - 1) as u32
    }

    /// Fills by bottleneck; `ends[f]` are flow `f`'s two resources' places.
    fn fill(mut self, ends: &[[u32; 2]]) -> Vec<f64> {
        let Resources { ids, left, unfixed } = &mut self;
        // The flows of resource `r` are `members[start[r]..start[r + 1]]`, in flow order.
        let count = ids.len();
        let mut start = vec![0u32; count + 1];
        for pair in ends {
            for &r in pair {
                start[r as usize + 1] += 1;
            }
        }
        for r in 0..count {
            start[r + 1] += start[r];
        }
        let mut next = start.clone();
        let mut members = vec![0u32; 2 * ends.len()];
        for (f, pair) in ends.iter().enumerate() {
            for &r in pair {
                members[next[r as usize] as usize] = f as u32;
                next[r as usize] += 1;
            }
        }
        // The share each resource's newest heap entry holds.
        let mut queued: Vec<f64> = (0..count)
            .map(|r| left[r] / f64::from(unfixed[r]))
            .collect();
        let mut heap: BinaryHeap<Share> = (0..count)
            .filter(|&r| unfixed[r] > 0)
            .map(|r| Share(queued[r], ids[r], r as u32))
            .collect();
        let mut rate = vec![f64::NAN; ends.len()];
        while let Some(Share(share, id, r)) = heap.pop() {
            let r = r as usize;
            if unfixed[r] == 0 {
                continue;
            }
            let current = left[r] / f64::from(unfixed[r]);
            if current != share {
                queued[r] = current;
                heap.push(Share(current, id, r as u32));
                continue;
            }
            for &f in &members[start[r] as usize..start[r + 1] as usize] {
                let f = f as usize;
                if !rate[f].is_nan() {
                    continue;
                }
                rate[f] = share;
                let [a, b] = ends[f];
                let other = if a as usize == r { b } else { a } as usize;
                left[other] = (left[other] - share).max(0.0);
                unfixed[other] -= 1;
                if unfixed[other] > 0 {
                    let now = left[other] / f64::from(unfixed[other]);
                    if now < queued[other] {
                        queued[other] = now;
                        heap.push(Share(now, ids[other], other as u32));
                    }
                }
            }
            left[r] = 0.0;
            unfixed[r] = 0;
        }
        rate
    }
}

/// Progressive filling: all unfixed flows grow at the same pace until a resource is full; its
/// flows are fixed. `O(R * F)`; for checking [`fair_rates`].
pub fn reference_rates(
    flows: &[Flow],
    upload: impl Fn(u32) -> f64,
    download: impl Fn(u32) -> f64,
) -> Vec<f64> {
    let mut rate = vec![0.0; flows.len()];
    let mut fixed = vec![false; flows.len()];
    loop {
        let mut used: HashMap<u64, (f64, f64, u32)> = HashMap::new();
        for (i, flow) in flows.iter().enumerate() {
            for (id, cap) in [
                (up(flow.from), upload(flow.from)),
                (down(flow.to), download(flow.to)),
            ] {
                let e = used.entry(id).or_insert((cap, 0.0, 0));
                e.1 += rate[i];
                if !fixed[i] {
                    e.2 += 1;
                }
            }
        }
        let step = used
            .values()
            .filter(|(_, _, n)| *n > 0)
            .map(|(cap, sum, n)| (cap - sum) / f64::from(*n))
            .fold(f64::INFINITY, f64::min);
        if !step.is_finite() {
            return rate;
        }
        for (i, r) in rate.iter_mut().enumerate() {
            if !fixed[i] {
                *r += step;
            }
        }
        for (i, flow) in flows.iter().enumerate() {
            if fixed[i] {
                continue;
            }
            let full = |id: u64, cap: f64| {
                let sum: f64 = flows
                    .iter()
                    .zip(&rate)
                    .filter(|(f, _)| up(f.from) == id || down(f.to) == id)
                    .map(|(_, r)| r)
                    .sum();
                sum >= cap * (1.0 - 1e-9)
            };
            if full(up(flow.from), upload(flow.from)) || full(down(flow.to), download(flow.to)) {
                fixed[i] = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_sender_shares_its_upload() {
        let flows = [Flow { from: 0, to: 1 }, Flow { from: 0, to: 2 }];
        assert_eq!(fair_rates(&flows, |_| 10.0, |_| 100.0), vec![5.0, 5.0]);
    }

    #[test]
    fn a_slow_receiver_leaves_the_rest_to_the_other() {
        // Node 1 downloads at 2: its flow takes 2, the other gets the 8 left of node 0's 10.
        let flows = [Flow { from: 0, to: 1 }, Flow { from: 0, to: 2 }];
        let rates = fair_rates(&flows, |_| 10.0, |n| if n == 1 { 2.0 } else { 100.0 });
        assert_eq!(rates, vec![2.0, 8.0]);
    }

    #[test]
    fn a_receiver_shares_its_download() {
        let flows = [
            Flow { from: 0, to: 3 },
            Flow { from: 1, to: 3 },
            Flow { from: 2, to: 3 },
        ];
        let rates = fair_rates(&flows, |_| 100.0, |_| 30.0);
        assert_eq!(rates, vec![10.0, 10.0, 10.0]);
    }

    fn flows_and_caps() -> impl Strategy<Value = (Vec<Flow>, Vec<f64>, Vec<f64>)> {
        (2u32..12).prop_flat_map(|nodes| {
            (
                prop::collection::vec((0..nodes, 0..nodes), 1..40).prop_map(|pairs| {
                    pairs
                        .into_iter()
                        .filter(|(a, b)| a != b)
                        .map(|(from, to)| Flow { from, to })
                        .collect()
                }),
                prop::collection::vec(1.0f64..100.0, nodes as usize),
                prop::collection::vec(1.0f64..100.0, nodes as usize),
            )
        })
    }

    proptest! {
        #[test]
        fn agrees_with_progressive_filling((flows, ups, downs) in flows_and_caps()) {
            let fast = fair_rates(&flows, |n| ups[n as usize], |n| downs[n as usize]);
            let slow = reference_rates(&flows, |n| ups[n as usize], |n| downs[n as usize]);
            let uniform = uniform_fair_rates(&flows, ups.len() as u32, ups[0], downs[0]);
            let same = fair_rates(&flows, |_| ups[0], |_| downs[0]);
            prop_assert_eq!(uniform, same);
            for (a, b) in fast.iter().zip(&slow) {
                prop_assert!((a - b).abs() <= 1e-6 * b.max(1.0), "{fast:?} against {slow:?}");
            }
            // Feasible: no resource over its cap.
            for n in 0..ups.len() as u32 {
                let out: f64 = flows.iter().zip(&fast).filter(|(f, _)| f.from == n).map(|(_, r)| r).sum();
                let inn: f64 = flows.iter().zip(&fast).filter(|(f, _)| f.to == n).map(|(_, r)| r).sum();
                prop_assert!(out <= ups[n as usize] * (1.0 + 1e-9));
                prop_assert!(inn <= downs[n as usize] * (1.0 + 1e-9));
            }
        }
    }
}
