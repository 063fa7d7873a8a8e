//! Streamed snapshots on disk ([`Config::stream_snapshots`](raft_proto::Config)): a
//! snapshot's bytes live in a file of their own, never in memory as a whole.
//!
//! ```text
//! <dir>/snapshot-00000000000000000042.data   the bytes of the snapshot ending at index 42
//! <dir>/snapshot-00000000000000000042.tmp    the same, being written by the state machine
//! <dir>/incoming-00000000000000000042.part   the same, being received from the leader
//! ```
//!
//! A `.data` file is the application's bytes followed by a 16-byte trailer: their length
//! (u64, little-endian), their CRC-32 (u32) and the magic `RSNP`. It appears under its name
//! only complete and synced (written as `.tmp` or `.part`, synced, renamed, directory
//! synced), and it is never rewritten: any two snapshots of the same index hold the same
//! committed state, so one already there is kept. [`FileStorage`](crate::storage::FileStorage)
//! names the current one in `snapshot.bin` (whose own data is empty), makes the staged
//! file of a received snapshot durable before the log refers to it, deletes older ones once a
//! newer one is durable, and checks the current one's trailer when it opens the directory.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use raft_proto::{Index, Message, NodeId, Payload, SnapshotChunkRequest, SnapshotMeta};

use crate::storage::{corrupt, io_error, sync_dir, StorageError};

/// The trailer's magic.
const MAGIC: [u8; 4] = *b"RSNP";
/// The trailer's length: length, CRC-32, magic.
pub(crate) const TRAILER: u64 = 16;

/// The complete, durable snapshot file of `index`.
pub(crate) fn data_path(dir: &Path, index: Index) -> PathBuf {
    dir.join(format!("snapshot-{index:020}.data"))
}

/// A snapshot of `index` the state machine is writing.
fn taken_path(dir: &Path, index: Index) -> PathBuf {
    dir.join(format!("snapshot-{index:020}.tmp"))
}

/// A snapshot of `index` being received from the leader.
pub(crate) fn staging_path(dir: &Path, index: Index) -> PathBuf {
    dir.join(format!("incoming-{index:020}.part"))
}

/// The index in the name of a snapshot file of any kind, if it is one.
pub(crate) fn parse_name(name: &str) -> Option<Index> {
    let digits = name
        .strip_prefix("snapshot-")
        .and_then(|n| n.strip_suffix(".data").or_else(|| n.strip_suffix(".tmp")))
        .or_else(|| {
            name.strip_prefix("incoming-")
                .and_then(|n| n.strip_suffix(".part"))
        })?;
    (digits.len() == 20).then(|| digits.parse().ok()).flatten()
}

/// The trailer for `len` bytes with CRC-32 `crc`.
fn trailer(len: u64, crc: u32) -> [u8; TRAILER as usize] {
    let mut t = [0u8; TRAILER as usize];
    t[..8].copy_from_slice(&len.to_le_bytes());
    t[8..12].copy_from_slice(&crc.to_le_bytes());
    t[12..].copy_from_slice(&MAGIC);
    t
}

/// Reads the trailer of a snapshot file: the length of its bytes and their CRC-32.
fn read_trailer(file: &mut File, path: &Path) -> Result<(u64, u32), StorageError> {
    let size = file.metadata().map_err(io_error(path))?.len();
    if size < TRAILER {
        return Err(corrupt(path, 0, "shorter than its trailer"));
    }
    let mut t = [0u8; TRAILER as usize];
    file.seek(SeekFrom::Start(size - TRAILER))
        .and_then(|_| file.read_exact(&mut t))
        .map_err(io_error(path))?;
    let len = u64::from_le_bytes(t[..8].try_into().unwrap_or_default());
    let crc = u32::from_le_bytes(t[8..12].try_into().unwrap_or_default());
    if t[12..] != MAGIC || len != size - TRAILER {
        return Err(corrupt(path, size - TRAILER, "not a snapshot trailer"));
    }
    Ok((len, crc))
}

