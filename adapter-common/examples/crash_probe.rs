//! Crash probe for [`FileStorage`]: a scripted, deterministic history of persist batches to be
//! killed at a chosen syscall (e.g. under `strace -e inject=fdatasync:signal=KILL:when=3`),
//! and a recovery mode that checks what a reopen finds against the reference state of every
//! prefix of the script.
//!
//! ```text
//! cargo run --release -p adapter-common --example crash_probe -- <dir> run
//! cargo run --release -p adapter-common --example crash_probe -- <dir> recover
//! cargo run --release -p adapter-common --example crash_probe -- <dir> open
//! cargo run --release -p adapter-common --example crash_probe -- <dir> refs
//! ```
//!
//! `run` prints `start <k>` before and `acked <k>` after the k-th batch's `persist()` call
//! (batches are numbered from 1; the script's reopen steps are not batches). `recover` opens the
//! directory and prints one line `RESULT ...` saying which prefixes the recovered state equals
//! (`match=<k,...>`, or `match=NONE`), or the error, then checks that the storage keeps working
//! (one append batch and one snapshot batch, each reopened and compared), and prints
//! `CONTINUE ok` or what went wrong. `open` is `recover` without the second part (it only
//! opens, for killing recovery itself). `refs` prints the reference of every prefix. The
//! contract to check from outside: some matched k satisfies `last acked <= k <= last started`.
//!
//! The driver that kills every syscall and simulates power loss is `crash_harness.py`
//! (kept with the review notes, not in the crate).

#![allow(missing_docs)]

use std::collections::hash_map::DefaultHasher;
use std::fs::OpenOptions;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use adapter_common::storage::FileStorage;
use raft_proto::record;
use raft_proto::{DurableState, Entry, HardState, Index, Persist, Snapshot, SnapshotMeta};

/// One step of the script.
enum Step {
    /// One `persist()` call with these persists.
    Batch(Vec<Persist>),
    /// Close the storage and open it again (exercises recovery inside the run).
    Reopen,
    /// Close the storage, append half of an (unacknowledged) group to the segment, reopen:
    /// recovery must cut it (the ftruncate path).
    TornTailReopen,
}

/// Builds persists that keep to the contract (`first_index` is the last index + 1 after the
/// truncation and the snapshot) and tracks the reference state.
#[derive(Default)]
struct Writer {
    reference: DurableState,
    seq: u64,
}

impl Writer {
    fn persist(
        &mut self,
        truncate_from: Option<Index>,
        snapshot: Option<Snapshot>,
        entries: Vec<Entry>,
        hard_state: Option<HardState>,
    ) -> Persist {
        self.seq += 1;
        let mut persist = Persist {
            seq: self.seq,
            truncate_from,
            snapshot,
            first_index: 0,
            entries: Vec::new(),
            hard_state: None,
        };
        let mut after_cut = self.reference.clone();
        persist.apply_to(&mut after_cut);
        persist.first_index = after_cut.last_index() + 1;
        persist.entries = entries;
        persist.hard_state = hard_state;
        persist.apply_to(&mut self.reference);
        persist
    }

    /// Entries `from..=to` in `term`, each `size` bytes long (at least the label).
    fn entries(&self, term: u64, from: Index, to: Index, size: usize) -> Vec<Entry> {
        (from..=to)
            .map(|i| {
                let mut data = format!("e{i}t{term}:").into_bytes();
                let fill = (i as u8).wrapping_mul(31).wrapping_add(term as u8);
                while data.len() < size {
                    data.push(fill);
                }
                Entry::command(term, data)
            })
            .collect()
    }

    fn next(&self) -> Index {
        self.reference.last_index() + 1
    }
}

fn hs(term: u64, voted_for: Option<u64>) -> Option<HardState> {
    Some(HardState { term, voted_for })
}

