//! Choosing swarm neighbours: mostly close machines, always some far ones.

use crate::labels::{Closeness, Labels};
use rand::Rng;
use rand::seq::SliceRandom;

/// Picks up to `want` of `candidates` as swarm neighbours for a machine with labels `own`.
///
/// All but `outside` places go to the closest candidates (same rack, then same fault domain,
/// then same region; ties broken at random). The remaining `outside` places go to random
/// candidates not already chosen, whatever their locality, so a rack or fault domain is never cut
/// off from the rest of the swarm (and from the origin). Returns indices into `candidates`.
pub fn choose<R: Rng>(
    own: &Labels,
    candidates: &[Labels],
    want: usize,
    outside: usize,
    rng: &mut R,
) -> Vec<usize> {
    choose_by(
        candidates.len(),
        |i| own.closeness(&candidates[i]),
        want,
        outside,
        rng,
    )
}

/// [`choose`] over `count` candidates whose closeness to this machine is `closeness(i)`.
pub fn choose_by<R: Rng>(
    count: usize,
    closeness: impl Fn(usize) -> Closeness,
    want: usize,
    outside: usize,
    rng: &mut R,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..count).collect();
    order.shuffle(rng);
    // A stable sort after the shuffle keeps ties in random order.
    order.sort_by_key(|&i| std::cmp::Reverse(closeness(i)));
    let near = want.saturating_sub(outside).min(order.len());
    let mut chosen: Vec<usize> = order[..near].to_vec();
    let mut rest: Vec<usize> = order[near..].to_vec();
    rest.shuffle(rng);
    chosen.extend(rest.into_iter().take(want - near));
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    #[test]
    fn close_first_but_always_some_outside() {
        let own: Labels = "region=r1,fd=1,rack=1".parse().unwrap();
        // 20 machines in our rack, 20 in other fault domains.
        let mut candidates = Vec::new();
        for i in 0..20 {
            candidates.push(format!("region=r1,fd=1,rack=1,n={i}").parse().unwrap());
            candidates.push(
                format!("region=r1,fd={},rack=1,n={i}", 2 + i % 3)
                    .parse()
                    .unwrap(),
            );
        }
        for seed in 0..50 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let chosen = choose(&own, &candidates, 8, 2, &mut rng);
            assert_eq!(chosen.len(), 8);
            let mut unique = chosen.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), 8, "a candidate chosen twice");
            let near = chosen
                .iter()
                .filter(|&&i| own.closeness(&candidates[i]) == Closeness::Rack)
                .count();
            assert!(near >= 6, "seed {seed}: only {near} same-rack neighbours");
        }
        // Over many seeds the outside places do reach other fault domains.
        let far = (0..50)
            .flat_map(|seed| choose(&own, &candidates, 8, 2, &mut SmallRng::seed_from_u64(seed)))
            .filter(|&i| own.closeness(&candidates[i]) < Closeness::FaultDomain)
            .count();
        assert!(far > 0);
    }

    #[test]
    fn fewer_candidates_than_wanted_takes_them_all() {
        let own = Labels::default();
        let candidates = vec![Labels::default(); 3];
        let mut chosen = choose(&own, &candidates, 8, 2, &mut SmallRng::seed_from_u64(1));
        chosen.sort_unstable();
        assert_eq!(chosen, vec![0, 1, 2]);
    }
}
