//! Length-prefixed postcard frames: the byte format nodes exchange over a stream transport.
//!
//! # Frame layout
//!
//! ```text
//! +----------------------------+---------------------------------+
//! | length: u32, little-endian | payload: `length` bytes         |
//! | (4 bytes)                  | (postcard encoding of the value) |
//! +----------------------------+---------------------------------+
//! ```
//!
//! The length counts the payload only, not the prefix itself. Both sides agree on a largest
//! payload (`max_frame`, at most `u32::MAX`): [`encode_frame`] refuses to write a bigger one and
//! [`FrameDecoder`] rejects a bigger length as soon as it has read the prefix, before buffering
//! any of the payload, so a peer cannot make the receiver allocate more than `max_frame`.
//!
//! A payload must hold exactly one value: bytes left over after it make the frame malformed.
//! Encoding is deterministic, so a frame [`encode_frame`] wrote decodes to a value that
//! re-encodes to the very same bytes. (Postcard's decoder also accepts over-long varints, which
//! no encoder writes; such a frame decodes to a value whose own frame is shorter.)
//!
//! On a peer-to-peer connection every frame is a [`PeerFrame`]: the connecting side first
//! sends a [`PeerFrame::Hello`] naming its cluster and itself, then any number of
//! [`PeerFrame::Raft`] messages. An accepting side that refuses the hello answers with one
//! [`PeerFrame::Refused`] saying why, then closes the connection.
//!
//! Everything here is a pure function of its input: no I/O, and nothing a peer sends can make
//! it panic.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::message::Message;
use crate::types::NodeId;

/// The size of a frame's length prefix, in bytes.
pub const LEN_PREFIX: usize = 4;

/// A sensible default for the largest payload a frame may carry: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Once the decoder's buffer is empty, it gives back memory above this capacity (after a large
/// frame), keeping a small buffer for the common small frames.
const SHRINK_ABOVE: usize = 1024 * 1024;
/// What the decoder's buffer shrinks to.
const SHRINK_TO: usize = 64 * 1024;

/// What one node sends another over a connection.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerFrame {
    /// The first frame on a connection: who is connecting. The receiver refuses the connection
    /// when the cluster is not its own or the node claims the receiver's own id.
    Hello {
        /// The cluster the sender belongs to; guards against cross-wired clusters.
        cluster_id: u64,
        /// The sender's identity.
        node_id: NodeId,
        /// Where the sender accepts connections (`host:port`), so that a node that joins a
        /// cluster can answer a leader it has never heard of; empty when unknown.
        address: String,
    },
    /// A Raft message from the sender (its `from` is the id given in the `Hello`).
    Raft(Message),
    /// The only frame an accepting side ever sends: it refuses the connecting side's hello
    /// (another cluster, or its own id), for the reason given, and closes the connection.
    Refused {
        /// Why, for the connecting side's log.
        reason: String,
    },
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// The payload is longer than the largest frame allowed. When decoding, the stream cannot
    /// be resynchronised after this: drop the connection.
    TooLarge {
        /// The payload's length in bytes.
        len: usize,
        /// The largest payload allowed.
        max: usize,
    },
    /// The payload is not the encoding of exactly one value of the expected type. The decoder
    /// has skipped the frame; the stream is still in sync, but the peer is suspect.
    Malformed {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The value cannot be serialized (a serde implementation reported an error).
    Unencodable,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { len, max } => {
                write!(
                    f,
                    "frame payload of {len} bytes exceeds the limit of {max} bytes"
                )
            }
            Self::Malformed { reason } => write!(f, "malformed frame payload: {reason}"),
            Self::Unencodable => f.write_str("value cannot be serialized"),
        }
    }
}

impl core::error::Error for WireError {}

/// The effective payload limit: `max_frame`, but never more than the prefix can express.
fn effective_max(max_frame: usize) -> usize {
    max_frame.min(usize::try_from(u32::MAX).unwrap_or(usize::MAX))
}

/// A postcard output that appends to a vector until `limit` bytes, then only counts, so an
/// oversized value is measured exactly without buffering it.
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

