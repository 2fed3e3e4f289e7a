//! Fuzzes the decoder of rollout directives (the bodies of broadcast envelopes) and the agent
//! that acts on them.
//!
//! Checks, for any input: decoding never panics; a directive that decodes re-encodes to one that
//! decodes to the same value; a node's agent given it never panics and keeps its invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_core::activation::Policy;
use shoal_core::rollout::Directive;
use shoal_core::rollout::agent::{Agent, Persisted};
use std::collections::BTreeMap;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let Some(directive) = Directive::decode(data) else {
        return;
    };
    let again = Directive::decode(&directive.encode()).expect("a re-encoded directive decodes");
    assert_eq!(again, directive);
    let mut agent = Agent::new(
        b"fuzz".to_vec(),
        "fuzz".into(),
        "region=r1,fd=1".parse().expect("valid labels"),
        BTreeMap::from([("web".to_owned(), Policy::default())]),
        Persisted::default(),
    );
    agent.handle_complete(directive.spec.release.root);
    let _ = agent.handle_directive(1_000, directive);
    while agent.poll_output().is_some() {}
    agent.check_invariants();
});
