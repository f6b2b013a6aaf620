//! Dial by key: a node with no path to a key asks its peers, then dials
//! what they know: straight to a public-looking address, else through a
//! peer that relays; nothing found is a clear `NoPath`.

use std::net::SocketAddr;

use super::world::*;
use crate::api::Origin;
use crate::endpoint::relay::is_relay_addr;
use crate::endpoint::{Event, KeyDial};
use crate::state::PathKind;
use crate::NetworkError;

const A: u16 = 1;
const B: u16 = 2;
const R: u16 = 3;

/// A (key 1), B (key 2), R (key 3, relaying); A and B each added R.
/// `block_ab`: nothing passes between A and B's addresses (2 and 20).
/// `b_mapped`: B sends from and receives at 20 (its NAT's mapping)
/// while it advertises 2, so it does not look public.
fn world(seed: u64, block_ab: bool, b_mapped: bool) -> World {
    let mut w = World::new(seed, 10, 0.0);
    w.spawn(addr(A), 1);
    w.spawn(addr(B), 2);
    w.spawn_with(addr(R), World::config(3, seed).with_relay(true));
    if b_mapped {
        w.nodes.get_mut(&addr(B)).expect("b").addr = addr(20);
    }
    if block_ab {
        w.filter = Some(Box::new(|_, d| {
            let ab = [d.from, d.to];
            !(ab.contains(&addr(A)) && (ab.contains(&addr(B)) || ab.contains(&addr(20))))
        }));
    }
    w.add(addr(A), addr(R));
    w.add(addr(B), addr(R));
    w.run_until(2_000);
    assert!(w.connected(addr(A), addr(R)));
    w
}

fn look_up(w: &mut World, k: u8) -> Result<KeyDial, NetworkError> {
    let now = w.now;
    w.node(addr(A))
        .add_key_or_look_up(now, key(k), &[], Origin::App)
}

/// The result of lookup `id` at A.
fn lookup_done(w: &World, id: u64) -> Option<Result<SocketAddr, String>> {
    w.nodes[&addr(A)].events.iter().find_map(|(_, e)| match e {
        Event::LookupDone { id: i, result } if *i == id => {
            Some(result.as_ref().map(|a| *a).map_err(|e| e.to_string()))
        }
        _ => None,
    })
}

fn looking_up(d: Result<KeyDial, NetworkError>) -> u64 {
    match d {
        Ok(KeyDial::LookingUp(id)) => id,
        other => panic!("expected a lookup, got {other:?}"),
    }
}

#[test]
fn a_key_behind_nat_is_found_and_reached_through_a_relay() {
    let mut w = world(1, true, true);
    let id = looking_up(look_up(&mut w, 2));
    w.run_for(300);
    let via = lookup_done(&w, id)
        .expect("answered within a few round trips")
        .expect("found");
    assert!(is_relay_addr(via), "{via}");
    w.run_for(2_000);
    assert!(w.connected(addr(A), via));
    w.send(addr(A), via, "hello by key");
    w.run_for(1_000);
    assert_eq!(w.bodies(addr(B)), vec!["hello by key".to_owned()]);
    let peer = w.peer(addr(A), via).expect("b at a");
    assert_eq!(peer.path, PathKind::Relayed);
    assert_eq!(peer.public_key, Some(key(2)));
    assert!(peer.in_route_table);
    let a = w.state(addr(A)).counters;
    assert_eq!(
        (a.lookups_sent, a.lookups_found, a.lookups_failed),
        (1, 1, 0)
    );
    assert_eq!(w.state(addr(R)).counters.lookups_answered, 1);
    // What the lookup found is kept for an upgrade to a direct path.
    let a_node = &w.nodes[&addr(A)].endpoint;
    let b_id = a_node.peers.at(via).expect("b");
    assert_eq!(
        a_node.peers.get(b_id).expect("b").direct_candidates,
        vec![addr(20), addr(2)]
    );
}

#[test]
fn a_public_key_is_dialled_directly() {
    let mut w = world(2, false, false);
    let id = looking_up(look_up(&mut w, 2));
    w.run_for(300);
    let dialled = lookup_done(&w, id).expect("answered").expect("found");
    assert_eq!(dialled, addr(B));
    w.run_for(1_000);
    let peer = w.peer(addr(A), addr(B)).expect("b at a");
    assert_eq!(peer.path, PathKind::Direct);
    assert_eq!(peer.direct_addr, Some(addr(B)));
    assert!(w.connected(addr(A), addr(B)));
    assert_eq!(w.state(addr(R)).counters.relay_forwarded, 0);
}

#[test]
fn a_public_looking_key_that_does_not_answer_falls_back_to_the_relay() {
    // B looks public to R, but A cannot reach it (a firewall).
    let mut w = world(3, true, false);
    let id = looking_up(look_up(&mut w, 2));
    w.run_for(300);
    assert_eq!(lookup_done(&w, id).expect("answered"), Ok(addr(B)));
    w.run_for(10_000);
    let a = w.state(addr(A));
    assert_eq!(a.counters.relay_fallbacks, 1);
    let peer = a
        .peers
        .iter()
        .find(|p| p.public_key == Some(key(2)))
        .expect("b at a");
    assert_eq!(peer.path, PathKind::Relayed, "{peer:?}");
    assert_eq!(peer.relay, Some(addr(R)));
    let via = peer.addr;
    w.send(addr(A), via, "after the fallback");
    w.run_for(1_000);
    assert_eq!(w.bodies(addr(B)), vec!["after the fallback".to_owned()]);
}

#[test]
fn an_unknown_key_is_a_clear_no_path() {
    let mut w = world(4, false, false);
    let id = looking_up(look_up(&mut w, 9));
    w.run_for(300);
    let result = lookup_done(&w, id).expect("every peer answered");
    assert!(result.is_err_and(|e| e.contains("no address is known")));
    assert_eq!(w.state(addr(A)).counters.lookups_failed, 1);
    // With no peer to ask, at once.
    let mut lone = World::new(5, 10, 0.0);
    lone.spawn(addr(A), 1);
    let now = lone.now;
    let r = lone
        .node(addr(A))
        .add_key_or_look_up(now, key(2), &[], Origin::App);
    assert!(matches!(r, Err(NetworkError::NoPath(_))), "{r:?}");
}

#[test]
fn a_lookup_nobody_answers_ends_at_its_timeout() {
    let mut w = world(6, false, false);
    // R hears nothing from A any more.
    w.filter = Some(Box::new(|_, d| d.to != addr(R)));
    let id = looking_up(look_up(&mut w, 2));
    w.run_for(super::super::lookup::LOOKUP_MS - 100);
    assert!(lookup_done(&w, id).is_none());
    w.run_for(200);
    assert!(lookup_done(&w, id).expect("timed out").is_err());
}

#[test]
fn lookups_in_flight_are_bounded() {
    let mut w = world(7, false, false);
    w.filter = Some(Box::new(|_, d| d.to != addr(R)));
    for k in 0..super::super::lookup::MAX_LOOKUPS {
        looking_up(look_up(&mut w, 100 + k as u8));
    }
    assert!(matches!(look_up(&mut w, 99), Err(NetworkError::NoPath(_))));
}
