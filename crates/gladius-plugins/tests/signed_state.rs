//! Signed shared state over real UDP on 127.0.0.1: the web3.js vector,
//! refusal of forged/replayed/future entries, the validator, and 40 nodes
//! converging by anti-entropy, before and after a partition.

mod signed_support;
mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gladius_p2p::{Message, Network};
use gladius_plugins::signed_state::{
    personal_message_hash, recover_personal, sync::SyncMessage, to_hex, AcceptAll, EthAddress,
    EthKey, EthSignature, FieldRules, Rejection, RoundBytes, SignedEntry, SignedStateConfig,
    SignedStateHandle,
};
use signed_support::*;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn web3js_personal_sign_vector_through_the_public_api() {
    let key =
        EthKey::from_hex("0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
            .unwrap();
    assert_eq!(
        key.address().to_string(),
        "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
    );
    assert_eq!(
        to_hex(&personal_message_hash(b"Some data")),
        "1da44b586eb0729ff70a73c326926f6ed5a25f5b056e7f47fbc6e58d86871655"
    );
    let quoted = "0xb91467e570a6466aa9e9876cbcd013baba02900b8979d43fe208a4a4f339f5fd6007e74cd82e037b800186422fc2da167c747ef045e5d18a5f5d4300f8e1a0291c";
    assert_eq!(key.sign_personal(b"Some data").unwrap().to_hex(), quoted);
    let sig = EthSignature::from_hex(quoted).unwrap();
    assert_eq!(recover_personal(b"Some data", &sig).unwrap(), key.address());
}

/// Send raw protocol messages to `to` from a bare node (no plugin).
async fn inject(from: &Network, to: std::net::SocketAddr, m: SyncMessage) {
    let (t, body) = m.encode();
    let r = from
        .broadcast_to(Message::new(t, body).unwrap(), &[to])
        .await
        .unwrap();
    assert!(r.all_queued());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_wrong_signer_replayed_and_future_entries_are_refused_and_counted() {
    let manager = EthKey::generate();
    let honest = EthKey::generate();
    let attacker = EthKey::generate();
    let config = SignedStateConfig::default()
        .with_validator(FieldRules::new(AcceptAll).restrict("pool.", [manager.address()]));
    let victim = node(config).await;
    let bare = Network::new(net_config()).unwrap();
    bare.listen("127.0.0.1:0").await.unwrap();
    bare.add(victim.addr).await.unwrap();

    let t = now_ms();
    let good = SignedEntry::sign(&honest, "status", &b"up"[..], t).unwrap();
    let older = SignedEntry::sign(&honest, "status", &b"old"[..], t - 1_000).unwrap();
    let mut zero_r = SignedEntry::sign(&honest, "status", &b"x"[..], t + 1).unwrap();
    zero_r.signature.0[..32].fill(0);
    let mut tampered = SignedEntry::sign(&honest, "status", &b"x"[..], t + 2).unwrap();
    tampered.value = bytes::Bytes::from_static(b"y");
    let mut impostor = SignedEntry::sign(&attacker, "status", &b"pwned"[..], t + 3).unwrap();
    impostor.signer = honest.address();
    let future = SignedEntry::sign(&honest, "status", &b"later"[..], t + 120_000).unwrap();
    let not_manager = SignedEntry::sign(&attacker, "pool.fee", &b"0"[..], t).unwrap();
    let by_manager = SignedEntry::sign(&manager, "pool.fee", &b"1"[..], t).unwrap();

    inject(
        &bare,
        victim.addr,
        SyncMessage::Entries {
            entries: vec![good.clone(), by_manager.clone()],
        },
    )
    .await;
    inject(
        &bare,
        victim.addr,
        SyncMessage::Entries {
            entries: vec![
                older,
                zero_r,
                tampered,
                impostor,
                future,
                not_manager,
                good.clone(),
            ],
        },
    )
    .await;
    // Garbage and over-bound bodies are counted, never applied.
    bare.broadcast_to(
        Message::new("signed_state.entries", vec![1u8, 0xff, 0xff]).unwrap(),
        &[victim.addr],
    )
    .await
    .unwrap();
    let s = &victim.state;
    wait_for(
        Duration::from_secs(10),
        "victim processed everything",
        || async {
            let st = s.stats();
            st.malformed_messages == 1 && st.rejections.total() == 6
        },
    )
    .await;
    let st = s.stats();
    assert_eq!(st.accepted, 2);
    assert_eq!(st.duplicates, 1);
    let r = st.rejections;
    assert_eq!(r.stale, 1, "older replay");
    assert_eq!(r.from_the_future, 1);
    assert_eq!(
        r.not_allowed, 1,
        "pool.* from someone else than the manager"
    );
    assert!(r.bad_signature >= 1, "zero r: {r:?}");
    assert_eq!(
        r.bad_signature + r.wrong_signer,
        3,
        "forged/tampered/impostor: {r:?}"
    );
    assert!(r.wrong_signer >= 1, "impostor: {r:?}");
    assert_eq!(s.get(&honest.address(), "status").unwrap().value, b"up");
    assert_eq!(s.get(&manager.address(), "pool.fee").unwrap().value, b"1");
    assert_eq!(s.len(), 2);

    // The same rules hold for entries handed in locally.
    let mut forged = good.clone();
    forged.timestamp_ms += 10;
    assert!(matches!(
        s.insert(forged),
        Err(Rejection::BadSignature | Rejection::WrongSigner)
    ));
    assert_eq!(
        s.insert(good),
        Ok(gladius_plugins::signed_state::Accepted::Duplicate)
    );

    // What a third party needs to verify each entry is in `entries()`.
    for e in s.entries() {
        let sig = EthSignature::from_hex(&e.signature).unwrap();
        assert_eq!(
            recover_personal(e.message.as_bytes(), &sig).unwrap(),
            e.signer
        );
    }
    close_all(vec![bare, victim.net]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_get_and_spread_between_two_nodes() {
    let config = SignedStateConfig::default().with_sync_interval(Duration::from_millis(100));
    let a = node(config.clone()).await;
    let b = node(config).await;
    a.net.add(b.addr).await.unwrap();
    let rec = a.state.set("greeting", "hello").await.unwrap();
    assert_eq!(rec.signer, a.state.address());
    // b sets too: it only reaches a through anti-entropy (b does not write to a).
    b.state.set("answer", "42").await.unwrap();
    wait_for(Duration::from_secs(10), "both hold both", || async {
        a.state.len() == 2 && b.state.len() == 2
    })
    .await;
    assert_eq!(
        b.state.get_value(&a.state.address(), "greeting").unwrap(),
        "hello"
    );
    assert_eq!(
        a.state.get_value(&b.state.address(), "answer").unwrap(),
        "42"
    );
    assert_eq!(a.state.root(), b.state.root());
    let t1 = a
        .state
        .get(&a.state.address(), "greeting")
        .unwrap()
        .timestamp_ms;
    a.state.set("greeting", "again").await.unwrap();
    let t2 = a
        .state
        .get(&a.state.address(), "greeting")
        .unwrap()
        .timestamp_ms;
    assert!(t2 > t1);
    assert!(a.state.set("bad field", "x").await.is_err());
    assert!(a.state.set("big", vec![0u8; 4097]).await.is_err());
    close_all(vec![a.net, b.net]).await;
}

// ----- 40 nodes over real sockets ---------------------------------------------
//
// The same story at 100 nodes, in virtual time and deterministic, is
// gladius-sim's `tests/state_partition.rs`; here it runs over real UDP on
// loopback, with deadlines generous enough for a loaded machine.

const N: usize = 40;
const HALF: usize = N / 2;
const INTERVAL: Duration = Duration::from_millis(200);

fn totals(states: &[SignedStateHandle]) -> RoundBytes {
    let mut t = RoundBytes::default();
    for s in states {
        let st = s.stats();
        t.bytes_sent += st.total.bytes_sent + st.current_round.bytes_sent;
        t.bytes_received += st.total.bytes_received + st.current_round.bytes_received;
        t.messages_sent += st.total.messages_sent + st.current_round.messages_sent;
        t.messages_received += st.total.messages_received + st.current_round.messages_received;
    }
    t
}

/// Wait until every node in `group` holds `count` entries and the same root;
/// print and return the time, rounds and bytes it took.
async fn converge(
    what: &str,
    states: &[SignedStateHandle],
    group: std::ops::Range<usize>,
    count: usize,
) -> Duration {
    let start = Instant::now();
    let before = totals(states);
    let g = &states[group.clone()];
    wait_for(Duration::from_secs(120), what, || async {
        let roots: BTreeSet<String> = g.iter().map(|s| s.root()).collect();
        roots.len() == 1 && g.iter().all(|s| s.len() == count)
    })
    .await;
    let took = start.elapsed();
    let after = totals(states);
    let rounds = (took.as_secs_f64() / INTERVAL.as_secs_f64()).max(1.0);
    let sent = after.bytes_sent - before.bytes_sent;
    println!(
        "{what}: {} nodes x {count} entries converged in {took:?} (~{rounds:.1} rounds of {INTERVAL:?}); \
         body bytes sent {sent} ({:.0} per round network-wide, {:.0} per node per round), messages sent {}",
        group.len(),
        sent as f64 / rounds,
        sent as f64 / rounds / N as f64,
        after.messages_sent - before.messages_sent,
    );
    took
}

/// Bytes per round once converged (roots only).
async fn steady_state(states: &[SignedStateHandle]) {
    let before = totals(states);
    let t = Instant::now();
    tokio::time::sleep(INTERVAL * 5).await;
    let after = totals(states);
    let rounds = t.elapsed().as_secs_f64() / INTERVAL.as_secs_f64();
    println!(
        "steady state: {:.0} body bytes per round network-wide ({:.1} per node), {:.0} messages per round",
        (after.bytes_sent - before.bytes_sent) as f64 / rounds,
        (after.bytes_sent - before.bytes_sent) as f64 / rounds / N as f64,
        (after.messages_sent - before.messages_sent) as f64 / rounds,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_nodes_converge_then_again_after_a_partition_heals() {
    let test_start = Instant::now();
    let config = SignedStateConfig::default()
        .with_sync_interval(INTERVAL)
        .with_fanout(3);
    let mut nodes = Vec::with_capacity(N);
    for _ in 0..N {
        nodes.push(node(config.clone()).await);
    }
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr).collect();
    let states: Vec<_> = nodes.iter().map(|n| n.state.clone()).collect();

    // Two halves, each a ring with chords (every node adds 3 others of its
    // half: +1, +5, +17), joined by 4 cross links.
    for (i, n) in nodes.iter().enumerate() {
        let base = i / HALF * HALF;
        for step in [1, 5, 17] {
            n.net
                .add(addrs[base + (i - base + step) % HALF])
                .await
                .unwrap();
        }
    }
    let cross = [(0, HALF), (12, HALF + 12), (HALF + 15, 15), (HALF + 7, 7)];
    for &(a, b) in &cross {
        nodes[a].net.add(addrs[b]).await.unwrap();
    }
    println!(
        "setup of {N} nodes and {} links: {:?}",
        N * 3 + cross.len(),
        test_start.elapsed()
    );

    // Phase 1: everyone publishes one field.
    for (i, n) in nodes.iter().enumerate() {
        n.state.set("name", format!("node-{i}")).await.unwrap();
    }
    converge("initial", &states, 0..N, N).await;
    steady_state(&states).await;
    for s in &states {
        for (j, other) in states.iter().enumerate() {
            assert_eq!(
                s.get_value(&other.address(), "name").unwrap(),
                format!("node-{j}")
            );
        }
    }

    // Phase 2: cut the cross links; wait until no session crosses.
    for &(a, b) in &cross {
        nodes[a].net.delete(addrs[b]).await.unwrap();
    }
    wait_for(Duration::from_secs(10), "cross sessions closed", || async {
        let mut ok = true;
        for &(a, b) in &cross {
            let sa = nodes[a].net.network_state().await.unwrap();
            let sb = nodes[b].net.network_state().await.unwrap();
            ok &= sa.peer(addrs[b]).is_none() && sb.peer(addrs[a]).is_none();
        }
        ok
    })
    .await;
    tokio::time::sleep(INTERVAL * 2).await; // let in-flight replies land
    for (i, n) in nodes.iter().enumerate() {
        n.state
            .set("epoch", format!("partitioned-{i}"))
            .await
            .unwrap();
    }
    converge("partition, half A", &states, 0..HALF, N + HALF).await;
    converge("partition, half B", &states, HALF..N, N + HALF).await;
    for (i, s) in states.iter().enumerate() {
        let other_half = if i < HALF { HALF..N } else { 0..HALF };
        for j in other_half {
            assert!(
                s.get(&states[j].address(), "epoch").is_none(),
                "partition leaked {j} -> {i}"
            );
        }
    }
    assert_ne!(states[0].root(), states[N - 1].root());

    // Phase 3: heal.
    let healed_at = Instant::now();
    for &(a, b) in &cross {
        nodes[a].net.add(addrs[b]).await.unwrap();
    }
    converge("after healing", &states, 0..N, 2 * N).await;
    println!(
        "healed and converged {:?} after re-adding the links",
        healed_at.elapsed()
    );
    for s in &states {
        for (j, other) in states.iter().enumerate() {
            assert_eq!(
                s.get_value(&other.address(), "epoch").unwrap(),
                format!("partitioned-{j}")
            );
        }
        let st = s.stats();
        assert_eq!(
            st.rejections.total() - st.rejections.stale,
            0,
            "{:?}",
            st.rejections
        );
        assert_eq!(st.malformed_messages, 0);
    }
    let st = states[0].stats();
    println!(
        "node 0: {} rounds, {} bytes sent / {} received in total; last rounds: {:?}",
        st.rounds,
        st.total.bytes_sent,
        st.total.bytes_received,
        &st.recent_rounds[st.recent_rounds.len().saturating_sub(3)..]
    );
    close_all(nodes.into_iter().map(|n| n.net)).await;
    println!("{N}-node test total: {:?}", test_start.elapsed());
}

#[test]
fn addresses_parse_and_display_checksummed() {
    let a: EthAddress = "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23"
        .parse()
        .unwrap();
    assert_eq!(a.to_string(), "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23");
}

async fn next(changes: &mut gladius_p2p::Subscription<SignedEntry>) -> SignedEntry {
    tokio::time::timeout(Duration::from_secs(10), changes.next())
        .await
        .expect("an entry in time")
        .expect("stream open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_stream_reports_own_and_remote_entries_once_each() {
    let a = node(SignedStateConfig::default()).await;
    let b = node(SignedStateConfig::default()).await;
    let mut changes = b.state.changes();
    a.net.add(b.addr).await.unwrap();
    a.net
        .wait_connected(b.addr, Duration::from_secs(10))
        .await
        .unwrap();

    b.state.set("own", "1").await.unwrap();
    let own = next(&mut changes).await;
    assert_eq!((own.signer, own.field.as_str()), (b.state.address(), "own"));

    a.state.set("serving", "a.mp4").await.unwrap();
    let remote = next(&mut changes).await;
    assert_eq!(remote.signer, a.state.address());
    assert_eq!(remote.value, "a.mp4");
    // A newer value comes again; the same entry arriving twice does not.
    a.state.set("serving", "b.mp4").await.unwrap();
    let newer = next(&mut changes).await;
    assert_eq!(
        (newer.field.as_str(), &newer.value[..]),
        ("serving", &b"b.mp4"[..])
    );
    a.state.sync_now().await.unwrap();
    b.state.set("marker", "end").await.unwrap();
    assert_eq!(
        next(&mut changes).await.field,
        "marker",
        "no duplicate before it"
    );
    assert_eq!(changes.dropped(), 0);
    close_all([a.net, b.net]).await;
}

#[tokio::test]
async fn a_lagging_change_reader_holds_its_bound_and_counts_drops() {
    let (_plugin, state) = gladius_plugins::signed_state::SignedState::new(
        EthKey::generate(),
        SignedStateConfig::default(),
    );
    let mut changes = state.changes_bounded(4);
    for i in 0..20 {
        state.set(&format!("f{i:02}"), "v").await.unwrap();
    }
    assert_eq!(changes.dropped(), 16);
    let mut fields = Vec::new();
    while let Some(e) = changes.try_next() {
        fields.push(e.field);
    }
    assert_eq!(fields, ["f00", "f01", "f02", "f03"], "the first, in order");
    drop(changes);
    state.set("after", "v").await.unwrap(); // a closed reader is pruned, not fed
}

/// Entries from `signer` for fields `prefix0..prefixN`, sent to `to` in
/// messages of 256.
async fn flood(from: &Network, to: std::net::SocketAddr, signer: &EthKey, prefix: &str, n: usize) {
    let t = now_ms();
    let entries: Vec<SignedEntry> = (0..n)
        .map(|i| SignedEntry::sign(signer, &format!("{prefix}{i}"), vec![7u8; 64], t).unwrap())
        .collect();
    for c in entries.chunks(256) {
        inject(
            from,
            to,
            SyncMessage::Entries {
                entries: c.to_vec(),
            },
        )
        .await;
    }
}

/// One peer floods fields and signers: its signers hold their quota,
/// established signers keep their entries, the node's own `set` is
/// always accepted, and 200 bogus roots draw a bounded answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squatting_peers_are_held_to_quotas_and_answers_are_bounded() {
    let config = SignedStateConfig::default();
    let (max_signers, per_signer) = (config.max_signers, config.max_entries_per_signer);
    let max_answer = config.max_answer_bytes;
    let victim = node(config).await;
    let bare = Network::new(net_config()).unwrap();
    bare.listen("127.0.0.1:0").await.unwrap();
    bare.add(victim.addr).await.unwrap();
    let s = &victim.state;

    // Established signers first.
    let established: Vec<EthKey> = (0..5).map(|_| EthKey::generate()).collect();
    for k in &established {
        flood(&bare, victim.addr, k, "status", 4).await;
    }
    // One signer floods 5,000 fields; 1,500 new signers 8 fields each.
    let squatter = EthKey::generate();
    flood(&bare, victim.addr, &squatter, "f", 5_000).await;
    for _ in 0..1_500 {
        flood(&bare, victim.addr, &EthKey::generate(), "g", 8).await;
    }
    let sent = 5 * 4 + 5_000 + 1_500 * 8;
    wait_for(Duration::from_secs(60), "the flood processed", || async {
        let st = s.stats();
        st.accepted + st.duplicates + st.rejections.total() >= sent as u64
    })
    .await;
    let st = s.stats();
    eprintln!("after the flood: {} entries, {:?}", s.len(), st.rejections);
    let squatted = s
        .entries()
        .iter()
        .filter(|e| e.signer == squatter.address())
        .count();
    assert_eq!(squatted, per_signer, "the squatter holds its quota");
    assert!(st.rejections.signer_quota >= (5_000 - per_signer) as u64);
    let signers: BTreeSet<EthAddress> = s.entries().iter().map(|e| e.signer).collect();
    assert!(signers.len() <= max_signers, "{} signers", signers.len());
    for k in &established {
        for i in 0..4 {
            assert!(
                s.get(&k.address(), &format!("status{i}")).is_some(),
                "established signer lost"
            );
        }
    }
    // The node's own fields are always accepted.
    for i in 0..300 {
        s.set(&format!("own{i}"), "v")
            .await
            .expect("own set accepted");
    }
    assert_eq!(s.get(&s.address(), "own299").unwrap().value, b"v");

    // 200 bogus roots: each answered with at most one bounded page.
    let before = totals(std::slice::from_ref(s)).bytes_sent;
    let root = SyncMessage::Root {
        root: [9; 16],
        count: 1,
    };
    let root_bytes = root.encode().1.len() as u64;
    for _ in 0..200 {
        inject(&bare, victim.addr, root.clone()).await;
    }
    wait_for(Duration::from_secs(30), "the roots processed", || async {
        s.stats().total.messages_received + s.stats().current_round.messages_received
            >= (5 + 5_000usize.div_ceil(256) + 1_500 + 200) as u64
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let drawn = totals(std::slice::from_ref(s)).bytes_sent - before;
    eprintln!(
        "200 roots of {root_bytes} B drew {drawn} B ({}x); store {} entries",
        drawn / (200 * root_bytes),
        s.len()
    );
    // Own rounds (a root a second) aside, one page of at most
    // max_answer_bytes (plus its framing) per root.
    assert!(drawn <= 200 * (max_answer as u64 + 1024), "drew {drawn} B");
    close_all(vec![bare, victim.net]).await;
}
