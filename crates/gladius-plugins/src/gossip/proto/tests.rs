//! Unit tests of the tree logic: a handful of states wired by hand, frames
//! delivered at once in FIFO order, timers fired explicitly.

use super::*;
use crate::gossip::sim::EPOCH_MS;

const NOW: u64 = EPOCH_MS;

fn topic() -> Topic {
    Topic::new("t").unwrap()
}

fn node(i: u8, config: GossipConfig) -> State<u8> {
    let mut s = State::new(GossipKey::from_bytes(&[i + 1; 32]), config, u64::from(i));
    s.subscribe(NOW, topic()).unwrap();
    s
}

/// Nodes with links between them; `cut` drops frames on a link.
struct Net {
    nodes: Vec<State<u8>>,
    delivered: Vec<Vec<GossipMessage>>,
    timers: Vec<(u64, u8, Timer)>,
    cut: Vec<(u8, u8)>,
}

impl Net {
    fn new(n: u8, links: &[(u8, u8)], config: GossipConfig) -> Self {
        let mut net = Net {
            nodes: (0..n).map(|i| node(i, config.clone())).collect(),
            delivered: vec![Vec::new(); usize::from(n)],
            timers: Vec::new(),
            cut: Vec::new(),
        };
        for &(a, b) in links {
            net.nodes[usize::from(a)].handle(NOW, InEvent::PeerUp(b));
            net.nodes[usize::from(b)].handle(NOW, InEvent::PeerUp(a));
        }
        net.pump(NOW);
        net
    }

    /// Deliver every frame (FIFO) until quiet.
    fn pump(&mut self, now: u64) {
        let mut queue = VecDeque::new();
        loop {
            for (i, s) in self.nodes.iter_mut().enumerate() {
                let i = i as u8;
                while let Some(t) = s.poll_transmit() {
                    queue.push_back((i, t.to, t.frame));
                }
                while let Some((at, timer)) = s.poll_timer() {
                    self.timers.push((at, i, timer));
                }
                while let Some(m) = s.poll_delivery() {
                    self.delivered[usize::from(i)].push(m);
                }
            }
            let Some((from, to, frame)) = queue.pop_front() else {
                return;
            };
            if self.cut.contains(&(from, to)) {
                continue;
            }
            self.nodes[usize::from(to)].handle(now, InEvent::Message { from, frame });
        }
    }

    fn fire_timers(&mut self, until: u64) {
        let due: Vec<_> = self
            .timers
            .iter()
            .filter(|t| t.0 <= until)
            .copied()
            .collect();
        self.timers.retain(|t| t.0 > until);
        for (at, i, timer) in due {
            self.nodes[usize::from(i)].handle(at, InEvent::Timer(timer));
            self.pump(at);
        }
    }

    fn publish(&mut self, i: u8, body: &'static [u8]) -> MessageId {
        let id = self.nodes[usize::from(i)]
            .publish(NOW, topic(), Bytes::from_static(body))
            .unwrap();
        self.pump(NOW);
        id
    }

    fn got(&self, i: u8, id: MessageId) -> usize {
        self.delivered[usize::from(i)]
            .iter()
            .filter(|m| m.id == id)
            .count()
    }
}

/// Plain PlumTree: no copies off the tree, so the tree's own rules show.
fn tree_only() -> GossipConfig {
    GossipConfig::default().with_shortcuts(0, 0)
}

fn triangle() -> Net {
    Net::new(3, &[(0, 1), (0, 2), (1, 2)], tree_only())
}

#[test]
fn neighbours_start_eager_and_a_duplicate_prunes_the_cycle() {
    let mut net = triangle();
    assert_eq!(net.nodes[1].eager_peers(&topic()), vec![0, 2]);
    let id = net.publish(0, b"one");
    assert_eq!((net.got(1, id), net.got(2, id)), (1, 1));
    // 1 and 2 each got a second copy from the other: that link is pruned
    // on both sides, the links to the origin stay eager.
    assert_eq!(net.nodes[1].eager_peers(&topic()), vec![0]);
    assert_eq!(net.nodes[1].lazy_peers(&topic()), vec![2]);
    assert_eq!(net.nodes[2].eager_peers(&topic()), vec![0]);
    assert_eq!(net.nodes[2].lazy_peers(&topic()), vec![1]);
    let dups: u64 = net.nodes.iter().map(|n| n.counters().duplicates).sum();

    // On the tree, the next message arrives once per node: no duplicate,
    // and the lazy link carries an announcement instead.
    let id2 = net.publish(0, b"two");
    assert_eq!((net.got(1, id2), net.got(2, id2)), (1, 1));
    let dups2: u64 = net.nodes.iter().map(|n| n.counters().duplicates).sum();
    assert_eq!(dups2, dups);
    assert_eq!(net.nodes[1].counters().ihave_sent, 1);
    let m = &net.delivered[1][1];
    assert_eq!(
        (m.hops, m.origin, &m.body[..]),
        (1, net.nodes[0].origin(), &b"two"[..])
    );
}

