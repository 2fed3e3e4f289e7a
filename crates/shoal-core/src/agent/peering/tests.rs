use super::*;

const MS: Duration = Duration::from_millis(1);

fn peering(me: u8, addr: u32) -> Peering<u32, u8> {
    Peering::new(
        Config::default(),
        me,
        addr,
        Labels::default(),
        7,
        Duration::ZERO,
    )
}

fn outputs(p: &mut Peering<u32, u8>) -> Vec<Output<u32, u8>> {
    std::iter::from_fn(|| p.poll_output()).collect()
}

fn dials(p: &mut Peering<u32, u8>) -> Vec<u32> {
    outputs(p)
        .into_iter()
        .filter_map(|o| match o {
            Output::Dial(a) => Some(a),
            _ => None,
        })
        .collect()
}

fn labels(text: &str) -> Labels {
    text.parse().expect("labels")
}

#[test]
fn a_static_peer_is_redialled_with_a_doubling_backoff_and_again_after_it_closes() {
    let mut p = peering(1, 100);
    p.add_static(200);
    assert_eq!(dials(&mut p), vec![200]);
    let mut now = Duration::ZERO;
    let mut waits = Vec::new();
    for _ in 0..10 {
        p.dial_failed(200, now);
        assert!(dials(&mut p).is_empty(), "redialled before the backoff");
        let failed_at = now;
        // Wake-ups for the peer exchange come in between; only the redial counts.
        loop {
            now = p.poll_timeout();
            p.handle_timeout(now);
            let dialled = dials(&mut p);
            if !dialled.is_empty() {
                assert_eq!(dialled, vec![200]);
                break;
            }
        }
        waits.push(now - failed_at);
    }
    assert_eq!(waits[0], 250 * MS);
    assert_eq!(waits[1], 500 * MS);
    assert_eq!(waits[2], 1000 * MS);
    assert_eq!(*waits.last().unwrap(), Duration::from_secs(30), "capped");
    // A connection resets the backoff; its end brings a redial after the shortest wait.
    assert_eq!(p.connected(2, 1, 200, true), Verdict::Keep);
    p.disconnected(2, 1, now);
    assert_eq!(p.poll_timeout(), now + 250 * MS);
    p.handle_timeout(now + 250 * MS);
    assert_eq!(dials(&mut p), vec![200]);
}

#[test]
fn a_learned_peer_gets_three_dials_then_is_given_up() {
    let mut p = peering(1, 100);
    p.connect(300);
    p.connect(300);
    p.connect(100); // itself
    assert_eq!(dials(&mut p), vec![300], "one dial, never to itself");
    let mut now = Duration::ZERO;
    for _ in 0..2 {
        p.dial_failed(300, now);
        now = p.poll_timeout();
        p.handle_timeout(now);
        assert_eq!(dials(&mut p), vec![300]);
    }
    p.dial_failed(300, now);
    assert_eq!(p.stats().given_up, 1);
    p.handle_timeout(now + Duration::from_secs(60));
    assert!(dials(&mut p).is_empty(), "dialled after its last attempt");
    // It can be found again later.
    p.connect(300);
    assert_eq!(dials(&mut p), vec![300]);
}

#[test]
fn both_sides_keep_the_connection_dialled_by_the_smaller_id() {
    // Peers 1 and 2 dial each other at once: connection 10 dialled by 1, connection 20 by 2.
    for first_seen in [10u64, 20] {
        let mut small = peering(1, 100);
        let mut large = peering(2, 200);
        let order = if first_seen == 10 { [10, 20] } else { [20, 10] };
        let mut small_kept = Vec::new();
        let mut large_kept = Vec::new();
        for conn in order {
            let by_small = conn == 10;
            if small.connected(2, conn, 200, by_small) == Verdict::Keep {
                small_kept.push(conn);
            }
            if large.connected(1, conn, 100, !by_small) == Verdict::Keep {
                large_kept.push(conn);
            }
        }
        let closed = |p: &mut Peering<u32, u8>| -> Vec<u64> {
            outputs(p)
                .into_iter()
                .filter_map(|o| match o {
                    Output::Close { conn, .. } => Some(conn),
                    _ => None,
                })
                .collect()
        };
        let small_closed = closed(&mut small);
        let large_closed = closed(&mut large);
        let stays = |kept: &[u64], closed: &[u64]| {
            kept.iter()
                .copied()
                .filter(|c| !closed.contains(c))
                .collect::<Vec<_>>()
        };
        assert_eq!(stays(&small_kept, &small_closed), vec![10]);
        assert_eq!(stays(&large_kept, &large_closed), vec![10]);
    }
}

