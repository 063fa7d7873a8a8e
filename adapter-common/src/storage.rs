//! Crash-safe file storage for a node's durable state, in one data directory.
//!
//! # Files
//!
//! ```text
//! <dir>/LOCK                         held locked while a FileStorage is open
//! <dir>/snapshot.bin                 the current snapshot, if any
//! <dir>/snapshot.tmp                 a snapshot being installed (only after a crash)
//! <dir>/log-00000000000000000007.wal the log segment, named by a sequence number
//! ```
//!
//! The snapshot file and the log records use the formats of [`raft_proto::record`]: every
//! record is checksummed, and the snapshot file is one checksummed frame.
//!
//! # Segments and group commits
//!
//! Every log segment is **self-contained**: it starts with a *base* group, the records that
//! rebuild the whole state at the time it was created ([`Record::Snapshot`] marker if there is
//! a snapshot, the retained log entries, the hard state), followed by one *group* per
//! [`FileStorage::persist`] call. A group ([`record::encode_group`]) opens with a
//! [`Record::GroupStart`] giving its number and length, then holds the whole batch merged into
//! the equivalent single persist (truncate, entries, hard state, the hard state always
//! written). Each group is one `write` and one `fdatasync`, and the next group is written
//! only after that sync returned. So a crash can damage only the last group, which was never
//! acknowledged: recovery ([`record::scan_groups`]) cuts it off whether it is cut short or
//! has a damaged region inside it (a page that reads as zeros after a power loss), and a batch
//! is durable entirely or not at all. Damage followed by a later group is corruption.
//!
//! A batch that carries a snapshot starts a new segment instead of appending:
//!
//! 1. the snapshot is written to `snapshot.tmp` and synced, then the directory (so that
//!    its name is durable before anything refers to it);
//! 2. the new segment `log-{n+1}.wal` is written with the base of the state after the whole
//!    batch (snapshot marker, retained tail, hard state) and synced, then the directory;
//! 3. `snapshot.tmp` is renamed over `snapshot.bin` and the directory synced;
//! 4. the older segment is deleted (it is covered by the new one).
//!
//! A segment that grows past its limit ([`FileStorage::set_segment_limit`]) between
//! snapshots rolls over the same way, without steps 1 and 3: the new segment's base holds
//! the current state, and once it is durable the old segment is deleted.
//!
//! The new segment becomes durable **before** the snapshot file is replaced, so a crash at
//! any point leaves either the old segment with the old `snapshot.bin`, or the new segment
//! with its snapshot in `snapshot.tmp` or `snapshot.bin`: recovery always finds the
//! snapshot the log's marker names. (Replacing `snapshot.bin` first would leave, after a
//! crash, a new snapshot next to an old log that no longer matches it.)
//!
//! # Recovery
//!
//! [`FileStorage::open`] picks the newest segment. If it holds no complete group (a crash
//! while step 2 was writing it), or names a snapshot found in neither snapshot file (its batch
//! was never acknowledged: that happens only after step 3), and an older segment exists, it is
//! abandoned and the older one is used, which must then be entirely intact. The chosen
//! segment is scanned: a torn or damaged last group is cut off (the file is truncated) and
//! counted in [`RecoveryReport::repaired_bytes`]; any other damage is
//! [`StorageError::Corrupt`], as is a record that does not continue the log. The snapshot
//! whose meta the segment's marker names is loaded from `snapshot.bin` (or from
//! `snapshot.tmp`, finishing step 3). Older segments are deleted. All checks happen before any
//! log or snapshot file is changed: an open that fails leaves them as they were.
//!
//! What recovery read may never have been synced (a process killed after its `write` and
//! before its `fdatasync` leaves the data in the page cache, readable but not durable), and
//! the node about to start treats it as durable. So before returning, `open` syncs the
//! segment it continues, the snapshot file and the directory
//! ([`RecoveryReport::synced`]); a directory it creates is made durable in its parent.
//!
//! # Memory
//!
//! [`FileStorage`] keeps the current [`DurableState`] in memory (entries share their payloads
//! with whoever built them, so this costs a pointer per entry): it needs the retained log
//! tail to write a new segment's base, and merges each batch against it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use raft_proto::record::{self, Record, RecordError};
use raft_proto::{DurableState, Entry, Index, Persist, Snapshot, SnapshotMeta};