#[test]
fn a_missing_announced_message_is_grafted_and_the_link_becomes_eager() {
    let mut net = triangle();
    net.publish(0, b"form the tree");
    // The tree link 0 -> 2 breaks silently; 1 still announces to 2.
    net.cut.push((0, 2));
    let received = net.nodes[1].counters().grafts_received;
    let id = net.publish(0, b"repair me");
    assert_eq!(net.got(2, id), 0);
    assert_eq!(net.nodes[2].pending_grafts(), 1);
    // Not before the graft timeout...
    net.fire_timers(NOW + 249);
    assert_eq!(net.got(2, id), 0);
    // ...then 2 grafts 1, which sends the message and is eager again.
    net.fire_timers(NOW + 250);
    assert_eq!(net.got(2, id), 1);
    assert_eq!(net.delivered[2].last().unwrap().hops, 2);
    assert_eq!(net.nodes[2].counters().grafts_sent, 1);
    assert_eq!(net.nodes[1].counters().grafts_received, received + 1);
    assert!(net.nodes[2].eager_peers(&topic()).contains(&1));
    assert!(net.nodes[1].eager_peers(&topic()).contains(&2));
    assert_eq!(net.nodes[2].pending_grafts(), 0);
}

#[test]
fn a_graft_tries_the_next_announcer_when_the_first_does_not_answer() {
    // 3 hears of the message from 1 and 2, but 1's answer is lost.
    let links = [(0, 1), (0, 2), (1, 3), (2, 3)];
    let mut net = Net::new(4, &links, tree_only());
    net.publish(0, b"tree");
    net.publish(0, b"tree again");
    assert_eq!(net.nodes[3].eager_peers(&topic()).len(), 1);
    let parent = net.nodes[3].eager_peers(&topic())[0];
    net.cut.push((parent, 3));
    let id = net.publish(0, b"x");
    assert_eq!(net.got(3, id), 0);
    // The only announcer is the lazy one; cut it too for the first graft.
    let other = 3 - parent; // 1 <-> 2
    net.cut.push((other, 3));
    let ihave = Frame::IHave {
        topic: topic(),
        ids: vec![(id, 1)],
    };
    recv(&mut net.nodes[3], NOW, parent, ihave.encode());
    net.fire_timers(NOW + 250); // the first announcer is grafted, no answer
    assert_eq!(net.got(3, id), 0);
    net.cut.clear();
    net.fire_timers(NOW + 250 + 75); // the second one answers
    assert_eq!(net.got(3, id), 1);
    assert_eq!(net.nodes[3].counters().grafts_sent, 2);
}

/// `frame` arrives at `s` from peer `from` at `at`.
fn recv(s: &mut State<u8>, at: u64, from: u8, frame: Bytes) {
    s.handle(at, InEvent::Message { from, frame });
}

fn data_frame(key: u8, ts: u64, body: &'static [u8]) -> Bytes {
    let key = GossipKey::from_bytes(&[key; 32]);
    Frame::Data(Data::signed(&key, topic(), ts, 7, Bytes::from_static(body))).encode()
}

#[test]
fn a_replayed_message_is_delivered_once() {
    let mut b = node(1, tree_only());
    let frame = data_frame(9, NOW, b"m");
    for _ in 0..3 {
        recv(&mut b, NOW + 10, 0, frame.clone());
    }
    assert_eq!(std::iter::from_fn(|| b.poll_delivery()).count(), 1);
    assert_eq!(b.counters().duplicates, 2);
}