/// Checks a snapshot file's bytes against its trailer, reading it in bounded pieces.
pub(crate) fn verify(path: &Path) -> Result<u64, StorageError> {
    let mut file = File::open(path).map_err(io_error(path))?;
    let (len, crc) = read_trailer(&mut file, path)?;
    file.seek(SeekFrom::Start(0)).map_err(io_error(path))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut left = len;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        file.read_exact(&mut buf[..n]).map_err(io_error(path))?;
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    if hasher.finalize() != crc {
        return Err(corrupt(path, 0, "its bytes do not match their checksum"));
    }
    Ok(len)
}

/// Opens the bytes of the snapshot of `index` for reading: the complete file, or else the
/// staged one just sealed (a writer thread may be renaming it meanwhile).
pub fn open(dir: &Path, index: Index) -> Result<SnapshotReader, StorageError> {
    let data = data_path(dir, index);
    let staged = staging_path(dir, index);
    let (path, mut file) = match File::open(&data) {
        Ok(file) => (data, file),
        Err(e) if e.kind() == io::ErrorKind::NotFound => match File::open(&staged) {
            Ok(file) => (staged, file),
            // Renamed in between: it is in place now.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let file = File::open(&data).map_err(io_error(&data))?;
                (data, file)
            }
            Err(e) => return Err(io_error(&staged)(e)),
        },
        Err(e) => return Err(io_error(&data)(e)),
    };
    let (len, _) = read_trailer(&mut file, &path)?;
    file.seek(SeekFrom::Start(0)).map_err(io_error(&path))?;
    Ok(SnapshotReader {
        inner: file.take(len),
        len,
    })
}

/// The bytes of a stored snapshot, for [`StateMachine::restore_from`](crate::StateMachine).
#[derive(Debug)]
pub struct SnapshotReader {
    inner: io::Take<File>,
    len: u64,
}

impl SnapshotReader {
    /// How many bytes the snapshot holds.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the snapshot holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Read for SnapshotReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

/// A writer that counts and checksums what goes through it.
struct Summing<W> {
    inner: W,
    hasher: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> Write for Summing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Stores a snapshot of `index` the state machine writes with `write`: to a temporary file,
/// synced, then renamed into place and the directory synced. A complete file of the same
/// index already there is kept (it holds the same state). Returns the bytes' length.
pub(crate) fn store_taken(
    dir: &Path,
    index: Index,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<u64, StorageError> {
    let path = taken_path(dir, index);
    let file = File::create(&path).map_err(io_error(&path))?;
    let mut out = Summing {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: crc32fast::Hasher::new(),
        len: 0,
    };
    write(&mut out).map_err(io_error(&path))?;
    let len = out.len;
    let crc = out.hasher.finalize();
    let mut file = out
        .inner
        .into_inner()
        .map_err(|e| io_error(&path)(e.into_error()))?;
    file.write_all(&trailer(len, crc))
        .and_then(|()| file.sync_all())
        .map_err(io_error(&path))?;
    put_in_place(dir, &path, &data_path(dir, index))?;
    Ok(len)
}

/// Gives the complete file `from` its final name `to` unless `to` exists (a file of the same
/// index holds the same state, and a transfer may be reading it: it is never replaced),
/// atomically (a hard link fails on an existing name), then drops `from` and syncs the
/// directory.
fn put_in_place(dir: &Path, from: &Path, to: &Path) -> Result<(), StorageError> {
    match fs::hard_link(from, to) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_error(to)(e)),
    }
    fs::remove_file(from).map_err(io_error(from))?;
    sync_dir(dir)
}

/// Makes the snapshot of `meta.last_index` durable under its final name before a log segment
/// refers to it: the complete file if there is one, else the sealed staging file (synced,
/// renamed, directory synced).
pub(crate) fn install(dir: &Path, meta: SnapshotMeta) -> Result<(), StorageError> {
    let data = data_path(dir, meta.last_index);
    if data.exists() {
        return Ok(());
    }
    let staged = staging_path(dir, meta.last_index);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&staged)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => corrupt(
                &data,
                0,
                format!(
                    "the snapshot ending at {} was neither stored nor received",
                    meta.last_index
                ),
            ),
            _ => io_error(&staged)(e),
        })?;
    read_trailer(&mut file, &staged)?;
    file.sync_all().map_err(io_error(&staged))?;
    put_in_place(dir, &staged, &data)
}