/// The snapshot file's name.
const SNAPSHOT_FILE: &str = "snapshot.bin";
/// Where a new snapshot is written before it replaces the current one.
const SNAPSHOT_TMP: &str = "snapshot.tmp";
/// The lock file's name.
const LOCK_FILE: &str = "LOCK";
/// The size past which a log segment rolls over, by default (see
/// [`FileStorage::set_segment_limit`]).
pub const DEFAULT_SEGMENT_LIMIT: u64 = 64 << 20;

/// The largest entry the log accepts, so that a record holding it stays below
/// [`record::MAX_RECORD_LEN`].
const MAX_ENTRY_LEN: usize = record::MAX_RECORD_LEN - 1024;

/// Why storage failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// An operating-system call on `path` failed. After a failed
    /// [`persist`](FileStorage::persist) the storage refuses further writes: reopen it.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// Stored data is damaged (not merely cut short by a crash) or inconsistent.
    #[error("corrupt data in {} at byte offset {offset}: {reason}", path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Where in it the damaged record starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

/// What [`FileStorage::open`] found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Bytes cut off the end of the log: a torn write, a group that was not complete, or an
    /// abandoned segment that held no complete group.
    pub repaired_bytes: u64,
    /// How many log segment files the directory held.
    pub segments: usize,
    /// Segments deleted: older ones covered by a newer segment, or an abandoned one.
    pub removed_segments: usize,
    /// Records replayed from the log.
    pub records: usize,
    /// Whether a snapshot was found in `snapshot.tmp`, already referenced by the log, and moved
    /// into place (a crash interrupted a snapshot installation).
    pub snapshot_rolled_forward: bool,
    /// The files and directories recovery synced before returning, because the recovered state
    /// was read from them and may not have been durable yet.
    pub synced: Vec<PathBuf>,
}

/// A node's durable state in a directory: one log segment of checksummed records and a
/// snapshot file (see the [module docs](self) for the layout and the crash-safety argument).
///
/// Only one `FileStorage` may use a directory at a time; [`open`](Self::open) takes a lock
/// to enforce it.
#[derive(Debug)]
pub struct FileStorage {
    dir: PathBuf,
    /// Held locked for as long as the storage is open.
    _lock: File,
    /// The state every acknowledged persist has produced.
    state: DurableState,
    segment: File,
    segment_path: PathBuf,
    segment_seq: u64,
    segment_len: u64,
    /// The length of the current segment's base group (0 when unknown: a segment continued
    /// after a reopen).
    base_len: u64,
    /// See [`set_segment_limit`](Self::set_segment_limit).
    segment_limit: u64,
    /// The number of the next group written to the segment.
    next_group: u64,
    /// Set when a write failed: what is on disk is then unknown until the next open.
    failed: bool,
    /// Snapshots are streamed ([`open_streamed`](Self::open_streamed)): their bytes are in
    /// files of their own ([`snapfile`](crate::snapfile)), `snapshot.bin` names them.
    streamed: bool,
    /// Reused for encoding.
    buf: Vec<u8>,
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

fn record_error(path: &Path, error: RecordError) -> StorageError {
    match error {
        RecordError::Corrupt { offset, reason } => corrupt(path, offset, reason),
        other => StorageError::Io {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidInput, other),
        },
    }
}

fn segment_name(seq: u64) -> String {
    format!("log-{seq:020}.wal")
}

/// The sequence number in a segment file's name, if it is one.
fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("log-")?.strip_suffix(".wal")?;
    if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

/// Makes the directory's entries (created, renamed, removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn exists(path: &Path) -> Result<bool, StorageError> {
    path.try_exists().map_err(io_error(path))
}

/// The group that rebuilds `state` from nothing: the base of segment `seq`, its group 0.
fn encode_base(state: &DurableState, seq: u64, out: &mut Vec<u8>) -> Result<(), RecordError> {
    let base = Persist {
        seq: 0,
        truncate_from: None,
        snapshot: state.snapshot.clone(),
        first_index: state.log_base().saturating_add(1),
        entries: state.log.clone(),
        hard_state: Some(state.hard_state),
    };
    record::encode_group(seq, 0, &base, out)
}