#[test]
fn messages_older_than_the_ttl_or_from_the_future_are_dropped() {
    let mut b = node(1, tree_only());
    let ttl = 120_000;
    let msg = |ts| InEvent::Message {
        from: 0,
        frame: data_frame(9, ts, b"m"),
    };
    b.handle(NOW, msg(NOW - ttl - 1));
    b.handle(NOW, msg(NOW + 30_001));
    assert_eq!((b.counters().too_old, b.counters().from_future), (1, 1));
    b.handle(NOW, msg(NOW - ttl + 1));
    b.handle(NOW, msg(NOW + 29_000));
    assert_eq!(b.counters().delivered, 2);
}

#[test]
fn a_full_id_cache_refuses_what_it_forgot_instead_of_redelivering_it() {
    let mut b = node(1, tree_only().with_max_seen(16));
    let frames: Vec<Bytes> = (0..20u8)
        .map(|i| {
            let key = GossipKey::from_bytes(&[9; 32]);
            let body = Bytes::from(vec![i]);
            Frame::Data(Data::signed(&key, topic(), NOW + u64::from(i), 0, body)).encode()
        })
        .collect();
    for f in &frames {
        recv(&mut b, NOW + 100, 0, f.clone());
    }
    assert_eq!(b.counters().delivered, 20);
    assert_eq!(b.seen_len(), 16);
    // The oldest were forgotten; a replay is refused, never redelivered.
    recv(&mut b, NOW + 100, 0, frames[0].clone());
    assert_eq!(b.counters().delivered, 20);
    assert_eq!(b.counters().too_old, 1);
}

#[test]
fn a_forged_copy_is_dropped_and_its_forwarder_not_trusted_for_that_id() {
    let mut b = node(1, tree_only());
    for p in [0, 2] {
        b.handle(NOW, InEvent::PeerUp(p));
    }
    let good = data_frame(9, NOW, b"pay alice");
    let mut evil = good.to_vec();
    let at = evil.len() - 64 - 5;
    evil[at..at + 5].copy_from_slice(b"mallo"); // same length, other bytes
    let evil = Bytes::from(evil);
    let Ok(Frame::Data(forged)) = Frame::decode(&evil, 1 << 20, 64) else {
        panic!("still parses");
    };
    let forged_id = forged.id();
    while b.poll_transmit().is_some() {}
    recv(&mut b, NOW, 0, evil.clone());
    assert_eq!(b.counters().forged, 1);
    assert_eq!(b.poll_delivery(), None);
    assert_eq!(b.poll_transmit(), None, "nothing forwarded");
    // The same forwarder is not believed about that id again...
    recv(&mut b, NOW, 0, evil);
    let ihave = Frame::IHave {
        topic: topic(),
        ids: vec![(forged_id, 0)],
    }
    .encode();
    recv(&mut b, NOW, 0, ihave);
    assert_eq!(b.counters().distrusted, 2);
    assert_eq!(b.pending_grafts(), 0);
    // ...and the genuine message still arrives from an honest peer.
    recv(&mut b, NOW, 2, good);
    assert_eq!(
        b.poll_delivery().map(|m| m.body),
        Some(Bytes::from_static(b"pay alice"))
    );
    // A signature by another key than the claimed origin is a forgery too.
    let key = GossipKey::from_bytes(&[3; 32]);
    let mut other = Data::signed(&key, topic(), NOW, 1, Bytes::new());
    other.origin = GossipKey::from_bytes(&[9; 32]).origin();
    recv(&mut b, NOW, 2, Frame::Data(other).encode());
    assert_eq!(b.counters().forged, 2);
}

#[test]
fn a_flooding_peer_is_throttled_and_counted() {
    let mut b = node(1, tree_only().with_peer_rate(100, 10));
    let frame = Frame::Prune { topic: topic() }.encode();
    for _ in 0..50 {
        recv(&mut b, NOW, 0, frame.clone());
    }
    assert_eq!(b.counters().throttled, 40);
    assert_eq!(b.counters().prunes_received, 10);
    // The bucket refills at the rate: 100/s is one frame per 10 ms.
    for _ in 0..10 {
        recv(&mut b, NOW + 50, 0, frame.clone());
    }
    assert_eq!(b.counters().prunes_received, 15);
}