/// Deletes snapshot files other than the complete one of `keep`. With `all` (when the storage
/// opens: nothing is under way), every other one. Without (once `keep` is durable), only those
/// below it, and a staging file of `keep` itself: a newer snapshot may be stored or received
/// meanwhile by the node's loop or its state machine's thread, and its persist is on its way.
pub(crate) fn remove_others(dir: &Path, keep: Index, all: bool) -> Result<(), StorageError> {
    let keep_path = data_path(dir, keep);
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        let Some(index) = name.to_str().and_then(parse_name) else {
            continue;
        };
        let path = entry.path();
        let garbage =
            all || index < keep || (index == keep && path.extension().is_some_and(|e| e == "part"));
        if path != keep_path && garbage {
            fs::remove_file(&path).map_err(io_error(&path))?;
        }
    }
    sync_dir(dir)
}

/// The node's loop side of streamed snapshots: staging chunks received from the leader, and
/// reading chunks for followers.
#[derive(Debug)]
pub(crate) struct SnapshotFiles {
    dir: PathBuf,
    /// The snapshot being received: its meta, the staging file, bytes written and their sum.
    staging: Option<Staging>,
    /// The file open for the transfer to each follower, its length, and when it was last
    /// read (ms): an open file stays readable after a newer snapshot replaced it, so a
    /// transfer under way completes.
    reading: HashMap<NodeId, Reading>,
}

#[derive(Debug)]
struct Reading {
    index: Index,
    file: File,
    len: u64,
    used: u64,
}

#[derive(Debug)]
struct Staging {
    meta: SnapshotMeta,
    file: File,
    len: u64,
    hasher: crc32fast::Hasher,
}

/// What became of a chunk the core asked for.
pub(crate) enum Chunk {
    /// The message carrying it.
    Read(Message),
    /// The offset is at or past the end: nothing to send.
    PastEnd,
    /// The snapshot is gone (replaced by a newer one).
    Gone,
}

