//! What each counter of `network_state()` and of the latency audit means:
//! the `# HELP` of `/metrics` and the explanation the status page shows
//! next to a counter. One table, so both say the same.

use serde_json::{json, Value};

/// A counter: its name in the JSON snapshot, whether a non-zero value
/// means something went wrong, and what it counts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CounterHelp {
    pub(crate) name: &'static str,
    pub(crate) is_error: bool,
    pub(crate) help: &'static str,
}

const fn c(name: &'static str, is_error: bool, help: &'static str) -> CounterHelp {
    CounterHelp {
        name,
        is_error,
        help,
    }
}

/// `network_state().counters` (gladius_p2p::Counters).
pub(crate) const NODE: &[CounterHelp] = &[
    c("datagrams_in", false, "UDP datagrams received."),
    c("datagrams_out", false, "UDP datagrams sent."),
    c("malformed_datagrams", true, "Datagrams that were not valid KCP (truncated, bad header, wrong conversation); dropped. Garbage on the port, or a peer of another version."),
    c("unknown_session_datagrams", true, "Valid-looking datagrams for no session that could not open one; dropped. Usually late packets of a session that just closed."),
    c("refused_sessions", true, "Inbound sessions refused: unknown peers refused by the configuration, or their source IP (IPv6: its /64) already holds max_inbound_sessions_per_ip sessions from outside the route table."),
    c("evicted_sessions", true, "Sessions from peers outside the route table closed to make room for a new one when max_inbound_sessions were open (the least recently active of the most crowded source IP). Many: someone is opening sessions at scale."),
    c("handler_panics", true, "Requests whose handler (Network::handle_requests) panicked; the request went to the plugins instead. Any: a bug in the application's handler."),
    c("simultaneous_open_drops", false, "The losing half of a simultaneous open: a stale session opener (plaintext) or a completed handshake the other direction's handshake won (encrypted). Normal when two nodes add each other."),
    c("checksum_failures", true, "Messages dropped for a bad CRC-32C: corrupted above KCP (a bug or a hostile peer)."),
    c("wrong_sender", true, "Messages dropped because their sender differed from the address the peer authenticated with."),
    c("protocol_errors", true, "Sessions closed for a protocol violation (a bad or oversized frame)."),
    c("unmatched_replies", true, "Replies matching no outstanding request, usually replies that came after the request timed out."),
    c("send_errors", true, "Socket send errors (the kernel refused a datagram: no route, buffer full)."),
    c("send_buffer_full", false, "Sends that found the socket's send buffer full and waited for room; nothing was lost. Many: the node sends faster than its link (or its socket_buffer_bytes) carries."),
    c("queue_full", true, "Sends refused because a peer's queue was full: the peer (or the path) is slower than the sender. The sender was told (SendReport)."),
    c("dead_sessions", true, "Sessions closed because the peer went silent or KCP gave up retransmitting."),
    c("abandoned_frames", true, "Frames queued to a peer that was forgotten before a session to it was established (it never answered, or was deleted)."),
    c("encryption_mismatches", true, "Session openers from a node of the other mode (plaintext vs encrypted), answered with a Reject."),
    c("rejected_by_peer", true, "Our connection attempts the peer answered with a Reject (it runs in the other mode, or refused our key); honoured once the peer sent nothing else for 500 ms after it."),
    c("rejects_overruled", true, "Rejects in a peer's name that the peer's own answer overruled within 500 ms: forged by a third party, or a late one from an earlier attempt. The connection went on."),
    c("pin_mismatches", true, "Handshakes refused because the peer's key is not the pinned one: a different node at that address, or an impostor."),
    c("key_conflicts", true, "Handshakes that proved another key at the address of a peer whose session is still live: refused (an impostor, or a restart before the old session ended)."),
    c("amplification_drops", true, "Datagrams not sent to an address that has not proven it receives (it opened a session or handshake and never answered): it would have got more than 3x the bytes it sent. Many of these: someone is spoofing source addresses at this node."),
    c("demotions", false, "Deletes by a plugin (e.g. the latency audit judging a peer dead) of a peer you added: it stays in the route table, not writable, retried with backoff, and is writable again once it answers."),
    c("key_changes", false, "Peers added by address that came back under a new key once their old session was gone (a restart with a fresh identity)."),
    c("bad_handshakes", true, "Handshake messages that did not authenticate or did not fit a handshake in progress."),
    c("handshake_timeouts", true, "Our handshakes that got no answer in time (peer down, or UDP blocked)."),
    c("throttled_handshakes", true, "Handshake initiations dropped: a retransmission answered less than 100 ms before, or a new one on a cookie less than 100 ms after the last from that address; and half-open handshakes evicted from a full table (a flood)."),
    c("key_exchanges_refused", true, "Handshake initiations with a valid cookie dropped: the cookie key-exchange budget, or their source IP's share of it, was spent (a flood from hosts that answer cookies; the initiator's retransmission tries again)."),
    c("cookies_sent", false, "Cookie replies sent instead of a key exchange: past the key-exchange budget or a source IP's share of it, with the half-open table half full, or from an address already holding an unproven handshake (DoS protection at work)."),
    c("decrypt_failures", true, "Sealed datagrams that failed authentication: forged or corrupted on the way."),
    c("replayed_datagrams", true, "Sealed datagrams rejected by the replay window: replayed, duplicated by the network, or too old."),
    c("rekeys", false, "Sessions closed to re-key before the nonce limit (normal on long, busy sessions)."),
    c("partial_frames_dropped", true, "Partially received messages dropped (largest first, peers outside the route table first) to keep all of them within partial_frame_bytes; the rest of each is skipped and the session goes on. Many: peers start messages they do not finish."),
    c("partial_frame_bytes_dropped", true, "The bytes the dropped partial messages held."),
    c("reorder_refused", true, "KCP segments beyond a gap neither held nor acknowledged, because the session's share of reorder_bytes (out-of-order segments of sessions outside the route table) was full; the sender retransmits them. Many: peers leave gaps they never fill, or many sessions share the budget."),
    c("handshakes_completed", false, "Noise handshakes completed, each giving a session (encrypted mode)."),
    c("path_changes", false, "Peers that roamed: an authenticated, fresh datagram of a peer's session came from a new address, and the peer's path moved there without a new handshake (its NAT rebound, or it changed networks)."),
    c("observations_sent", false, "Observed-address reports sent: each peer is told the address its datagrams come from, when its session is established and when its path moves."),
    c("observations_received", false, "Observed-address reports received from peers with a proven key: what network_state's reflexive_addrs and nat are made of."),
    c("bad_observations", true, "Observed-address reports whose body was not a canonical address: dropped (a peer of another version, or a broken one)."),
    c("path_conflicts", true, "Authenticated datagrams from an address that is another live peer's path: delivered, but the path was not moved (a peer spoofing another's address, or two peers behind one NAT port in turn)."),
    c("relay_forwarded", false, "As a relay (--relay): datagrams of two other peers' sealed session forwarded from one to the other."),
    c("relay_forwarded_bytes", false, "As a relay: bytes of the datagrams forwarded."),
    c("relay_refused", true, "As a relay: forwarding requests refused (this node does not relay, no session with the target, relayed pairs full, the target's queue full, or malformed)."),
    c("relay_rate_limited", true, "As a relay: datagrams dropped because their pair of peers was over the per-pair byte rate (1 MiB/s by default)."),
    c("relayed_out", false, "Datagrams of our own sessions sent through a relay (peers we cannot reach directly)."),
    c("relayed_in", false, "Datagrams of our own sessions received through a relay."),
    c("relay_send_failures", true, "Datagrams for a relayed peer that could not go out: the relay's session is down or its queue full."),
    c("lookups_sent", false, "Dial by key: queries sent to peers asking who has a session with a key (add by public_key without an address)."),
    c("lookups_answered", false, "Dial by key: peers' queries this node answered."),
    c("lookups_found", false, "Dial by key: lookups that found a path and dialled it."),
    c("lookups_failed", true, "Dial by key: lookups nobody could answer (NoPath)."),
    c("bad_lookups", true, "Dial by key: malformed or unexpected lookup messages, dropped."),
    c("relay_fallbacks", true, "Dial by key: direct dials that got no answer and went through a relay instead."),
    c("punch_attempts", false, "Hole punching: rounds started with a relayed peer (both ends send probes to each other's candidate addresses)."),
    c("punch_probes", false, "Hole punching: sealed probe datagrams sent straight to a relayed peer's candidate addresses."),
    c("punch_successes", false, "Hole punching: relayed peers whose session moved to a direct path (no new handshake)."),
    c("punch_failures", true, "Hole punching: relayed peers given up on after every round (they stay relayed; symmetric NATs usually)."),
    c("bad_punches", true, "Hole punching: malformed or unexpected coordination messages, dropped."),
];