#[test]
fn malformed_oversized_and_foreign_topic_frames_are_counted() {
    let mut b = node(1, tree_only().with_max_body_len(4));
    let send = |b: &mut State<u8>, frame: Bytes| recv(b, NOW, 0, frame);
    send(&mut b, Bytes::from_static(b"\x01\x07junk"));
    send(&mut b, data_frame(9, NOW, b"too long"));
    let other = Topic::new("other").unwrap();
    let key = GossipKey::from_bytes(&[9; 32]);
    send(
        &mut b,
        Frame::Data(Data::signed(&key, other, NOW, 0, Bytes::new())).encode(),
    );
    let c = b.counters();
    assert_eq!(
        (c.malformed, c.oversized, c.not_subscribed, c.delivered),
        (1, 1, 1, 0)
    );
    assert!(matches!(
        b.publish(NOW, topic(), Bytes::from_static(b"12345")),
        Err(PublishError::TooLarge { len: 5, max: 4 })
    ));
}

#[test]
fn pending_grafts_are_bounded() {
    let mut b = node(1, tree_only().with_max_pending_grafts(10));
    let ids: Vec<(MessageId, u16)> = (0..40u8).map(|i| (MessageId([i; 32]), 1)).collect();
    let ihave = Frame::IHave {
        topic: topic(),
        ids,
    }
    .encode();
    recv(&mut b, NOW, 0, ihave);
    assert_eq!(b.pending_grafts(), 10);
    assert_eq!(b.counters().pending_full, 30);
}

#[test]
fn an_unsubscribed_node_neither_delivers_nor_forwards_and_peers_drop_it() {
    let mut net = Net::new(3, &[(0, 1), (1, 2)], tree_only());
    net.nodes[1].unsubscribe(NOW, &topic());
    net.pump(NOW);
    assert!(net.nodes[0].eager_peers(&topic()).is_empty());
    let id = net.publish(0, b"m");
    assert_eq!((net.got(1, id), net.got(2, id)), (0, 0));
    assert_eq!(net.nodes[2].eager_peers(&topic()), Vec::<u8>::new());
}

#[test]
fn flood_mode_never_prunes() {
    let links = [(0, 1), (0, 2), (1, 2)];
    let mut net = Net::new(3, &links, tree_only().with_flood(true));
    for _ in 0..3 {
        net.publish(0, b"m");
    }
    assert_eq!(net.nodes[1].eager_peers(&topic()), vec![0, 2]);
    assert_eq!(net.nodes[1].counters().prunes_sent, 0);
    assert_eq!(net.nodes[1].counters().duplicates, 3);
}

#[test]
fn a_flood_topic_floods_while_another_forms_a_tree() {
    let config = tree_only().with_flood_topic("f");
    let mut net = Net::new(3, &[(0, 1), (0, 2), (1, 2)], config);
    let f = Topic::new("f").unwrap();
    for s in net.nodes.iter_mut() {
        s.subscribe(NOW, f.clone()).unwrap();
    }
    net.pump(NOW);
    for _ in 0..3 {
        net.publish(0, b"tree");
        net.nodes[0]
            .publish(NOW, f.clone(), Bytes::from_static(b"flood"))
            .unwrap();
        net.pump(NOW);
    }
    // "t" pruned its cycle, "f" keeps every link eager.
    assert_eq!(net.nodes[1].eager_peers(&topic()), vec![0]);
    assert_eq!(net.nodes[1].eager_peers(&f), vec![0, 2]);
    assert_eq!(net.nodes[1].lazy_peers(&f), Vec::<u8>::new());
    // Every node got every message of both topics once.
    assert!(net.delivered[1..].iter().all(|d| d.len() == 6));
}

/// Node 3 with tree parent 0 and lazy neighbour 1, frames fed by hand.
fn parent_and_lazy(config: GossipConfig) -> State<u8> {
    let mut x = node(3, config);
    for p in [0, 1] {
        x.handle(NOW, InEvent::PeerUp(p));
        recv(&mut x, NOW, p, Frame::Subscribe { topic: topic() }.encode());
    }
    // A copy from 1 after 0's makes 1 lazy.
    let first = data_frame(9, NOW, b"form");
    recv(&mut x, NOW, 0, first.clone());
    recv(&mut x, NOW, 1, first);
    assert_eq!(
        (x.eager_peers(&topic()), x.lazy_peers(&topic())),
        (vec![0], vec![1])
    );
    while x.poll_transmit().is_some() {}
    x
}

/// Message `k`: announced by 1 at `at`, delivered by 0 `lead` ms later.
fn announced_then_delivered(x: &mut State<u8>, k: u64, at: u64, lead: u64) {
    let key = GossipKey::from_bytes(&[9; 32]);
    let data = Data::signed(&key, topic(), at, k, Bytes::from_static(b"m"));
    let ihave = Frame::IHave {
        topic: topic(),
        ids: vec![(data.id(), 1)],
    };
    recv(x, at, 1, ihave.encode());
    recv(x, at + lead, 0, Frame::Data(data).encode());
}

