//! Untrusted discovery bodies (`discovery.ask` / `discovery.peers`):
//! decoding never panics, respects the caller's entry cap, and whatever
//! decodes re-encodes to a body that decodes to the same list and
//! extension.
#![no_main]

use gladius_plugins::discovery::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cap, body)) = data.split_first() else {
        return;
    };
    let cap = usize::from(cap % 80);
    if let Ok(d) = wire::decode_all(body, cap) {
        assert!(d.list.entries.len() <= cap);
        assert!(d.ext.nats.len() <= d.list.entries.len());
        let again = wire::decode_all(&wire::encode_with(&d.list, &d.ext), cap).unwrap();
        assert_eq!(again, d);
    }
});
