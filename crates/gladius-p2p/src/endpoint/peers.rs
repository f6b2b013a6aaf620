//! The peer table: peers by [`PeerId`], with the indices that find them by
//! address (every path of every peer), by proven key and by the local
//! index of its sealed session (where a `Data` datagram from an address
//! the peer was never seen at finds its session: roaming). This file alone
//! keeps the indices consistent: an address belongs to at most one peer,
//! a key to at most one peer, a session index to at most one peer (its
//! latest session's; a peer holds at most one index entry).

use std::net::SocketAddr;

use rand::rngs::StdRng;

use super::peer::{Peer, PeerId, MAX_PATHS};
use super::{table, HashMap};
use crate::crypto::PublicKey;

/// Peers and their indices.
#[derive(Debug)]
pub(super) struct Peers {
    peers: HashMap<PeerId, Peer>,
    by_addr: HashMap<SocketAddr, PeerId>,
    by_key: HashMap<PublicKey, PeerId>,
    /// Our index of each peer's latest sealed session. An entry may
    /// outlive the session (the caller checks the link still has that
    /// index); it goes when the peer gets another session or goes.
    by_index: HashMap<u32, PeerId>,
    /// The index entry each peer holds, so it can be taken back.
    index_of: HashMap<PeerId, u32>,
    last_id: u64,
}

impl Peers {
    pub(super) fn new(rng: &mut StdRng) -> Self {
        Self {
            peers: table(rng),
            by_addr: table(rng),
            by_key: table(rng),
            by_index: table(rng),
            index_of: table(rng),
            last_id: 0,
        }
    }

    pub(super) fn get(&self, id: PeerId) -> Option<&Peer> {
        self.peers.get(&id)
    }

    pub(super) fn get_mut(&mut self, id: PeerId) -> Option<&mut Peer> {
        self.peers.get_mut(&id)
    }

    /// The peer one of whose paths is `addr`.
    pub(super) fn at(&self, addr: SocketAddr) -> Option<PeerId> {
        self.by_addr.get(&addr).copied()
    }

    /// The peer that proved `key`.
    pub(super) fn with_key(&self, key: &PublicKey) -> Option<PeerId> {
        self.by_key.get(key).copied()
    }

    /// The peer whose latest sealed session has our index `index`.
    pub(super) fn with_index(&self, index: u32) -> Option<PeerId> {
        self.by_index.get(&index).copied()
    }

    /// Record that `id`'s latest sealed session has our index `index`
    /// (replacing the entry of its previous session).
    pub(super) fn set_index(&mut self, id: PeerId, index: u32) {
        if !self.peers.contains_key(&id) {
            return;
        }
        if let Some(old) = self.index_of.insert(id, index) {
            if self.by_index.get(&old) == Some(&id) {
                self.by_index.remove(&old);
            }
        }
        if let Some(other) = self.by_index.insert(index, id).filter(|o| *o != id) {
            self.index_of.remove(&other);
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (PeerId, &Peer)> {
        self.peers.iter().map(|(id, p)| (*id, p))
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut Peer> {
        self.peers.values_mut()
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    /// Every peer's id, oldest first (a stable order, whatever the hashing).
    pub(super) fn ids(&self) -> Vec<PeerId> {
        let mut ids: Vec<PeerId> = self.peers.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Add `peer`, taking its paths from whoever had them.
    pub(super) fn insert(&mut self, peer: Peer) -> PeerId {
        self.last_id += 1;
        let id = PeerId(self.last_id);
        let paths = peer.paths.clone();
        self.peers.insert(id, peer);
        for path in paths {
            self.add_path(id, path);
        }
        id
    }

    /// Make `addr` a path of `id`, the most recent one. If another peer
    /// had it, that peer loses it (an address leads to one peer). The
    /// oldest path beyond [`MAX_PATHS`] that is not active is forgotten.
    pub(super) fn add_path(&mut self, id: PeerId, addr: SocketAddr) {
        if !self.peers.contains_key(&id) {
            return;
        }
        if let Some(other) = self.by_addr.insert(addr, id).filter(|o| *o != id) {
            if let Some(p) = self.peers.get_mut(&other) {
                p.paths.retain(|a| *a != addr);
                if p.active == Some(addr) {
                    p.active = None;
                }
            }
        }
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        peer.paths.retain(|a| *a != addr);
        peer.paths.push(addr);
        while peer.paths.len() > MAX_PATHS {
            let Some(i) = peer.paths.iter().position(|a| Some(*a) != peer.active) else {
                break;
            };
            let gone = peer.paths.remove(i);
            self.by_addr.remove(&gone);
        }
    }

    /// Record that `id` proved `key`. Whoever held that key before (an
    /// older entry of the same identity) loses the index; the caller merges.
    pub(super) fn set_key(&mut self, id: PeerId, key: PublicKey) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if let Some(old) = peer.public_key.replace(key).filter(|k| *k != key) {
            if self.by_key.get(&old) == Some(&id) {
                self.by_key.remove(&old);
            }
        }
        if let Some(other) = self.by_key.insert(key, id).filter(|o| *o != id) {
            if let Some(p) = self.peers.get_mut(&other) {
                p.public_key = None;
            }
        }
    }

    /// Forget what `id` proved (it was deleted: it may come back under
    /// another key).
    pub(super) fn clear_key(&mut self, id: PeerId) {
        if let Some(key) = self.peers.get_mut(&id).and_then(|p| p.public_key.take()) {
            if self.by_key.get(&key) == Some(&id) {
                self.by_key.remove(&key);
            }
        }
    }

    /// Take `id` out, with its index entries.
    pub(super) fn remove(&mut self, id: PeerId) -> Option<Peer> {
        let peer = self.peers.remove(&id)?;
        for path in &peer.paths {
            if self.by_addr.get(path) == Some(&id) {
                self.by_addr.remove(path);
            }
        }
        if let Some(key) = &peer.public_key {
            if self.by_key.get(key) == Some(&id) {
                self.by_key.remove(key);
            }
        }
        if let Some(index) = self.index_of.remove(&id) {
            if self.by_index.get(&index) == Some(&id) {
                self.by_index.remove(&index);
            }
        }
        Some(peer)
    }

    #[cfg(test)]
    pub(super) fn check_indices(&self) {
        for (addr, id) in &self.by_addr {
            let peer = &self.peers[id];
            assert!(
                peer.paths.contains(addr),
                "{addr} indexed to {id:?} but not its path"
            );
        }
        for (id, peer) in &self.peers {
            assert!(peer.paths.len() <= MAX_PATHS);
            for path in &peer.paths {
                assert_eq!(
                    self.by_addr.get(path),
                    Some(id),
                    "path {path} of {id:?} not indexed"
                );
            }
            if let Some(key) = &peer.public_key {
                assert_eq!(self.by_key.get(key), Some(id), "key of {id:?} not indexed");
            }
        }
        for (key, id) in &self.by_key {
            assert_eq!(self.peers[id].public_key.as_ref(), Some(key));
        }
        assert_eq!(self.by_index.len(), self.index_of.len());
        for (index, id) in &self.by_index {
            assert!(self.peers.contains_key(id), "index {index} of a gone peer");
            assert_eq!(self.index_of.get(id), Some(index));
        }
    }
}