#[test]
fn an_announcer_faster_than_the_tree_for_most_messages_replaces_the_parent() {
    let config = tree_only().with_optimise(3, 8, std::time::Duration::from_millis(20));
    let mut x = parent_and_lazy(config);
    // Leads shorter than 20 ms do not count.
    for k in 0..5 {
        announced_then_delivered(&mut x, k, NOW + 100 * k, 10);
    }
    assert_eq!(x.eager_peers(&topic()), vec![0]);
    // Two long leads: not yet.
    for k in 5..7 {
        announced_then_delivered(&mut x, k, NOW + 100 * k, 40);
    }
    assert_eq!(x.eager_peers(&topic()), vec![0]);
    while x.poll_transmit().is_some() {}
    // The third within the window: 1 becomes the tree link, 0 lazy.
    announced_then_delivered(&mut x, 7, NOW + 700, 40);
    assert_eq!(
        (x.eager_peers(&topic()), x.lazy_peers(&topic())),
        (vec![1], vec![0])
    );
    assert_eq!(x.counters().reroutes, 1);
    let sent: Vec<(u8, Frame)> = std::iter::from_fn(|| x.poll_transmit())
        .map(|t| (t.to, Frame::decode(&t.frame, 1 << 16, 64).unwrap()))
        .collect();
    // A payload-less graft to the new parent, a prune to the old one.
    assert!(sent.contains(&(
        1,
        Frame::Graft {
            topic: topic(),
            ids: vec![]
        }
    )));
    assert!(sent.contains(&(0, Frame::Prune { topic: topic() })));
}

#[test]
fn the_latency_optimisation_is_off_by_default() {
    let mut x = parent_and_lazy(tree_only());
    for k in 0..20 {
        announced_then_delivered(&mut x, k, NOW + 100 * k, 100);
    }
    assert_eq!(x.eager_peers(&topic()), vec![0]);
    assert_eq!(x.counters().reroutes, 0);
}

#[test]
fn a_node_on_a_tree_in_use_takes_a_new_neighbour_lazily_and_a_newcomer_grafts_in() {
    let mut net = Net::new(5, &[(0, 1), (0, 2), (1, 2)], tree_only());
    // Before any message: neighbours start eager.
    assert_eq!(net.nodes[1].eager_peers(&topic()), vec![0, 2]);
    net.publish(0, b"the tree is in use");
    // 3 links to 1 and 2 (on the tree), 4 to 3 (a newcomer itself).
    for (a, b) in [(3u8, 1u8), (3, 2), (4, 3)] {
        net.nodes[usize::from(a)].handle(NOW, InEvent::PeerUp(b));
        net.nodes[usize::from(b)].handle(NOW, InEvent::PeerUp(a));
    }
    net.pump(NOW);
    // 3 joined through the first of 1 and 2 it heard from, which grafted
    // it in; the other keeps its tree and takes 3 as a repair link.
    let via: Vec<u8> = [1u8, 2]
        .into_iter()
        .filter(|&p| net.nodes[usize::from(p)].eager_peers(&topic()).contains(&3))
        .collect();
    assert_eq!(via.len(), 1, "{via:?}");
    let other = 3 - via[0];
    assert!(net.nodes[usize::from(other)]
        .lazy_peers(&topic())
        .contains(&3));
    // 4 joined through 3, the same way.
    assert!(net.nodes[3].eager_peers(&topic()).contains(&4));
    assert_eq!(net.nodes[4].eager_peers(&topic()), vec![3]);
    // The next message reaches both newcomers at once over the tree (no
    // graft timer fired), each once.
    let dups_before: u64 = net.nodes.iter().map(|n| n.counters().duplicates).sum();
    let id = net.publish(0, b"welcome");
    assert_eq!((net.got(3, id), net.got(4, id)), (1, 1));
    // At most one copy too many (3 pushing back to `other`), which
    // prunes that link.
    let dups: u64 = net.nodes.iter().map(|n| n.counters().duplicates).sum();
    assert!(dups - dups_before <= 1, "{}", dups - dups_before);
    let id = net.publish(0, b"settled");
    let after: u64 = net.nodes.iter().map(|n| n.counters().duplicates).sum();
    assert_eq!(after, dups, "no duplicate once settled");
    assert_eq!((net.got(3, id), net.got(4, id)), (1, 1));
}

