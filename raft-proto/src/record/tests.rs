//! Tests of the record format: layout, torn tails and corruption, groups, replay.

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
            membership: crate::membership::Membership::new([1, 2, 3]),
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
            membership: crate::membership::Membership::new([1, 2, 3]),
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
        membership: crate::membership::Membership::new([1, 2, 3]),
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
        membership: crate::membership::Membership::new([1, 2, 3]),
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

/// The file number the group tests write and read.
const FILE: u64 = 7;

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
        encode_group(FILE, k as u64, p, &mut bytes).unwrap();
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
    let found = scan_groups(&bytes, FILE).unwrap();
    assert_eq!(records(&found), records_of(&persists, 3));
    assert_eq!((found.valid_len, found.torn_tail), (bytes.len() as u64, 0));
    assert_eq!(found.last_group, Some(2));
    assert_eq!(scan_groups(&[], FILE).unwrap(), GroupScan::default());
    for cut in 0..bytes.len() {
        let found = scan_groups(&bytes[..cut], FILE).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
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
        let found = scan_groups(&damaged, FILE).unwrap_or_else(|e| panic!("page {page}: {e}"));
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
    let found = scan_groups(&damaged, FILE).unwrap();
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
            matches!(
                scan_groups(&damaged, FILE),
                Err(RecordError::Corrupt { .. })
            ),
            "zeros at {from}..{to}"
        );
    }
    // A damaged group start with an intact later group.
    let mut damaged = bytes.clone();
    damaged[starts[1] + 2] ^= 0x40;
    assert_eq!(
        scan_groups(&damaged, FILE),
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
        let result = scan_groups(&damaged, FILE);
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
        scan_groups(&outside, FILE),
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
    encode_group(FILE, 0, &persist, &mut twice).unwrap();
    let first = twice.len();
    encode_group(FILE, 0, &persist, &mut twice).unwrap();
    encode_group(FILE, 1, &persist, &mut twice).unwrap();
    assert_eq!(
        scan_groups(&twice, FILE),
        Err(RecordError::Corrupt {
            offset: first as u64,
            reason: "groups out of order"
        })
    );
    // A gap in the numbers is corruption too.
    let mut gap = Vec::new();
    encode_group(FILE, 0, &persist, &mut gap).unwrap();
    let first = gap.len();
    encode_group(FILE, 2, &persist, &mut gap).unwrap();
    assert!(matches!(
        scan_groups(&gap, FILE),
        Err(RecordError::Corrupt { offset, .. }) if offset == first as u64
    ));
}

/// Bytes of another file (blocks a file system reused after a power loss) are never taken
/// for groups of this one: a segment that starts with them holds no complete group, and
/// groups of another file after damage do not make it corruption.
#[test]
fn stale_groups_of_another_file_are_damage_not_data() {
    let (bytes, starts, persists) = three_groups();
    let mut other = Vec::new();
    for (k, p) in persists.iter().enumerate() {
        encode_group(FILE + 1, k as u64 + 5, p, &mut other).unwrap();
    }
    let found = scan_groups(&other, FILE).unwrap();
    assert_eq!((found.valid_len, found.torn_tail), (0, other.len() as u64));
    // Our first two groups, then a torn third whose body reads as another file's bytes.
    let mut mixed = bytes.clone();
    let stale = mixed.len() - (starts[2] + 100);
    mixed[starts[2] + 100..].copy_from_slice(&other[..stale]);
    let found = scan_groups(&mixed, FILE).unwrap();
    assert_eq!(records(&found), records_of(&persists, 2));
    assert_eq!(found.valid_len, starts[2] as u64);
}

/// An intact group start whose length runs past later intact groups is corruption, not a
/// torn write that would drop them.
#[test]
fn a_group_overlapping_later_groups_is_corruption() {
    let (bytes, starts, persists) = three_groups();
    // Rewrite group 1's start with a length reaching past the end of the file.
    let mut head = Vec::new();
    encode_record(
        &Record::GroupStart {
            file: FILE,
            seq: 1,
            len: 1 << 40,
        },
        &mut head,
    )
    .unwrap();
    let mut damaged = bytes[..starts[1]].to_vec();
    damaged.extend_from_slice(&head);
    let mut rest = Vec::new();
    encode_persist(&persists[1], &mut rest).unwrap();
    damaged.extend_from_slice(&rest);
    encode_group(FILE, 2, &persists[2], &mut damaged).unwrap();
    assert!(matches!(
        scan_groups(&damaged, FILE),
        Err(RecordError::Corrupt { .. })
    ));
}

/// The search for a later group after damage is linear: a megabyte of bytes whose length
/// checksums pass everywhere is scanned without hashing payloads.
#[test]
fn the_search_after_damage_is_linear() {
    let (bytes, starts, _) = three_groups();
    let mut crafted = bytes[..starts[2]].to_vec();
    crafted.extend_from_slice(&[0xff; 12]);
    // A long run of one header with a valid length checksum and a huge length.
    let len = (1u32 << 20).to_le_bytes();
    let mut header = len.to_vec();
    header.extend_from_slice(&crc32fast::hash(&len).to_le_bytes());
    for _ in 0..(1 << 20) / 8 {
        crafted.extend_from_slice(&header);
    }
    let found = scan_groups(&crafted, FILE).unwrap();
    assert_eq!(found.valid_len, starts[2] as u64);
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
        if let Ok(found) = scan_groups(&bytes, FILE) {
            assert!(found.valid_len + found.torn_tail == bytes.len() as u64);
        }
    }
}
