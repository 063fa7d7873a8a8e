//! Crash recovery of the file storage: what is reopened is exactly what was persisted, a torn
//! last write is cut cleanly, and damage anywhere else is reported, never silently dropped.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use adapter_common::storage::{FileStorage, RecoveryReport, StorageError};
use raft_proto::record;
use raft_proto::{DurableState, Entry, HardState, Index, Persist, Snapshot, SnapshotMeta};

/// A fresh directory under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("raft-recovery-{}-{name}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Builds persists that keep to the contract and tracks the reference state they produce
/// under `Persist::apply_to`.
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
}

fn entries(term: u64, range: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
    range
        .map(|i| Entry::command(term, format!("e{i}t{term}").into_bytes()))
        .collect()
}

fn hs(term: u64, voted_for: u64) -> HardState {
    HardState {
        term,
        voted_for: Some(voted_for),
    }
}

fn snapshot(last_index: Index, last_term: u64) -> Snapshot {
    Snapshot {
        membership: raft_proto::Membership::new([1, 2, 3]),
        meta: SnapshotMeta {
            last_index,
            last_term,
        },
        data: format!("state up to {last_index}").into_bytes().into(),
    }
}

fn open(dir: &Path) -> Result<(FileStorage, DurableState, RecoveryReport), StorageError> {
    FileStorage::open(dir)
}

fn open_ok(dir: &Path) -> (FileStorage, DurableState, RecoveryReport) {
    open(dir).unwrap_or_else(|e| panic!("open failed: {e}"))
}

/// The files in `dir` (without the lock file), by name.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().into_string().unwrap(), e.path()))
        .filter(|(name, _)| name != "LOCK")
        .map(|(name, path)| (name, fs::read(path).unwrap()))
        .collect()
}

/// Replaces the directory's content with `files`.
fn set_files(dir: &Path, files: &BTreeMap<String, Vec<u8>>) {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
    for (name, bytes) in files {
        fs::write(dir.join(name), bytes).unwrap();
    }
}

fn segment_names(dir: &Path) -> Vec<String> {
    files(dir)
        .into_keys()
        .filter(|name| name.starts_with("log-"))
        .collect()
}

