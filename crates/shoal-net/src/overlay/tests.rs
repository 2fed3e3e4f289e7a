//! Overlays on real sockets on 127.0.0.1, and a raw libp2p peer that breaks the rules.
//!
//! Timeouts here are generous upper bounds for things that should happen; none is a benchmark.

use super::behaviour::{Behaviour, build_swarm};
use super::*;
use crate::identity::Identity;
use futures::{AsyncReadExt as _, AsyncWriteExt as _};
use libp2p::swarm::dial_opts::DialOpts;
use shoal_core::keys::{Role, SecretKey};
use std::net::UdpSocket;
use std::time::Instant;
use tokio::sync::mpsc::Receiver;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Upper bound on anything a test waits for.
const WAIT: Duration = Duration::from_secs(30);
const HELLO: &[u8] = b"shoal hello v1";

fn identity(seed: u8) -> Identity {
    Identity::from_secret(&SecretKey::from_seed(Role::Node, [seed; 32])).expect("node key")
}

fn config() -> Config {
    Config {
        hello_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(3),
        ..Config::new("127.0.0.1:0".parse().expect("literal"))
    }
}

fn accept_hello() -> HelloCheck {
    Arc::new(|_, hello| hello == HELLO)
}

fn refuse_hello() -> HelloCheck {
    Arc::new(|_, _| false)
}

async fn node(seed: u8, config: Config, check: HelloCheck) -> (Overlay, Receiver<Event>) {
    start(&identity(seed), config, Bytes::from_static(HELLO), check)
        .await
        .expect("overlay starts")
}

async fn next_event(events: &mut Receiver<Event>, what: &str) -> Event {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .unwrap_or_else(|_| panic!("no event within {WAIT:?} while waiting for {what}"))
        .unwrap_or_else(|| panic!("event queue closed while waiting for {what}"))
}

async fn next_frame(events: &mut Receiver<Event>) -> (PeerId, Bytes) {
    match next_event(events, "a frame").await {
        Event::Frame { peer, frame } => (peer, frame),
        other => panic!("expected a frame, got {other:?}"),
    }
}

/// Waits for `Disconnected { peer }`, skipping only other `Disconnected` events.
async fn disconnected(events: &mut Receiver<Event>, peer: PeerId) {
    loop {
        match next_event(events, "a disconnect").await {
            Event::Disconnected { peer: down } if down == peer => return,
            Event::Disconnected { .. } => {}
            other => panic!("expected Disconnected({peer}), got {other:?}"),
        }
    }
}