/// The committed content of a segment file.
struct SegmentScan {
    /// The records of its complete groups, with their offsets.
    records: Vec<(u64, Record)>,
    /// Where the last complete group ends (0 when there is none).
    committed_len: u64,
    /// The number of the next group to write.
    next_group: u64,
    /// The file's length.
    file_len: u64,
}

/// Reads segment number `seq`.
fn scan_segment(path: &Path, seq: u64) -> Result<SegmentScan, StorageError> {
    let bytes = fs::read(path).map_err(io_error(path))?;
    let scan = record::scan_groups(&bytes, seq).map_err(|e| record_error(path, e))?;
    Ok(SegmentScan {
        records: scan.records,
        committed_len: scan.valid_len,
        next_group: scan.last_group.map_or(0, |g| g.saturating_add(1)),
        file_len: bytes.len() as u64,
    })
}

/// Replays a segment's committed records, checking that each continues the log.
fn replay_segment(path: &Path, records: Vec<(u64, Record)>) -> Result<DurableState, StorageError> {
    let mut state = DurableState::default();
    for (offset, record) in records {
        if let Record::Entries { first_index, .. } = &record {
            let next = state
                .log_base()
                .saturating_add(state.log.len() as Index)
                .saturating_add(1);
            if *first_index != next {
                return Err(corrupt(
                    path,
                    offset,
                    format!(
                        "entries start at index {first_index}, but the log continues at {next}"
                    ),
                ));
            }
        }
        record::replay(&mut state, record);
    }
    Ok(state)
}

/// Reads and checks a snapshot file: `Ok(None)` when it is missing.
fn read_snapshot(path: &Path) -> Result<Option<Snapshot>, StorageError> {
    match fs::read(path) {
        Ok(bytes) => record::decode_snapshot(&bytes)
            .map(Some)
            .map_err(|e| record_error(path, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path)(e)),
    }
}

/// Where the snapshot a segment names was found.
enum Found {
    /// In `snapshot.bin`.
    InPlace(Snapshot),
    /// In `snapshot.tmp`: it must be moved into place.
    Pending(Snapshot),
    /// In neither; the error says what `snapshot.bin` holds instead.
    Missing(StorageError),
}

/// The snapshot with `meta`: from `bin`, or else from `tmp`. A damaged `bin` is an error
/// only when `tmp` does not have the snapshot either.
fn find_snapshot(bin: &Path, tmp: &Path, meta: SnapshotMeta) -> Result<Found, StorageError> {
    let in_place = read_snapshot(bin);
    if let Ok(Some(snapshot)) = &in_place {
        if snapshot.meta == meta {
            return Ok(Found::InPlace(snapshot.clone()));
        }
    }
    if let Ok(Some(snapshot)) = read_snapshot(tmp) {
        if snapshot.meta == meta {
            return Ok(Found::Pending(snapshot));
        }
    }
    let reason = match in_place? {
        None => format!(
            "missing, but the log holds a snapshot marker up to index {}",
            meta.last_index
        ),
        Some(other) => format!(
            "covers index {} (term {}) but the log's marker is index {} (term {})",
            other.meta.last_index, other.meta.last_term, meta.last_index, meta.last_term
        ),
    };
    Ok(Found::Missing(corrupt(bin, 0, reason)))
}

/// The segment recovery continues.
struct Current {
    /// Its sequence number.
    seq: u64,
    path: PathBuf,
    /// The length to cut it to: the end of its last complete group.
    len: u64,
    /// The number of the next group to write to it.
    next_group: u64,
}

/// A segment replayed, with its snapshot found.
struct Loaded {
    state: DurableState,
    /// Records replayed.
    records: usize,
    scan_committed_len: u64,
    scan_file_len: u64,
    next_group: u64,
    /// The snapshot is in `snapshot.tmp` and must be moved into place.
    roll_forward: bool,
}