#[test]
fn with_join_lazy_off_a_new_neighbour_is_eager_and_its_cycle_pruned() {
    let config = tree_only().with_join_lazy(false);
    let mut net = Net::new(4, &[(0, 1), (0, 2), (1, 2)], config);
    net.publish(0, b"the tree is in use");
    for (a, b) in [(3u8, 1u8), (3, 2)] {
        net.nodes[usize::from(a)].handle(NOW, InEvent::PeerUp(b));
        net.nodes[usize::from(b)].handle(NOW, InEvent::PeerUp(a));
    }
    net.pump(NOW);
    assert!(net.nodes[2].eager_peers(&topic()).contains(&3));
    let id = net.publish(0, b"cycle");
    assert_eq!(net.got(3, id), 1);
    // 3 got it from 1 and from 2: a duplicate, and a prune.
    assert_eq!(net.nodes[3].counters().duplicates, 1);
    assert_eq!(net.nodes[3].eager_peers(&topic()).len(), 1);
}

#[test]
fn shortcuts_reach_lazy_neighbours_first_and_never_reshape_the_tree() {
    // A ring 0-1-2-3-0 with the chord 0-2, origin fan-out to 8 and two
    // shortcut pushes. The first message from 0 forms a star
    // around 0; 1-2 and 2-3 become lazy.
    let links = [(0, 1), (1, 2), (2, 3), (3, 0), (0, 2)];
    let mut net = Net::new(4, &links, GossipConfig::default().with_shortcuts(8, 2));
    let first = net.publish(0, b"form");
    assert!((1..4).all(|i| net.got(i, first) == 1));
    let eager: Vec<Vec<u8>> = net.nodes.iter().map(|n| n.eager_peers(&topic())).collect();
    assert_eq!(eager[2], vec![0]);
    assert_eq!(net.nodes[2].lazy_peers(&topic()), vec![1, 3]);
    let prunes: u64 = net.nodes.iter().map(|n| n.counters().prunes_sent).sum();

    for origin in [1, 2, 3, 0, 2] {
        let id = net.publish(origin, b"m");
        for i in (0..4).filter(|i| *i != origin) {
            assert_eq!(net.got(i, id), 1, "node {i}, origin {origin}");
        }
    }
    // From 1, its lazy neighbour 2 got a copy at once instead of an
    // announcement, and 2 (a neighbour of the origin) pushed one to its
    // lazy 3: duplicates, but no prune and no new eager link.
    let sum = |f: fn(&Counters) -> u64| net.nodes.iter().map(|n| f(n.counters())).sum::<u64>();
    assert!(
        sum(|c| c.shortcuts_sent) >= 3,
        "{:?}",
        net.nodes[1].counters()
    );
    assert!(sum(|c| c.duplicates) > 0);
    assert_eq!(sum(|c| c.prunes_sent), prunes);
    let after: Vec<Vec<u8>> = net.nodes.iter().map(|n| n.eager_peers(&topic())).collect();
    assert_eq!(after, eager);
}

/// Node 1 of `config` with the neighbours `eager` and `lazy` (each
/// subscribed; the lazy ones pruned the link), its frames so far drained.
fn with_neighbours(config: GossipConfig, eager: &[u8], lazy: &[u8]) -> State<u8> {
    let mut b = node(1, config);
    for &p in eager.iter().chain(lazy) {
        b.handle(NOW, InEvent::PeerUp(p));
        let subscribe = Frame::Subscribe { topic: topic() }.encode();
        feed(&mut b, p, subscribe);
    }
    for &p in lazy {
        feed(&mut b, p, Frame::Prune { topic: topic() }.encode());
    }
    while b.poll_transmit().is_some() {}
    b
}

fn feed(b: &mut State<u8>, from: u8, frame: Bytes) {
    b.handle(NOW, InEvent::Message { from, frame });
}

/// A message from another origin than the test's nodes.
fn foreign_message() -> Data {
    let key = GossipKey::from_bytes(&[9; 32]);
    Data::signed(&key, topic(), NOW, 7, Bytes::from_static(b"x"))
}