/// Appends one frame carrying `value` to `out`.
///
/// Fails with [`WireError::TooLarge`] when the payload would exceed `max_frame` bytes (or
/// `u32::MAX`), without buffering more than `max_frame` bytes of it, and with
/// [`WireError::Unencodable`] when serialization fails. On error `out` is left as it was.
pub fn encode_frame<T: Serialize>(
    value: &T,
    max_frame: usize,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    let max = effective_max(max_frame);
    let start = out.len();
    out.extend_from_slice(&[0; LEN_PREFIX]);
    let flavor = Limited {
        out,
        written: 0,
        limit: max,
    };
    let len = match postcard::serialize_with_flavor(value, flavor) {
        Ok(len) => len,
        Err(_) => {
            out.truncate(start);
            return Err(WireError::Unencodable);
        }
    };
    let prefix = match u32::try_from(len) {
        Ok(prefix) if len <= max => prefix,
        _ => {
            out.truncate(start);
            return Err(WireError::TooLarge { len, max });
        }
    };
    out[start..start + LEN_PREFIX].copy_from_slice(&prefix.to_le_bytes());
    Ok(())
}

/// Decodes one payload, insisting that it holds exactly one value.
fn decode_payload<T: Serialize + DeserializeOwned>(payload: &[u8]) -> Result<T, WireError> {
    let (value, rest) =
        postcard::take_from_bytes::<T>(payload).map_err(|_| WireError::Malformed {
            reason: "does not decode as the expected type",
        })?;
    if !rest.is_empty() {
        return Err(WireError::Malformed {
            reason: "bytes left over after the value",
        });
    }
    // postcard also accepts integers spelled with more bytes than needed; only the shortest
    // spelling is ours, so that a decoded frame re-encodes to exactly the bytes received.
    if postcard::experimental::serialized_size(&value).ok() != Some(payload.len()) {
        return Err(WireError::Malformed {
            reason: "not the canonical encoding",
        });
    }
    Ok(value)
}

/// Splits a byte stream into frames and decodes them.
///
/// Feed it bytes as they arrive with [`extend`](Self::extend), in pieces of any size, and
/// call [`next_frame`](Self::next_frame) until it answers `Ok(None)`. Consumed bytes are
/// skipped with an offset and the buffer is compacted only once at least half of it is
/// consumed, so every byte is copied a bounded number of times.
///
/// Memory stays bounded by `max_frame` plus the prefix plus what one `extend` adds, provided
/// the caller drains the frames before feeding more bytes.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Where the unconsumed bytes of `buf` start.
    start: usize,
    max_frame: usize,
}

