//! The human side of `gladius bench`: a legend saying what each ratio
//! means and which way is better, a short line per measured result, and a
//! one-line verdict per scenario. Built from the JSON result lines only, so
//! the `--json` schema stays what it was.

use serde_json::Value;

use super::Scenario;

/// What each figure of a scenario's table means (the legend).
pub(super) fn legend(s: Scenario) -> &'static [&'static str] {
    match s {
        Scenario::Rtt => &[
            "rtt: one request and its reply, one at a time; p50/p90/p99_us are round-trip times (lower is better)",
            "  ratio_p50 = gladius p50 / raw UDP p50 (blocking socket): 1.0 is raw UDP's speed, lower is better",
            "  ratio_p50_tokio = the same against a tokio UDP socket (the async baseline)",
        ],
        Scenario::Throughput => &[
            "throughput: a one-way stream of messages of `size` bytes, counted as received (higher is better)",
            "  ratio_msgs, ratio_mb = gladius rate / raw UDP rate (one datagram per call): 1.0 is raw UDP, higher is better",
            "  ratio_mb_gso = gladius MB/s / raw UDP with GSO/GRO batches (the batched-I/O limit), higher is better",
        ],
        Scenario::Fanout => &[
            "fanout: one node sending 1 KiB messages to every one of `peers` (higher is better)",
            "  ratio = gladius deliveries/s / raw UDP deliveries/s (blocking socket): 1.0 is raw UDP, higher is better",
        ],
        Scenario::Scale => &[
            "scale: many nodes in one process with 8 sessions each; rss_per_*_bytes, idle_cpu_percent: lower is better",
        ],
        Scenario::Loss => &[
            "loss: a stream over an in-process link dropping loss_percent of datagrams; delivered must equal sent, duplicates 0",
            "  p50/p99_delivery_us: send-to-receive time of paced messages (lower is better)",
        ],
    }
}

/// A short human line for one result, for the progress log.
pub(super) fn summary(v: &Value) -> Option<String> {
    let f = |k: &str| v[k].as_f64();
    let gladius = v["library"] == "gladius";
    match v["scenario"].as_str()? {
        "rtt" if gladius => Some(format!(
            "p50 {:.0} us, p99 {:.0} us, {:.0} round trips/s; {:.2}x raw UDP's p50",
            f("p50_us")?,
            f("p99_us")?,
            f("rtt_per_s")?,
            f("ratio_p50")?
        )),
        "rtt" => Some(format!(
            "raw UDP ({}): p50 {:.0} us",
            v["udp_api"].as_str().unwrap_or("?"),
            f("p50_us")?
        )),
        "throughput" if gladius => Some(format!(
            "{:.0} msgs/s, {:.1} MB/s; {:.2}x raw UDP's MB/s",
            f("msgs_per_s")?,
            f("mb_per_s")?,
            f("ratio_mb")?
        )),
        "throughput" | "fanout" if !gladius => Some(format!(
            "raw UDP ({}): {:.1} MB/s",
            v["udp_api"].as_str().unwrap_or("?"),
            f("mb_per_s")?
        )),
        "fanout" => Some(format!(
            "{:.0} deliveries/s; {:.2}x raw UDP",
            f("deliveries_per_s")?,
            f("ratio")?
        )),
        "scale" => Some(format!(
            "connected in {:.0} ms; {} per node, {} per session, idle CPU {:.2}%",
            f("connect_ms")?,
            size(f("rss_per_node_bytes")?),
            size(f("rss_per_session_bytes")?),
            f("idle_cpu_percent")?
        )),
        "loss" => Some(format!(
            "delivered {} of {}, {} duplicates; {:.0} msgs/s, p99 delivery {:.1} ms",
            v["delivered"],
            v["sent"],
            v["duplicates"],
            f("msgs_per_s")?,
            f("p99_delivery_us")? / 1000.0
        )),
        _ => None,
    }
}

