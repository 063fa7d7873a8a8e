//! Checksummed log records: the byte format of a node's write-ahead log and snapshot file on
//! disk, as pure functions over bytes.
//!
//! # Record layout
//!
//! A log file is a sequence of records, each laid out as
//!
//! ```text
//! +-------------------+-------------------+-------------------+---------------------------+
//! | length: u32 LE    | length CRC: u32 LE| payload CRC: u32  | payload: `length` bytes   |
//! | (4 bytes)         | CRC32 of the 4    | LE, CRC32 of the  | (postcard encoding of one |
//! |                   | length bytes      | payload (4 bytes) | [`Record`])               |
//! +-------------------+-------------------+-------------------+---------------------------+
//! ```
//!
//! [`HEADER_LEN`] is 12 bytes; the length counts the payload only and is at most
//! [`MAX_RECORD_LEN`]. The CRCs are CRC-32 (IEEE, as `crc32fast` computes it). The length has
//! its own checksum so that a damaged length is recognised as such instead of sending the
//! reader to a wrong place. Postcard encodes an enum by its variant's position, so new
//! [`Record`] variants may only ever be added at the end.
//!
//! # Reading a log back
//!
//! [`scan`] reads records until the end of the buffer and tells a crash apart from damage:
//!
//! - A **torn tail** is what an interrupted append leaves behind, and is cut off
//!   ([`Scan::torn_tail`]): fewer bytes than a header at the end, a payload that runs past the
//!   end, or a record that fails a checksum (or does not decode) but is the very last thing in
//!   the buffer, meaning its payload ends exactly at the end of the buffer, or its header is
//!   the last 12 bytes, or its length checksum is wrong but the rest of the buffer has the
//!   payload checksum the header names (only the length was damaged); and a tail of zeros
//!   (space a file system allocated before the data landed).
//! - Anything else that fails a checksum or does not decode, and any length above
//!   [`MAX_RECORD_LEN`], is **corruption** ([`RecordError::Corrupt`], with the record's offset):
//!   data after it was written completely, so cutting there would silently lose it.
//!
//! # What the records mean
//!
//! [`encode_persist`] writes one [`Persist`] as up to four records in the order
//! [`Persist::apply_to`] applies its parts: [`Record::Truncate`], [`Record::Snapshot`],
//! [`Record::Entries`] (split into several records when very large), [`Record::HardState`].
//! [`replay`] applies one record to a [`DurableState`] with the same semantics. A record is
//! atomic on its own.
//!
//! # Groups
//!
//! A storage makes a batch of records atomic by writing it as a **group** ([`encode_group`]):
//! a [`Record::GroupStart`] carrying the group's number and the byte length of the records
//! that follow, then those records, all in one write made durable by one sync before the next
//! group is written. [`scan_groups`] returns the records of complete groups only, and uses the
//! lengths to tell a crash (damage anywhere inside the last group, which was never
//! acknowledged) from corruption (damage followed by a later group).
//!
//! # Snapshot file
//!
//! The snapshot's bytes are not in the log ([`Record::Snapshot`] carries only its
//! [`SnapshotMeta`]); they live in a file of their own holding exactly one frame with the same
//! 12-byte header, whose payload is the postcard encoding of a [`Snapshot`] and whose length
//! is at most `u32::MAX` and must match the file's size exactly ([`encode_snapshot`],
//! [`decode_snapshot`]).
//!
//! Nothing here performs I/O, and no input makes it panic.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::io::Persist;
use crate::membership::Membership;
use crate::types::{DurableState, Entry, HardState, Index, Snapshot, SnapshotMeta};

/// The size of a record's header in bytes: length, length CRC, payload CRC.
pub const HEADER_LEN: usize = 12;

/// The largest payload a log record may have: 256 MiB. [`scan`] treats a larger length as
/// corruption; [`encode_persist`] splits long runs of entries to stay below it.
pub const MAX_RECORD_LEN: usize = 256 * 1024 * 1024;

/// The most a postcard-encoded entry adds to its data: kind tag, term and length varints.
const ENTRY_OVERHEAD: usize = 24;
/// The most an entries record adds to its entries: variant tag, first index, entry count.
const ENTRIES_OVERHEAD: usize = 24;

