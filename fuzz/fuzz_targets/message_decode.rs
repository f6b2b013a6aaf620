//! Fuzz message decoding: arbitrary bytes must never panic
//! `Message::decode`, and a message it accepts must re-encode to exactly the
//! input (the encoding is canonical), with a consistent checksum.

#![no_main]

// `bytes` is not a dependency of this fuzz crate; its types are reached
// through inference from the `wire` signatures instead.
use gladius_p2p::wire::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Message::decode(&data.to_vec().into()) {
        let mut out = Default::default();
        message.encode(&mut out);
        let out: &[u8] = &out;
        assert_eq!(out.len(), message.encoded_len());
        assert_eq!(out, data);
        // Rebuilding it through the public constructor gives the same value.
        let mut rebuilt = Message::new(message.msg_type(), message.body().clone())
            .expect("a decoded type is valid");
        if let Some(sender) = message.sender() {
            rebuilt.set_sender(sender);
        }
        assert_eq!(rebuilt, message);
    }
});