/// Replays a scanned segment and loads the snapshot its marker names. The inner `Err` is the
/// case where neither snapshot file holds that snapshot.
fn load_segment(
    path: &Path,
    scanned: SegmentScan,
    bin: &Path,
    tmp: &Path,
) -> Result<Result<Loaded, StorageError>, StorageError> {
    let records = scanned.records.len();
    let mut state = replay_segment(path, scanned.records)?;
    let mut roll_forward = false;
    match state.snapshot.as_mut() {
        None => {
            if exists(bin)? {
                return Err(corrupt(
                    bin,
                    0,
                    format!("the log ({}) holds no snapshot marker", path.display()),
                ));
            }
        }
        Some(snapshot) => match find_snapshot(bin, tmp, snapshot.meta)? {
            Found::InPlace(found) => *snapshot = found,
            Found::Pending(found) => {
                *snapshot = found;
                roll_forward = true;
            }
            Found::Missing(error) => return Ok(Err(error)),
        },
    }
    Ok(Ok(Loaded {
        state,
        records,
        scan_committed_len: scanned.committed_len,
        scan_file_len: scanned.file_len,
        next_group: scanned.next_group,
        roll_forward,
    }))
}

/// Creates `dir` and any missing parent, each made durable in its own parent. The parent of
/// `dir` is synced on every call: an earlier process may have created `dir` and been killed
/// before it synced the parent.
fn create_dir_durably(dir: &Path) -> Result<(), StorageError> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(path) = at.filter(|p| !p.as_os_str().is_empty()) {
        if exists(path)? {
            break;
        }
        missing.push(path);
        at = path.parent();
    }
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let parent_of = |path: &Path| {
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    };
    // `missing[0]` is `dir` itself, made durable last.
    for created in missing.iter().skip(1).rev() {
        sync_dir(&parent_of(created))?;
    }
    sync_dir(&parent_of(dir))
}

/// What recovery decided, before it changes anything on disk.
struct Plan {
    state: DurableState,
    /// The segment to continue; `None` to start a fresh segment.
    current: Option<Current>,
    /// The highest segment sequence number seen.
    max_seq: u64,
    /// Segments to delete.
    remove: Vec<PathBuf>,
    /// Move `snapshot.tmp` over `snapshot.bin`.
    roll_forward: bool,
    report: RecoveryReport,
}

impl FileStorage {
    /// Opens the storage in `dir`, creating the directory if it is missing, and recovers the
    /// durable state: the snapshot, then the log segment's records replayed on top of it.
    ///
    /// Returns the storage, the recovered state (hand it to
    /// [`Node::restore`](raft_proto::Node::restore)) and what recovery did. A torn or
    /// unfinished write at the end of the log is cut off; other damage is
    /// [`StorageError::Corrupt`] naming the file and offset, and then no log or snapshot file
    /// has been changed. Fails with [`io::ErrorKind::WouldBlock`] if another `FileStorage` has the
    /// directory open.
    pub fn open(dir: &Path) -> Result<(Self, DurableState, RecoveryReport), StorageError> {
        Self::open_mode(dir, false)
    }

    /// Opens `dir` like [`open`](Self::open), for a node that streams its snapshots
    /// ([`Config::stream_snapshots`](raft_proto::Config)): the recovered snapshot comes
    /// without its bytes, which stay in their file ([`snapfile`](crate::snapfile)); that file
    /// is checked against its checksum (reading it in bounded pieces) and every other snapshot
    /// file (older, abandoned, half received) is deleted. A persist with a snapshot then
    /// installs the file stored or staged for it. A directory written in one mode is refused
    /// in the other.
    pub fn open_streamed(dir: &Path) -> Result<(Self, DurableState, RecoveryReport), StorageError> {
        Self::open_mode(dir, true)
    }

    fn open_mode(
        dir: &Path,
        streamed: bool,
    ) -> Result<(Self, DurableState, RecoveryReport), StorageError> {
        create_dir_durably(dir)?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        lock.try_lock().map_err(|e| match e {
            fs::TryLockError::WouldBlock => StorageError::Io {
                path: dir.to_path_buf(),
                source: io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "the storage directory is in use by another FileStorage",
                ),
            },
            fs::TryLockError::Error(source) => io_error(&lock_path)(source),
        })?;