#[test]
fn a_newer_connection_dialled_the_same_way_replaces_the_old_one() {
    let mut p = peering(5, 100);
    assert_eq!(p.connected(2, 1, 200, false), Verdict::Keep);
    assert_eq!(p.connected(2, 2, 200, false), Verdict::Keep);
    assert_eq!(outputs(&mut p), vec![Output::Close { peer: 2, conn: 1 }]);
    // The old connection's end does not drop the new one.
    p.disconnected(2, 1, Duration::ZERO);
    assert_eq!(p.connections(), 1);
}

#[test]
fn a_hello_brings_an_exchange_both_ways_and_only_admitted_peers_are_named() {
    let mut p = peering(1, 100);
    for (peer, addr) in [(2u8, 200u32), (3, 300), (4, 400)] {
        assert_eq!(
            p.connected(peer, u64::from(peer), addr, false),
            Verdict::Keep
        );
    }
    p.hello(2, 2, labels("rack=a"));
    p.hello(3, 3, labels("rack=b"));
    // 4 never said hello: nobody hears of it, it hears nothing.
    let out = outputs(&mut p);
    assert!(out.contains(&Output::SendPeers {
        to: 3,
        peers: vec![(200, labels("rack=a"))]
    }));
    assert!(out.contains(&Output::SendPeers {
        to: 2,
        peers: vec![(300, labels("rack=b"))]
    }));
    assert!(
        out.iter()
            .all(|o| !matches!(o, Output::SendPeers { to: 4, .. })
                && !matches!(o, Output::SendPeers { peers, .. } if peers.iter().any(|(a, _)| *a == 400)))
    );
    // A hello on a connection that has been replaced is ignored.
    p.hello(4, 99, labels("rack=c"));
    assert!(outputs(&mut p).is_empty());
    // The periodic exchange names the others to each admitted peer.
    p.handle_timeout(Duration::from_secs(10));
    let out = outputs(&mut p);
    assert_eq!(out.len(), 2, "{out:?}");
}

#[test]
fn learned_peers_fill_the_room_left_and_no_more() {
    let config = Config {
        max_peers: 5,
        ..Config::default()
    };
    let mut p = Peering::new(config, 1u8, 100u32, Labels::default(), 3, Duration::ZERO);
    assert_eq!(p.connected(2, 1, 200, true), Verdict::Keep);
    let peers: Vec<(u32, Labels)> = (0..50u32)
        .map(|i| (1000 + i, Labels::default()))
        .chain([(100, Labels::default()), (200, Labels::default())])
        .collect();
    p.learned(2, peers.clone());
    let first = dials(&mut p);
    assert_eq!(first.len(), 4, "one open, room for four");
    assert!(
        first.iter().all(|a| *a >= 1000),
        "dialled itself or a peer it has"
    );
    p.learned(2, peers);
    assert!(dials(&mut p).is_empty(), "dialled beyond max_peers");
    // From a peer not connected, nothing is learned.
    let mut q = peering(1, 100);
    q.learned(9, vec![(500, Labels::default())]);
    assert!(dials(&mut q).is_empty());
}

#[test]
fn the_same_seed_makes_the_same_choices() {
    let run = |seed| {
        let mut p = Peering::new(
            Config::default(),
            1u8,
            100u32,
            Labels::default(),
            seed,
            Duration::ZERO,
        );
        p.connected(2, 1, 200, true);
        p.learned(
            2,
            (0..64u32).map(|i| (1000 + i, Labels::default())).collect(),
        );
        dials(&mut p)
    };
    assert_eq!(run(11), run(11));
    assert_ne!(run(11), run(12));
}

#[test]
fn early_haves_are_kept_bounded_updated_and_claimed_once() {
    let mut p = peering(1, 100);
    p.connected(2, 1, 200, true);
    let root = |i: u8| RootHash([i; 32]);
    let mut have = Bitfield::new(8);
    have.insert(0);
    for i in 0..20 {
        p.keep_have(2, 1, root(i), have.clone(), i == 0);
    }
    p.keep_have(2, 7, root(30), have.clone(), false); // a stale connection
    p.keep_delta(2, 1, root(0), &[PieceIndex(3), PieceIndex(99)]);
    let claimed = p.claim(root(0));
    assert_eq!(claimed.len(), 1);
    let (peer, conn, (pieces, origin)) = &claimed[0];
    assert_eq!((*peer, *conn, *origin), (2, 1, true));
    assert!(pieces.contains(0) && pieces.contains(3) && pieces.count() == 2);
    assert!(p.claim(root(0)).is_empty(), "claimed twice");
    assert_eq!(p.claim(root(15)).len(), 1);
    assert!(p.claim(root(16)).is_empty(), "kept more than 16 releases");
    assert!(p.claim(root(30)).is_empty());
}
