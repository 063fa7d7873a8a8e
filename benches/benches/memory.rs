//! Bytes of memory per retained log entry in the core: a counting allocator measures what a
//! leader holds after appending many 16-byte entries (with nothing compacted), net of the
//! payload bytes themselves and of the empty node. Then the allocations per committed batch:
//! the same allocator counts the allocations a cluster of the `versus` loop makes (3 nodes,
//! batches of 1, 16 and 256 entries of 16 bytes, payloads included) per batch the leader
//! applies. Prints its figures; not a criterion benchmark (criterion measures time).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};

use benches::RoundCluster;
use raft_proto::{Action, Config, Event, Node, Payload};

/// Counts the bytes in use; otherwise the system allocator.
struct Counting;

static IN_USE: AtomicIsize = AtomicIsize::new(0);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// The one unsafe item of the workspace: a global allocator must be an unsafe impl.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        IN_USE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarding the caller's valid layout to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn main() {
    let quick = std::env::args().any(|a| a == "--test");
    retained_entries(quick);
    allocations_per_batch(quick);
}

fn allocations_per_batch(quick: bool) {
    for batch in [1usize, 16, 256] {
        let mut cluster = RoundCluster::new(3);
        let template = [7u8; 16];
        let batches: u64 = if quick { 200 } else { 20_000 };
        // Warm up past a compaction, so that buffers reach their steady size.
        let warm_up = RoundCluster::COMPACT_EVERY / batch as u64 + 10;
        cluster.commit_batches(warm_up, batch, &template);
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        cluster.commit_batches(batches, batch, &template);
        let allocations = (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64;
        println!(
            "allocations: 3 nodes, batches of {batch}: {:.1} per committed batch ({:.2} per entry, \
             the payload's own included)",
            allocations / batches as f64,
            allocations / (batches * batch as u64) as f64
        );
    }
}

fn retained_entries(quick: bool) {
    let entries: u64 = if quick { 10_000 } else { 1_000_000 };
    let mut config = Config::new(1, vec![1]);
    config.election_timeout_min = 2;
    config.election_timeout_max = 3;
    config.heartbeat_interval = 1;
    let mut node = Node::new(config, 0).expect("valid");
    let mut actions = Vec::new();
    node.step_into(3, Event::Tick, &mut actions);
    let durable = |actions: &mut Vec<Action>| {
        let seq = actions
            .iter()
            .filter_map(|a| match a {
                Action::Persist(p) => Some(p.seq),
                _ => None,
            })
            .next_back();
        actions.clear();
        seq
    };
    if let Some(seq) = durable(&mut actions) {
        node.step_into(3, Event::Persisted { seq }, &mut actions);
    }
    actions.clear();
    let before = IN_USE.load(Ordering::Relaxed);
    let payload_bytes = 16u64;
    for _ in 0..entries / 1000 {
        let batch: Vec<Payload> = (0..1000).map(|_| Payload::from(vec![7u8; 16])).collect();
        node.step_into(3, Event::Propose(batch), &mut actions);
        if let Some(seq) = durable(&mut actions) {
            node.step_into(3, Event::Persisted { seq }, &mut actions);
        }
        actions.clear();
        actions.shrink_to_fit();
    }
    let after = IN_USE.load(Ordering::Relaxed);
    let per_entry = (after - before) as f64 / entries as f64;
    println!(
        "memory: {entries} retained entries of {payload_bytes} B take {per_entry:.1} B each in the core \
         ({:.1} B of overhead beyond the payload)",
        per_entry - payload_bytes as f64
    );
    assert_eq!(node.applied_index(), entries);
}
