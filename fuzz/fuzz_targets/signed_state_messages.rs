//! Untrusted signed-state bodies: decoding never panics, anything that
//! decodes re-encodes within the bounds, and the merge pipeline takes
//! whatever decoded without panicking.
#![no_main]

use gladius_plugins::signed_state::{
    sync::{reconcile, SyncMessage, TYPE_DIGEST, TYPE_ENTRIES, TYPE_ROOT, TYPE_WANT},
    SignedStateConfig, Store,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let ty = [TYPE_ROOT, TYPE_DIGEST, TYPE_WANT, TYPE_ENTRIES][usize::from(which % 4)];
    let config = SignedStateConfig::default()
        .with_max_entries_per_message(8)
        .with_max_digest_items(8)
        .with_max_value_len(64);
    let bounds = config.bounds();
    let Ok(msg) = SyncMessage::decode(ty, body, &bounds) else {
        return;
    };
    let (t, again) = msg.encode();
    assert_eq!(t, ty);
    assert!(again.len() <= bounds.max_body_len());
    assert_eq!(SyncMessage::decode(t, &again, &bounds).as_ref(), Ok(&msg));
    let policy = gladius_plugins::signed_state::Policy {
        max_field_len: config.max_field_len,
        max_value_len: config.max_value_len,
        max_clock_skew_ms: 30_000,
        validator: config.validator.clone(),
    };
    let mut store = Store::new(4);
    match msg {
        SyncMessage::Entries { entries } => {
            for e in entries {
                let _ = store.ingest(e, &policy, 1_700_000_000_000);
            }
        }
        SyncMessage::Digest { from, to, items } => {
            let _ = reconcile(&store, from.as_ref(), to.as_ref(), &items, &policy, 0);
        }
        _ => {}
    }
    let _ = store.root();
});
