//! The fleet sizes a simulator benchmark runs, shared by the benchmarks with `#[path]`.

/// The node counts in `SHOAL_SIM_NODES` (comma-separated), else `bench` under `cargo bench`
/// and `smoke` under `cargo test`.
pub fn sizes(bench: &[u32], smoke: &[u32]) -> Vec<u32> {
    match std::env::var("SHOAL_SIM_NODES") {
        Ok(list) => list
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .expect("SHOAL_SIM_NODES is a comma-separated list of node counts")
            })
            .collect(),
        Err(_) if is_bench() => bench.to_vec(),
        Err(_) => smoke.to_vec(),
    }
}

/// Whether `cargo bench` (rather than `cargo test`) runs it.
pub fn is_bench() -> bool {
    std::env::args().any(|a| a == "--bench")
}