/// One change to a node's durable state, as the log stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Record {
    /// The term and vote are now these.
    HardState(HardState),
    /// Append these entries; `entries[0]` has index `first_index`.
    Entries {
        /// The index of `entries[0]`.
        first_index: Index,
        /// Consecutive entries.
        entries: Vec<Entry>,
    },
    /// Remove every log entry at index `from` and after.
    Truncate {
        /// The first index removed.
        from: Index,
    },
    /// A snapshot with this meta is now the base: drop the entries up to
    /// `meta.last_index`. The snapshot's bytes are in the snapshot file, not in the log.
    Snapshot(SnapshotMeta),
    /// Opens a group: the records of one durable write, `len` bytes of them, follow (see
    /// [`scan_groups`]). Changes nothing in the state.
    GroupStart {
        /// The number of the file the group was written to, so that stale bytes of another
        /// file (blocks a file system reused) are never taken for one of its groups.
        file: u64,
        /// The group's number; groups in one file are numbered 0, 1, 2, ...
        seq: u64,
        /// The length in bytes of the records that follow in the group (headers included).
        len: u64,
    },
}

/// The same encoding as [`Record`], borrowing its contents, so writing a persist copies no
/// entries. Variants must stay in the same order as in [`Record`].
#[derive(Serialize)]
enum RecordRef<'a> {
    HardState(&'a HardState),
    Entries {
        first_index: Index,
        entries: &'a [Entry],
    },
    Truncate {
        from: Index,
    },
    Snapshot(&'a SnapshotMeta),
    GroupStart {
        file: u64,
        seq: u64,
        len: u64,
    },
}

impl<'a> From<&'a Record> for RecordRef<'a> {
    fn from(record: &'a Record) -> Self {
        match record {
            Record::HardState(hs) => Self::HardState(hs),
            Record::Entries {
                first_index,
                entries,
            } => Self::Entries {
                first_index: *first_index,
                entries,
            },
            Record::Truncate { from } => Self::Truncate { from: *from },
            Record::Snapshot(meta) => Self::Snapshot(meta),
            Record::GroupStart { file, seq, len } => Self::GroupStart {
                file: *file,
                seq: *seq,
                len: *len,
            },
        }
    }
}

/// What [`scan`] found in a buffer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Scan {
    /// Every intact record, in order, with the offset of its header.
    pub records: Vec<(u64, Record)>,
    /// The length of the intact prefix: where the next record should be written.
    pub valid_len: u64,
    /// How many bytes after `valid_len` belong to an interrupted write and must be cut off.
    pub torn_tail: u64,
}

/// Why bytes could not be encoded or decoded as records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordError {
    /// The bytes at `offset` fail a checksum or do not decode, and cannot be the tail of an
    /// interrupted write.
    Corrupt {
        /// The offset of the damaged record's header (0 for a snapshot file).
        offset: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The payload would be longer than the format allows (a single huge entry or snapshot).
    /// Nothing was written.
    TooLarge {
        /// The payload's length in bytes.
        len: usize,
        /// The largest payload allowed.
        max: usize,
    },
    /// The value cannot be serialized (a serde implementation reported an error). Nothing was
    /// written.
    Unencodable,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Corrupt { offset, reason } => {
                write!(f, "corrupt record at byte offset {offset}: {reason}")
            }
            Self::TooLarge { len, max } => {
                write!(
                    f,
                    "record payload of {len} bytes exceeds the limit of {max} bytes"
                )
            }
            Self::Unencodable => f.write_str("record cannot be serialized"),
        }
    }
}

impl core::error::Error for RecordError {}

/// A postcard output that appends to a vector until `limit` bytes, then only counts, so an
/// oversized value is measured without buffering it.
struct Limited<'a> {
    out: &'a mut Vec<u8>,
    written: usize,
    limit: usize,
}

impl postcard::ser_flavors::Flavor for Limited<'_> {
    type Output = usize;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        let written = self.written.saturating_add(data.len());
        if written <= self.limit {
            self.out.extend_from_slice(data);
        }
        self.written = written;
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.try_extend(&[data])
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.written)
    }
}

