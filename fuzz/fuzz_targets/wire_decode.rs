//! Arbitrary bytes into the frame decoder (in two reads, split where the first byte says):
//! a typed error or frames, never a panic; every decoded frame re-encodes to exactly the
//! bytes it was decoded from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raft_proto::wire::{encode_frame, FrameDecoder, PeerFrame};

const MAX: usize = 1 << 16;

/// Takes every frame the decoder can give; false after an error.
fn drain(decoder: &mut FrameDecoder, frames: &mut Vec<PeerFrame>) -> bool {
    loop {
        match decoder.next_frame::<PeerFrame>() {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let cut = (split as usize).min(data.len());
    let mut decoder = FrameDecoder::new(MAX);
    let mut frames = Vec::new();
    decoder.extend(&data[..cut]);
    if drain(&mut decoder, &mut frames) {
        decoder.extend(&data[cut..]);
        drain(&mut decoder, &mut frames);
    }
    // The frames decoded are the first ones of the stream, in order: find their bytes.
    let mut pos = 0usize;
    for frame in frames {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().expect("a prefix")) as usize;
        let original = &data[pos..pos + 4 + len];
        pos += 4 + len;
        let mut bytes = Vec::new();
        encode_frame(&frame, MAX, &mut bytes).expect("a decoded frame re-encodes");
        assert_eq!(bytes, original, "a decoded frame re-encodes to the same bytes");
    }
});