/// Fails unless `events` holds nothing but `Disconnected` events right now.
fn assert_no_frames(events: &mut Receiver<Event>) {
    while let Ok(event) = events.try_recv() {
        assert!(
            matches!(event, Event::Disconnected { .. }),
            "unexpected event {event:?}"
        );
    }
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "not within {WAIT:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A bare libp2p peer connected to `target`, for writing what a well-behaved overlay never
/// would. `closed` turns true when its connection to `target` closes.
struct RawPeer {
    peer_id: PeerId,
    control: libp2p_stream::Control,
    closed: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl RawPeer {
    fn connect(seed: u8, target: &Overlay) -> Self {
        let identity = identity(seed);
        let mut swarm: Swarm<Behaviour> =
            build_swarm(identity.keypair(), &config()).expect("raw swarm");
        let control = swarm.behaviour().streams.new_control();
        swarm
            .dial(
                DialOpts::peer_id(target.peer_id())
                    .addresses(vec![quic_multiaddr(target.local_addr())])
                    .build(),
            )
            .expect("dial starts");
        let (closed_sender, closed) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                if let SwarmEvent::ConnectionClosed { .. } = swarm.select_next_some().await {
                    closed_sender.send_replace(true);
                }
            }
        });
        Self {
            peer_id: identity.peer_id(),
            control,
            closed,
            task,
        }
    }

    async fn open(&mut self, target: &Overlay) -> libp2p::Stream {
        tokio::time::timeout(
            WAIT,
            self.control.open_stream(target.peer_id(), CONTROL_PROTOCOL),
        )
        .await
        .expect("stream opens in time")
        .expect("stream opens")
    }

    async fn wait_closed(&mut self) {
        tokio::time::timeout(WAIT, self.closed.wait_for(|closed| *closed))
            .await
            .expect("connection closed in time")
            .expect("raw swarm alive");
    }
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn overlay_frames_flow_both_ways_in_order() {
    let (a, mut a_events) = node(1, config(), accept_hello()).await;
    let (b, mut b_events) = node(2, config(), accept_hello()).await;
    const FRAMES: usize = 50;
    for i in 0..FRAMES {
        a.send(b.peer_id(), b.local_addr(), Bytes::from(format!("a{i}")))
            .expect("queued to b");
        b.send(a.peer_id(), a.local_addr(), Bytes::from(format!("b{i}")))
            .expect("queued to a");
    }
    for i in 0..FRAMES {
        let (from, frame) = next_frame(&mut b_events).await;
        assert_eq!(from, a.peer_id(), "b sees a's peer id");
        assert_eq!(frame, format!("a{i}").as_bytes(), "frame {i} at b");
        let (from, frame) = next_frame(&mut a_events).await;
        assert_eq!(from, b.peer_id(), "a sees b's peer id");
        assert_eq!(frame, format!("b{i}").as_bytes(), "frame {i} at a");
    }
    assert_eq!(a.stats().frames_received, FRAMES as u64);
    assert_eq!(b.stats().frames_received, FRAMES as u64);
    eventually("both sides counted every frame sent", || {
        a.stats().frames_sent == FRAMES as u64 && b.stats().frames_sent == FRAMES as u64
    })
    .await;
    assert_eq!(a.stats().hellos_refused + b.stats().hellos_refused, 0);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn overlay_refused_hello_delivers_nothing_and_closes_the_connection() {
    let (a, mut a_events) = node(3, config(), accept_hello()).await;
    let (b, mut b_events) = node(4, config(), refuse_hello()).await;
    a.send(
        b.peer_id(),
        b.local_addr(),
        Bytes::from_static(b"let me in"),
    )
    .expect("queued");
    eventually("b counts the refused hello", || {
        b.stats().hellos_refused == 1
    })
    .await;
    disconnected(&mut a_events, b.peer_id()).await;
    eventually("both sides closed the connection", || {
        a.stats().connections == 0 && b.stats().connections == 0
    })
    .await;
    assert_no_frames(&mut b_events);
    assert_eq!(b.stats().frames_received, 0);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn overlay_oversize_frame_is_refused_before_its_body() {
    let config = Config {
        max_frame_bytes: 1024,
        ..config()
    };
    let (b, mut b_events) = node(5, config, accept_hello()).await;
    let mut raw = RawPeer::connect(6, &b);
    let mut stream = raw.open(&b).await;
    let mut wire = Vec::new();
    for frame in [HELLO, b"fine"] {
        wire.extend_from_slice(&u32::try_from(frame.len()).expect("small").to_be_bytes());
        wire.extend_from_slice(frame);
    }
    // Announce one byte over the limit and send none of the body: only a reader that refuses
    // from the prefix alone closes the connection.
    wire.extend_from_slice(&1025u32.to_be_bytes());
    stream.write_all(&wire).await.expect("write");
    stream.flush().await.expect("flush");

    let (from, frame) = next_frame(&mut b_events).await;
    assert_eq!((from, frame.as_ref()), (raw.peer_id, &b"fine"[..]));
    raw.wait_closed().await;
    assert_eq!(b.stats().oversize_frames, 1);
    assert_eq!(b.stats().frames_received, 1);
    assert_no_frames(&mut b_events);
    b.shutdown().await;
}

#[tokio::test]
async fn overlay_admission_works_without_a_hello() {
    let (a, mut a_events) = node(7, config(), accept_hello()).await;
    let (b, mut b_events) = node(8, config(), refuse_hello()).await;
    let a_id = a.peer_id();
    let responder = tokio::spawn(async move {
        let mut frames = 0;
        while let Some(event) = b_events.recv().await {
            match event {
                Event::Request { peer, body, reply } => {
                    assert_eq!(peer, a_id, "request comes from a");
                    if body.as_ref() != b"ignore me" {
                        let _ = reply.send(Bytes::from([&body[..], b" ok"].concat()));
                    }
                }
                Event::Frame { .. } => frames += 1,
                Event::Disconnected { .. } => {}
            }
        }
        frames
    });

    let (peer, answer) = a
        .request(
            Some(b.peer_id()),
            b.local_addr(),
            Bytes::from_static(b"join"),
            WAIT,
        )
        .await
        .expect("answered");
    assert_eq!((peer, answer.as_ref()), (b.peer_id(), &b"join ok"[..]));

    let (peer, answer) = a
        .request(None, b.local_addr(), Bytes::from_static(b"who"), WAIT)
        .await
        .expect("answered by whoever listens");
    assert_eq!((peer, answer.as_ref()), (b.peer_id(), &b"who ok"[..]));

    let unanswered = a
        .request(None, b.local_addr(), Bytes::from_static(b"ignore me"), WAIT)
        .await;
    assert!(
        matches!(unanswered, Err(RequestError::NoAnswer { peer }) if peer == b.peer_id()),
        "{unanswered:?}"
    );

    let impostor = identity(99).peer_id();
    let wrong = a
        .request(
            Some(impostor),
            b.local_addr(),
            Bytes::from_static(b"join"),
            WAIT,
        )
        .await;
    assert!(
        matches!(wrong, Err(RequestError::Connect { .. })),
        "{wrong:?}"
    );

    assert_eq!(a.stats().requests_sent, 2);
    assert_eq!(b.stats().requests_received, 3);
    assert_eq!(b.stats().hellos_refused, 0, "admission needs no hello");

    // The same peer is still refused on the control protocol.
    a.send(b.peer_id(), b.local_addr(), Bytes::from_static(b"frame"))
        .expect("queued");
    eventually("b refuses a's hello", || b.stats().hellos_refused == 1).await;
    disconnected(&mut a_events, b.peer_id()).await;
    b.shutdown().await;
    let frames = tokio::time::timeout(WAIT, responder)
        .await
        .expect("event queue closes after shutdown")
        .expect("responder");
    assert_eq!(frames, 0, "no frame from a refused hello");
    a.shutdown().await;
}

#[tokio::test]
async fn overlay_reports_a_peer_that_went_away() {
    let (a, mut a_events) = node(9, config(), accept_hello()).await;
    let (b, mut b_events) = node(10, config(), accept_hello()).await;
    a.send(b.peer_id(), b.local_addr(), Bytes::from_static(b"one"))
        .expect("queued");
    assert_eq!(next_frame(&mut b_events).await.1, &b"one"[..]);

    b.shutdown().await;
    assert_eq!(
        b.send(a.peer_id(), a.local_addr(), Bytes::from_static(b"late")),
        Err(SendError::Closed)
    );
    disconnected(&mut a_events, b.peer_id()).await;

    // Sending again dials again; nobody answers, and the owner hears so. (A report of the old
    // link may still be on its way, hence the loop.)
    for _ in 0..3 {
        a.send(b.peer_id(), b.local_addr(), Bytes::from_static(b"two"))
            .expect("queued");
        disconnected(&mut a_events, b.peer_id()).await;
        if a.stats().dial_failures > 0 {
            break;
        }
    }
    assert!(a.stats().dial_failures >= 1, "{:?}", a.stats());
    a.shutdown().await;
}

#[tokio::test]
async fn overlay_full_queue_refuses_without_blocking() {
    let config = Config {
        peer_queue_frames: 4,
        ..config()
    };
    let (a, mut a_events) = node(11, config, accept_hello()).await;
    // A UDP socket that never answers: the dial hangs until the handshake times out, so the
    // writer takes nothing off its queue.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("udp socket");
    let silent_addr = silent.local_addr().expect("bound");
    let silent_peer = identity(12).peer_id();
    for i in 0..4u8 {
        a.send(silent_peer, silent_addr, Bytes::from(vec![i]))
            .expect("room in the queue");
    }
    let started = Instant::now();
    let full = a.send(
        silent_peer,
        silent_addr,
        Bytes::from_static(b"one too many"),
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "send returned at once"
    );
    assert_eq!(full, Err(SendError::QueueFull { peer: silent_peer }));
    assert_eq!(a.stats().frames_dropped, 1);

    disconnected(&mut a_events, silent_peer).await;
    // The writer's own deadline and the handshake timeout are the same length: either may
    // report first.
    eventually("the dial to the silent peer fails", || {
        a.stats().dial_failures >= 1
    })
    .await;
    a.shutdown().await;
}

#[tokio::test]
async fn overlay_silent_stream_is_closed_after_the_hello_timeout() {
    let (b, mut b_events) = node(13, config(), accept_hello()).await;
    let mut raw = RawPeer::connect(14, &b);
    let started = Instant::now();
    let _stream = raw.open(&b).await;
    raw.wait_closed().await;
    // The timeout runs from when b accepted the stream, which is after `started`.
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "closed after {:?}, before the 2 s hello timeout",
        started.elapsed()
    );
    assert_eq!(b.stats().hello_timeouts, 1);
    assert_no_frames(&mut b_events);
    b.shutdown().await;
}

#[tokio::test]
async fn overlay_extra_inbound_streams_are_refused() {
    let (b, mut b_events) = node(15, config(), accept_hello()).await;
    let mut raw = RawPeer::connect(16, &b);
    let hello = [
        &u32::try_from(HELLO.len()).expect("small").to_be_bytes()[..],
        HELLO,
    ]
    .concat();
    let mut streams = Vec::new();
    for _ in 0..4 {
        let mut stream = raw.open(&b).await;
        stream.write_all(&hello).await.expect("write");
        stream.flush().await.expect("flush");
        streams.push(stream);
    }
    let mut fifth = raw.open(&b).await;
    eventually("b refuses the fifth control stream", || {
        b.stats().streams_refused == 1
    })
    .await;
    // The refused stream was closed at once; the four others are still read.
    let mut byte = [0u8; 1];
    let refused = tokio::time::timeout(WAIT, fifth.read(&mut byte))
        .await
        .expect("refused stream ends");
    assert!(matches!(refused, Ok(0) | Err(_)), "{refused:?}");
    let frame = [&2u32.to_be_bytes()[..], b"ok"].concat();
    streams[0].write_all(&frame).await.expect("write");
    streams[0].flush().await.expect("flush");
    assert_eq!(
        next_frame(&mut b_events).await,
        (raw.peer_id, Bytes::from_static(b"ok"))
    );
    b.shutdown().await;
}

#[tokio::test]
async fn overlay_disconnect_flushes_queued_frames_first() {
    let (a, mut a_events) = node(17, config(), accept_hello()).await;
    let (b, mut b_events) = node(18, config(), accept_hello()).await;
    const FRAMES: usize = 20;
    for i in 0..FRAMES {
        a.send(b.peer_id(), b.local_addr(), Bytes::from(format!("f{i}")))
            .expect("queued");
    }
    a.disconnect(b.peer_id());
    for i in 0..FRAMES {
        let (_, frame) = next_frame(&mut b_events).await;
        assert_eq!(frame, format!("f{i}").as_bytes());
    }
    disconnected(&mut b_events, a.peer_id()).await;
    disconnected(&mut a_events, b.peer_id()).await;
    eventually("no connection left", || a.stats().connections == 0).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn overlay_links_with_streams_stay_up_and_idle_connections_close() {
    let short_idle = Config {
        idle_connection_timeout: Duration::from_millis(300),
        ..config()
    };
    let (a, mut a_events) = node(19, short_idle.clone(), accept_hello()).await;
    let (b, mut b_events) = node(20, short_idle, accept_hello()).await;
    a.send(b.peer_id(), b.local_addr(), Bytes::from_static(b"first"))
        .expect("queued");
    assert_eq!(next_frame(&mut b_events).await.1, &b"first"[..]);
    // Many idle timeouts later, the control stream still holds the connection open.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(a.stats().connections, 1, "{:?}", a.stats());
    a.send(b.peer_id(), b.local_addr(), Bytes::from_static(b"second"))
        .expect("queued");
    assert_eq!(next_frame(&mut b_events).await.1, &b"second"[..]);
    assert!(
        a_events.try_recv().is_err(),
        "no event at a: the link never went down"
    );

    // A connection made for one admission request carries no stream afterwards and closes.
    let (c, mut c_events) = node(21, config(), accept_hello()).await;
    let answering = tokio::spawn(async move {
        if let Some(Event::Request { reply, .. }) = b_events.recv().await {
            let _ = reply.send(Bytes::from_static(b"yes"));
        }
    });
    let (_, answer) = c
        .request(
            Some(b.peer_id()),
            b.local_addr(),
            Bytes::from_static(b"?"),
            WAIT,
        )
        .await
        .expect("answered");
    assert_eq!(answer, &b"yes"[..]);
    answering.await.expect("responder");
    eventually("b closes the idle admission connection", || {
        b.stats().connections == 1
    })
    .await;
    disconnected(&mut c_events, b.peer_id()).await;
    for overlay in [a, b, c] {
        overlay.shutdown().await;
    }
}

#[test]
fn overlay_handles_and_futures_are_send() {
    fn is_send_sync<T: Send + Sync>(_: &T) {}
    fn is_send<T: Send>(_: &T) {}
    let identity = identity(22);
    let starting = start(&identity, config(), Bytes::new(), accept_hello());
    is_send(&starting);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (overlay, _events) = runtime.block_on(starting).expect("overlay starts");
    is_send_sync(&overlay);
    is_send(&overlay.request(None, overlay.local_addr(), Bytes::new(), WAIT));
    is_send(&overlay.shutdown());
    runtime.block_on(overlay.shutdown());
}

#[tokio::test]
async fn overlay_recheck_cuts_off_a_peer_whose_hello_no_longer_passes() {
    let (a, mut a_events) = node(11, config(), accept_hello()).await;
    let (b, mut b_events) = node(12, config(), accept_hello()).await;
    a.send(b.peer_id(), b.local_addr(), Bytes::from_static(b"hello b"))
        .expect("queued");
    let (from, _) = next_frame(&mut b_events).await;
    assert_eq!(from, a.peer_id());
    let cut = b.recheck(|_, hello| {
        (hello != HELLO)
            .then_some(())
            .ok_or_else(|| "its hello is no longer good".to_string())
    });
    assert_eq!(
        cut,
        vec![(a.peer_id(), "its hello is no longer good".into())]
    );
    assert_eq!(b.stats().hellos_refused, 1);
    disconnected(&mut a_events, b.peer_id()).await;
    eventually("both sides closed the connection", || {
        a.stats().connections == 0 && b.stats().connections == 0
    })
    .await;
    eventually("the closed stream is no longer registered", || {
        b.open_hellos() == 0
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}