/// Appends one frame (header and postcard payload) carrying `value`, with a payload of at most
/// `max` bytes. On error `out` is left as it was.
fn encode_frame<T: Serialize>(value: &T, max: usize, out: &mut Vec<u8>) -> Result<(), RecordError> {
    let max = max.min(usize::try_from(u32::MAX).unwrap_or(usize::MAX));
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    let flavor = Limited {
        out,
        written: 0,
        limit: max,
    };
    let len = match postcard::serialize_with_flavor(value, flavor) {
        Ok(len) => len,
        Err(_) => {
            out.truncate(start);
            return Err(RecordError::Unencodable);
        }
    };
    let len_bytes = match u32::try_from(len) {
        Ok(len32) if len <= max => len32.to_le_bytes(),
        _ => {
            out.truncate(start);
            return Err(RecordError::TooLarge { len, max });
        }
    };
    let (header, payload) = out[start..].split_at_mut(HEADER_LEN);
    header[..4].copy_from_slice(&len_bytes);
    header[4..8].copy_from_slice(&crc32fast::hash(&len_bytes).to_le_bytes());
    header[8..].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    Ok(())
}

/// A frame header as read, checksums not yet verified.
struct Header {
    len_bytes: [u8; 4],
    len_crc: u32,
    payload_crc: u32,
}

impl Header {
    /// The header at the start of `bytes`, if there are enough bytes for one.
    fn read(bytes: &[u8]) -> Option<Self> {
        let header = bytes.first_chunk::<HEADER_LEN>()?;
        let word = |at: usize| [header[at], header[at + 1], header[at + 2], header[at + 3]];
        Some(Self {
            len_bytes: word(0),
            len_crc: u32::from_le_bytes(word(4)),
            payload_crc: u32::from_le_bytes(word(8)),
        })
    }

    fn len_ok(&self) -> bool {
        crc32fast::hash(&self.len_bytes) == self.len_crc
    }

    fn len(&self) -> usize {
        usize::try_from(u32::from_le_bytes(self.len_bytes)).unwrap_or(usize::MAX)
    }
}

/// Decodes one payload, insisting that it holds exactly one value.
fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, &'static str> {
    match postcard::take_from_bytes::<T>(payload) {
        Ok((value, [])) => Ok(value),
        Ok(_) => Err("bytes left over after the payload's value"),
        Err(_) => Err("payload does not decode"),
    }
}

fn corrupt(offset: usize, reason: &'static str) -> RecordError {
    RecordError::Corrupt {
        offset: offset as u64,
        reason,
    }
}

/// Appends one record to `out`.
///
/// Fails with [`RecordError::TooLarge`] when the payload would exceed [`MAX_RECORD_LEN`]
/// (without buffering more than that), and with [`RecordError::Unencodable`] when
/// serialization fails; on error `out` is left as it was.
pub fn encode_record(record: &Record, out: &mut Vec<u8>) -> Result<(), RecordError> {
    encode_frame(&RecordRef::from(record), MAX_RECORD_LEN, out)
}

/// Appends the records for one [`Persist`] to `out`, in the order it applies: truncate,
/// snapshot marker, entries, hard state; parts that are absent (or an empty entry list) are
/// skipped, so a persist that changes nothing writes nothing.
///
/// Entries go into one [`Record::Entries`], or several consecutive ones when together they
/// would exceed [`MAX_RECORD_LEN`]. Fails like [`encode_record`] (in practice only for a
/// single entry close to [`MAX_RECORD_LEN`] bytes); on error `out` is left as it was.
pub fn encode_persist(persist: &Persist, out: &mut Vec<u8>) -> Result<(), RecordError> {
    encode_persist_limited(persist, MAX_RECORD_LEN, out)
}

