//! Durations in the daemon's JSON as milliseconds: serde writes a
//! `Duration` as `{"secs":…,"nanos":…}`, which no reader wants. Every such
//! object in an answer becomes a number of milliseconds and its key gains
//! `_ms` (`"interval":{"secs":1,"nanos":0}` → `"interval_ms":1000`).

use serde_json::{Map, Value};

/// Rewrite every serialized `Duration` in `v` as milliseconds (an integer
/// when whole, else a fraction).
pub(crate) fn to_ms(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let old = std::mem::take(map);
            *map = old
                .into_iter()
                .map(|(key, mut value)| match as_ms(&value) {
                    Some(ms) if key.ends_with("_ms") => (key, ms),
                    Some(ms) => (format!("{key}_ms"), ms),
                    None => {
                        to_ms(&mut value);
                        (key, value)
                    }
                })
                .collect::<Map<String, Value>>();
        }
        Value::Array(items) => items.iter_mut().for_each(to_ms),
        _ => {}
    }
}

/// A `{"secs":…,"nanos":…}` object (nothing else in it) as milliseconds.
fn as_ms(v: &Value) -> Option<Value> {
    let map = v.as_object()?;
    if map.len() != 2 {
        return None;
    }
    let secs = map.get("secs")?.as_u64()?;
    let nanos = map.get("nanos")?.as_u64()?;
    if nanos % 1_000_000 == 0 {
        Some(Value::from(secs.saturating_mul(1000) + nanos / 1_000_000))
    } else {
        Some(Value::from(secs as f64 * 1e3 + nanos as f64 / 1e6))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn durations_become_milliseconds_and_keys_say_so() {
        let mut v = json!({
            "config": {"interval": {"secs": 1, "nanos": 0}, "timeout_ms": {"secs": 0, "nanos": 500_000}},
            "peers": [{"rtt": {"secs": 0, "nanos": 2_000_000}, "addr": "x"}],
            "other": {"secs": 1, "nanos": 0, "extra": true},
        });
        super::to_ms(&mut v);
        assert_eq!(
            v,
            json!({
                "config": {"interval_ms": 1000, "timeout_ms": 0.5},
                "peers": [{"rtt_ms": 2, "addr": "x"}],
                "other": {"secs": 1, "nanos": 0, "extra": true},
            })
        );
    }
}
