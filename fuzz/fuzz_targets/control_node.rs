//! Fuzzes the control-plane core with whatever its neighbours might send.
//!
//! The input is read as a sequence of (sender, postcard-encoded `Message`) pairs, with the clock
//! moving forward between them. Checks: decoding never panics, and neither does a `Node` handling
//! any sequence of decoded messages, link failures and timers; its views stay within their limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_core::control::{Config, Entry, Message, Node};
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let config = Config::default();
    let (active_limit, passive_limit) = (
        config.active_view_capacity + 1,
        config.passive_view_capacity,
    );
    let me = Entry {
        peer: 0u32,
        place: Default::default(),
    };
    let mut node = Node::new(me, vec![1, 2], config, 7, Duration::ZERO);
    let mut now = Duration::ZERO;
    let mut rest = data;
    while rest.len() >= 2 {
        let from = u32::from(rest[0] % 16);
        let step = rest[1];
        rest = &rest[2..];
        now += Duration::from_millis(u64::from(step) * 20);
        match postcard::take_from_bytes::<Message<u32>>(rest) {
            Ok((message, tail)) => {
                rest = tail;
                node.handle_message(now, from, message);
            }
            Err(_) => {
                if step % 2 == 0 {
                    node.handle_disconnected(now, from);
                }
                rest = rest.get(1..).unwrap_or_default();
            }
        }
        if now >= node.poll_timeout() {
            node.handle_timeout(now);
        }
        while node.poll_output().is_some() {}
        assert!(node.active().len() <= active_limit);
        assert!(node.passive().len() <= passive_limit);
    }
});
