//! Tests of the report: tables, goals, placement, and the files written.

use serde_json::{Map, Value};

use super::*;
use crate::goals::{Topic, Verdict};
use crate::records::{size_text, thousands, Record};

fn record(json: &str) -> Record {
    match serde_json::from_str(json) {
        Ok(Value::Object(o)) => o,
        _ => Map::new(),
    }
}

#[test]
fn sizes_and_numbers_read_well() {
    assert_eq!(size_text(64.0), "64 B");
    assert_eq!(size_text(1024.0), "1 KiB");
    assert_eq!(size_text(1048576.0), "1 MiB");
    assert_eq!(thousands(1234567), "1,234,567");
    assert_eq!(thousands(-1000), "-1,000");
    assert_eq!(
        tables::cell("x", &serde_json::json!(12.345)).as_deref(),
        Some("12.3")
    );
    assert_eq!(records::compact(12_926_964.7), "12.9 M");
    assert_eq!(records::compact(679_411.6), "679 k");
}

#[test]
fn unknown_scenarios_and_fields_are_tabulated() {
    let records = vec![
        record(
            r#"{"scenario":"rtt","library":"gladius","size":64,"encrypted":true,"p50_us":12.5,"quantiles_us":[1,2]}"#,
        ),
        record(r#"{"scenario":"scale","library":"gladius","nodes":16,"converge_ms":250.0}"#),
    ];
    let md = tables::tables(&records);
    assert!(md.contains("### rtt"));
    assert!(md.contains("### scale"));
    assert!(md.contains("| gladius | 16 | 250 |"));
    assert!(md.contains("(not tabulated: quantiles_us)"));
    let repeated = vec![record(
        r#"{"scenario":"rtt","library":"x","p50_us":20.5,"p50_us_runs":[20.5,61.0,21.0]}"#,
    )];
    assert!(tables::tables(&repeated).contains("| x | 20.5 | 20.5–61.0 |"));
}

#[test]
fn cdf_ticks_are_one_two_five() {
    assert_eq!(
        draw::one_two_five(15.0, 450.0),
        vec![20.0, 50.0, 100.0, 200.0]
    );
}

#[test]
fn round_trips_are_placed_by_their_file() {
    let line = r#"{"scenario":"rtt","library":"gladius","size":64,"encrypted":true,"p50_us":26.4}
{"scenario":"throughput","library":"gladius","size":64,"encrypted":true,"msgs_per_s":1.0}
not json"#;
    let pinned = parse_records("p", line, true);
    let default = parse_records("d", line, false);
    assert_eq!(pinned.len(), 2, "the bad line is skipped");
    assert_eq!(text(&pinned[0], "placement"), ONE_CORE);
    assert_eq!(text(&default[0], "placement"), DEFAULT);
    assert!(
        !pinned[1].contains_key("placement"),
        "only round trips are placed"
    );
    let md = tables::tables(&[pinned[0].clone(), default[0].clone()]);
    assert!(md.contains("| gladius | default |") && md.contains("| gladius | one core |"));

    let args = parse_args(
        [
            "a.jsonl",
            "x-rtt-pinned.jsonl",
            "--pinned",
            "b.jsonl",
            "--out",
            "o",
        ]
        .map(String::from),
    )
    .unwrap();
    let flags: Vec<bool> = args.inputs.iter().map(|(_, p)| *p).collect();
    assert_eq!(flags, [false, true, true]);
}

/// The lines of a small run: gladius, raw UDP and the peers, figures chosen
/// so that each goal has a known verdict.
fn sample() -> Vec<Record> {
    let default = r#"
{"scenario":"throughput","library":"gladius","size":1048576,"encrypted":true,"mb_per_s":600.0,"msgs_per_s":572.0}
{"scenario":"throughput","library":"gladius","size":65536,"encrypted":true,"mb_per_s":400.0,"msgs_per_s":6100.0}
{"scenario":"throughput","library":"gladius","size":64,"encrypted":true,"mb_per_s":70.0,"msgs_per_s":1100000.0}
{"scenario":"throughput","library":"gladius","size":1024,"encrypted":true,"mb_per_s":400.0,"msgs_per_s":400000.0}
{"scenario":"throughput","library":"raw-udp","udp_api":"blocking","size":64,"encrypted":false,"mb_per_s":17.0,"msgs_per_s":270000.0}
{"scenario":"throughput","library":"raw-udp","udp_api":"gso","size":64,"encrypted":false,"mb_per_s":827.0,"msgs_per_s":12900000.0}
{"scenario":"throughput","library":"raw-udp","udp_api":"blocking","size":1200,"encrypted":false,"mb_per_s":330.0,"msgs_per_s":275000.0}
{"scenario":"throughput","library":"libp2p-tcp-noise-yamux","mode":"stream","size":1048576,"encrypted":true,"mb_per_s":600.0}
{"scenario":"throughput","library":"libp2p-quic","mode":"stream","size":1048576,"encrypted":true,"mb_per_s":500.0}
{"scenario":"throughput","library":"libp2p-tcp-noise-yamux","mode":"stream","size":65536,"encrypted":true,"mb_per_s":1000.0}
{"scenario":"throughput","library":"tcp","mode":"stream","size":65536,"encrypted":false,"mb_per_s":3000.0}
{"scenario":"throughput","library":"libp2p-tcp-noise-yamux","mode":"stream-coalesced","size":64,"encrypted":true,"msgs_per_s":9000000.0}
{"scenario":"rtt","library":"gladius","size":64,"encrypted":true,"p50_us":70.0,"quantiles_us":[50,60,70]}
{"scenario":"rtt","library":"tokio_kcp","mode":"stream","size":64,"encrypted":false,"p50_us":60.0,"quantiles_us":[40,50,60]}
"#;
    let pinned = r#"
{"scenario":"rtt","library":"raw-udp","udp_api":"blocking","size":64,"encrypted":false,"p50_us":12.0}
{"scenario":"rtt","library":"gladius","size":64,"encrypted":true,"p50_us":24.0}
{"scenario":"rtt","library":"tokio_kcp","mode":"stream","size":64,"encrypted":false,"p50_us":20.0}
"#;
    let mut records = parse_records("default", default, false);
    records.extend(parse_records("pinned", pinned, true));
    records
}

#[test]
fn goals_are_met_or_missed_by_the_ratio_from_the_files() {
    let records = sample();
    let goals = goals::goals(&records);
    let verdict = |topic: Topic, reference: &str| {
        let g = goals
            .iter()
            .find(|g| g.topic == topic && g.reference_name.starts_with(reference))
            .unwrap_or_else(|| panic!("no goal {topic:?} {reference}"));
        (g.ratio().map(|r| (r * 100.0).round() / 100.0), g.verdict())
    };
    // 600 / 600: exactly the 1.0x target is met; 600 / 500 = 1.2 < 1.5.
    assert_eq!(
        verdict(Topic::Bulk(1 << 20), "libp2p TCP"),
        (Some(1.0), Verdict::Met)
    );
    assert_eq!(
        verdict(Topic::Bulk(1 << 20), "libp2p QUIC"),
        (Some(1.2), Verdict::Missed)
    );
    assert_eq!(
        verdict(Topic::Bulk(64 << 10), "libp2p TCP"),
        (Some(0.4), Verdict::Missed)
    );
    assert_eq!(
        verdict(Topic::Bulk(64 << 10), "libp2p QUIC"),
        (None, Verdict::NoData)
    );
    // 1.1 M / 270 k = 4.07 >= 4.
    assert_eq!(
        verdict(Topic::Small(64), "raw UDP"),
        (Some(4.07), Verdict::Met)
    );
    assert_eq!(
        verdict(Topic::Small(64), "libp2p TCP+Noise+Yamux, coalesced"),
        (Some(0.12), Verdict::Info)
    );
    // Lower is better: 24 / 12 = 2.0 <= 2 met; 24 / 20 = 1.2 > 1 missed.
    assert_eq!(
        verdict(Topic::Rtt(ONE_CORE), "raw UDP"),
        (Some(2.0), Verdict::Met)
    );
    assert_eq!(
        verdict(Topic::Rtt(ONE_CORE), "tokio_kcp"),
        (Some(1.2), Verdict::Missed)
    );
    // The default placement has no raw UDP line here, and its own tokio_kcp.
    assert_eq!(
        verdict(Topic::Rtt(DEFAULT), "raw UDP"),
        (None, Verdict::NoData)
    );
    assert_eq!(
        verdict(Topic::Rtt(DEFAULT), "tokio_kcp"),
        (Some(1.17), Verdict::Missed)
    );

    let md = goals::markdown(&goals);
    assert!(md.contains(
        "| bulk 1 MiB, MB/s | 600 | libp2p TCP+Noise+Yamux | 600 | 1.00× | ≥ 1× | **met** |"
    ));
    assert!(md.contains("| round trip 64 B, p50 µs, one core | 24.0 | tokio_kcp stream | 20.0 | 1.20× | ≤ 1× | **missed** |"));
}

#[test]
fn every_figure_is_written_as_svg_and_png() {
    let dir = std::env::temp_dir().join(format!("peers-report-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    write_report(&sample(), &dir).unwrap();
    for name in ["bulk", "small", "rtt", "rtt_cdf_64"] {
        let svg = std::fs::read_to_string(dir.join(format!("{name}.svg"))).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("gladius"),
            "{name}.svg"
        );
        let png = std::fs::read(dir.join(format!("{name}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name}.png");
    }
    // No 1 KiB round trips in the sample: that CDF is not written.
    assert!(!dir.join("rtt_cdf_1024.svg").exists());
    let bulk = std::fs::read_to_string(dir.join("bulk.svg")).unwrap();
    assert!(bulk.contains("TCP, kernel (plaintext)") && bulk.contains("MISSED"));
    let tables = std::fs::read_to_string(dir.join("tables.md")).unwrap();
    assert!(tables.contains("### Issue 18 goals") && tables.contains("### throughput"));
    let _ = std::fs::remove_dir_all(&dir);
}