/// The latency audit's counters (gladius_plugins::latency::LatencyCounters).
pub(crate) const LATENCY: &[CounterHelp] = &[
    c("pings_sent", false, "Latency audit: pings sent."),
    c("pongs_received", false, "Latency audit: pongs received in time."),
    c("pings_missed", true, "Latency audit: pings that got no valid pong in time (lost, late or peer down); enough in a row make a peer suspect, then dead."),
    c("bad_pongs", true, "Latency audit: pongs that did not decode or did not echo the nonce (also counted as missed)."),
    c("pings_answered", false, "Latency audit: peers' pings this node answered."),
    c("bad_pings", true, "Latency audit: latency.ping messages that were not requests or did not decode (not answered)."),
    c("peers_deleted", true, "Latency audit: peers deleted because they were dead (missed too many pings in a row)."),
];

/// The gossip plugin's counters (gladius_plugins::gossip::GossipStats).
pub(crate) const GOSSIP: &[CounterHelp] = &[
    c("published", false, "Gossip: messages this node published."),
    c("delivered", false, "Gossip: messages delivered to this node's subscriptions (each once)."),
    c("duplicates", false, "Gossip: full messages received again (a second copy from the same source closed a cycle of tree links and prunes it; a shortcut, or a copy meeting a branch a shortcut started, does not)."),
    c("data_sent", false, "Gossip: full-message frames sent (eager pushes, shortcuts and answers to grafts)."),
    c("shortcuts_sent", false, "Gossip: full-message frames sent over links outside the tree (the origin's fan-out to its fastest lazy neighbours, and shortcut pushes by the origin's neighbours)."),
    c("ihave_sent", false, "Gossip: message ids announced to lazy neighbours."),
    c("grafts_sent", false, "Gossip: grafts sent (a message announced but not received in time: the tree was repaired)."),
    c("grafts_received", false, "Gossip: grafts received from neighbours repairing their tree."),
    c("prunes_sent", false, "Gossip: prunes sent (a duplicate turned a tree link lazy)."),
    c("prunes_received", false, "Gossip: prunes received."),
    c("frames_sent", false, "Gossip: frames sent, all kinds."),
    c("bytes_sent", false, "Gossip: bytes of frames sent."),
    c("bytes_received", false, "Gossip: bytes of frames received."),
    c("forged", true, "Gossip: messages whose origin signature did not verify (forged or modified); dropped, and the forwarder is not trusted for that message again."),
    c("distrusted", true, "Gossip: copies or announcements of a message from a peer that forwarded a forgery of it; ignored."),
    c("too_old", true, "Gossip: messages older than the TTL (or than the oldest id the full duplicate cache forgot); dropped, not redelivered."),
    c("from_future", true, "Gossip: messages timestamped further ahead than the allowed clock skew (the origin's clock is wrong); dropped."),
    c("throttled", true, "Gossip: frames dropped because their peer sent more than its rate allows (a flooding peer)."),
    c("malformed", true, "Gossip: frames that did not parse; dropped."),
    c("oversized", true, "Gossip: frames refused for their size (body or id count over the limits)."),
    c("not_subscribed", false, "Gossip: frames about topics this node is not subscribed to (late ones after unsubscribing are normal)."),
    c("pending_full", true, "Gossip: announced ids not awaited because too many already were (max_pending_grafts)."),
    c("peer_topics_full", true, "Gossip: subscriptions of peers ignored because that peer has too many topics (max_topics_per_peer)."),
    c("graft_misses", false, "Gossip: grafted ids this node no longer held (answered with nothing)."),
    c("grafts_exhausted", true, "Gossip: missing messages given up after every announcer was grafted without an answer."),
    c("reroutes", false, "Gossip: tree parents swapped for a neighbour closer to the origin (the tree optimisation)."),
    c("subscriber_overflow", true, "Gossip: deliveries dropped because a subscriber (the daemon's output) was too slow to take them."),
    c("send_failures", true, "Gossip: frames that could not be queued to a peer (its queue full, or it left)."),
];

