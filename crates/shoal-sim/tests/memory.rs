//! The memory estimate `shoal-sim run` checks before it starts must cover what a run takes: the
//! heap at its peak, counted by this test binary's allocator (one test, so nothing else
//! allocates beside it).

use shoal_core::content::PieceLayout;
use shoal_sim::dataplane::{DataConfig, DataPlane};
use shoal_sim::run::bytes_per_node;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: the caller's layout is passed on as it came.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn memory_estimate_covers_a_run() {
    // Small pieces, many in flight; and large ones, one or two in flight as in fleet-3m.
    for (nodes, pieces, piece) in [
        (200u32, 64u32, 1u64 << 16),
        (40, 256, 1 << 16),
        (100, 150, 16 << 20),
    ] {
        let layout =
            PieceLayout::new(u64::from(pieces) * piece, piece).unwrap_or_else(|e| panic!("{e}"));
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let outcome = DataPlane::new(DataConfig {
            regions: 2,
            fault_domains: 2,
            racks: 4,
            ..DataConfig::uniform(nodes, layout, 12.5e6)
        })
        .run(|_, _| {});
        assert!(outcome.last_complete().is_some());
        let used = PEAK.load(Ordering::Relaxed) - base;
        let per_node = used as u64 / u64::from(nodes);
        let estimate = bytes_per_node(pieces, piece, 40);
        println!(
            "{nodes} nodes, {pieces} pieces of {piece} bytes: {per_node} bytes per node at the peak, estimate {estimate}"
        );
        assert!(
            per_node <= estimate,
            "{nodes} nodes of {pieces} pieces took {per_node} bytes each, the estimate is {estimate}"
        );
    }
}
