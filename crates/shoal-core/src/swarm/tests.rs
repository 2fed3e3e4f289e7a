//! Unit tests of the swarm scheduler.

use super::*;

fn swarm() -> Swarm {
    let layout = PieceLayout::new(64 * 16 * 1024, 16 * 1024).unwrap();
    Swarm::new(Config::default(), layout, Bitfield::new(64), 1)
}

fn drain(swarm: &mut Swarm, now: Duration) -> Vec<Action> {
    std::iter::from_fn(|| swarm.poll_action(now)).collect()
}

#[test]
fn a_peer_whose_streams_keep_breaking_is_dropped_then_banned() {
    let mut s = swarm();
    let bad = PeerKey(9);
    let mut now = Duration::ZERO;
    for round in 1..=MAX_UNRESPONSIVE_DROPS {
        s.handle_peer_joined(bad, false).unwrap();
        s.handle_have(bad, Bitfield::full(64)).unwrap();
        let requested: Vec<PieceIndex> = drain(&mut s, now)
            .into_iter()
            .filter_map(|a| match a {
                Action::Request { piece, .. } => Some(piece),
                _ => None,
            })
            .collect();
        assert!(requested.len() >= 3);
        for piece in requested {
            s.handle_request_failed(bad, piece, now);
        }
        let actions = drain(&mut s, now);
        assert!(actions.contains(&Action::Disconnect {
            peer: bad,
            reason: DropReason::Unresponsive
        }));
        assert_eq!(
            s.is_banned(bad),
            round == MAX_UNRESPONSIVE_DROPS,
            "round {round}"
        );
        now += Duration::from_secs(1);
    }
    assert_eq!(
        s.handle_peer_joined(bad, false),
        Err(PeerError::Banned(bad))
    );
}

#[test]
fn answers_about_pieces_past_the_end_are_ignored() {
    let mut s = swarm();
    let peer = PeerKey(4);
    s.handle_peer_joined(peer, false).unwrap();
    s.handle_have(peer, Bitfield::full(64)).unwrap();
    for reason in [
        RejectReason::NotHave,
        RejectReason::Busy,
        RejectReason::UnknownRelease,
    ] {
        s.handle_rejected(peer, PieceIndex(u32::MAX), reason, Duration::ZERO);
    }
    s.handle_cancel(peer, PieceIndex(64));
    s.handle_request(peer, PieceIndex(64));
    assert!(s.contains(peer));
    assert_eq!(s.stats().false_haves, 0);
}

#[test]
fn a_corrupt_piece_bans_its_sender_at_once() {
    let mut s = swarm();
    let bad = PeerKey(3);
    s.handle_peer_joined(bad, false).unwrap();
    s.handle_have(bad, Bitfield::full(64)).unwrap();
    let piece = drain(&mut s, Duration::ZERO)
        .into_iter()
        .find_map(|a| match a {
            Action::Request { piece, .. } => Some(piece),
            _ => None,
        })
        .unwrap();
    s.handle_piece(bad, piece, Received::Corrupt, Duration::ZERO);
    assert!(s.is_banned(bad));
    assert!(!s.have().contains(piece.0));
    let actions = drain(&mut s, Duration::ZERO);
    assert_eq!(
        actions,
        vec![Action::Disconnect {
            peer: bad,
            reason: DropReason::Corrupt { piece }
        }]
    );
}

#[test]
fn the_origin_is_asked_once_other_holders_stall() {
    let mut s = swarm();
    let (origin, liar) = (PeerKey(1), PeerKey(2));
    s.handle_peer_joined(origin, true).unwrap();
    s.handle_have(origin, Bitfield::full(64)).unwrap();
    s.handle_peer_joined(liar, false).unwrap();
    s.handle_have(liar, Bitfield::full(64)).unwrap();
    let asked = |actions: Vec<Action>, who| {
        actions
            .iter()
            .filter(|a| matches!(a, Action::Request { peer, .. } if *peer == who))
            .count()
    };
    // The liar has everything, so the origin is spared...
    assert_eq!(asked(drain(&mut s, Duration::ZERO), origin), 0);
    // ...until the liar's requests sit unanswered for the wait.
    let later = Config::default().origin_endgame_wait;
    assert!(asked(drain(&mut s, later), origin) > 0);
}

fn origin_swarm() -> Swarm {
    let layout = PieceLayout::new(64 * 16 * 1024, 16 * 1024).unwrap();
    Swarm::new(Config::origin(), layout, Bitfield::full(64), 1)
}

