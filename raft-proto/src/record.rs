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
        /// The group's number; groups in one file have increasing numbers.
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
            Record::GroupStart { seq, len } => Self::GroupStart {
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

/// Appends one group to `out`: a [`Record::GroupStart`] numbered `seq`, then the records of
/// `persist` as [`encode_persist`] writes them. Written with one write and made durable with
/// one sync, a group is what [`scan_groups`] recovers whole or not at all. On error `out` is
/// left as it was.
pub fn encode_group(seq: u64, persist: &Persist, out: &mut Vec<u8>) -> Result<(), RecordError> {
    let start = out.len();
    encode_persist(persist, out)?;
    let len = (out.len() - start) as u64;
    let mut head = Vec::with_capacity(HEADER_LEN + 24);
    if let Err(e) = encode_frame(
        &RecordRef::GroupStart { seq, len },
        MAX_RECORD_LEN,
        &mut head,
    ) {
        out.truncate(start);
        return Err(e);
    }
    out.splice(start..start, head);
    Ok(())
}

/// Reads a log file written as groups ([`encode_group`]) and returns the records of its
/// complete groups. A group is complete when all the bytes its start announces are present
/// and every record in them is intact.
///
/// A file's groups are written one after the other, each only once the one before is durable,
/// so a crash can damage **only the last group**, and any way: cut short, or with a region
/// inside it (a page) that reads as zeros or garbage while its end is intact. Therefore:
///
/// - damage inside a group that extends to the end of the buffer, or a group cut short, is a
///   torn write: the group is cut off ([`GroupScan::torn_tail`]);
/// - damage inside a group followed by more bytes is [`RecordError::Corrupt`]: a later write
///   exists, so the damaged group had been made durable;
/// - damage where a group should start is a torn write unless an intact
///   [`Record::GroupStart`] with a higher number appears anywhere after it (then it is
///   corruption, at the damaged offset);
/// - a record outside any group, one crossing its group's end, or groups out of order are
///   corruption.
///
/// Checksums cannot tell a crash's damage from later decay of the same bytes: damage inside
/// the last group is always taken for a torn write. Never panics, whatever the input.
pub fn scan_groups(bytes: &[u8]) -> Result<GroupScan, RecordError> {
    let mut found = GroupScan::default();
    let mut pos = 0usize;
    // The group being read: where it starts, where it ends, its number, its records.
    let mut open: Option<(usize, usize, u64)> = None;
    let mut pending: Vec<(u64, Record)> = Vec::new();
    loop {
        if let Some((_, _, seq)) = open.filter(|&(_, end, _)| end == pos) {
            found.records.append(&mut pending);
            found.valid_len = pos as u64;
            found.last_group = Some(seq);
            open = None;
        }
        let damage = match read_at(bytes, pos) {
            At::Record(Record::GroupStart { seq, len }, next) => {
                if open.is_some() {
                    "a group starts inside another one"
                } else if found.last_group.is_some_and(|last| seq <= last) {
                    "groups out of order"
                } else {
                    let end = usize::try_from(len)
                        .ok()
                        .and_then(|len| next.checked_add(len))
                        .unwrap_or(usize::MAX);
                    open = Some((pos, end, seq));
                    pos = next;
                    continue;
                }
            }
            At::Record(record, next) => match open {
                Some((_, end, _)) if next <= end => {
                    pending.push((pos as u64, record));
                    pos = next;
                    continue;
                }
                Some(_) => "a record crosses the end of its group",
                None => "a record outside any group",
            },
            At::End => match open {
                // A torn write, unless the group was followed by more bytes.
                Some((_, end, _)) if end < bytes.len() => "damaged group followed by more data",
                _ => break,
            },
            At::Damaged(reason) => reason,
        };
        let followed = match open {
            Some((_, end, _)) => end < bytes.len(),
            None => later_group_start(bytes, pos + 1, found.last_group),
        };
        if followed {
            return Err(corrupt(pos, damage));
        }
        break;
    }
    found.torn_tail = bytes.len() as u64 - found.valid_len;
    Ok(found)
}

/// Whether an intact [`Record::GroupStart`] numbered above `after` starts anywhere at or
/// after `from` (looked for byte by byte: the damage before it hides record boundaries).
fn later_group_start(bytes: &[u8], from: usize, after: Option<u64>) -> bool {
    (from..bytes.len()).any(|pos| {
        let Some(header) = Header::read(&bytes[pos..]) else {
            return false;
        };
        if !header.len_ok() {
            return false;
        }
        let payload = bytes[pos + HEADER_LEN..].get(..header.len());
        payload.is_some_and(|payload| {
            crc32fast::hash(payload) == header.payload_crc
                && matches!(
                    decode_payload::<Record>(payload),
                    Ok(Record::GroupStart { seq, .. }) if after.is_none_or(|a| seq > a)
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
mod tests {
    use alloc::vec;
    use alloc::vec::Vec;

    use super::*;
    use crate::types::EntryKind;

    use crate::rng::Rng;

    /// Up to `max_len - 1` random bytes.
    fn blob(rng: &mut Rng, max_len: u64) -> Vec<u8> {
        let len = rng.below(max_len) as usize;
        rng.bytes(len)
    }

    fn entry(term: u64, data: &[u8]) -> Entry {
        Entry::command(term, data.to_vec())
    }

    fn sample_records() -> Vec<Record> {
        vec![
            Record::HardState(HardState {
                term: 3,
                voted_for: Some(2),
            }),
            Record::Entries {
                first_index: 1,
                entries: vec![entry(1, b"one"), Entry::noop(2), entry(3, &[0xff; 40])],
            },
            Record::Truncate { from: 2 },
            Record::Snapshot(SnapshotMeta {
                last_index: 1,
                last_term: 1,
            }),
            Record::Entries {
                first_index: u64::MAX - 1,
                entries: vec![entry(u64::MAX, b"")],
            },
            Record::HardState(HardState {
                term: u64::MAX,
                voted_for: None,
            }),
        ]
    }

    /// A frame with correct checksums around any payload.
    fn raw_frame(payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_le_bytes();
        let mut frame = Vec::new();
        frame.extend_from_slice(&len);
        frame.extend_from_slice(&crc32fast::hash(&len).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    /// The encoded records and the offset of each, plus the end.
    fn encode_all(records: &[Record]) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let mut offsets = Vec::new();
        for record in records {
            offsets.push(out.len());
            encode_record(record, &mut out).unwrap();
        }
        offsets.push(out.len());
        (out, offsets)
    }

    #[test]
    fn a_tail_of_zeros_is_torn_not_corrupt() {
        let mut bytes = Vec::new();
        encode_record(&Record::Truncate { from: 3 }, &mut bytes).unwrap();
        let good = bytes.len() as u64;
        bytes.extend(core::iter::repeat_n(0u8, 4096));
        let scan = scan(&bytes).unwrap();
        assert_eq!(scan.records.len(), 1);
        assert_eq!((scan.valid_len, scan.torn_tail), (good, 4096));
    }

    #[test]
    fn round_trip() {
        let records = sample_records();
        let (bytes, offsets) = encode_all(&records);
        let scan = scan(&bytes).unwrap();
        let expected: Vec<(u64, Record)> = offsets
            .iter()
            .map(|&o| o as u64)
            .zip(records.iter().cloned())
            .collect();
        assert_eq!(scan.records, expected);
        assert_eq!(scan.valid_len, bytes.len() as u64);
        assert_eq!(scan.torn_tail, 0);
        assert_eq!(super::scan(&[]).unwrap(), Scan::default());
    }

    #[test]
    fn layout_is_length_crcs_then_postcard() {
        let record = Record::Truncate { from: 5 };
        let mut out = vec![0xaa]; // Appends after what is there.
        encode_record(&record, &mut out).unwrap();
        let payload = postcard::to_allocvec(&record).unwrap();
        assert_eq!(out[0], 0xaa);
        let frame = &out[1..];
        assert_eq!(frame.len(), HEADER_LEN + payload.len());
        let len = (payload.len() as u32).to_le_bytes();
        assert_eq!(frame[..4], len);
        assert_eq!(frame[4..8], crc32fast::hash(&len).to_le_bytes());
        assert_eq!(frame[8..12], crc32fast::hash(&payload).to_le_bytes());
        assert_eq!(frame[12..], payload[..]);
    }

    #[test]
    fn torn_tail_at_every_cut() {
        let records = sample_records();
        let (bytes, offsets) = encode_all(&records);
        for cut in 0..=bytes.len() {
            let scan = scan(&bytes[..cut]).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
            // The records that end at or before the cut survive, nothing else.
            let whole = offsets[1..].iter().take_while(|&&end| end <= cut).count();
            assert_eq!(scan.records.len(), whole, "cut {cut}");
            for (i, (offset, record)) in scan.records.iter().enumerate() {
                assert_eq!(*offset, offsets[i] as u64);
                assert_eq!(record, &records[i]);
            }
            assert_eq!(scan.valid_len, offsets[whole] as u64, "cut {cut}");
            assert_eq!(scan.torn_tail, (cut - offsets[whole]) as u64, "cut {cut}");
        }
    }

    #[test]
    fn bit_flips_are_corruption_except_in_the_last_record() {
        let records = sample_records();
        let (bytes, offsets) = encode_all(&records);
        let last = records.len() - 1;
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            let hit = offsets[1..].iter().position(|&end| bit / 8 < end).unwrap();
            let result = scan(&damaged);
            if hit == last {
                let scan = result.unwrap_or_else(|e| panic!("bit {bit}: {e}"));
                assert_eq!(scan.records.len(), last, "bit {bit}");
                assert_eq!(scan.valid_len, offsets[last] as u64);
                assert_eq!(scan.torn_tail, (bytes.len() - offsets[last]) as u64);
            } else {
                match result {
                    Err(RecordError::Corrupt { offset, .. }) => {
                        assert_eq!(offset, offsets[hit] as u64, "bit {bit}")
                    }
                    other => panic!("bit {bit} in record {hit}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn a_damaged_header_at_the_very_end_is_torn() {
        let (mut bytes, offsets) = encode_all(&sample_records()[..2]);
        // A last record cut right after its header, with the header damaged.
        bytes.truncate(offsets[1] + HEADER_LEN);
        bytes[offsets[1]] ^= 1;
        let scan = scan(&bytes).unwrap();
        assert_eq!(scan.records.len(), 1);
        assert_eq!(scan.torn_tail, HEADER_LEN as u64);
    }

    #[test]
    fn an_oversized_length_is_corruption() {
        let len = ((MAX_RECORD_LEN + 1) as u32).to_le_bytes();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&len);
        bytes.extend_from_slice(&crc32fast::hash(&len).to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(&[0; 100]);
        assert_eq!(
            scan(&bytes),
            Err(RecordError::Corrupt {
                offset: 0,
                reason: "record length above the maximum"
            })
        );
    }

    #[test]
    fn a_valid_frame_that_does_not_decode_is_corruption_unless_last() {
        let mut bytes = raw_frame(&[0xff; 3]); // Not a Record.
        let garbage_len = bytes.len();
        encode_record(&Record::Truncate { from: 1 }, &mut bytes).unwrap();
        assert!(matches!(
            scan(&bytes),
            Err(RecordError::Corrupt { offset: 0, .. })
        ));
        let scan = scan(&bytes[..garbage_len]).unwrap();
        assert!(scan.records.is_empty());
        assert_eq!(scan.torn_tail, garbage_len as u64);
    }

    #[test]
    fn random_garbage_never_panics() {
        let mut rng = Rng::new(0x5eed_0f4e_c0de);
        let (valid, _) = encode_all(&sample_records());
        for round in 0..3000 {
            let bytes = match round % 3 {
                // Pure noise.
                0 => {
                    let len = rng.below(200) as usize;
                    rng.bytes(len)
                }
                // Valid records with a few random bytes changed, cut anywhere.
                1 => {
                    let mut bytes = valid.clone();
                    for _ in 0..=rng.below(4) {
                        let at = rng.below(bytes.len() as u64) as usize;
                        bytes[at] = rng.next_u64() as u8;
                    }
                    bytes.truncate(rng.below(bytes.len() as u64 + 1) as usize);
                    bytes
                }
                // Frames with correct checksums around random payloads: exercises the decoder.
                _ => {
                    let mut bytes = Vec::new();
                    for _ in 0..=rng.below(3) {
                        let len = rng.below(40) as usize;
                        bytes.extend_from_slice(&raw_frame(&rng.bytes(len)));
                    }
                    bytes
                }
            };
            match scan(&bytes) {
                Ok(scan) => {
                    assert_eq!(scan.valid_len + scan.torn_tail, bytes.len() as u64);
                    let mut previous = None;
                    for (offset, _) in &scan.records {
                        assert!(previous.is_none_or(|p| p < *offset));
                        assert!(*offset < scan.valid_len);
                        previous = Some(*offset);
                    }
                }
                Err(RecordError::Corrupt { offset, .. }) => {
                    assert!(offset < bytes.len() as u64)
                }
                Err(e) => panic!("unexpected error {e}"),
            }
            let _ = decode_snapshot(&bytes);
        }
    }

    /// A random persist that keeps to the contract (`first_index` follows the log).
    fn random_persist(rng: &mut Rng, state: &DurableState, seq: u64) -> Persist {
        let mut last = state.last_index();
        let mut base = state.log_base();
        let truncate_from = (rng.below(4) == 0).then(|| {
            let from = base + 1 + rng.below(last - base + 1);
            last = from - 1;
            from
        });
        let snapshot = (rng.below(6) == 0).then(|| {
            let last_index = base + rng.below(last - base + 3);
            base = last_index;
            last = last.max(last_index);
            Snapshot {
                meta: SnapshotMeta {
                    last_index,
                    last_term: rng.below(5),
                },
                data: blob(rng, 20).into(),
            }
        });
        let entries = (0..rng.below(5))
            .map(|_| Entry {
                term: rng.below(9),
                kind: if rng.below(5) == 0 {
                    EntryKind::Noop
                } else {
                    EntryKind::Command
                },
                data: blob(rng, 30).into(),
            })
            .collect();
        let hard_state = (rng.below(3) == 0).then(|| HardState {
            term: rng.below(100),
            voted_for: (rng.below(2) == 0).then(|| rng.below(5)),
        });
        Persist {
            seq,
            truncate_from,
            snapshot,
            first_index: last + 1,
            entries,
            hard_state,
        }
    }

    /// Encoding persists, scanning and replaying gives what `apply_to` gives, with the caller
    /// filling in each snapshot's data from "the snapshot file".
    fn replay_matches_apply_to(max: usize) {
        let mut rng = Rng::new(0xdecade + max as u64);
        let mut reference = DurableState::default();
        let mut replayed = DurableState::default();
        for seq in 1..400 {
            let persist = random_persist(&mut rng, &reference, seq);
            let meta_before = replayed.snapshot.as_ref().map(|s| s.meta);
            persist.apply_to(&mut reference);
            let mut bytes = Vec::new();
            encode_persist_limited(&persist, max, &mut bytes).unwrap();
            let scan = scan(&bytes).unwrap();
            assert_eq!(scan.valid_len, bytes.len() as u64);
            for (_, record) in scan.records {
                replay(&mut replayed, record);
            }
            if let Some(snapshot) = &persist.snapshot {
                let placeholder = replayed.snapshot.replace(snapshot.clone()).unwrap();
                assert_eq!(placeholder.meta, snapshot.meta);
                if meta_before != Some(snapshot.meta) {
                    assert!(placeholder.data.is_empty());
                }
            }
            assert_eq!(replayed, reference, "after persist {seq}");
        }
    }

    #[test]
    fn replay_matches_apply_to_with_the_real_limit() {
        replay_matches_apply_to(MAX_RECORD_LEN);
    }

    #[test]
    fn replay_matches_apply_to_with_entries_split_over_records() {
        replay_matches_apply_to(60);
    }

    #[test]
    fn encode_persist_order_and_skipped_parts() {
        let hs = HardState {
            term: 4,
            voted_for: None,
        };
        let meta = SnapshotMeta {
            last_index: 3,
            last_term: 2,
        };
        let mut persist = Persist {
            seq: 1,
            truncate_from: Some(5),
            snapshot: Some(Snapshot {
                meta,
                data: vec![1, 2].into(),
            }),
            first_index: 5,
            entries: vec![entry(4, b"x"), entry(4, b"y")],
            hard_state: Some(hs),
        };
        let mut bytes = Vec::new();
        encode_persist(&persist, &mut bytes).unwrap();
        let records: Vec<Record> = scan(&bytes)
            .unwrap()
            .records
            .into_iter()
            .map(|r| r.1)
            .collect();
        assert_eq!(
            records,
            vec![
                Record::Truncate { from: 5 },
                Record::Snapshot(meta),
                Record::Entries {
                    first_index: 5,
                    entries: persist.entries.clone()
                },
                Record::HardState(hs),
            ]
        );

        persist.truncate_from = None;
        persist.snapshot = None;
        persist.entries.clear();
        bytes.clear();
        encode_persist(&persist, &mut bytes).unwrap();
        let records: Vec<Record> = scan(&bytes)
            .unwrap()
            .records
            .into_iter()
            .map(|r| r.1)
            .collect();
        assert_eq!(records, vec![Record::HardState(hs)]);

        persist.hard_state = None;
        bytes.clear();
        encode_persist(&persist, &mut bytes).unwrap();
        assert!(bytes.is_empty());
    }

    #[test]
    fn entries_are_split_to_stay_under_the_limit() {
        let entries: Vec<Entry> = (0..10).map(|i| entry(1, &[i; 20])).collect();
        let persist = Persist {
            seq: 1,
            truncate_from: None,
            snapshot: None,
            first_index: 7,
            entries: entries.clone(),
            hard_state: None,
        };
        let mut bytes = Vec::new();
        encode_persist_limited(&persist, 120, &mut bytes).unwrap();
        let mut next = 7;
        let mut seen = Vec::new();
        let records = scan(&bytes).unwrap().records;
        assert!(records.len() > 2);
        for (_, record) in records {
            let Record::Entries {
                first_index,
                entries,
            } = record
            else {
                panic!("not entries");
            };
            assert_eq!(first_index, next);
            next += entries.len() as u64;
            seen.extend(entries);
        }
        assert_eq!(seen, entries);

        // A single entry too big for a record fails and writes nothing.
        let mut big = persist.clone();
        big.entries = vec![entry(1, &[0; 200])];
        let mut out = vec![9];
        assert!(matches!(
            encode_persist_limited(&big, 120, &mut out),
            Err(RecordError::TooLarge { max: 120, .. })
        ));
        assert_eq!(out, vec![9]);
    }

    #[test]
    fn replay_of_a_snapshot_marker_the_state_already_has_is_a_no_op() {
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                last_index: 4,
                last_term: 2,
            },
            data: vec![7].into(),
        };
        let mut state = DurableState {
            snapshot: Some(snapshot.clone()),
            log: vec![entry(2, b"5")],
            ..DurableState::default()
        };
        let before = state.clone();
        replay(&mut state, Record::Snapshot(snapshot.meta));
        assert_eq!(state, before);
    }

    #[test]
    fn snapshot_file_round_trip_and_damage() {
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                last_index: 9,
                last_term: 3,
            },
            data: (0..50u8).collect::<Vec<u8>>().into(),
        };
        let mut bytes = Vec::new();
        encode_snapshot(&snapshot, &mut bytes).unwrap();
        assert_eq!(decode_snapshot(&bytes), Ok(snapshot));
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                matches!(
                    decode_snapshot(&damaged),
                    Err(RecordError::Corrupt { offset: 0, .. })
                ),
                "bit {bit}"
            );
        }
        for cut in 0..bytes.len() {
            assert!(decode_snapshot(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_snapshot(&longer).is_err());
    }

    #[test]
    fn errors_display() {
        let e = RecordError::Corrupt {
            offset: 42,
            reason: "payload checksum mismatch",
        };
        assert_eq!(
            alloc::format!("{e}"),
            "corrupt record at byte offset 42: payload checksum mismatch"
        );
        let e = RecordError::TooLarge { len: 10, max: 5 };
        assert!(alloc::format!("{e}").contains("10 bytes"));
    }

    /// Three groups, the last one spanning several pages; the start offset of each group and
    /// the end.
    fn three_groups() -> (Vec<u8>, Vec<usize>, Vec<Persist>) {
        let persists: Vec<Persist> = (1..=3u64)
            .map(|g| Persist {
                seq: g,
                truncate_from: None,
                snapshot: None,
                first_index: 1 + (g - 1) * 40,
                entries: (0..40)
                    .map(|k| entry(g, &[k as u8; 300][..if g == 3 { 300 } else { 5 }]))
                    .collect(),
                hard_state: Some(HardState {
                    term: g,
                    voted_for: Some(g),
                }),
            })
            .collect();
        let mut bytes = Vec::new();
        let mut starts = Vec::new();
        for (k, p) in persists.iter().enumerate() {
            starts.push(bytes.len());
            encode_group(k as u64, p, &mut bytes).unwrap();
        }
        starts.push(bytes.len());
        (bytes, starts, persists)
    }

    /// The records of the first `groups` groups, as `scan_groups` must return them.
    fn records_of(persists: &[Persist], groups: usize) -> Vec<Record> {
        let mut expected = Vec::new();
        for p in &persists[..groups] {
            let mut bytes = Vec::new();
            encode_persist(p, &mut bytes).unwrap();
            expected.extend(scan(&bytes).unwrap().records.into_iter().map(|(_, r)| r));
        }
        expected
    }

    fn records(found: &GroupScan) -> Vec<Record> {
        found.records.iter().map(|(_, r)| r.clone()).collect()
    }

    #[test]
    fn groups_round_trip_and_are_cut_whole() {
        let (bytes, starts, persists) = three_groups();
        assert!(
            starts[3] - starts[2] > 2 * 4096,
            "the last group spans pages"
        );
        let found = scan_groups(&bytes).unwrap();
        assert_eq!(records(&found), records_of(&persists, 3));
        assert_eq!((found.valid_len, found.torn_tail), (bytes.len() as u64, 0));
        assert_eq!(found.last_group, Some(2));
        assert_eq!(scan_groups(&[]).unwrap(), GroupScan::default());
        for cut in 0..bytes.len() {
            let found = scan_groups(&bytes[..cut]).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
            let whole = starts[1..].iter().take_while(|&&end| end <= cut).count();
            assert_eq!(records(&found), records_of(&persists, whole), "cut {cut}");
            assert_eq!(found.valid_len, starts[whole] as u64, "cut {cut}");
            assert_eq!(found.torn_tail, (cut - starts[whole]) as u64, "cut {cut}");
        }
    }

    #[test]
    fn a_zeroed_page_inside_the_last_group_is_a_torn_write() {
        let (bytes, starts, persists) = three_groups();
        // Every page-aligned 4 KiB region that lies inside the last group, its end intact.
        let mut page = starts[2].next_multiple_of(4096);
        let mut pages = 0;
        while page + 4096 < bytes.len() {
            let mut damaged = bytes.clone();
            damaged[page..page + 4096].fill(0);
            let found = scan_groups(&damaged).unwrap_or_else(|e| panic!("page {page}: {e}"));
            assert_eq!(records(&found), records_of(&persists, 2), "page {page}");
            assert_eq!(found.valid_len, starts[2] as u64);
            assert_eq!(found.torn_tail, (bytes.len() - starts[2]) as u64);
            page += 4096;
            pages += 1;
        }
        assert!(pages >= 2);
        // The same page of zeros covering the last group's start.
        let mut damaged = bytes.clone();
        damaged[starts[2]..starts[2] + 64].fill(0);
        let found = scan_groups(&damaged).unwrap();
        assert_eq!(found.valid_len, starts[2] as u64);
    }

    #[test]
    fn damage_followed_by_a_later_group_is_corruption() {
        let (bytes, starts, _) = three_groups();
        for (from, to) in [
            (starts[1] + 40, starts[1] + 90),
            (starts[0] + 3, starts[0] + 5),
        ] {
            let mut damaged = bytes.clone();
            damaged[from..to].fill(0);
            assert!(
                matches!(scan_groups(&damaged), Err(RecordError::Corrupt { .. })),
                "zeros at {from}..{to}"
            );
        }
        // A damaged group start with an intact later group.
        let mut damaged = bytes.clone();
        damaged[starts[1] + 2] ^= 0x40;
        assert_eq!(
            scan_groups(&damaged),
            Err(RecordError::Corrupt {
                offset: starts[1] as u64,
                reason: "length checksum mismatch"
            })
        );
    }

    #[test]
    fn bit_flips_are_corruption_except_in_the_last_group() {
        let (bytes, starts, persists) = three_groups();
        // Every bit of the first two groups, and a sample of the (large) last one.
        let bits = (0..starts[2] * 8).chain((starts[2] * 8..bytes.len() * 8).step_by(61));
        for bit in bits {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            let result = scan_groups(&damaged);
            if bit / 8 >= starts[2] {
                let found = result.unwrap_or_else(|e| panic!("bit {bit}: {e}"));
                assert_eq!(records(&found), records_of(&persists, 2), "bit {bit}");
            } else {
                assert!(
                    matches!(result, Err(RecordError::Corrupt { .. })),
                    "bit {bit}: {result:?}"
                );
            }
        }
    }

    #[test]
    fn records_outside_groups_and_groups_out_of_order_are_corruption() {
        let (bytes, _, _) = three_groups();
        let mut outside = Vec::new();
        encode_record(&Record::Truncate { from: 1 }, &mut outside).unwrap();
        outside.extend_from_slice(&bytes);
        assert!(matches!(
            scan_groups(&outside),
            Err(RecordError::Corrupt { offset: 0, .. })
        ));
        let persist = Persist {
            seq: 1,
            truncate_from: None,
            snapshot: None,
            first_index: 1,
            entries: Vec::new(),
            hard_state: Some(HardState::default()),
        };
        let mut twice = Vec::new();
        encode_group(5, &persist, &mut twice).unwrap();
        let first = twice.len();
        encode_group(5, &persist, &mut twice).unwrap();
        encode_group(6, &persist, &mut twice).unwrap();
        assert_eq!(
            scan_groups(&twice),
            Err(RecordError::Corrupt {
                offset: first as u64,
                reason: "groups out of order"
            })
        );
    }

    #[test]
    fn random_bytes_into_scan_groups_never_panic() {
        let mut rng = Rng::new(0x6e0_0b5);
        let (valid, _, _) = three_groups();
        for round in 0..2000 {
            let mut bytes = if round % 2 == 0 {
                let len = rng.below(300) as usize;
                rng.bytes(len)
            } else {
                valid[..rng.below(valid.len() as u64) as usize].to_vec()
            };
            for _ in 0..rng.below(4) {
                if !bytes.is_empty() {
                    let at = rng.below(bytes.len() as u64) as usize;
                    bytes[at] ^= rng.below(255) as u8 + 1;
                }
            }
            if let Ok(found) = scan_groups(&bytes) {
                assert!(found.valid_len + found.torn_tail == bytes.len() as u64);
            }
        }
    }
}
