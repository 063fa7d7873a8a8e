//! Storage recovery on arbitrary bytes, and on valid logs (of records, or of groups as the
//! file storage writes them) with arbitrary damage: a typed error or records, never a panic;
//! every record returned passes its checksum; and when recovery succeeds, no record (or
//! group) written entirely before the first damaged byte is lost, and with groups no record
//! of a group after the damage is returned.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use raft_proto::record::{encode_group, encode_record, replay, scan, scan_groups, Record, HEADER_LEN};
use raft_proto::{DurableState, Entry, HardState, Persist, SnapshotMeta};

#[derive(Arbitrary, Debug)]
enum FuzzRecord {
    HardState { term: u8, vote: Option<u8> },
    Entries { first_index: u8, terms: Vec<u8> },
    Truncate { from: u8 },
    Snapshot { last_index: u8, last_term: u8 },
}

impl FuzzRecord {
    fn record(&self) -> Record {
        match self {
            Self::HardState { term, vote } => Record::HardState(HardState {
                term: u64::from(*term),
                voted_for: vote.map(u64::from),
            }),
            Self::Entries { first_index, terms } => Record::Entries {
                first_index: u64::from(*first_index),
                entries: terms.iter().map(|&t| Entry::command(u64::from(t), vec![t; 3])).collect(),
            },
            Self::Truncate { from } => Record::Truncate { from: u64::from(*from) },
            Self::Snapshot { last_index, last_term } => Record::Snapshot(SnapshotMeta {
                last_index: u64::from(*last_index),
                last_term: u64::from(*last_term),
            }),
        }
    }
}

/// One group: a persist with an optional truncation, entries of the given terms, and a
/// hard state.
#[derive(Arbitrary, Debug)]
struct FuzzGroup {
    truncate_from: Option<u8>,
    terms: Vec<u8>,
    term: u8,
}

impl FuzzGroup {
    fn persist(&self) -> Persist {
        Persist {
            seq: 1,
            truncate_from: self.truncate_from.map(u64::from),
            snapshot: None,
            first_index: 1,
            entries: self.terms.iter().map(|&t| Entry::command(u64::from(t), vec![t; 5])).collect(),
            hard_state: Some(HardState { term: u64::from(self.term), voted_for: None }),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Input {
    Raw(Vec<u8>),
    Damaged {
        records: Vec<FuzzRecord>,
        flips: Vec<(u16, u8)>,
        cut: Option<u16>,
    },
    DamagedGroups {
        groups: Vec<FuzzGroup>,
        /// A run of bytes overwritten: where, how long, with what.
        smear: Option<(u16, u16, u8)>,
        flips: Vec<(u16, u8)>,
        cut: Option<u16>,
    },
}

/// The file number the groups are written with.
const FILE: u64 = 3;

/// Damages `bytes` as told; returns the offset of the first damaged byte.
fn damage(bytes: &mut Vec<u8>, smear: Option<(u16, u16, u8)>, flips: &[(u16, u8)], cut: Option<u16>) -> usize {
    let mut first_damage = bytes.len();
    if let Some((at, len, value)) = smear {
        let at = at as usize % bytes.len();
        let end = (at + len as usize).min(bytes.len());
        if bytes[at..end].iter().any(|&b| b != value) {
            first_damage = first_damage.min(at);
        }
        bytes[at..end].fill(value);
    }
    for (pos, xor) in flips.iter().take(8) {
        let at = *pos as usize % bytes.len();
        if *xor != 0 {
            bytes[at] ^= xor;
            first_damage = first_damage.min(at);
        }
    }
    if let Some(cut) = cut {
        let at = cut as usize % (bytes.len() + 1);
        bytes.truncate(at);
        first_damage = first_damage.min(at);
    }
    first_damage
}

/// Every record `scan` returned must pass its checksums on its own.
fn check_records(bytes: &[u8], records: &[(u64, Record)]) {
    for (offset, record) in records {
        let at = *offset as usize;
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let alone = scan(&bytes[at..at + HEADER_LEN + len]).expect("a returned record scans alone");
        assert_eq!(alone.records.len(), 1);
        assert_eq!(&alone.records[0].1, record);
        let mut state = DurableState::default();
        replay(&mut state, record.clone());
    }
}

fuzz_target!(|input: Input| match input {
    Input::Raw(bytes) => {
        if let Ok(found) = scan(&bytes) {
            check_records(&bytes, &found.records);
        }
        if let Ok(found) = scan_groups(&bytes, 0) {
            check_records(&bytes, &found.records);
            assert_eq!(found.valid_len + found.torn_tail, bytes.len() as u64);
        }
    }
    Input::DamagedGroups { groups, smear, flips, cut } => {
        let mut bytes = Vec::new();
        // Each group's extent and its records (without the group start).
        let mut written = Vec::new();
        for (seq, group) in groups.iter().take(16).enumerate() {
            let start = bytes.len();
            if encode_group(FILE, seq as u64, &group.persist(), &mut bytes).is_ok() {
                let records = scan(&bytes[start..]).expect("a fresh group scans").records;
                written.push((start, bytes.len(), records.len() - 1));
            }
        }
        if bytes.is_empty() {
            return;
        }
        let first_damage = damage(&mut bytes, smear, &flips, cut);
        if let Ok(found) = scan_groups(&bytes, FILE) {
            check_records(&bytes, &found.records);
            // Whole groups only: the intact ones before the damage, and none after it.
            let kept = written.iter().take_while(|(_, end, _)| *end as u64 <= found.valid_len);
            let expected: usize = kept.clone().map(|(_, _, n)| n).sum();
            assert_eq!(found.records.len(), expected, "records of whole groups only");
            let intact = written.iter().filter(|(_, end, _)| *end <= first_damage).count();
            assert!(kept.count() >= intact, "an intact group before the damage was lost");
        }
    }
    Input::Damaged { records, flips, cut } => {
        let mut bytes = Vec::new();
        let mut written = Vec::new();
        for r in records.iter().take(64) {
            let start = bytes.len();
            if encode_record(&r.record(), &mut bytes).is_ok() {
                written.push((start as u64, bytes.len(), r.record()));
            }
        }
        if bytes.is_empty() {
            return;
        }
        let first_damage = damage(&mut bytes, None, &flips, cut);
        if let Ok(found) = scan(&bytes) {
            check_records(&bytes, &found.records);
            for (offset, end, record) in &written {
                if *end <= first_damage {
                    assert!(
                        found.records.iter().any(|(o, r)| o == offset && r == record),
                        "an intact record at {offset} was lost"
                    );
                }
            }
        }
    }
});