fn snapshot(last_index: Index, last_term: u64, size: usize) -> Snapshot {
    let mut data = format!("state up to {last_index} in term {last_term}|").into_bytes();
    while data.len() < size {
        data.push((data.len() % 251) as u8);
    }
    Snapshot {
        membership: raft_proto::Membership::new([1, 2, 3]),
        meta: SnapshotMeta {
            last_index,
            last_term,
        },
        data: data.into(),
    }
}

/// The script, and the reference state after each prefix of its batches (`refs[k]` after the
/// first `k` batches).
fn script() -> (Vec<Step>, Vec<DurableState>) {
    let mut w = Writer::default();
    let mut steps = Vec::new();
    let mut refs = vec![DurableState::default()];
    macro_rules! batch {
        ($($p:expr),* $(,)?) => {{
            let batch = vec![$($p),*];
            steps.push(Step::Batch(batch));
            refs.push(w.reference.clone());
        }};
    }
    // 1: first entries and a vote.
    batch![{
        let e = w.entries(1, 1, 3, 20);
        w.persist(None, None, e, hs(1, Some(1)))
    }];
    // 2: more entries.
    batch![{
        let e = w.entries(1, w.next(), 10, 40);
        w.persist(None, None, e, None)
    }];
    // 3: a hard state only.
    batch![w.persist(None, None, vec![], hs(2, Some(2)))];
    // 4: two persists in one batch, the second spanning several pages.
    batch![
        {
            let e = w.entries(2, w.next(), 12, 30);
            w.persist(None, None, e, None)
        },
        {
            let e = w.entries(2, w.next(), 20, 1000);
            w.persist(None, None, e, None)
        },
    ];
    // 5: a conflict: truncate and replace, new term.
    batch![{
        let e = w.entries(3, 15, 16, 50);
        w.persist(Some(15), None, e, hs(3, None))
    }];
    // 6: a snapshot on its own (log compaction; entries 11..=16 stay).
    batch![w.persist(None, Some(snapshot(10, 1, 300)), vec![], None)];
    // 7: entries after the snapshot.
    batch![{
        let e = w.entries(3, w.next(), 18, 60);
        w.persist(None, None, e, None)
    }];
    steps.push(Step::Reopen);
    // 8: a snapshot in the middle of a batch: entries, snapshot, entries and a vote.
    batch![
        {
            let e = w.entries(3, w.next(), 20, 70);
            w.persist(None, None, e, None)
        },
        w.persist(None, Some(snapshot(18, 3, 5000)), vec![], None),
        {
            let e = w.entries(3, w.next(), 21, 70);
            w.persist(None, None, e, hs(4, Some(1)))
        },
    ];
    // 9: truncate behind the end and append large entries.
    batch![{
        let e = w.entries(4, 20, 22, 2000);
        w.persist(Some(20), None, e, None)
    }];
    steps.push(Step::TornTailReopen);
    // 10: a hard state only.
    batch![w.persist(None, None, vec![], hs(5, Some(3)))];
    // 11: a snapshot beyond the log (a follower installing a leader's snapshot).
    batch![w.persist(None, Some(snapshot(30, 5, 9000)), vec![], None)];
    // 12: many entries spanning pages.
    batch![{
        let e = w.entries(5, w.next(), 45, 500);
        w.persist(None, None, e, None)
    }];
    // 13: entries, a truncation inside what the batch appended, one behind it, more and a vote.
    batch![
        {
            let e = w.entries(5, w.next(), 47, 40);
            w.persist(None, None, e, None)
        },
        {
            let e = w.entries(6, 47, 48, 40);
            w.persist(Some(47), None, e, None)
        },
        {
            let e = w.entries(6, 44, 45, 40);
            w.persist(Some(44), None, e, hs(6, Some(2)))
        },
        {
            let e = w.entries(6, w.next(), 46, 40);
            w.persist(None, None, e, None)
        },
    ];
    // 14: an empty batch and a batch that changes nothing (both write nothing).
    batch![];
    batch![w.persist(None, None, vec![], hs(6, Some(2)))];
    // 16: a snapshot batch that also truncates and appends in the same persist, then more.
    batch![
        {
            let e = w.entries(7, 40, 42, 30);
            w.persist(Some(40), Some(snapshot(38, 5, 700)), e, hs(7, Some(1)))
        },
        {
            let e = w.entries(7, w.next(), 44, 30);
            w.persist(None, None, e, None)
        },
    ];
    // 17: appends.
    batch![{
        let e = w.entries(7, w.next(), 50, 100);
        w.persist(None, None, e, None)
    }];
    steps.push(Step::Reopen);
    // 18: a snapshot covering the whole log, two batches in a row with snapshots.
    batch![w.persist(None, Some(snapshot(50, 7, 1200)), vec![], hs(8, None))];
    batch![
        {
            let e = w.entries(8, w.next(), 53, 80);
            w.persist(None, None, e, None)
        },
        w.persist(None, Some(snapshot(52, 8, 64)), vec![], None),
    ];
    // 20: final appends and a vote.
    batch![{
        let e = w.entries(8, w.next(), 56, 33);
        w.persist(None, None, e, hs(8, Some(3)))
    }];
    (steps, refs)
}