#[test]
fn shortcut_pushes_go_to_the_fastest_lazy_neighbours() {
    // Node 1: eager link to the origin 0, lazy links to 2, 3 and 4 with
    // round trips of 30, 10 and 20 ms. With one shortcut push, the message
    // from 0 goes off the tree to 3 and is announced to 2 and 4.
    let config = GossipConfig::default().with_shortcuts(0, 1);
    let mut b = with_neighbours(config, &[0], &[2, 3, 4]);
    for (p, ms) in [(2u8, 30), (3, 10), (4, 20)] {
        b.handle(NOW, InEvent::Rtt { peer: p, ms });
    }
    assert_eq!(b.eager_peers(&topic()), vec![0]);
    assert_eq!(b.lazy_peers(&topic()), vec![2, 3, 4]);
    feed(&mut b, 0, Frame::Data(foreign_message()).encode());
    let (mut off_tree_to, mut announced_to) = (Vec::new(), Vec::new());
    while let Some(t) = b.poll_transmit() {
        match Frame::decode(&t.frame, 1 << 16, 64) {
            Ok(Frame::Data(d)) if d.via == Via::Shortcut => off_tree_to.push(t.to),
            Ok(Frame::IHave { .. }) => announced_to.push(t.to),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(off_tree_to, vec![3]);
    announced_to.sort_unstable();
    assert_eq!(announced_to, vec![2, 4]);
    assert_eq!(b.counters().shortcuts_sent, 1);
    // The copy from 0 was on the tree: 0 stays eager, nothing changed.
    assert_eq!(b.eager_peers(&topic()), vec![0]);
}

#[test]
fn a_second_copy_from_the_same_source_closes_a_cycle_and_prunes() {
    // Node 1, all four neighbours eager. Copies of one message arrive
    // from several sources; only a second one from a source already seen
    // (here branch 77) proves a cycle of tree links.
    let mut b = with_neighbours(GossipConfig::default(), &[0, 2, 3, 4], &[]);
    let data = foreign_message();
    let mut prunes_to = Vec::new();
    for (from, via) in [
        (2u8, Via::Branch(77)),
        (3, Via::Branch(88)),
        (4, Via::Tree),
        (3, Via::Shortcut),
        (0, Via::Branch(77)),
    ] {
        let copy = Data {
            via,
            ..data.clone()
        };
        feed(&mut b, from, Frame::Data(copy).encode());
        while let Some(t) = b.poll_transmit() {
            if let Ok(Frame::Prune { .. }) = Frame::decode(&t.frame, 1 << 16, 64) {
                prunes_to.push(t.to);
            }
        }
    }
    assert_eq!(b.counters().delivered, 1);
    assert_eq!(b.counters().duplicates, 4);
    assert_eq!(prunes_to, vec![0]);
    assert_eq!(b.lazy_peers(&topic()), vec![0]);
    assert_eq!(b.eager_peers(&topic()), vec![2, 3, 4]);
}

#[test]
fn a_node_that_got_a_shortcut_forwards_on_a_branch_of_its_own() {
    let mut b = with_neighbours(tree_only(), &[2, 3], &[0]);
    let shortcut = Data {
        via: Via::Shortcut,
        ..foreign_message()
    };
    feed(&mut b, 0, Frame::Data(shortcut).encode());
    let mut branches = Vec::new();
    while let Some(t) = b.poll_transmit() {
        if let Ok(Frame::Data(d)) = Frame::decode(&t.frame, 1 << 16, 64) {
            branches.push((t.to, d.via));
        }
    }
    assert_eq!(branches.len(), 2, "{branches:?}");
    assert_eq!(branches[0].1, branches[1].1);
    assert!(
        matches!(branches[0].1, Via::Branch(n) if n != 0),
        "{branches:?}"
    );
    // The shortcut's sender stays lazy.
    assert_eq!(b.lazy_peers(&topic()), vec![0]);
}

#[test]
fn shortcut_depth_sets_how_far_from_the_origin_nodes_push_shortcuts() {
    // Node 1 with an eager link to 0 and a lazy one to 2 gets a message
    // that already crossed one link (hops 1): two hops from its origin.
    let shortcuts_for = |depth: u16| {
        let config = GossipConfig::default()
            .with_shortcuts(0, 1)
            .with_shortcut_depth(depth);
        let mut b = with_neighbours(config, &[0], &[2]);
        let mut data = foreign_message();
        data.hops = 1;
        feed(&mut b, 0, Frame::Data(data).encode());
        b.counters().shortcuts_sent
    };
    assert_eq!(shortcuts_for(1), 0);
    assert_eq!(shortcuts_for(2), 1);
}
