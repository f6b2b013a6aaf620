//! Unit tests of the endpoint: endpoints wired together through an
//! in-memory network in virtual time (see [`world`]) — no sockets, no
//! clock, one seed. One file per concern.

mod delivery;
mod handshake;
mod hostile;
mod identity;
mod lifecycle;
mod limits;
mod lookup;
mod modes;
mod nat;
mod punch;
mod rejects;
mod relay;
mod requests;
mod world;