/// [`encode_persist`] with records of at most `max` bytes.
fn encode_persist_limited(
    persist: &Persist,
    max: usize,
    out: &mut Vec<u8>,
) -> Result<(), RecordError> {
    let start = out.len();
    let result = encode_persist_parts(persist, max, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn encode_persist_parts(
    persist: &Persist,
    max: usize,
    out: &mut Vec<u8>,
) -> Result<(), RecordError> {
    if let Some(from) = persist.truncate_from {
        encode_frame(&RecordRef::Truncate { from }, max, out)?;
    }
    if let Some(snapshot) = &persist.snapshot {
        encode_frame(&RecordRef::Snapshot(&snapshot.meta), max, out)?;
    }
    let budget = max.saturating_sub(ENTRIES_OVERHEAD);
    let mut rest = &persist.entries[..];
    let mut first_index = persist.first_index;
    while !rest.is_empty() {
        // Take entries while their worst-case encoded size fits; always at least one.
        let mut size = 0usize;
        let mut count = 0;
        for entry in rest {
            size = size.saturating_add(entry.data.len().saturating_add(ENTRY_OVERHEAD));
            if count > 0 && size > budget {
                break;
            }
            count += 1;
        }
        let (chunk, tail) = rest.split_at(count);
        encode_frame(
            &RecordRef::Entries {
                first_index,
                entries: chunk,
            },
            max,
            out,
        )?;
        first_index = first_index.saturating_add(count as Index);
        rest = tail;
    }
    if let Some(hs) = &persist.hard_state {
        encode_frame(&RecordRef::HardState(hs), max, out)?;
    }
    Ok(())
}

/// What [`read_at`] found at one position.
enum At {
    /// An intact record, and where the next one starts.
    Record(Record, usize),
    /// Nothing intact here, and nothing can follow: the end of the buffer, or the tail of an
    /// interrupted write (see the [module docs](self)).
    End,
    /// Damaged bytes that are not the end of the buffer.
    Damaged(&'static str),
}

/// Reads the record at `pos`, telling intact, torn and damaged apart. Never panics.
fn read_at(bytes: &[u8], pos: usize) -> At {
    let Some(rest) = bytes.get(pos..).filter(|rest| !rest.is_empty()) else {
        return At::End;
    };
    let Some(header) = Header::read(rest) else {
        return At::End; // An incomplete header at the end.
    };
    if rest.iter().all(|&b| b == 0) {
        // A file system may extend a file before the data lands: after a crash the tail
        // can read as zeros. Nothing was written there, so nothing is lost by cutting it.
        return At::End;
    }
    let body = &rest[HEADER_LEN..];
    if !header.len_ok() {
        // The length cannot be trusted. This is a torn tail only when nothing can follow:
        // the header is the last thing, or the rest is exactly this record's payload.
        if body.is_empty() || crc32fast::hash(body) == header.payload_crc {
            return At::End;
        }
        return At::Damaged("length checksum mismatch");
    }
    let len = header.len();
    if len > MAX_RECORD_LEN {
        return At::Damaged("record length above the maximum");
    }
    let Some(payload) = body.get(..len) else {
        return At::End; // The payload runs past the end.
    };
    let is_last = body.len() == len;
    if crc32fast::hash(payload) != header.payload_crc {
        return if is_last {
            At::End
        } else {
            At::Damaged("payload checksum mismatch")
        };
    }
    match decode_payload::<Record>(payload) {
        Ok(record) => At::Record(record, pos + HEADER_LEN + len),
        Err(_) if is_last => At::End,
        Err(reason) => At::Damaged(reason),
    }
}

/// Reads every record in `bytes` (the whole content of one log file), telling an interrupted
/// append at the end (cut off, see [`Scan::torn_tail`]) apart from corruption (an error). The
/// rules are in the [module docs](self). Never panics, whatever the input.
pub fn scan(bytes: &[u8]) -> Result<Scan, RecordError> {
    let mut records = Vec::new();
    let mut pos = 0usize;
    loop {
        match read_at(bytes, pos) {
            At::Record(record, next) => {
                records.push((pos as u64, record));
                pos = next;
            }
            At::End => break,
            At::Damaged(reason) => return Err(corrupt(pos, reason)),
        }
    }
    Ok(Scan {
        records,
        valid_len: pos as u64,
        torn_tail: (bytes.len() - pos) as u64,
    })
}

/// What [`scan_groups`] found in a buffer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupScan {
    /// The records of every complete group, in order, with the offset of each header; the
    /// [`Record::GroupStart`] records themselves are left out.
    pub records: Vec<(u64, Record)>,
    /// Where the last complete group ends: where the next group should be written.
    pub valid_len: u64,
    /// How many bytes after `valid_len` belong to an interrupted write and must be cut off.
    pub torn_tail: u64,
    /// The number of the last complete group, if there is one.
    pub last_group: Option<u64>,
}

/// Appends group number `seq` of file number `file` to `out`: a [`Record::GroupStart`], then
/// the records of `persist` as [`encode_persist`] writes them. Written with one write and made
/// durable with one sync, a group is what [`scan_groups`] recovers whole or not at all. On
/// error `out` is left as it was.
pub fn encode_group(
    file: u64,
    seq: u64,
    persist: &Persist,
    out: &mut Vec<u8>,
) -> Result<(), RecordError> {
    let start = out.len();
    encode_persist(persist, out)?;
    let len = (out.len() - start) as u64;
    let mut head = Vec::with_capacity(HEADER_LEN + 24);
    if let Err(e) = encode_frame(
        &RecordRef::GroupStart { file, seq, len },
        MAX_RECORD_LEN,
        &mut head,
    ) {
        out.truncate(start);
        return Err(e);
    }
    out.splice(start..start, head);
    Ok(())
}

/// Reads file number `file`, written as groups ([`encode_group`]) numbered 0, 1, 2, ..., and
/// returns the records of its complete groups. A group is complete when all the bytes its
/// start announces are present and every record in them is intact.
///
/// A file's groups are written one after the other, each only once the one before is durable,
/// so a crash can damage **only the last group**, and any way: cut short, or with a region
/// inside it (a page) that reads as zeros, garbage, or stale bytes of another file, while its
/// end is intact. Therefore:
///
/// - damage inside a group that extends to the end of the buffer, or a group cut short, is a
///   torn write: the group is cut off ([`GroupScan::torn_tail`]);
/// - damage inside a group followed by more bytes is [`RecordError::Corrupt`]: a later write
///   exists, so the damaged group had been made durable;
/// - so is any damage after which an intact start of a later group of this file appears
///   (looked for byte by byte, since the damage hides record boundaries);
/// - a group start of another file or out of order, a record outside any group and one
///   crossing its group's end count as damage like any other (stale or misplaced bytes).
///
/// Checksums cannot tell a crash's damage from later decay of the same bytes: damage inside
/// the last group is always taken for a torn write. An application command that embeds the
/// exact start of a later group of this very file can make a torn write look like corruption
/// (recovery then refuses, it never loses data). Linear in the buffer's length; never panics,
/// whatever the input.
pub fn scan_groups(bytes: &[u8], file: u64) -> Result<GroupScan, RecordError> {
    let mut found = GroupScan::default();
    let mut pos = 0usize;
    // The group being read: where it ends, its number.
    let mut open: Option<(usize, u64)> = None;
    let mut pending: Vec<(u64, Record)> = Vec::new();
    loop {
        if let Some((_, seq)) = open.filter(|&(end, _)| end == pos) {
            found.records.append(&mut pending);
            found.valid_len = pos as u64;
            found.last_group = Some(seq);
            open = None;
        }
        let expected = found.last_group.map_or(0, |last| last.saturating_add(1));
        let damage = match read_at(bytes, pos) {
            At::Record(Record::GroupStart { file: f, seq, len }, next) => {
                if f != file {
                    "a group of another file"
                } else if open.is_some() {
                    "a group starts inside another one"
                } else if seq != expected {
                    "groups out of order"
                } else {
                    let end = usize::try_from(len)
                        .ok()
                        .and_then(|len| next.checked_add(len))
                        .unwrap_or(usize::MAX);
                    open = Some((end, seq));
                    pos = next;
                    continue;
                }
            }
            At::Record(record, next) => match open {
                Some((end, _)) if next <= end => {
                    pending.push((pos as u64, record));
                    pos = next;
                    continue;
                }
                Some(_) => "a record crosses the end of its group",
                None => "a record outside any group",
            },
            At::End => match open {
                Some((end, _)) if end < bytes.len() => "damaged group followed by more data",
                Some(_) => "a group cut short",
                None => break,
            },
            At::Damaged(reason) => reason,
        };
        // A later group is numbered above the damaged one (the open one, or else the one
        // expected here).
        let later = open.map_or(expected, |(_, seq)| seq.saturating_add(1));
        let followed = open.is_some_and(|(end, _)| end < bytes.len())
            || later_group_start(bytes, pos, file, later);
        if followed {
            return Err(corrupt(pos, damage));
        }
        break;
    }
    found.torn_tail = bytes.len() as u64 - found.valid_len;
    Ok(found)
}

/// The largest payload a [`Record::GroupStart`] can have: its tag and three varints.
const MAX_GROUP_START_LEN: usize = 1 + 3 * 10;

/// Whether an intact [`Record::GroupStart`] of file `file` numbered `first` or above starts
/// anywhere at or after `from`. Only headers announcing a payload that small are hashed, so
/// the search is linear.
fn later_group_start(bytes: &[u8], from: usize, file: u64, first: u64) -> bool {
    (from..bytes.len()).any(|pos| {
        let Some(header) = Header::read(&bytes[pos..]) else {
            return false;
        };
        if header.len() > MAX_GROUP_START_LEN || !header.len_ok() {
            return false;
        }
        let payload = bytes[pos + HEADER_LEN..].get(..header.len());
        payload.is_some_and(|payload| {
            crc32fast::hash(payload) == header.payload_crc
                && matches!(
                    decode_payload::<Record>(payload),
                    Ok(Record::GroupStart { file: f, seq, .. }) if f == file && seq >= first
                )
        })
    })
}

/// Applies one record to `state`, with the semantics of [`Persist::apply_to`] for the part of a
/// persist the record stands for.
///
/// - [`Record::HardState`] sets the hard state; [`Record::Truncate`] removes the entries from
///   `from` on (all of them when `from` is at or below the log base).
/// - [`Record::Entries`] places the entries at `first_index`: entries at or below the log base
///   are skipped, the log is cut to `first_index - 1` and the rest appended. With
///   `first_index == state.last_index() + 1`, as every persist has, that is exactly
///   `apply_to`'s append. With a gap (`first_index` beyond `last_index() + 1`) the entries are
///   appended as they are, like `apply_to` does; a reader that must detect gaps checks
///   `state.last_index()` before replaying.
/// - [`Record::Snapshot`] does nothing when `state.snapshot` already has this meta (the caller
///   loaded the snapshot file before replaying the log that starts with its marker).
///   Otherwise it drops the entries the snapshot covers, as `apply_to` does, and sets
///   `state.snapshot` to this meta with **empty data**: the snapshot's bytes are not in the
///   log, and the caller must fill them in from the snapshot file before using the state.
pub fn replay(state: &mut DurableState, record: Record) {
    match record {
        Record::HardState(hs) => state.hard_state = hs,
        Record::Truncate { from } => {
            let keep = from.saturating_sub(state.log_base().saturating_add(1));
            state
                .log
                .truncate(usize::try_from(keep).unwrap_or(usize::MAX));
        }
        Record::Entries {
            first_index,
            entries,
        } => {
            let first_free = state.log_base().saturating_add(1);
            let skip = first_free.saturating_sub(first_index);
            let keep = first_index.saturating_sub(first_free);
            state
                .log
                .truncate(usize::try_from(keep).unwrap_or(usize::MAX));
            let skip = usize::try_from(skip).unwrap_or(usize::MAX);
            state.log.extend(entries.into_iter().skip(skip));
        }
        Record::GroupStart { .. } => {}
        Record::Snapshot(meta) => {
            if state.snapshot.as_ref().map(|s| s.meta) == Some(meta) {
                return;
            }
            let covered = meta.last_index.saturating_sub(state.log_base());
            let covered = usize::try_from(covered).unwrap_or(usize::MAX);
            state.log.drain(..covered.min(state.log.len()));
            state.snapshot = Some(Snapshot {
                meta,
                membership: Membership::default(),
                data: Arc::from(&[][..]),
            });
        }
    }
}

/// Appends the content of a snapshot file holding `snapshot` to `out`: one frame with the
/// record header whose payload is the postcard encoding of the [`Snapshot`].
///
/// Fails with [`RecordError::TooLarge`] when the encoding exceeds `u32::MAX` bytes, and with
/// [`RecordError::Unencodable`] when serialization fails; on error `out` is left as it was.
pub fn encode_snapshot(snapshot: &Snapshot, out: &mut Vec<u8>) -> Result<(), RecordError> {
    encode_frame(snapshot, usize::MAX, out)
}

/// Decodes the whole content of a snapshot file written by [`encode_snapshot`].
///
/// Any damage (a checksum mismatch, a length that does not match the size of `bytes`, a
/// payload that is not exactly one [`Snapshot`]) is [`RecordError::Corrupt`] at offset 0:
/// the snapshot file is replaced atomically, never appended to, so it has no torn tail.
pub fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot, RecordError> {
    let Some(header) = Header::read(bytes) else {
        return Err(corrupt(0, "snapshot file shorter than a header"));
    };
    if !header.len_ok() {
        return Err(corrupt(0, "length checksum mismatch"));
    }
    let payload = &bytes[HEADER_LEN..];
    if header.len() != payload.len() {
        return Err(corrupt(0, "length does not match the snapshot file's size"));
    }
    if crc32fast::hash(payload) != header.payload_crc {
        return Err(corrupt(0, "payload checksum mismatch"));
    }
    decode_payload(payload).map_err(|reason| corrupt(0, reason))
}

#[cfg(test)]
mod tests;