impl SnapshotFiles {
    pub(crate) fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            staging: None,
            reading: HashMap::new(),
        }
    }

    /// The directory the files live in.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a chunk received from the leader (in order; offset 0 starts over).
    pub(crate) fn stage(
        &mut self,
        meta: SnapshotMeta,
        offset: u64,
        data: &[u8],
    ) -> Result<(), StorageError> {
        if offset == 0 {
            if let Some(earlier) = self.staging.take() {
                if earlier.meta.last_index != meta.last_index {
                    // An abandoned transfer (another leader, a newer snapshot): its bytes are
                    // garbage, and many restarts must not fill the disk.
                    let path = staging_path(&self.dir, earlier.meta.last_index);
                    if let Err(error) = fs::remove_file(&path) {
                        tracing::warn!(%error, path = %path.display(), "cannot delete a staging file");
                    }
                }
            }
            let path = staging_path(&self.dir, meta.last_index);
            let file = File::create(&path).map_err(io_error(&path))?;
            self.staging = Some(Staging {
                meta,
                file,
                len: 0,
                hasher: crc32fast::Hasher::new(),
            });
        }
        let path = staging_path(&self.dir, meta.last_index);
        let written = match self.staging.as_mut() {
            Some(s) if s.meta == meta && s.len == offset => {
                s.hasher.update(data);
                s.len += data.len() as u64;
                s.file.write_all(data).map_err(io_error(&path))
            }
            _ => Err(corrupt(
                &path,
                offset,
                "a chunk that does not continue the staged bytes",
            )),
        };
        if written.is_err() {
            // Never sealed: the persist that would install it finds nothing and fails,
            // instead of installing bytes that lack a chunk under a valid checksum.
            if let Some(staging) = self.staging.take() {
                let path = staging_path(&self.dir, staging.meta.last_index);
                let _ = fs::remove_file(path);
            }
        }
        written
    }

    /// Ends the staging of `meta` (the persist that installs it follows): its trailer is
    /// written; the storage worker syncs and renames it.
    pub(crate) fn seal(&mut self, meta: SnapshotMeta) -> Result<(), StorageError> {
        let Some(staging) = self.staging.take_if(|s| s.meta == meta) else {
            return Ok(());
        };
        let path = staging_path(&self.dir, meta.last_index);
        let Staging {
            mut file,
            len,
            hasher,
            ..
        } = staging;
        let sealed = file
            .write_all(&trailer(len, hasher.finalize()))
            .map_err(io_error(&path));
        if sealed.is_err() {
            let _ = fs::remove_file(&path);
        }
        sealed
    }

    /// Closes the files open for followers that are no longer members.
    pub(crate) fn retain_readers(&mut self, members: &[NodeId]) {
        self.reading.retain(|to, _| members.contains(to));
    }

    /// Closes the files no transfer read from since `now - idle` (ms): a transfer under way
    /// asks for a chunk at least every heartbeat, so these transfers are over, and a replaced
    /// snapshot's disk space is freed.
    pub(crate) fn close_idle(&mut self, now: u64, idle: u64) {
        self.reading
            .retain(|_, r| now.saturating_sub(r.used) < idle);
    }

    /// Reads the chunk `request` asks for from the stored snapshot, at time `now` (ms).
    pub(crate) fn read(
        &mut self,
        request: SnapshotChunkRequest,
        now: u64,
    ) -> Result<Chunk, StorageError> {
        let index = request.meta.last_index;
        let open = self
            .reading
            .get(&request.to)
            .is_some_and(|r| r.index == index);
        if !open {
            let path = data_path(&self.dir, index);
            let mut file = match File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.reading.remove(&request.to);
                    return Ok(Chunk::Gone);
                }
                Err(e) => return Err(io_error(&path)(e)),
            };
            let (len, _) = read_trailer(&mut file, &path)?;
            let reading = Reading {
                index,
                file,
                len,
                used: now,
            };
            self.reading.insert(request.to, reading);
        }
        let Some(Reading {
            file, len, used, ..
        }) = self.reading.get_mut(&request.to)
        else {
            return Ok(Chunk::Gone);
        };
        *used = now;
        // Past the end, except that an empty snapshot is one empty last chunk.
        if request.offset > *len || (request.offset == *len && *len > 0) {
            return Ok(Chunk::PastEnd);
        }
        let n = (*len - request.offset).min(request.max_len as u64) as usize;
        let mut data = vec![0u8; n];
        let path = data_path(&self.dir, index);
        file.seek(SeekFrom::Start(request.offset))
            .and_then(|_| file.read_exact(&mut data))
            .map_err(io_error(&path))?;
        let last = request.offset + n as u64 == *len;
        Ok(Chunk::Read(request.into_message(Payload::from(data), last)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FileStorage;
    use raft_proto::{Entry, HardState, Membership, Persist, Snapshot};

    /// A fresh directory, removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Self {
            let path =
                std::env::temp_dir().join(format!("raft-snapfile-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn meta(last_index: Index) -> SnapshotMeta {
        SnapshotMeta {
            last_index,
            last_term: 1,
        }
    }

    fn read_all(dir: &Path, index: Index) -> Vec<u8> {
        let mut bytes = Vec::new();
        open(dir, index).unwrap().read_to_end(&mut bytes).unwrap();
        bytes
    }

    fn request(to: NodeId, index: Index, offset: u64, max_len: usize) -> SnapshotChunkRequest {
        SnapshotChunkRequest {
            from: 1,
            to,
            term: 1,
            meta: meta(index),
            membership: Membership::new([1, 2]),
            offset,
            max_len,
        }
    }

    #[test]
    fn a_taken_snapshot_is_stored_whole_and_checked() {
        let dir = Dir::new("taken");
        let len = store_taken(&dir.0, 7, |out| out.write_all(b"hello snapshot")).unwrap();
        assert_eq!(len, 14);
        assert_eq!(read_all(&dir.0, 7), b"hello snapshot");
        assert_eq!(verify(&data_path(&dir.0, 7)).unwrap(), 14);
        // A second one of the same index keeps the first (the same state).
        store_taken(&dir.0, 7, |out| out.write_all(b"other bytes")).unwrap();
        assert_eq!(read_all(&dir.0, 7), b"hello snapshot");
        // A flipped bit is found.
        let path = data_path(&dir.0, 7);
        let mut bytes = fs::read(&path).unwrap();
        bytes[3] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(verify(&path), Err(StorageError::Corrupt { .. })));
        // So is a cut one.
        fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(matches!(verify(&path), Err(StorageError::Corrupt { .. })));
    }

    #[test]
    fn chunks_are_read_by_offset_and_an_open_file_outlives_its_deletion() {
        let dir = Dir::new("read");
        store_taken(&dir.0, 5, |out| out.write_all(b"0123456789")).unwrap();
        let mut files = SnapshotFiles::new(&dir.0);
        let chunk =
            |files: &mut SnapshotFiles, offset| match files.read(request(2, 5, offset, 4), 0) {
                Ok(Chunk::Read(m)) => match m.body {
                    raft_proto::MessageBody::SnapshotChunk { data, done, .. } => {
                        Some((data.to_vec(), done))
                    }
                    _ => None,
                },
                _ => None,
            };
        assert_eq!(chunk(&mut files, 0), Some((b"0123".to_vec(), false)));
        assert!(matches!(
            files.read(request(2, 5, 10, 4), 0),
            Ok(Chunk::PastEnd)
        ));
        // Deleted once a newer snapshot is durable: the transfer under way still reads it...
        remove_others(&dir.0, 9, false).unwrap();
        assert!(!data_path(&dir.0, 5).exists());
        assert_eq!(chunk(&mut files, 4), Some((b"4567".to_vec(), false)));
        assert_eq!(chunk(&mut files, 8), Some((b"89".to_vec(), true)));
        // A new transfer of it finds it gone.
        assert!(matches!(
            files.read(request(3, 5, 0, 4), 0),
            Ok(Chunk::Gone)
        ));
        // Once no transfer reads it for a while, it is closed (its disk space freed).
        files.close_idle(5_000, 10_000);
        assert_eq!(files.reading.len(), 1);
        files.close_idle(10_000, 10_000);
        assert!(files.reading.is_empty());
    }

    /// Persisting a snapshot deletes older files only: a newer one, stored meanwhile and
    /// not yet persisted, stays.
    #[test]
    fn a_persisted_snapshot_never_deletes_a_newer_one() {
        let dir = Dir::new("newer");
        store_taken(&dir.0, 40, |out| out.write_all(b"forty")).unwrap();
        store_taken(&dir.0, 50, |out| out.write_all(b"fifty")).unwrap();
        let mut files = SnapshotFiles::new(&dir.0);
        files.stage(meta(60), 0, b"six").unwrap();
        remove_others(&dir.0, 40, false).unwrap();
        assert!(data_path(&dir.0, 40).exists());
        assert!(data_path(&dir.0, 50).exists());
        assert!(staging_path(&dir.0, 60).exists());
        remove_others(&dir.0, 50, false).unwrap();
        assert!(!data_path(&dir.0, 40).exists());
        assert_eq!(read_all(&dir.0, 50), b"fifty");
    }

    /// An empty snapshot is one empty last chunk, not nothing.
    #[test]
    fn an_empty_snapshot_is_sent_as_one_empty_last_chunk() {
        let dir = Dir::new("empty");
        store_taken(&dir.0, 3, |_| Ok(())).unwrap();
        let mut files = SnapshotFiles::new(&dir.0);
        match files.read(request(2, 3, 0, 4), 0) {
            Ok(Chunk::Read(m)) => assert!(matches!(
                m.body,
                raft_proto::MessageBody::SnapshotChunk { ref data, done: true, .. } if data.is_empty()
            )),
            _ => panic!("no chunk for an empty snapshot"),
        }
    }

    /// A chunk that cannot be staged leaves nothing to install: the persist fails rather than
    /// install bytes lacking it under a valid checksum.
    #[test]
    fn a_failed_stage_leaves_nothing_to_install() {
        let dir = Dir::new("failed");
        let mut files = SnapshotFiles::new(&dir.0);
        files.stage(meta(9), 0, b"abc").unwrap();
        assert!(files.stage(meta(9), 7, b"def").is_err());
        files.seal(meta(9)).unwrap();
        assert!(!staging_path(&dir.0, 9).exists());
        assert!(install(&dir.0, meta(9)).is_err());
    }

    #[test]
    fn staged_chunks_must_continue_each_other() {
        let dir = Dir::new("stage");
        let mut files = SnapshotFiles::new(&dir.0);
        files.stage(meta(9), 0, b"abc").unwrap();
        assert!(files.stage(meta(9), 5, b"xyz").is_err());
        // (The failure abandoned that staging.)
        files.stage(meta(9), 0, b"abc").unwrap();
        assert!(files.stage(meta(8), 3, b"xyz").is_err());
        files.stage(meta(9), 0, b"abc").unwrap();
        files.stage(meta(9), 3, b"def").unwrap();
        // Another transfer starts: the abandoned one's file goes.
        files.stage(meta(10), 0, b"x").unwrap();
        assert!(!staging_path(&dir.0, 9).exists());
        files.stage(meta(9), 0, b"abc").unwrap();
        assert!(!staging_path(&dir.0, 10).exists());
        files.stage(meta(9), 3, b"def").unwrap();
        files.seal(meta(9)).unwrap();
        install(&dir.0, meta(9)).unwrap();
        assert_eq!(read_all(&dir.0, 9), b"abcdef");
        assert!(!staging_path(&dir.0, 9).exists());
        // Nothing to install: an error, not an empty snapshot.
        assert!(install(&dir.0, meta(11)).is_err());
    }

    /// The file storage in streamed mode: a received snapshot is installed by a persist that
    /// names it, survives a reopen, is checked when opened, and the modes do not mix.
    #[test]
    fn streamed_storage_installs_recovers_and_checks() {
        let dir = Dir::new("storage");
        let (mut storage, _, _) = FileStorage::open_streamed(&dir.0).unwrap();
        storage
            .persist(&[Persist {
                seq: 1,
                truncate_from: None,
                snapshot: None,
                first_index: 1,
                entries: vec![Entry::command(1, vec![1]), Entry::command(1, vec![2])],
                hard_state: Some(HardState {
                    term: 1,
                    voted_for: None,
                }),
            }])
            .unwrap();
        // An older abandoned one, and the one received now.
        store_taken(&dir.0, 1, |out| out.write_all(b"old")).unwrap();
        let mut files = SnapshotFiles::new(&dir.0);
        files.stage(meta(4), 0, b"state up to 4").unwrap();
        files.seal(meta(4)).unwrap();
        let installed = Snapshot {
            meta: meta(4),
            membership: Membership::new([1, 2]),
            data: Payload::from(&[][..]),
        };
        storage
            .persist(&[Persist {
                seq: 2,
                truncate_from: Some(1),
                snapshot: Some(installed.clone()),
                first_index: 5,
                entries: vec![Entry::command(1, vec![5])],
                hard_state: None,
            }])
            .unwrap();
        drop(storage);
        let (_, durable, _) = FileStorage::open_streamed(&dir.0).unwrap();
        assert_eq!(durable.snapshot, Some(installed));
        assert_eq!(durable.log.len(), 1);
        assert_eq!(read_all(&dir.0, 4), b"state up to 4");
        assert!(!data_path(&dir.0, 1).exists(), "the older one is deleted");
        // Without streaming, the directory is refused (its snapshot's bytes are elsewhere).
        assert!(matches!(
            FileStorage::open(&dir.0),
            Err(StorageError::Corrupt { .. })
        ));
        // A damaged snapshot file is reported, not restored.
        let path = data_path(&dir.0, 4);
        let mut bytes = fs::read(&path).unwrap();
        bytes[0] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            FileStorage::open_streamed(&dir.0),
            Err(StorageError::Corrupt { .. })
        ));
        // So is a missing one.
        fs::remove_file(&path).unwrap();
        assert!(FileStorage::open_streamed(&dir.0).is_err());
    }
}