/// One line saying how the scenario went, from its result lines.
pub(super) fn verdict(s: Scenario, lines: &[Value]) -> String {
    let ours: Vec<&Value> = lines.iter().filter(|v| v["library"] == "gladius").collect();
    if ours.is_empty() {
        return format!("{}: no result", name(s));
    }
    let by_mode = |key: &str| -> String {
        let mut parts = Vec::new();
        for (enc, mode) in [(true, "encrypted"), (false, "plaintext")] {
            let vals: Vec<f64> = ours
                .iter()
                .filter(|v| v["encrypted"] == enc)
                .filter_map(|v| v[key].as_f64())
                .collect();
            if let Some(r) = range(&vals) {
                parts.push(format!("{mode} {r}"));
            }
        }
        parts.join(", ")
    };
    match s {
        Scenario::Rtt => format!(
            "rtt: a gladius round trip takes {} the time of a raw UDP one at p50 (lower is better)",
            by_mode("ratio_p50")
        ),
        Scenario::Throughput => format!(
            "throughput: gladius streams {} of raw UDP's MB/s, {} of GSO-batched UDP (higher is better)",
            by_mode("ratio_mb"),
            by_mode("ratio_mb_gso")
        ),
        Scenario::Fanout => format!(
            "fanout: gladius delivers {} as many messages/s as raw UDP (higher is better)",
            by_mode("ratio")
        ),
        Scenario::Scale => {
            let Some(big) = ours
                .iter()
                .max_by_key(|v| (v["nodes"].as_u64(), v["encrypted"].as_bool()))
            else {
                return "scale: no result".into();
            };
            format!(
                "scale: {} {} nodes cost {} each ({} per session), {:.2}% CPU idle (lower is better)",
                big["nodes"],
                if big["encrypted"] == true { "encrypted" } else { "plaintext" },
                size(big["rss_per_node_bytes"].as_f64().unwrap_or(0.0)),
                size(big["rss_per_session_bytes"].as_f64().unwrap_or(0.0)),
                big["idle_cpu_percent"].as_f64().unwrap_or(0.0)
            )
        }
        Scenario::Loss => {
            let bad: Vec<String> = ours
                .iter()
                .filter(|v| v["delivered"] != v["sent"] || v["duplicates"] != 0)
                .map(|v| format!("{}%", v["loss_percent"]))
                .collect();
            let p99 = ours
                .iter()
                .filter_map(|v| v["p99_delivery_us"].as_f64())
                .fold(0.0, f64::max);
            if bad.is_empty() {
                format!(
                    "loss: every message arrived exactly once at every loss rate; p99 delivery at most {:.1} ms",
                    p99 / 1000.0
                )
            } else {
                format!("loss: FAILED at {}: messages lost or duplicated", bad.join(", "))
            }
        }
    }
}

/// The scenario's name on the command line.
pub(super) fn name(s: Scenario) -> &'static str {
    match s {
        Scenario::Rtt => "rtt",
        Scenario::Throughput => "throughput",
        Scenario::Fanout => "fanout",
        Scenario::Scale => "scale",
        Scenario::Loss => "loss",
    }
}

/// `1.9x` or `1.6x-2.1x`.
fn range(vals: &[f64]) -> Option<String> {
    let lo = vals.iter().copied().reduce(f64::min)?;
    let hi = vals.iter().copied().reduce(f64::max)?;
    let x = |r: f64| {
        if r >= 10.0 {
            format!("{r:.0}x")
        } else {
            format!("{r:.2}x")
        }
    };
    Some(if x(lo) == x(hi) {
        x(lo)
    } else {
        format!("{}-{}", x(lo), x(hi))
    })
}

fn size(bytes: f64) -> String {
    if bytes < 10.0 * 1024.0 {
        format!("{bytes:.0} B")
    } else if bytes < 10.0 * 1024.0 * 1024.0 {
        format!("{:.0} KiB", bytes / 1024.0)
    } else {
        format!("{:.0} MiB", bytes / 1024.0 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn verdicts_give_the_ratio_range_per_mode_and_the_better_direction() {
        let lines = vec![
            json!({"scenario": "rtt", "library": "raw-udp", "encrypted": false, "p50_us": 20.0}),
            json!({"scenario": "rtt", "library": "gladius", "encrypted": true, "ratio_p50": 2.1}),
            json!({"scenario": "rtt", "library": "gladius", "encrypted": true, "ratio_p50": 2.4}),
            json!({"scenario": "rtt", "library": "gladius", "encrypted": false, "ratio_p50": 1.5}),
        ];
        assert_eq!(
            verdict(Scenario::Rtt, &lines),
            "rtt: a gladius round trip takes encrypted 2.10x-2.40x, plaintext 1.50x the time of \
             a raw UDP one at p50 (lower is better)"
        );
        let loss = vec![
            json!({"scenario": "loss", "library": "gladius", "loss_percent": 5, "delivered": 10,
                   "sent": 10, "duplicates": 0, "p99_delivery_us": 2500.0}),
            json!({"scenario": "loss", "library": "gladius", "loss_percent": 20, "delivered": 9,
                   "sent": 10, "duplicates": 0, "p99_delivery_us": 9000.0}),
        ];
        assert_eq!(
            verdict(Scenario::Loss, &loss),
            "loss: FAILED at 20%: messages lost or duplicated"
        );
        assert!(verdict(Scenario::Loss, &loss[..1]).contains("exactly once"));
        assert_eq!(verdict(Scenario::Fanout, &[]), "fanout: no result");
    }

    #[test]
    fn every_ratio_in_a_table_is_in_the_legend() {
        for s in [Scenario::Rtt, Scenario::Throughput, Scenario::Fanout] {
            let text = legend(s).join("\n");
            let table = match s {
                Scenario::Rtt => "rtt",
                Scenario::Throughput => "throughput",
                _ => "fanout",
            };
            for col in super::super::columns(table, "gladius") {
                if col.starts_with("ratio") {
                    assert!(
                        text.contains(&format!("{col} ")) || text.contains(&format!("{col},")),
                        "{col}"
                    );
                }
            }
        }
    }
}