        let Plan {
            state,
            current,
            max_seq,
            remove,
            roll_forward,
            mut report,
        } = Self::plan(dir)?;

        // Carry out the plan; every step is safe to repeat if a crash interrupts it. What was
        // read may only be in the page cache (its writer was killed before syncing): make it
        // durable before the node acts on it.
        let bin = dir.join(SNAPSHOT_FILE);
        let tmp = dir.join(SNAPSHOT_TMP);
        if roll_forward {
            fs::rename(&tmp, &bin).map_err(io_error(&tmp))?;
        } else if exists(&tmp)? {
            fs::remove_file(&tmp).map_err(io_error(&tmp))?;
        }
        if state.snapshot.is_some() {
            File::open(&bin)
                .and_then(|file| file.sync_all())
                .map_err(io_error(&bin))?;
            report.synced.push(bin.clone());
        }
        if let Some(current) = &current {
            let path = &current.path;
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io_error(path))?;
            if file.metadata().map_err(io_error(path))?.len() != current.len {
                file.set_len(current.len).map_err(io_error(path))?;
            }
            file.sync_all().map_err(io_error(path))?;
            report.synced.push(path.clone());
        }
        for path in &remove {
            fs::remove_file(path).map_err(io_error(path))?;
        }
        check_snapshot_mode(dir, &state, streamed)?;
        sync_dir(dir)?;
        report.synced.push(dir.to_path_buf());

        let (segment_seq, segment_path, segment, segment_len, next_group, base_len) = match current
        {
            Some(Current {
                seq,
                path,
                len,
                next_group,
            }) => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(io_error(&path))?;
                // Its base's length is not known: 0 lets it roll over at the limit.
                (seq, path, file, len, next_group, 0)
            }
            None => {
                let seq = next_seq(dir, max_seq)?;
                let path = dir.join(segment_name(seq));
                let mut buf = Vec::new();
                encode_base(&state, seq, &mut buf).map_err(|e| record_error(&path, e))?;
                let file = create_segment(dir, &path, &buf)?;
                (seq, path, file, buf.len() as u64, 1, buf.len() as u64)
            }
        };
        tracing::debug!(
            dir = %dir.display(),
            segment = %segment_path.display(),
            last_index = state.last_index(),
            ?report,
            "storage recovered"
        );
        let storage = Self {
            dir: dir.to_path_buf(),
            _lock: lock,
            state: state.clone(),
            segment,
            segment_path,
            segment_seq,
            segment_len,
            base_len,
            segment_limit: DEFAULT_SEGMENT_LIMIT,
            next_group,
            failed: false,
            streamed,
            buf: Vec::new(),
        };
        Ok((storage, state, report))
    }

    /// Decides how to recover, reading but changing nothing.
    fn plan(dir: &Path) -> Result<Plan, StorageError> {
        let mut segments = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_error(dir))? {
            let entry = entry.map_err(io_error(dir))?;
            if let Some(seq) = entry.file_name().to_str().and_then(parse_segment_name) {
                segments.push((seq, entry.path()));
            }
        }
        segments.sort();
        let bin = dir.join(SNAPSHOT_FILE);
        let tmp = dir.join(SNAPSHOT_TMP);
        let mut report = RecoveryReport {
            segments: segments.len(),
            ..RecoveryReport::default()
        };
        let max_seq = segments.last().map_or(0, |(seq, _)| *seq);

        let Some((newest_seq, newest_path)) = segments.pop() else {
            if exists(&bin)? {
                return Err(corrupt(
                    &bin,
                    0,
                    "a snapshot exists but no log segment does",
                ));
            }
            return Ok(Plan {
                state: DurableState::default(),
                current: None,
                max_seq,
                remove: Vec::new(),
                roll_forward: false,
                report,
            });
        };
        let mut remove = Vec::new();
        let newest = scan_segment(&newest_path, newest_seq)?;
        let newest_len = newest.file_len;
        let loaded = if newest.committed_len > 0 {
            match load_segment(&newest_path, newest, &bin, &tmp)? {
                Ok(loaded) => Some((newest_seq, newest_path.clone(), loaded)),
                // The snapshot it names never got its name: its batch was not acknowledged.
                Err(missing) if segments.is_empty() => return Err(missing),
                Err(_) => None,
            }
        } else {
            None
        };
        let (seq, path, loaded) = match loaded {
            Some(chosen) => chosen,
            None => {
                // A segment whose base never became durable, or whose snapshot was never put
                // in place: a crash while a snapshot was being installed. The older segment
                // is still the current one and must be whole.
                report.repaired_bytes += newest_len;
                remove.push(newest_path.clone());
                match segments.pop() {
                    Some((older_seq, older_path)) => {
                        let older = scan_segment(&older_path, older_seq)?;
                        if older.committed_len != older.file_len {
                            return Err(corrupt(
                                &older_path,
                                older.committed_len,
                                "incomplete write at the end of a segment that is not the last",
                            ));
                        }
                        match load_segment(&older_path, older, &bin, &tmp)? {
                            Ok(loaded) => (older_seq, older_path, loaded),
                            Err(missing) => return Err(missing),
                        }
                    }
                    None if !exists(&bin)? => {
                        // Nothing was ever acknowledged: the very first base was being written.
                        report.removed_segments = 1;
                        return Ok(Plan {
                            state: DurableState::default(),
                            current: None,
                            max_seq,
                            remove,
                            roll_forward: false,
                            report,
                        });
                    }
                    None => {
                        return Err(corrupt(
                            &newest_path,
                            0,
                            "the only log segment holds no complete record group",
                        ))
                    }
                }
            }
        };
        report.repaired_bytes += loaded.scan_file_len - loaded.scan_committed_len;
        report.records = loaded.records;
        remove.extend(segments.into_iter().map(|(_, path)| path));
        report.removed_segments = remove.len();
        report.snapshot_rolled_forward = loaded.roll_forward;
        Ok(Plan {
            state: loaded.state,
            current: Some(Current {
                seq,
                path,
                len: loaded.scan_committed_len,
                next_group: loaded.next_group,
            }),
            max_seq,
            remove,
            roll_forward: loaded.roll_forward,
            report,
        })
    }

    /// The state every persist so far has produced (what a reopen would recover).
    pub fn state(&self) -> &DurableState {
        &self.state
    }

    /// The storage directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log segment currently appended to.
    pub fn segment_path(&self) -> &Path {
        &self.segment_path
    }

    /// Rolls the log over to a new segment once the current one holds more than `bytes`
    /// and more than twice what a fresh segment would (its base: the retained log and the
    /// hard state), so that groups of overwritten entries and of hard states do not pile up
    /// between snapshots, and rewriting stays amortized. The new segment is written and
    /// synced before the old one is deleted, as when a snapshot starts one. 64 MiB by
    /// default ([`DEFAULT_SEGMENT_LIMIT`]).
    pub fn set_segment_limit(&mut self, bytes: u64) {
        self.segment_limit = bytes;
    }

    /// Makes a batch of persists durable, in order, as one group commit: the batch is merged
    /// into one group of records written with one `write` and one `fdatasync` (a batch that
    /// changes nothing writes nothing). A batch carrying a snapshot instead writes the
    /// snapshot file and a new segment (see the [module docs](self)). Returns once all of it
    /// is durable; acknowledge the persists (the highest `seq`) only then. Entries are placed
    /// after the log as [`Persist::apply_to`] places them (`first_index` is not consulted), so
    /// what is written always replays to [`state`](Self::state).
    ///
    /// After a crash the whole batch is either recovered or not at all. After an error the
    /// state on disk is unknown: every later call fails too, and the storage must be reopened
    /// (which recovers either the state before or after the batch).
    pub fn persist(&mut self, batch: &[Persist]) -> Result<(), StorageError> {
        if self.failed {
            return Err(StorageError::Io {
                path: self.segment_path.clone(),
                source: io::Error::other("an earlier write failed; reopen the storage"),
            });
        }
        if let Some(entry) = batch
            .iter()
            .flat_map(|p| &p.entries)
            .find(|e| e.data.len() > MAX_ENTRY_LEN)
        {
            return Err(StorageError::Io {
                path: self.segment_path.clone(),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "an entry of {} bytes exceeds the limit of {MAX_ENTRY_LEN} bytes",
                        entry.data.len()
                    ),
                ),
            });
        }
        if batch.iter().any(|p| p.snapshot.is_some()) {
            self.persist_with_snapshot(batch)
        } else {
            self.append(batch)
        }
    }

    /// Appends a batch without snapshot as one group to the current segment.
    fn append(&mut self, batch: &[Persist]) -> Result<(), StorageError> {
        let first_free = self.state.log_base().saturating_add(1);
        let old_next = self.state.last_index().saturating_add(1);
        // The merged batch: entries from `from` on are replaced by `tail`.
        let mut from = old_next;
        let mut tail: Vec<Entry> = Vec::new();
        let mut hard_state = self.state.hard_state;
        for persist in batch {
            if let Some(truncate) = persist.truncate_from {
                let truncate = truncate.max(first_free);
                if truncate < from {
                    from = truncate;
                    tail.clear();
                } else {
                    tail.truncate(usize::try_from(truncate - from).unwrap_or(usize::MAX));
                }
            }
            tail.extend(persist.entries.iter().cloned());
            if let Some(hs) = persist.hard_state {
                hard_state = hs;
            }
        }
        let truncates = from < old_next;
        if !truncates && tail.is_empty() && hard_state == self.state.hard_state {
            return Ok(());
        }
        let merged = Persist {
            seq: batch.last().map_or(0, |p| p.seq),
            truncate_from: truncates.then_some(from),
            snapshot: None,
            first_index: from,
            entries: tail,
            hard_state: Some(hard_state),
        };
        self.buf.clear();
        record::encode_group(self.segment_seq, self.next_group, &merged, &mut self.buf)
            .map_err(|e| record_error(&self.segment_path, e))?;

        let written = self
            .segment
            .write_all(&self.buf)
            .and_then(|()| self.segment.sync_data());
        if let Err(source) = written {
            self.failed = true;
            // Best effort: leave no partial group behind (recovery would cut it anyway).
            let _ = self.segment.set_len(self.segment_len);
            return Err(io_error(&self.segment_path)(source));
        }
        self.segment_len += self.buf.len() as u64;
        self.next_group += 1;
        merged.apply_to(&mut self.state);
        if self.segment_len > self.segment_limit
            && self.segment_len > self.base_len.saturating_mul(2)
        {
            if let Err(error) = self.roll_over() {
                // The batch is durable, but what is on disk now is not known for sure.
                self.failed = true;
                return Err(error);
            }
        }
        Ok(())
    }

    /// Starts a new segment holding the current state as its base, then deletes the old
    /// one. A crash before the new base is complete leaves the old segment, which recovery
    /// then uses; once it is complete, recovery uses it and deletes the old one.
    fn roll_over(&mut self) -> Result<(), StorageError> {
        let seq = next_seq(&self.dir, self.segment_seq)?;
        let path = self.dir.join(segment_name(seq));
        self.buf.clear();
        encode_base(&self.state, seq, &mut self.buf).map_err(|e| record_error(&path, e))?;
        let segment = create_segment(&self.dir, &path, &self.buf)?;
        let old = std::mem::replace(&mut self.segment_path, path);
        if let Err(error) = fs::remove_file(&old)
            .map_err(io_error(&old))
            .and_then(|()| sync_dir(&self.dir))
        {
            tracing::warn!(%error, "could not delete a rolled-over log segment");
        }
        tracing::debug!(from = %old.display(), to = %self.segment_path.display(), bytes = self.segment_len, "log segment rolled over");
        self.segment = segment;
        self.segment_seq = seq;
        self.segment_len = self.buf.len() as u64;
        self.base_len = self.segment_len;
        self.next_group = 1;
        Ok(())
    }

    /// Installs the batch's snapshot and starts a new segment holding the state after the
    /// whole batch.
    fn persist_with_snapshot(&mut self, batch: &[Persist]) -> Result<(), StorageError> {
        let mut next = self.state.clone();
        for persist in batch {
            persist.apply_to(&mut next);
        }
        let bin = self.dir.join(SNAPSHOT_FILE);
        let tmp = self.dir.join(SNAPSHOT_TMP);
        let seq = next_seq(&self.dir, self.segment_seq)?;
        let path = self.dir.join(segment_name(seq));

        let mut snapshot_bytes = Vec::new();
        if let Some(snapshot) = &next.snapshot {
            record::encode_snapshot(snapshot, &mut snapshot_bytes)
                .map_err(|e| record_error(&tmp, e))?;
        }
        self.buf.clear();
        encode_base(&next, seq, &mut self.buf).map_err(|e| record_error(&path, e))?;

        let streamed_index = next
            .snapshot
            .as_ref()
            .filter(|_| self.streamed)
            .map(|s| s.meta);
        let result = (|| {
            if let Some(meta) = streamed_index {
                // Its bytes are durable under their name before anything refers to them.
                crate::snapfile::install(&self.dir, meta)?;
            }
            write_file(&tmp, &snapshot_bytes)?;
            // Its name must be durable before the new segment refers to it.
            sync_dir(&self.dir)?;
            let segment = create_segment(&self.dir, &path, &self.buf)?;
            fs::rename(&tmp, &bin).map_err(io_error(&tmp))?;
            sync_dir(&self.dir)?;
            Ok(segment)
        })();
        let segment = match result {
            Ok(segment) => segment,
            Err(e) => {
                self.failed = true;
                return Err(e);
            }
        };
        // Everything is durable; the old segment is only garbage now (a reopen deletes it
        // if this fails).
        let old = std::mem::replace(&mut self.segment_path, path);
        if let Err(error) = fs::remove_file(&old)
            .map_err(io_error(&old))
            .and_then(|()| sync_dir(&self.dir))
        {
            tracing::warn!(%error, "could not delete a covered log segment");
        }
        if let Some(meta) = streamed_index {
            if let Err(error) = crate::snapfile::remove_others(&self.dir, meta.last_index, false) {
                tracing::warn!(%error, "could not delete replaced snapshot files");
            }
        }
        self.segment = segment;
        self.segment_seq = seq;
        self.segment_len = self.buf.len() as u64;
        self.base_len = self.segment_len;
        self.next_group = 1;
        self.state = next;
        Ok(())
    }
}