impl FrameDecoder {
    /// A decoder that accepts payloads of up to `max_frame` bytes (and at most `u32::MAX`).
    pub fn new(max_frame: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            max_frame: effective_max(max_frame),
        }
    }

    /// The largest payload accepted.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Changes the largest payload accepted from the next frame on (for example a small limit
    /// until the peer has identified itself, then the normal one).
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = effective_max(max_frame);
    }

    /// How many received bytes are not yet consumed by a decoded frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            // At least half is consumed: moving the rest costs no more than what was consumed.
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Decodes the next complete frame.
    ///
    /// Answers `Ok(None)` when more bytes are needed. A length prefix above the limit is
    /// [`WireError::TooLarge`] as soon as the prefix is in, whatever follows; the decoder then
    /// stays stuck on it (the stream cannot be resynchronised). A complete payload that is not
    /// exactly one encoded `T` is [`WireError::Malformed`]; that frame is skipped and
    /// the next call goes on with the following one.
    pub fn next_frame<T: Serialize + DeserializeOwned>(&mut self) -> Result<Option<T>, WireError> {
        let available = &self.buf[self.start..];
        let Some(prefix) = available.first_chunk::<LEN_PREFIX>() else {
            return Ok(None);
        };
        let len = usize::try_from(u32::from_le_bytes(*prefix)).unwrap_or(usize::MAX);
        if len > self.max_frame {
            return Err(WireError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        let Some(payload) = available.get(LEN_PREFIX..LEN_PREFIX + len) else {
            return Ok(None);
        };
        let result = decode_payload(payload);
        self.start += LEN_PREFIX + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            if self.buf.capacity() > SHRINK_ABOVE {
                self.buf.shrink_to(SHRINK_TO);
            }
        }
        result.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;
    use alloc::sync::Arc;
    use alloc::vec;
    use alloc::vec::Vec;

    use super::*;
    use crate::message::{AppendOutcome, MessageBody};
    use crate::types::{Entry, SnapshotMeta};

    use crate::rng::Rng;

    fn samples() -> Vec<PeerFrame> {
        let message = |body| {
            PeerFrame::Raft(Message {
                from: 1,
                to: u64::MAX,
                term: 300,
                body,
            })
        };
        vec![
            PeerFrame::Hello {
                cluster_id: 0xdead_beef,
                node_id: 7,
                address: String::new(),
            },
            PeerFrame::Hello {
                cluster_id: u64::MAX,
                node_id: 0,
                address: String::new(),
            },
            PeerFrame::Hello {
                cluster_id: 3,
                node_id: 4,
                address: String::from("[2001:db8::1]:65535"),
            },
            message(MessageBody::VoteRequest {
                last_log_index: 12,
                last_log_term: 3,
                transfer: true,
            }),
            message(MessageBody::ReadIndexRequest { id: 7 }),
            message(MessageBody::ReadIndexResponse {
                id: 7,
                index: Some(1 << 33),
            }),
            message(MessageBody::ReadIndexResponse { id: 8, index: None }),
            message(MessageBody::ConfirmLeader { round: 9 }),
            message(MessageBody::LeaderConfirmed { round: 9 }),
            message(MessageBody::TimeoutNow),
            message(MessageBody::VoteResponse { granted: true }),
            message(MessageBody::AppendRequest {
                prev_log_index: 1 << 40,
                prev_log_term: 2,
                entries: vec![
                    Entry::command(2, vec![1, 2, 3]),
                    Entry::noop(3),
                    Entry::command(3, vec![0xff; 1000]),
                ],
                leader_commit: 9,
            }),
            message(MessageBody::AppendResponse {
                outcome: AppendOutcome::Rejected {
                    rejected_prev: 4,
                    hint_index: 2,
                    conflict_term: Some(1),
                },
            }),
            message(MessageBody::AppendResponse {
                outcome: AppendOutcome::Accepted { match_index: 8 },
            }),
            message(MessageBody::SnapshotChunk {
                membership: crate::membership::Membership::new([1, 2, 3]),
                meta: SnapshotMeta {
                    last_index: 100,
                    last_term: 4,
                },
                offset: 4096,
                data: Arc::from(&[9u8; 300][..]),
                done: false,
            }),
            message(MessageBody::SnapshotAck {
                last_index: 100,
                received: 4396,
            }),
        ]
    }

    fn encode_all(frames: &[PeerFrame]) -> Vec<u8> {
        let mut out = Vec::new();
        for frame in frames {
            encode_frame(frame, DEFAULT_MAX_FRAME, &mut out).unwrap();
        }
        out
    }

    fn drain(decoder: &mut FrameDecoder) -> Vec<PeerFrame> {
        let mut frames = Vec::new();
        while let Some(frame) = decoder.next_frame::<PeerFrame>().unwrap() {
            frames.push(frame);
        }
        frames
    }

    #[test]
    fn round_trip_every_sample() {
        let frames = samples();
        let bytes = encode_all(&frames);
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        decoder.extend(&bytes);
        assert_eq!(drain(&mut decoder), frames);
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn layout_is_little_endian_length_then_postcard() {
        let frame = PeerFrame::Hello {
            cluster_id: 1,
            node_id: 300,
            address: String::new(),
        };
        let mut out = vec![0xaa];
        encode_frame(&frame, 64, &mut out).unwrap();
        // Appends after what was there; variant 0, varint 1, varint 300 = [0xac, 0x02], an
        // empty string = length 0.
        assert_eq!(out, [0xaa, 5, 0, 0, 0, 0, 1, 0xac, 0x02, 0]);
    }

    #[test]
    fn frames_split_at_every_byte_boundary() {
        let frames = samples();
        let bytes = encode_all(&frames);
        for split in 0..=bytes.len() {
            let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
            decoder.extend(&bytes[..split]);
            let mut got = drain(&mut decoder);
            decoder.extend(&bytes[split..]);
            got.extend(drain(&mut decoder));
            assert_eq!(got, frames, "split at {split}");
            assert_eq!(decoder.buffered(), 0);
        }
    }

    #[test]
    fn byte_at_a_time_and_random_chunks() {
        let frames = samples();
        let bytes = encode_all(&frames);
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let mut got = Vec::new();
        for byte in &bytes {
            decoder.extend(core::slice::from_ref(byte));
            got.extend(drain(&mut decoder));
        }
        assert_eq!(got, frames);

        let mut rng = Rng::new(42);
        for _ in 0..50 {
            let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
            let mut got = Vec::new();
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let n = (rng.below(200) as usize + 1).min(rest.len());
                decoder.extend(&rest[..n]);
                rest = &rest[n..];
                got.extend(drain(&mut decoder));
                // Never holds more than one partial frame plus one chunk.
                assert!(decoder.buf.len() <= 2 * 1100 + 200, "{}", decoder.buf.len());
            }
            assert_eq!(got, frames);
        }
    }

    #[test]
    fn decoded_frames_re_encode_to_the_same_bytes() {
        for frame in samples() {
            let mut bytes = Vec::new();
            encode_frame(&frame, DEFAULT_MAX_FRAME, &mut bytes).unwrap();
            let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
            decoder.extend(&bytes);
            let decoded: PeerFrame = decoder.next_frame().unwrap().unwrap();
            let mut again = Vec::new();
            encode_frame(&decoded, DEFAULT_MAX_FRAME, &mut again).unwrap();
            assert_eq!(again, bytes);
        }
    }

    #[test]
    fn oversized_payload_is_refused_and_output_untouched() {
        let frame = PeerFrame::Raft(Message {
            from: 1,
            to: 2,
            term: 1,
            body: MessageBody::AppendRequest {
                prev_log_index: 0,
                prev_log_term: 0,
                entries: vec![Entry::command(1, vec![7u8; 5000])],
                leader_commit: 0,
            },
        });
        let mut out = vec![1, 2, 3];
        let err = encode_frame(&frame, 100, &mut out).unwrap_err();
        let WireError::TooLarge { len, max } = err else {
            panic!("{err:?}");
        };
        assert_eq!(max, 100);
        let mut exact = Vec::new();
        encode_frame(&frame, DEFAULT_MAX_FRAME, &mut exact).unwrap();
        assert_eq!(
            len,
            exact.len() - LEN_PREFIX,
            "the size is measured exactly"
        );
        assert_eq!(out, [1, 2, 3]);
        assert!(out.capacity() < 1000, "the payload was not buffered");
        // A payload of exactly the limit passes.
        encode_frame(&frame, len, &mut out).unwrap();
        assert_eq!(&out[3..], &exact[..]);
        assert!(!err.to_string().is_empty());
    }

    #[test]
    fn too_large_prefix_rejected_without_allocation() {
        let mut decoder = FrameDecoder::new(1024);
        decoder.extend(&[0xff, 0xff, 0xff]);
        assert_eq!(decoder.next_frame::<PeerFrame>(), Ok(None));
        decoder.extend(&[0xff]);
        let err = decoder.next_frame::<PeerFrame>().unwrap_err();
        assert_eq!(
            err,
            WireError::TooLarge {
                len: u32::MAX as usize,
                max: 1024
            }
        );
        assert!(
            decoder.buf.capacity() < 1024,
            "nothing reserved for the payload"
        );
        // It stays stuck on the bad prefix, whatever follows.
        decoder.extend(&[0; 16]);
        assert_eq!(decoder.next_frame::<PeerFrame>(), Err(err));

        // One byte over the limit is refused; exactly the limit would be waited for.
        let mut decoder = FrameDecoder::new(10);
        decoder.extend(&11u32.to_le_bytes());
        assert!(matches!(
            decoder.next_frame::<PeerFrame>(),
            Err(WireError::TooLarge { len: 11, max: 10 })
        ));
        let mut decoder = FrameDecoder::new(10);
        decoder.extend(&10u32.to_le_bytes());
        assert_eq!(decoder.next_frame::<PeerFrame>(), Ok(None));
    }

    #[test]
    fn set_max_frame_applies_to_the_next_frame() {
        let frames = samples();
        let bytes = encode_all(&frames);
        let mut decoder = FrameDecoder::new(16);
        decoder.extend(&bytes);
        assert_eq!(
            decoder.next_frame::<PeerFrame>().unwrap(),
            Some(frames[0].clone())
        );
        assert_eq!(
            decoder.next_frame::<PeerFrame>().unwrap(),
            Some(frames[1].clone())
        );
        assert!(matches!(
            decoder.next_frame::<PeerFrame>(),
            Err(WireError::TooLarge { .. })
        ));
        decoder.set_max_frame(DEFAULT_MAX_FRAME);
        assert_eq!(decoder.max_frame(), DEFAULT_MAX_FRAME);
        assert_eq!(drain(&mut decoder), frames[2..]);
    }

    /// Found by the `wire_decode` fuzz target: a membership whose ids were in another order
    /// decoded to a value that re-encoded to other bytes of the same length. Memberships now
    /// travel in their one canonical encoding; any other order is refused.
    #[test]
    fn a_membership_out_of_order_is_refused() {
        let chunk = |membership| {
            PeerFrame::Raft(Message {
                from: 4,
                to: 4,
                term: 4,
                body: MessageBody::SnapshotChunk {
                    meta: crate::types::SnapshotMeta {
                        last_index: 1,
                        last_term: 0,
                    },
                    membership,
                    offset: 0,
                    data: Arc::from(&[][..]),
                    done: false,
                },
            })
        };
        let frame = chunk(crate::membership::Membership::new([0, 4]));
        let mut bytes = Vec::new();
        encode_frame(&frame, 64, &mut bytes).unwrap();
        let mut decoder = FrameDecoder::new(64);
        decoder.extend(&bytes);
        assert_eq!(decoder.next_frame::<PeerFrame>(), Ok(Some(frame)));
        // The voters' ids, 0 then 4, swapped.
        let at = bytes
            .windows(3)
            .position(|w| w == [2, 0, 4])
            .expect("the voters in the frame");
        bytes[at + 1] = 4;
        bytes[at + 2] = 0;
        let mut decoder = FrameDecoder::new(64);
        decoder.extend(&bytes);
        assert!(matches!(
            decoder.next_frame::<PeerFrame>(),
            Err(WireError::Malformed { .. })
        ));
    }

    #[test]
    fn malformed_payloads_are_skipped() {
        let mut bytes = Vec::new();
        // A variant that does not exist.
        bytes.extend_from_slice(&[1, 0, 0, 0, 9]);
        // A valid Hello followed by a stray byte.
        bytes.extend_from_slice(&[5, 0, 0, 0, 0, 1, 2, 0, 0]);
        // A Hello cut short inside its payload.
        bytes.extend_from_slice(&[2, 0, 0, 0, 0, 0x81]);
        // An empty payload.
        bytes.extend_from_slice(&[0, 0, 0, 0]);
        // A good frame after all that.
        let good = PeerFrame::Hello {
            cluster_id: 1,
            node_id: 2,
            address: String::new(),
        };
        encode_frame(&good, 64, &mut bytes).unwrap();

        let mut decoder = FrameDecoder::new(64);
        decoder.extend(&bytes);
        for expected in [
            "does not decode as the expected type",
            "bytes left over after the value",
            "does not decode as the expected type",
            "does not decode as the expected type",
        ] {
            assert_eq!(
                decoder.next_frame::<PeerFrame>(),
                Err(WireError::Malformed { reason: expected })
            );
        }
        assert_eq!(decoder.next_frame::<PeerFrame>(), Ok(Some(good)));
        assert_eq!(decoder.next_frame::<PeerFrame>(), Ok(None));
    }

    /// Feeds `bytes` in random chunks and checks every outcome: a frame that decodes
    /// re-encodes to a frame no longer than the one it came from, which decodes to the same
    /// value again; errors are the documented ones. Returns how many frames decoded.
    fn feed_checked(rng: &mut Rng, bytes: &[u8], max_frame: usize) -> usize {
        let mut decoder = FrameDecoder::new(max_frame);
        let mut decoded = 0;
        let mut fed = 0;
        // Where the frame being decoded starts in `bytes`.
        let mut frame_start = 0;
        while fed < bytes.len() {
            let n = (rng.below(64) as usize + 1).min(bytes.len() - fed);
            decoder.extend(&bytes[fed..fed + n]);
            fed += n;
            // Each turn consumes a frame or stops, so this is bounded by the input size.
            loop {
                let outcome = decoder.next_frame::<PeerFrame>();
                let frame_end = fed - decoder.buffered();
                match outcome {
                    Ok(None) => break,
                    Ok(Some(frame)) => {
                        decoded += 1;
                        let mut again = Vec::new();
                        encode_frame(&frame, max_frame, &mut again).unwrap();
                        assert!(again.len() <= frame_end - frame_start);
                        let mut check = FrameDecoder::new(max_frame);
                        check.extend(&again);
                        assert_eq!(check.next_frame::<PeerFrame>(), Ok(Some(frame)));
                    }
                    Err(WireError::Malformed { .. }) => assert!(frame_end > frame_start),
                    Err(WireError::TooLarge { len, max }) => {
                        assert!(len > max && max == max_frame);
                        assert_eq!(frame_end, frame_start, "nothing consumed");
                        assert!(decoder.buf.len() <= max_frame + LEN_PREFIX + 64);
                        return decoded;
                    }
                    Err(other) => panic!("{other:?}"),
                }
                frame_start = frame_end;
            }
            assert!(decoder.buffered() <= max_frame + LEN_PREFIX + 64);
        }
        decoded
    }

    #[test]
    fn random_garbage_never_panics() {
        let mut rng = Rng::new(7);
        for round in 0..2000 {
            let len = rng.below(300) as usize;
            let mut bytes = rng.bytes(len);
            // Often give it a plausible small length prefix, so payload decoding is exercised.
            if round % 2 == 0 && bytes.len() >= 4 {
                let len = rng.below(bytes.len() as u64 - 3) as u32;
                bytes[..4].copy_from_slice(&len.to_le_bytes());
            }
            feed_checked(&mut rng, &bytes, 256);
        }
    }

    #[test]
    fn mutated_frames_never_panic_and_decoded_ones_re_encode() {
        let valid = encode_all(&samples());
        let mut rng = Rng::new(99);
        let mut decoded = 0;
        for _ in 0..3000 {
            let mut bytes = valid.clone();
            for _ in 0..=rng.below(4) {
                if bytes.is_empty() {
                    break;
                }
                let at = rng.below(bytes.len() as u64) as usize;
                match rng.below(3) {
                    0 => bytes[at] = rng.next_u64() as u8,
                    1 => bytes[at] ^= 1 << rng.below(8),
                    _ => bytes.truncate(at),
                }
            }
            decoded += feed_checked(&mut rng, &bytes, DEFAULT_MAX_FRAME);
        }
        assert!(decoded > 0, "some mutations still decode");
    }

    #[test]
    fn compaction_keeps_the_buffer_small() {
        let frame = PeerFrame::Hello {
            cluster_id: 5,
            node_id: 6,
            address: String::new(),
        };
        let mut one = Vec::new();
        encode_frame(&frame, 64, &mut one).unwrap();
        let mut decoder = FrameDecoder::new(64);
        // Always leave half a frame behind, so the buffer never empties by itself.
        decoder.extend(&one[..3]);
        for _ in 0..10_000 {
            decoder.extend(&one[3..]);
            decoder.extend(&one[..3]);
            assert_eq!(decoder.next_frame::<PeerFrame>(), Ok(Some(frame.clone())));
            assert!(decoder.buf.len() <= 4 * one.len(), "{}", decoder.buf.len());
        }
        assert_eq!(decoder.buffered(), 3);
    }

    #[test]
    fn large_frame_memory_is_given_back() {
        let frame = PeerFrame::Raft(Message {
            from: 1,
            to: 2,
            term: 1,
            body: MessageBody::SnapshotChunk {
                membership: crate::membership::Membership::new([1, 2, 3]),
                meta: SnapshotMeta::default(),
                offset: 0,
                data: Arc::from(vec![3u8; 2 * SHRINK_ABOVE]),
                done: true,
            },
        });
        let mut bytes = Vec::new();
        encode_frame(&frame, DEFAULT_MAX_FRAME, &mut bytes).unwrap();
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        for chunk in bytes.chunks(64 * 1024) {
            decoder.extend(chunk);
        }
        assert_eq!(decoder.next_frame::<PeerFrame>(), Ok(Some(frame)));
        assert!(decoder.buf.capacity() <= SHRINK_TO);
    }
}
