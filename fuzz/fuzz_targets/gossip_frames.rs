//! Untrusted gossip frames: parsing never panics, anything that parses
//! re-encodes to the same bytes, and the state machine takes any bytes
//! from a peer without panicking.
#![no_main]

use bytes::Bytes;
use gladius_plugins::gossip::proto::{InEvent, State};
use gladius_plugins::gossip::wire::{Frame, Topic};
use gladius_plugins::gossip::{GossipConfig, GossipKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(frame) = Frame::decode(&bytes, 256, 8) {
        assert_eq!(frame.encode(), bytes);
    }
    let config = GossipConfig::default().with_max_body_len(256);
    let mut state: State<u8> = State::new(GossipKey::from_bytes(&[1; 32]), config, 0);
    let _ = state.subscribe(0, Topic::new("t").unwrap());
    state.handle(1_700_000_000_000, InEvent::Message { from: 1, frame: bytes });
    while state.poll_transmit().is_some() {}
});
