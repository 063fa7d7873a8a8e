//! Nothing but a home for the `versus` benchmark (`benches/versus.rs`): the core against
//! raft-rs 0.7 in the same loop. Run it with `cargo bench --manifest-path versus/Cargo.toml`.
