//! Storage recovery on arbitrary bytes, and on valid logs with arbitrary damage: a typed
//! error or records, never a panic; every record returned passes its checksum; and when
//! recovery succeeds, no record written entirely before the first damaged byte is lost.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use raft_proto::record::{encode_record, replay, scan, Record, HEADER_LEN};
use raft_proto::{DurableState, Entry, HardState, SnapshotMeta};

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

#[derive(Arbitrary, Debug)]
enum Input {
    Raw(Vec<u8>),
    Damaged {
        records: Vec<FuzzRecord>,
        flips: Vec<(u16, u8)>,
        cut: Option<u16>,
    },
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
        let mut first_damage = bytes.len();
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