/// Checks that the recovered snapshot was written in the mode the storage opens in, and in
/// streamed mode that its file is whole, deleting every other snapshot file.
fn check_snapshot_mode(
    dir: &Path,
    state: &DurableState,
    streamed: bool,
) -> Result<(), StorageError> {
    let refuse = |reason: &str| corrupt(&dir.join(SNAPSHOT_FILE), 0, reason);
    match (&state.snapshot, streamed) {
        (Some(snapshot), true) => {
            if !snapshot.data.is_empty() {
                return Err(refuse(
                    "the snapshot was written without stream_snapshots; open it without",
                ));
            }
            let index = snapshot.meta.last_index;
            crate::snapfile::verify(&crate::snapfile::data_path(dir, index))?;
            crate::snapfile::remove_others(dir, index, true)
        }
        (None, true) => crate::snapfile::remove_others(dir, 0, true),
        (Some(snapshot), false) => {
            let index = snapshot.meta.last_index;
            if snapshot.data.is_empty() && crate::snapfile::data_path(dir, index).exists() {
                return Err(refuse(
                    "the snapshot was written with stream_snapshots; open it with",
                ));
            }
            Ok(())
        }
        (None, false) => Ok(()),
    }
}

/// The sequence number after `seq`.
fn next_seq(dir: &Path, seq: u64) -> Result<u64, StorageError> {
    seq.checked_add(1).ok_or_else(|| StorageError::Io {
        path: dir.to_path_buf(),
        source: io::Error::other("log segment sequence numbers are exhausted"),
    })
}

/// Writes a whole file and syncs it.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    let mut file = File::create(path).map_err(io_error(path))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_error(path))
}

/// Creates a new segment holding `base`, syncs it and the directory, and returns it open for
/// appending.
fn create_segment(dir: &Path, path: &Path, base: &[u8]) -> Result<File, StorageError> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(path)(e)),
    }
    let mut file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(path)
        .map_err(io_error(path))?;
    file.write_all(base)
        .and_then(|()| file.sync_all())
        .map_err(io_error(path))?;
    sync_dir(dir)?;
    Ok(file)
}