/// The explanation of `name` in `table`, or a generic line for a counter
/// this table does not know yet (a newer core).
pub(crate) fn help(table: &[CounterHelp], name: &str) -> String {
    table.iter().find(|c| c.name == name).map_or_else(
        || format!("Counter `{name}` of the node."),
        |c| c.help.to_owned(),
    )
}

/// The tables as JSON (`{"node":{name:{error,help}},"latency":{…},"gossip":{…}}`),
/// for the status page.
pub(crate) fn as_json() -> Value {
    let table = |t: &[CounterHelp]| -> Value {
        t.iter()
            .map(|c| {
                (
                    c.name.to_owned(),
                    json!({"error": c.is_error, "help": c.help}),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    json!({"node": table(NODE), "latency": table(LATENCY), "gossip": table(GOSSIP)})
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every counter the snapshot has is explained, and nothing else: a
    /// counter added to the core must be added here.
    #[test]
    fn the_tables_name_exactly_the_counters_of_the_snapshots() {
        let names = |v: Value| -> Vec<String> {
            let mut n: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            n.sort();
            n
        };
        let sorted = |t: &[CounterHelp]| -> Vec<String> {
            let mut n: Vec<String> = t.iter().map(|c| c.name.to_owned()).collect();
            n.sort();
            n
        };
        let node = serde_json::to_value(gladius_p2p::Counters::default()).unwrap();
        assert_eq!(sorted(NODE), names(node));
        let latency =
            serde_json::to_value(gladius_plugins::latency::LatencyCounters::default()).unwrap();
        assert_eq!(sorted(LATENCY), names(latency));
        let gossip = serde_json::to_value(gladius_plugins::gossip::GossipStats::default()).unwrap();
        assert_eq!(sorted(GOSSIP), names(gossip));
    }
}
