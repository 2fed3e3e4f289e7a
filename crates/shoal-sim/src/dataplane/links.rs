//! Every node's swarm neighbours at the start of a run.

use super::DataConfig;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use shoal_core::control::Place;
use shoal_core::swarm::neighbours;
use std::collections::BTreeSet;

/// Every node's swarm neighbours, symmetric: each node asks for up to `neighbours`, mostly
/// close, a quarter from anywhere, among nodes that have room.
pub(super) fn choose_links(config: &DataConfig, places: &[Place]) -> Vec<Vec<u32>> {
    let n = config.nodes as usize;
    let want = config.neighbours.max(1);
    let mut links: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut rng = SmallRng::seed_from_u64(config.seed);
    // Candidates: everyone when the fleet is small, otherwise a sample (the mesh's views).
    let sample = (want * 8).min(n.saturating_sub(1));
    for a in 0..n {
        if links[a].len() >= want {
            continue;
        }
        let pool: Vec<u32> = if n <= sample + 1 {
            (0..n as u32).filter(|&b| b as usize != a).collect()
        } else {
            let mut pool = BTreeSet::new();
            while pool.len() < sample {
                let b = rand::Rng::random_range(&mut rng, 0..n as u32);
                if b as usize != a {
                    pool.insert(b);
                }
            }
            pool.into_iter().collect()
        };
        let free = want - links[a].len();
        let chosen = neighbours::choose_by(
            pool.len(),
            |i| places[a].closeness(&places[pool[i] as usize]),
            free,
            (free / 4).max(1),
            &mut rng,
        );
        for i in chosen {
            let b = pool[i] as usize;
            if links[a].contains(&(b as u32)) || links[b].len() >= want * 2 {
                continue;
            }
            links[a].push(b as u32);
            links[b].push(a as u32);
        }
    }
    // The origin must be someone's neighbour for anything to move.
    if links[0].is_empty() && n > 1 {
        links[0].push(1);
        links[1].push(0);
    }
    links
}