fn digest(state: &DurableState) -> u64 {
    let mut h = DefaultHasher::new();
    format!("{state:?}").hash(&mut h);
    h.finish()
}

fn summary(state: &DurableState) -> String {
    format!(
        "last_index={} term={} vote={:?} snapshot={:?} log_len={} digest={:016x}",
        state.last_index(),
        state.hard_state.term,
        state.hard_state.voted_for,
        state.snapshot.as_ref().map(|s| s.meta.last_index),
        state.log.len(),
        digest(state)
    )
}

fn out(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

fn open(dir: &Path) -> Result<(FileStorage, DurableState), String> {
    FileStorage::open(dir)
        .map(|(s, state, _)| (s, state))
        .map_err(|e| format!("{e}"))
}

fn run(dir: &Path) -> ExitCode {
    let (steps, refs) = script();
    let (mut storage, state) = match open(dir) {
        Ok(x) => x,
        Err(e) => {
            out(&format!("ERROR open: {e}"));
            return ExitCode::FAILURE;
        }
    };
    if state != refs[0] {
        out("ERROR the fresh directory is not empty");
        return ExitCode::FAILURE;
    }
    let mut k = 0;
    for step in steps {
        match step {
            Step::Batch(batch) => {
                k += 1;
                out(&format!("start {k}"));
                if let Err(e) = storage.persist(&batch) {
                    out(&format!("ERROR persist {k}: {e}"));
                    return ExitCode::FAILURE;
                }
                out(&format!("acked {k}"));
                if *storage.state() != refs[k] {
                    out(&format!(
                        "ERROR state after batch {k} differs from the reference"
                    ));
                    return ExitCode::FAILURE;
                }
            }
            Step::Reopen | Step::TornTailReopen => {
                let segment = storage.segment_path().to_path_buf();
                drop(storage);
                if matches!(step, Step::TornTailReopen) {
                    let phantom = Persist {
                        seq: 1 << 40,
                        truncate_from: None,
                        snapshot: None,
                        first_index: 1 << 30,
                        entries: vec![Entry::command(99, vec![0xAB; 3000])],
                        hard_state: hs(99, Some(99)),
                    };
                    let mut bytes = Vec::new();
                    let file = segment
                        .file_name()
                        .and_then(|n| n.to_str())
                        .and_then(|n| n.get(4..24))
                        .and_then(|n| n.parse().ok())
                        .expect("a segment name");
                    // The group the writer would have written next, torn.
                    let written = std::fs::read(&segment).expect("read segment");
                    let next = record::scan_groups(&written, file)
                        .expect("an intact segment")
                        .last_group
                        .map_or(0, |g| g + 1);
                    record::encode_group(file, next, &phantom, &mut bytes).expect("encode");
                    bytes.truncate(bytes.len() / 2);
                    let mut file = OpenOptions::new()
                        .append(true)
                        .open(&segment)
                        .expect("open segment");
                    file.write_all(&bytes).expect("torn write");
                    file.sync_data().expect("sync torn write");
                }
                out(&format!("reopen after {k}"));
                let (s, state) = match open(dir) {
                    Ok(x) => x,
                    Err(e) => {
                        out(&format!("ERROR reopen after {k}: {e}"));
                        return ExitCode::FAILURE;
                    }
                };
                if state != refs[k] {
                    out(&format!(
                        "ERROR reopen after {k} differs from the reference"
                    ));
                    return ExitCode::FAILURE;
                }
                storage = s;
            }
        }
    }
    out("done");
    ExitCode::SUCCESS
}

fn recover(dir: &Path, check_continue: bool) -> ExitCode {
    let (_, refs) = script();
    let (storage, state) = match open(dir) {
        Ok(x) => x,
        Err(e) => {
            out(&format!("RESULT error {e}"));
            return ExitCode::SUCCESS;
        }
    };
    let matches: Vec<String> = refs
        .iter()
        .enumerate()
        .filter(|(_, r)| **r == state)
        .map(|(k, _)| k.to_string())
        .collect();
    let matches = if matches.is_empty() {
        "NONE".to_string()
    } else {
        matches.join(",")
    };
    out(&format!("RESULT ok match={matches} {}", summary(&state)));
    if !check_continue {
        return ExitCode::SUCCESS;
    }
    // Does the recovered storage keep working? Reopen as is, then one append batch and one
    // snapshot batch, each reopened and compared.
    drop(storage);
    let mut problems = Vec::new();
    let (mut storage, again) = match open(dir) {
        Ok(x) => x,
        Err(e) => {
            out(&format!("CONTINUE error second open: {e}"));
            return ExitCode::SUCCESS;
        }
    };
    if again != state {
        problems.push("a second open recovers another state".to_string());
    }
    let mut expected = state.clone();
    let next = expected.last_index() + 1;
    let term = expected.hard_state.term + 1;
    let append = Persist {
        seq: 1_000_001,
        truncate_from: None,
        snapshot: None,
        first_index: next,
        entries: vec![
            Entry::command(term, b"after recovery 1".to_vec()),
            Entry::command(term, b"after recovery 2".to_vec()),
        ],
        hard_state: hs(term, Some(7)),
    };
    let snap = Persist {
        seq: 1_000_002,
        truncate_from: None,
        snapshot: Some(snapshot(next, term, 100)),
        first_index: next + 2,
        entries: vec![Entry::command(term, b"after recovery 3".to_vec())],
        hard_state: None,
    };
    for (name, batch) in [("append", append), ("snapshot", snap)] {
        batch.apply_to(&mut expected);
        if let Err(e) = storage.persist(std::slice::from_ref(&batch)) {
            problems.push(format!("{name} persist failed: {e}"));
            break;
        }
        drop(storage);
        match open(dir) {
            Ok((s, st)) => {
                if st != expected {
                    problems.push(format!(
                        "after the {name} batch the reopen differs: {} vs expected {}",
                        summary(&st),
                        summary(&expected)
                    ));
                }
                storage = s;
            }
            Err(e) => {
                problems.push(format!("reopen after the {name} batch failed: {e}"));
                out(&format!("CONTINUE {}", problems.join("; ")));
                return ExitCode::SUCCESS;
            }
        }
    }
    drop(storage);
    if problems.is_empty() {
        out("CONTINUE ok");
    } else {
        out(&format!("CONTINUE {}", problems.join("; ")));
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: crash_probe <dir> run|recover|open|refs");
        return ExitCode::FAILURE;
    }
    let dir = Path::new(&args[1]);
    match args[2].as_str() {
        "run" => run(dir),
        "recover" => recover(dir, true),
        "open" => recover(dir, false),
        "refs" => {
            let (_, refs) = script();
            for (k, r) in refs.iter().enumerate() {
                out(&format!("ref {k} {}", summary(r)));
            }
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("unknown mode {other}");
            ExitCode::FAILURE
        }
    }
}