/// (a) A scripted history with appends, truncations, hard states and snapshots (one in the
/// middle of a batch), reopened after every batch.
#[test]
fn persisted_batches_recover_exactly() {
    let tmp = TempDir::new("scripted");
    let dir = tmp.path();
    let mut w = Writer::default();
    let batches = vec![
        vec![
            w.persist(None, None, vec![], Some(hs(1, 1))),
            w.persist(None, None, entries(1, 1..=3), None),
        ],
        vec![w.persist(None, None, entries(1, 4..=6), None)],
        vec![w.persist(Some(5), None, entries(2, 5..=7), Some(hs(2, 2)))],
        vec![
            w.persist(None, None, entries(2, 8..=10), None),
            w.persist(None, Some(snapshot(6, 2)), vec![], None),
            w.persist(None, None, entries(3, 11..=12), Some(hs(3, 2))),
        ],
        vec![w.persist(None, None, entries(3, 13..=13), None)],
        vec![w.persist(Some(12), None, entries(4, 12..=14), Some(hs(4, 4)))],
        // A snapshot from a leader, beyond the whole log.
        vec![w.persist(
            None,
            Some(snapshot(20, 5)),
            entries(5, 21..=22),
            Some(hs(5, 1)),
        )],
        vec![
            w.persist(Some(22), None, entries(6, 22..=23), Some(hs(6, 3))),
            w.persist(Some(23), None, entries(6, 23..=25), None),
            w.persist(None, None, vec![], Some(hs(7, 2))),
        ],
        // Truncating everything after the snapshot.
        vec![w.persist(Some(21), None, vec![], None)],
        vec![w.persist(None, None, entries(7, 21..=21), None)],
    ];
    let mut reference = DurableState::default();
    let (mut storage, recovered, report) = open_ok(dir);
    assert_eq!(recovered, reference);
    assert_eq!(report.repaired_bytes, 0);
    for (i, batch) in batches.iter().enumerate() {
        for persist in batch {
            persist.apply_to(&mut reference);
        }
        storage.persist(batch).unwrap();
        assert_eq!(storage.state(), &reference, "batch {i}");
        drop(storage);
        let (reopened, recovered, report) = open_ok(dir);
        assert_eq!(recovered, reference, "batch {i}");
        assert_eq!(report.repaired_bytes, 0, "batch {i}");
        assert_eq!(report.removed_segments, 0, "batch {i}");
        assert_eq!(segment_names(dir).len(), 1, "covered segments are deleted");
        storage = reopened;
    }
    assert_eq!(reference, w.reference);
    assert_eq!(reference.log_base(), 20);
    assert_eq!(reference.last_index(), 21);
    assert_eq!(
        storage.segment_path().file_name().unwrap(),
        "log-00000000000000000003.wal"
    );
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// (a) Random batches of persists that keep to the contract, reopened now and then.
#[test]
fn random_batches_recover_exactly() {
    let tmp = TempDir::new("random");
    let dir = tmp.path();
    let mut rng = Rng(0x0dd_ba11);
    let mut w = Writer::default();
    let (mut storage, _, _) = open_ok(dir);
    let mut term = 1;
    for round in 0..150 {
        let mut batch = Vec::new();
        for _ in 0..=rng.below(3) {
            let base = w.reference.log_base();
            let last = w.reference.last_index();
            let truncate = (rng.below(5) == 0).then(|| base + 1 + rng.below(last - base + 1));
            let last = truncate.map_or(last, |from| from - 1);
            let snap =
                (rng.below(12) == 0).then(|| snapshot(base + rng.below(last - base + 3), term));
            if rng.below(4) == 0 {
                term += 1;
            }
            let next = snap.as_ref().map_or(last, |s| s.meta.last_index.max(last)) + 1;
            let count = rng.below(4);
            let new = if count == 0 {
                Vec::new()
            } else {
                entries(term, next..=next + count - 1)
            };
            let hard = (rng.below(3) == 0).then(|| hs(term, rng.below(3)));
            batch.push(w.persist(truncate, snap, new, hard));
        }
        storage.persist(&batch).unwrap();
        assert_eq!(storage.state(), &w.reference, "round {round}");
        if round % 4 == 3 {
            drop(storage);
            let (reopened, recovered, report) = open_ok(dir);
            assert_eq!(recovered, w.reference, "round {round}");
            assert_eq!(report.repaired_bytes, 0);
            storage = reopened;
        }
    }
    drop(storage);
    assert_eq!(open_ok(dir).1, w.reference);
}

/// The history the damage tests start from: a snapshot, then a few groups, then a last batch
/// of two persists (a truncation, entries, a hard state).
struct Setup {
    before: DurableState,
    after: DurableState,
    last_batch: Vec<Persist>,
    segment: PathBuf,
    /// The segment's length before the last batch.
    len_before: usize,
    /// The segment's content after the last batch.
    bytes_after: Vec<u8>,
}

fn setup(dir: &Path) -> Setup {
    let mut w = Writer::default();
    let (mut storage, _, _) = open_ok(dir);
    storage
        .persist(&[
            w.persist(None, None, entries(1, 1..=4), Some(hs(1, 1))),
            w.persist(None, Some(snapshot(2, 1)), vec![], None),
        ])
        .unwrap();
    storage
        .persist(&[w.persist(None, None, entries(1, 5..=6), None)])
        .unwrap();
    storage
        .persist(&[w.persist(None, None, vec![], Some(hs(2, 2)))])
        .unwrap();
    let before = w.reference.clone();
    let segment = storage.segment_path().to_path_buf();
    let len_before = fs::read(&segment).unwrap().len();
    let last_batch = vec![
        w.persist(Some(5), None, entries(2, 5..=7), Some(hs(3, 3))),
        w.persist(None, None, entries(3, 8..=8), None),
    ];
    storage.persist(&last_batch).unwrap();
    drop(storage);
    let bytes_after = fs::read(&segment).unwrap();
    assert!(bytes_after.len() > len_before);
    Setup {
        before,
        after: w.reference,
        last_batch,
        segment,
        len_before,
        bytes_after,
    }
}

/// The start offset of each record in `bytes`, and the end.
fn record_bounds(bytes: &[u8]) -> Vec<usize> {
    let scan = record::scan(bytes).unwrap();
    assert_eq!(scan.torn_tail, 0);
    let mut bounds: Vec<usize> = scan.records.iter().map(|(o, _)| *o as usize).collect();
    bounds.push(bytes.len());
    bounds
}

/// (b) The last batch cut at every byte inside it: recovery gives the state before the
/// batch (it was never acknowledged) and repairs the file, which then takes new writes.
#[test]
fn torn_last_batch_is_cut_at_every_offset() {
    let tmp = TempDir::new("torn");
    let dir = tmp.path();
    let s = setup(dir);
    let (_, recovered, report) = open_ok(dir);
    assert_eq!(recovered, s.after);
    assert_eq!(report.repaired_bytes, 0);
    for cut in s.len_before..s.bytes_after.len() {
        fs::write(&s.segment, &s.bytes_after[..cut]).unwrap();
        let (mut storage, recovered, report) = open_ok(dir);
        assert_eq!(recovered, s.before, "cut at {cut}");
        assert_eq!(storage.state(), &s.before);
        assert_eq!(
            report.repaired_bytes,
            (cut - s.len_before) as u64,
            "cut at {cut}"
        );
        assert_eq!(
            fs::metadata(&s.segment).unwrap().len(),
            s.len_before as u64,
            "repaired file, cut at {cut}"
        );
        if cut % 7 == 0 {
            // The repaired log takes the batch again.
            storage.persist(&s.last_batch).unwrap();
            drop(storage);
            assert_eq!(open_ok(dir).1, s.after, "rewritten after cut at {cut}");
        }
    }
}

/// (c) Any bit flipped in a record before the last batch is corruption, reported with the
/// file and the damaged record's offset, and leaves the files untouched.
#[test]
fn bit_flips_before_the_last_batch_are_corruption() {
    let tmp = TempDir::new("flip-before");
    let dir = tmp.path();
    let s = setup(dir);
    let bounds = record_bounds(&s.bytes_after);
    for bit in 0..s.len_before * 8 {
        let mut damaged = s.bytes_after.clone();
        damaged[bit / 8] ^= 1 << (bit % 8);
        fs::write(&s.segment, &damaged).unwrap();
        let record_start = bounds[bounds.iter().rposition(|&b| b <= bit / 8).unwrap()];
        match open(dir) {
            Err(StorageError::Corrupt { path, offset, .. }) => {
                assert_eq!(path, s.segment, "bit {bit}");
                assert_eq!(offset, record_start as u64, "bit {bit}");
            }
            Err(e) => panic!("bit {bit}: unexpected error {e}"),
            Ok((_, state, _)) => panic!("bit {bit}: opened with {} entries", state.log.len()),
        }
        assert_eq!(
            fs::read(&s.segment).unwrap(),
            damaged,
            "a failed open changed the log"
        );
    }
}

/// (c) A bit flipped anywhere in the last batch is a torn write: that batch is the only one a
/// crash can damage, so it is cut off, repaired to the state before it. Never a state with
/// damaged data.
#[test]
fn bit_flips_in_the_last_batch_are_a_torn_write() {
    let tmp = TempDir::new("flip-last");
    let dir = tmp.path();
    let s = setup(dir);
    for bit in s.len_before * 8..s.bytes_after.len() * 8 {
        let mut damaged = s.bytes_after.clone();
        damaged[bit / 8] ^= 1 << (bit % 8);
        fs::write(&s.segment, &damaged).unwrap();
        let (_, state, report) = open(dir).unwrap_or_else(|e| panic!("bit {bit}: {e}"));
        assert_eq!(state, s.before, "bit {bit}");
        assert_eq!(
            report.repaired_bytes,
            (s.bytes_after.len() - s.len_before) as u64
        );
        assert_eq!(fs::metadata(&s.segment).unwrap().len(), s.len_before as u64);
    }
}

/// A large last batch (one write, one fdatasync) after which the power failed: a page in
/// its middle reads as zeros while its last records are intact. Recovery cuts the batch
/// (never acknowledged); the same page of zeros followed by a later batch is corruption.
#[test]
fn a_zeroed_page_inside_the_last_batch_is_cut() {
    let tmp = TempDir::new("zero-page");
    let dir = tmp.path();
    let mut w = Writer::default();
    let (mut storage, _, _) = open_ok(dir);
    storage
        .persist(&[w.persist(None, None, entries(1, 1..=3), Some(hs(1, 1)))])
        .unwrap();
    let before = w.reference.clone();
    let segment = storage.segment_path().to_path_buf();
    let len_before = fs::metadata(&segment).unwrap().len() as usize;
    let big: Vec<Entry> = (4..=40)
        .map(|i| Entry::command(1, vec![i as u8; 1000]))
        .collect();
    storage
        .persist(&[w.persist(None, None, big, Some(hs(2, 2)))])
        .unwrap();
    let after_big = w.reference.clone();
    drop(storage);
    let bytes = fs::read(&segment).unwrap();
    let page = len_before.next_multiple_of(4096);
    assert!(page + 4096 < bytes.len(), "the batch spans a whole page");
    let mut damaged = bytes.clone();
    damaged[page..page + 4096].fill(0);
    fs::write(&segment, &damaged).unwrap();
    let (mut storage, state, report) = open_ok(dir);
    assert_eq!(state, before);
    assert_eq!(report.repaired_bytes, (bytes.len() - len_before) as u64);
    assert_eq!(fs::metadata(&segment).unwrap().len() as usize, len_before);

    // Rewritten, then followed by another batch: the same damage is now corruption.
    let mut w = Writer {
        reference: before,
        seq: 0,
    };
    let big: Vec<Entry> = (4..=40)
        .map(|i| Entry::command(1, vec![i as u8; 1000]))
        .collect();
    storage
        .persist(&[w.persist(None, None, big, Some(hs(2, 2)))])
        .unwrap();
    assert_eq!(w.reference, after_big);
    storage
        .persist(&[w.persist(None, None, entries(2, 41..=41), None)])
        .unwrap();
    drop(storage);
    let mut damaged = fs::read(&segment).unwrap();
    damaged[page..page + 4096].fill(0);
    fs::write(&segment, &damaged).unwrap();
    match open(dir) {
        Err(StorageError::Corrupt { path, .. }) => assert_eq!(path, segment),
        Err(e) => panic!("unexpected error {e}"),
        Ok((_, state, _)) => panic!("opened with {} entries", state.log.len()),
    }
    assert_eq!(
        fs::read(&segment).unwrap(),
        damaged,
        "a failed open changed the log"
    );
}

/// A process killed after its write and before its fdatasync leaves the batch in the page
/// cache: readable, not durable. Recovery takes it (the file holds it) and syncs the segment,
/// the snapshot and the directory before the node may act on it.
#[test]
fn recovery_syncs_what_it_read() {
    use std::io::Write;
    let tmp = TempDir::new("unsynced");
    let dir = tmp.path();
    let mut w = Writer::default();
    let (mut storage, _, _) = open_ok(dir);
    storage
        .persist(&[w.persist(
            None,
            Some(snapshot(2, 1)),
            entries(1, 3..=4),
            Some(hs(1, 1)),
        )])
        .unwrap();
    let segment = storage.segment_path().to_path_buf();
    drop(storage);
    // The group the killed process wrote without syncing, as its write left it.
    let unsynced = w.persist(None, None, entries(1, 5..=6), Some(hs(2, 3)));
    let mut group = Vec::new();
    let file: u64 = segment.file_name().unwrap().to_str().unwrap()[4..24]
        .parse()
        .unwrap();
    record::encode_group(file, 1, &unsynced, &mut group).unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap()
        .write_all(&group)
        .unwrap();
    let (_, state, report) = open_ok(dir);
    assert_eq!(state, w.reference);
    assert_eq!(
        report.synced,
        vec![dir.join("snapshot.bin"), segment, dir.to_path_buf()]
    );
}

/// A snapshot installation whose snapshot.tmp lost its directory entry while the new
/// segment naming it became durable (the directory was not synced in between): the batch
/// was never acknowledged, so recovery goes back to the older segment. Without an older
/// segment, the missing snapshot is corruption.
#[test]
fn a_lost_snapshot_tmp_entry_recovers_the_state_before() {
    let tmp = TempDir::new("lost-tmp");
    let dir = tmp.path();
    let mut w = Writer::default();
    let (mut storage, _, _) = open_ok(dir);
    storage
        .persist(&[w.persist(
            None,
            Some(snapshot(3, 1)),
            entries(1, 4..=6),
            Some(hs(1, 1)),
        )])
        .unwrap();
    let before = w.reference.clone();
    let old_files = files(dir);
    storage
        .persist(&[w.persist(
            None,
            Some(snapshot(5, 1)),
            entries(2, 7..=7),
            Some(hs(2, 2)),
        )])
        .unwrap();
    let new_segment = storage.segment_path().file_name().unwrap().to_owned();
    drop(storage);
    let new_log = files(dir)[new_segment.to_str().unwrap()].clone();

    let mut lost = old_files.clone();
    lost.insert(new_segment.to_str().unwrap().into(), new_log.clone());
    set_files(dir, &lost);
    let (_, recovered, report) = open_ok(dir);
    assert_eq!(recovered, before);
    assert_eq!(report.repaired_bytes, new_log.len() as u64);
    assert_eq!(files(dir), old_files);

    let mut alone = BTreeMap::new();
    alone.insert(new_segment.to_str().unwrap().to_string(), new_log);
    alone.insert("snapshot.bin".into(), old_files["snapshot.bin"].clone());
    set_files(dir, &alone);
    match open(dir) {
        Err(StorageError::Corrupt { reason, .. }) => {
            assert!(reason.contains("covers index 3"), "{reason}")
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened without the snapshot its log names"),
    }
}

/// A data directory created on first start is made durable in its parent.
#[test]
fn a_new_data_directory_is_created_durably() {
    let tmp = TempDir::new("nested");
    let dir = tmp.path().join("a").join("b");
    let (_, state, _) = open_ok(&dir);
    assert_eq!(state, DurableState::default());
    assert!(dir.join("LOCK").exists());
}

/// (d) A damaged, shortened, lengthened or missing snapshot file is corruption of that file.
#[test]
fn damaged_snapshot_file_is_corruption() {
    let tmp = TempDir::new("snapshot");
    let dir = tmp.path();
    let s = setup(dir);
    let bin = dir.join("snapshot.bin");
    let good = fs::read(&bin).unwrap();
    let check = |bytes: Option<&[u8]>, what: &str| {
        match bytes {
            Some(bytes) => fs::write(&bin, bytes).unwrap(),
            None => fs::remove_file(&bin).unwrap(),
        }
        match open(dir) {
            Err(StorageError::Corrupt {
                path, offset: 0, ..
            }) => assert_eq!(path, bin, "{what}"),
            Err(e) => panic!("{what}: unexpected error {e}"),
            Ok(_) => panic!("{what}: opened"),
        }
    };
    for bit in 0..good.len() * 8 {
        let mut damaged = good.clone();
        damaged[bit / 8] ^= 1 << (bit % 8);
        check(Some(&damaged), &format!("bit {bit}"));
    }
    for cut in 0..good.len() {
        check(Some(&good[..cut]), &format!("cut at {cut}"));
    }
    let mut longer = good.clone();
    longer.push(0);
    check(Some(&longer), "an extra byte");
    check(None, "missing");
    // A valid snapshot file that is not the one the log names.
    let mut other = Vec::new();
    record::encode_snapshot(&snapshot(3, 1), &mut other).unwrap();
    check(Some(&other), "another snapshot");

    fs::write(&bin, &good).unwrap();
    assert_eq!(open_ok(dir).1, s.after);
}

/// A crash at each step of a snapshot installation recovers the state before or after it.
#[test]
fn crash_during_snapshot_installation() {
    let tmp = TempDir::new("install");
    let dir = tmp.path();
    let mut w = Writer::default();
    let (mut storage, _, _) = open_ok(dir);
    storage
        .persist(&[w.persist(
            None,
            Some(snapshot(3, 1)),
            entries(1, 4..=6),
            Some(hs(1, 1)),
        )])
        .unwrap();
    storage
        .persist(&[w.persist(None, None, entries(1, 7..=8), None)])
        .unwrap();
    let before = w.reference.clone();
    let old_files = files(dir);
    let old_segment = storage.segment_path().file_name().unwrap().to_owned();
    let batch = [
        w.persist(None, None, entries(2, 9..=9), Some(hs(2, 2))),
        w.persist(None, Some(snapshot(7, 1)), entries(2, 10..=10), None),
    ];
    storage.persist(&batch).unwrap();
    let after = w.reference.clone();
    let new_segment = storage.segment_path().file_name().unwrap().to_owned();
    drop(storage);
    let new_files = files(dir);
    assert_ne!(old_segment, new_segment);
    assert!(!new_files.contains_key(old_segment.to_str().unwrap()));
    let new_snapshot = &new_files["snapshot.bin"];
    let new_log = &new_files[new_segment.to_str().unwrap()];

    // Crash while writing snapshot.tmp: the old state, the temp file removed.
    for cut in [0, 1, new_snapshot.len() / 2, new_snapshot.len()] {
        let mut files = old_files.clone();
        files.insert("snapshot.tmp".into(), new_snapshot[..cut].to_vec());
        set_files(dir, &files);
        let (_, recovered, _) = open_ok(dir);
        assert_eq!(recovered, before, "snapshot.tmp cut at {cut}");
        assert_eq!(self::files(dir), old_files);
    }
    // Crash while writing the new segment: the old state, the new segment removed.
    for cut in 0..new_log.len() {
        let mut files = old_files.clone();
        files.insert("snapshot.tmp".into(), new_snapshot.clone());
        files.insert(
            new_segment.to_str().unwrap().into(),
            new_log[..cut].to_vec(),
        );
        set_files(dir, &files);
        let (_, recovered, report) = open_ok(dir);
        assert_eq!(recovered, before, "new segment cut at {cut}");
        assert_eq!(report.removed_segments, 1);
        assert_eq!(report.repaired_bytes, cut as u64);
        assert_eq!(self::files(dir), old_files);
    }
    // Crash before the rename: rolled forward.
    let mut files = old_files.clone();
    files.insert("snapshot.tmp".into(), new_snapshot.clone());
    files.insert(new_segment.to_str().unwrap().into(), new_log.clone());
    set_files(dir, &files);
    let (mut storage, recovered, report) = open_ok(dir);
    assert_eq!(recovered, after);
    assert!(report.snapshot_rolled_forward);
    assert_eq!(report.removed_segments, 1);
    assert_eq!(self::files(dir), new_files);
    // And the storage goes on from there.
    let more = [w.persist(None, None, entries(2, 11..=11), None)];
    storage.persist(&more).unwrap();
    drop(storage);
    assert_eq!(open_ok(dir).1, w.reference);

    // Crash after the rename, before the old segment was deleted.
    let mut files = old_files.clone();
    files.insert("snapshot.bin".into(), new_snapshot.clone());
    files.insert(new_segment.to_str().unwrap().into(), new_log.clone());
    set_files(dir, &files);
    let (_, recovered, report) = open_ok(dir);
    assert_eq!(recovered, after);
    assert!(!report.snapshot_rolled_forward);
    assert_eq!(report.removed_segments, 1);
    assert_eq!(self::files(dir), new_files);
}

/// A batch that changes nothing writes nothing; a second open of the same directory fails.
#[test]
fn empty_batches_and_the_directory_lock() {
    let tmp = TempDir::new("misc");
    let dir = tmp.path();
    let mut w = Writer::default();
    let (mut storage, _, _) = open_ok(dir);
    let len = || fs::metadata(storage_segment(dir)).unwrap().len();
    let start = len();
    storage.persist(&[]).unwrap();
    storage
        .persist(&[w.persist(None, None, vec![], None)])
        .unwrap();
    assert_eq!(len(), start);
    storage
        .persist(&[w.persist(None, None, entries(1, 1..=1), None)])
        .unwrap();
    assert!(len() > start);

    match open(dir) {
        Err(StorageError::Io { source, .. }) => {
            assert_eq!(source.kind(), io::ErrorKind::WouldBlock)
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened twice"),
    }
    drop(storage);
    assert_eq!(open_ok(dir).1, w.reference);
}

fn storage_segment(dir: &Path) -> PathBuf {
    dir.join(&segment_names(dir)[0])
}

/// Error messages name the file and the offset.
#[test]
fn corruption_messages_name_file_and_offset() {
    let tmp = TempDir::new("message");
    let dir = tmp.path();
    let s = setup(dir);
    let mut damaged = s.bytes_after.clone();
    damaged[2] ^= 0x10;
    fs::write(&s.segment, &damaged).unwrap();
    let message = open(dir).err().unwrap().to_string();
    assert!(
        message.contains(&s.segment.display().to_string()),
        "{message}"
    );
    assert!(message.contains("offset 0"), "{message}");
}

/// A power loss can leave a new segment holding stale blocks of an older, deleted segment
/// (what the file system gave it before its own data landed). Those bytes carry the other
/// segment's number, so they are not taken for data: the new segment holds no complete group,
/// and recovery goes back to the older one.
#[test]
fn stale_bytes_of_another_segment_are_not_data() {
    let tmp = TempDir::new("stale");
    let dir = tmp.path();
    let mut w = Writer::default();
    let (mut storage, _, _) = open_ok(dir);
    storage
        .persist(&[w.persist(
            None,
            Some(snapshot(3, 1)),
            entries(1, 4..=6),
            Some(hs(1, 1)),
        )])
        .unwrap();
    let older_segment = segment_names(dir)[0].clone();
    let older_bytes = files(dir)[&older_segment].clone();
    storage
        .persist(&[w.persist(None, None, entries(1, 7..=9), Some(hs(2, 2)))])
        .unwrap();
    let before = w.reference.clone();
    let old_files = files(dir);
    storage
        .persist(&[w.persist(None, Some(snapshot(8, 1)), vec![], None)])
        .unwrap();
    let new_segment = storage.segment_path().file_name().unwrap().to_owned();
    drop(storage);
    // The new segment's blocks read as the older segment's bytes; snapshot.tmp never landed.
    let mut crashed = old_files.clone();
    crashed.insert(new_segment.to_str().unwrap().into(), older_bytes);
    set_files(dir, &crashed);
    let (_, recovered, report) = open_ok(dir);
    assert_eq!(recovered, before);
    assert_eq!(report.removed_segments, 1);
    assert_eq!(files(dir), old_files);
}

/// An application command that looks like the start of a group of another segment, in a last
/// batch damaged by a crash, does not make recovery see a later batch: the batch is cut.
#[test]
fn a_command_that_looks_like_a_group_start_is_still_cut() {
    let tmp = TempDir::new("embedded");
    let dir = tmp.path();
    let mut w = Writer::default();
    let (mut storage, _, _) = open_ok(dir);
    storage
        .persist(&[w.persist(None, None, entries(1, 1..=2), Some(hs(1, 1)))])
        .unwrap();
    let before = w.reference.clone();
    let segment = storage.segment_path().to_path_buf();
    let len_before = fs::metadata(&segment).unwrap().len() as usize;
    let mut lookalike = Vec::new();
    record::encode_record(
        &record::Record::GroupStart {
            file: 99,
            seq: 999,
            len: 10,
        },
        &mut lookalike,
    )
    .unwrap();
    storage
        .persist(&[w.persist(
            None,
            None,
            vec![Entry::command(1, lookalike)],
            Some(hs(2, 2)),
        )])
        .unwrap();
    drop(storage);
    let mut damaged = fs::read(&segment).unwrap();
    damaged[len_before..len_before + 12].fill(0);
    fs::write(&segment, &damaged).unwrap();
    let (_, recovered, _) = open_ok(dir);
    assert_eq!(recovered, before);
}

/// Overwritten entries and hard states make a segment grow between snapshots; past its limit
/// it rolls over to a new segment holding only the current state, and a reopen recovers
/// exactly what was persisted.
#[test]
fn segments_roll_over_at_their_size_limit() {
    let tmp = TempDir::new("rollover");
    let dir = tmp.path();
    let mut w = Writer::default();
    let (mut storage, _, _) = open_ok(dir);
    storage.set_segment_limit(4096);
    let mut rolled = 0;
    for round in 1..=300u64 {
        let before = storage.segment_path().to_path_buf();
        // A new term every tenth round overwrites the last few entries.
        let last = w.reference.last_index();
        let batch = if round % 10 == 0 && last > 3 {
            w.persist(
                Some(last - 2),
                None,
                entries(round, last - 2..=last),
                Some(hs(round, 1)),
            )
        } else {
            w.persist(
                None,
                None,
                entries(round, last + 1..=last + 1),
                Some(hs(round, 2)),
            )
        };
        storage.persist(&[batch]).unwrap();
        if storage.segment_path() != before {
            rolled += 1;
        }
        assert_eq!(segment_names(dir).len(), 1, "round {round}: one segment");
        let len = fs::metadata(storage.segment_path()).unwrap().len();
        assert!(
            len <= 2 * 4096 + 8192,
            "round {round}: a segment of {len} bytes"
        );
    }
    assert!(rolled >= 3, "rolled over {rolled} times");
    drop(storage);
    let (_, recovered, _) = open_ok(dir);
    assert_eq!(recovered, w.reference);
}

/// A crash while a rollover writes the new segment, at every byte: recovery uses the old
/// segment (which already holds the batch) until the new one's base is complete, then the
/// new one; either way the state is the one persisted, and only one segment is left.
#[test]
fn crash_during_a_rollover() {
    let batches = |w: &mut Writer| -> Vec<Persist> {
        (1..=12u64)
            .map(|i| w.persist(None, None, entries(1, i..=i), Some(hs(1, i % 3))))
            .collect()
    };
    // Without a rollover: the sizes after each batch, and the files after the last.
    let plain = TempDir::new("rollover-plain");
    let mut w = Writer::default();
    let (mut storage, _, _) = open_ok(plain.path());
    let mut sizes = Vec::new();
    for batch in batches(&mut w) {
        storage.persist(&[batch]).unwrap();
        sizes.push(fs::metadata(storage.segment_path()).unwrap().len());
    }
    drop(storage);
    let old_files = files(plain.path());
    let reference = w.reference.clone();
    // The same batches with a limit only the last one crosses.
    let rolling = TempDir::new("rollover-new");
    let mut w = Writer::default();
    let (mut storage, _, _) = open_ok(rolling.path());
    storage.set_segment_limit(sizes[sizes.len() - 2]);
    for batch in batches(&mut w) {
        storage.persist(&[batch]).unwrap();
    }
    drop(storage);
    let new_files = files(rolling.path());
    let new_segment: Vec<(&String, &Vec<u8>)> = new_files
        .iter()
        .filter(|(name, _)| !old_files.contains_key(*name))
        .collect();
    assert_eq!(
        new_segment.len(),
        1,
        "one new segment: {:?}",
        new_files.keys()
    );
    let (new_name, new_log) = new_segment[0];
    let dir = TempDir::new("rollover-crash");
    for cut in 0..=new_log.len() {
        let mut files = old_files.clone();
        files.insert(new_name.clone(), new_log[..cut].to_vec());
        set_files(dir.path(), &files);
        let (_, recovered, report) = open_ok(dir.path());
        assert_eq!(recovered, reference, "new segment cut at {cut}");
        assert_eq!(report.removed_segments, 1, "cut at {cut}");
        assert_eq!(segment_names(dir.path()).len(), 1, "cut at {cut}");
    }
}
