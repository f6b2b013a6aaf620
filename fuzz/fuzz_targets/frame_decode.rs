//! Fuzz the frame decoder: arbitrary stream bytes, in arbitrary chunkings,
//! must never panic it, and whatever it accepts must re-encode to the bytes
//! it came from.
//!
//! Input layout: the first byte picks the maximum message size (small, so
//! that the size check is hit often); the next byte seeds the chunking; the
//! rest is the stream.

#![no_main]

// `bytes` is not a dependency of this fuzz crate; its types are reached
// through inference from the `wire` signatures instead.
use gladius_p2p::wire::{peek_hello, Frame, FrameDecoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&max, rest)) = data.split_first() else {
        return;
    };
    let Some((&seed, stream)) = rest.split_first() else {
        return;
    };

    let _ = peek_hello(stream);

    let mut decoder = FrameDecoder::new(usize::from(max) * 16);
    let mut fed = 0;
    let mut decoded = Default::default();
    // Stream offset just after the last frame decoded successfully.
    let mut accepted_end = 0;
    let mut chunk = usize::from(seed % 31) + 1;
    'feed: while fed < stream.len() {
        let end = (fed + chunk).min(stream.len());
        decoder.push(&stream[fed..end]);
        fed = end;
        // Vary the chunk size deterministically from the seed.
        chunk = (chunk * 7 + usize::from(seed)) % 61 + 1;
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    frame.encode(&mut decoded);
                    accepted_end = fed - decoder.buffered();
                }
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }
    // Every accepted frame is canonical: the frames decoded so far re-encode
    // to exactly the prefix of the stream they were decoded from.
    let decoded: &[u8] = &decoded;
    assert_eq!(decoded, &stream[..accepted_end]);
    // Whole-buffer decoding agrees with the stream decoder on single frames.
    if let Ok(frame) = Frame::decode(&stream.to_vec().into()) {
        let mut out = Default::default();
        frame.encode(&mut out);
        let out: &[u8] = &out;
        assert_eq!(out, stream);
    }
});