fn sends(actions: &[Action]) -> Vec<(PeerKey, PieceIndex)> {
    actions
        .iter()
        .filter_map(|a| match *a {
            Action::Send { peer, piece } => Some((peer, piece)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_origin_declines_a_piece_on_its_way_to_another_peer_until_it_arrives() {
    let mut o = origin_swarm();
    let (a, b, c) = (PeerKey(1), PeerKey(2), PeerKey(3));
    for p in [a, b, c] {
        o.handle_peer_joined(p, false).unwrap();
        o.handle_have(p, Bitfield::new(64)).unwrap();
    }
    let now = Duration::ZERO;
    o.handle_request(a, PieceIndex(5));
    assert_eq!(sends(&drain(&mut o, now)), vec![(a, PieceIndex(5))]);
    // B asks while the piece is on its way to A: declined.
    o.handle_request(b, PieceIndex(5));
    assert_eq!(
        drain(&mut o, now),
        vec![Action::Reject {
            peer: b,
            piece: PieceIndex(5),
            reason: RejectReason::SentElsewhere
        }]
    );
    // A asking again (a resumed fetch) is served: the copy was its own.
    o.handle_request(a, PieceIndex(5));
    assert_eq!(sends(&drain(&mut o, now)), vec![(a, PieceIndex(5))]);
    o.handle_sent(a, PieceIndex(5), true);
    o.handle_sent(a, PieceIndex(5), true);
    // Once A announces the piece, a request for it is served again (the requester's own
    // choice of peer keeps such requests rare).
    o.handle_have_delta(a, &[PieceIndex(5)]).unwrap();
    o.handle_request(b, PieceIndex(5));
    assert_eq!(sends(&drain(&mut o, now)), vec![(b, PieceIndex(5))]);
    // A copy whose recipient left is no longer in transit.
    o.handle_request(a, PieceIndex(9));
    assert_eq!(sends(&drain(&mut o, now)), vec![(a, PieceIndex(9))]);
    o.handle_peer_left(a);
    o.handle_request(c, PieceIndex(9));
    assert_eq!(sends(&drain(&mut o, now)), vec![(c, PieceIndex(9))]);
    assert_eq!(o.stats().declined_sent_elsewhere, 1);
}

#[test]
fn requests_that_crossed_in_the_origins_queue_are_declined_when_one_is_sent() {
    let mut o = Swarm::new(
        Config {
            upload_slots: 1,
            ..Config::origin()
        },
        PieceLayout::new(64 * 16 * 1024, 16 * 1024).unwrap(),
        Bitfield::full(64),
        1,
    );
    let (a, b) = (PeerKey(1), PeerKey(2));
    for p in [a, b] {
        o.handle_peer_joined(p, false).unwrap();
        o.handle_have(p, Bitfield::new(64)).unwrap();
    }
    let now = Duration::ZERO;
    // The one slot is busy with piece 1; both ask for piece 7, and both requests wait.
    o.handle_request(a, PieceIndex(1));
    assert_eq!(sends(&drain(&mut o, now)), vec![(a, PieceIndex(1))]);
    o.handle_request(a, PieceIndex(7));
    o.handle_request(b, PieceIndex(7));
    assert!(drain(&mut o, now).is_empty());
    o.handle_sent(a, PieceIndex(1), true);
    let actions = drain(&mut o, now);
    let sent = sends(&actions);
    assert_eq!(sent.len(), 1, "{actions:?}");
    let (to, piece) = sent[0];
    assert_eq!(piece, PieceIndex(7));
    let other = if to == a { b } else { a };
    o.handle_sent(to, piece, true);
    let actions = drain(&mut o, now);
    assert!(
        actions.contains(&Action::Reject {
            peer: other,
            piece: PieceIndex(7),
            reason: RejectReason::SentElsewhere
        }),
        "{actions:?}"
    );
    assert!(sends(&actions).is_empty(), "{actions:?}");
}

#[test]
fn a_declined_piece_is_asked_again_when_its_wait_ends() {
    let layout = PieceLayout::new(2 * 16 * 1024, 16 * 1024).unwrap();
    let mut s = Swarm::new(Config::default(), layout, Bitfield::new(2), 1);
    let origin = PeerKey(1);
    s.handle_peer_joined(origin, true).unwrap();
    s.handle_have(origin, Bitfield::full(2)).unwrap();
    let now = Duration::ZERO;
    let asked: Vec<PieceIndex> = drain(&mut s, now)
        .into_iter()
        .filter_map(|a| match a {
            Action::Request { piece, .. } => Some(piece),
            _ => None,
        })
        .collect();
    assert_eq!(asked.len(), 2);
    let (declined, delivered) = (asked[0], asked[1]);
    s.handle_rejected(origin, declined, RejectReason::SentElsewhere, now);
    s.handle_piece(origin, delivered, Received::Verified, now);
    // Not asked again at once, though the origin is the only holder...
    let again = |actions: Vec<Action>| {
        actions
            .iter()
            .any(|a| matches!(a, Action::Request { piece, .. } if *piece == declined))
    };
    assert!(!again(drain(&mut s, now)));
    // ...but the swarm asks to be woken when the wait ends, and asks then.
    let wait = Config::default().decline_wait;
    assert_eq!(s.poll_timeout(now), Some(wait));
    s.handle_timeout(wait);
    assert!(again(drain(&mut s, wait)));
    assert_eq!(s.stats().sent_elsewhere, 1);
}
