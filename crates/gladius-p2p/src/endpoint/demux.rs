//! Which session a datagram belongs to, and whether it may open one.
//!
//! Pure functions over the datagram and a summary of the existing session
//! for the source address, so the rules of `docs/wire-format.md` ("Sessions")
//! are tested without sockets.

use gladius_kcp::segment::{self, Command, HEADER_LEN};

use crate::wire::{peek_hello, HelloFields};

/// What the driver knows of the session it has for the source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Existing {
    pub(crate) conv: u32,
    /// Something valid was heard on it.
    pub(crate) heard: bool,
    /// The instance id from the peer's hello on it, once received.
    pub(crate) peer_instance: Option<u64>,
}

/// The verdict on one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Feed it to the existing session.
    Deliver,
    /// Not KCP at all.
    Malformed,
    /// Valid KCP for no session, and not a session opener.
    Unknown,
    /// The peer's half of a simultaneous open that our lower conv wins, or
    /// a late copy of an opener from the peer we already have a session with.
    Stale,
    /// Open a new session with this conv (replacing any existing one).
    Open,
}

/// The conversation id, if the datagram is long enough to have one.
pub(crate) fn conv_of(datagram: &[u8]) -> Option<u32> {
    if datagram.len() < HEADER_LEN {
        return None;
    }
    segment::SegmentHeader::decode(datagram)
        .ok()
        .map(|h| h.conv)
}

/// If the datagram is well-formed and holds the first segment of a stream
/// (PUSH, sn 0) that starts with a complete, valid hello: that hello.
/// `Err` for a malformed datagram.
fn opener(datagram: &[u8]) -> Result<Option<HelloFields>, ()> {
    let mut hello = None;
    for seg in segment::parse_datagram(datagram) {
        let (header, payload) = seg.map_err(|_| ())?;
        if header.cmd == Command::Push && header.sn == 0 {
            hello = hello.or(peek_hello(payload));
        }
    }
    Ok(hello)
}

/// Decide what to do with a datagram of conversation `conv` from an address
/// whose current session (if any) is `existing`.
pub(crate) fn decide(existing: Option<Existing>, conv: u32, datagram: &[u8]) -> Decision {
    if existing.is_some_and(|e| e.conv == conv) {
        return Decision::Deliver;
    }
    let hello = match opener(datagram) {
        Err(()) => return Decision::Malformed,
        Ok(None) => return Decision::Unknown,
        Ok(Some(hello)) => hello,
    };
    match existing {
        None => Decision::Open,
        // Both sides opened before hearing each other: the lower conv wins
        // on both sides, and the loser's data is never delivered.
        Some(e) if !e.heard => {
            if conv < e.conv {
                Decision::Open
            } else {
                Decision::Stale
            }
        }
        // A hello from a new process at that address: the peer restarted.
        Some(Existing {
            peer_instance: Some(instance),
            ..
        }) if instance != hello.instance => Decision::Open,
        // The same process (a reordered copy of the opener it gave up in a
        // simultaneous open), or a peer whose hello we have not read yet:
        // keep the session we have.
        Some(_) => Decision::Stale,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::encode_frame;
    use crate::wire::{Frame, PROTOCOL_VERSION};
    use segment::SegmentHeader;

    fn push(conv: u32, sn: u32, payload: &[u8]) -> Vec<u8> {
        let h = SegmentHeader {
            conv,
            cmd: Command::Push,
            frg: 0,
            wnd: 128,
            ts: 0,
            sn,
            una: 0,
            len: 0,
        };
        let mut out = Vec::new();
        segment::encode(&h, payload, &mut out).expect("a short payload encodes");
        out
    }

    const PEER: u64 = 0xA11CE;

    fn hello_from(instance: u64) -> Vec<u8> {
        encode_frame(&Frame::Hello {
            version: PROTOCOL_VERSION,
            instance,
            advertised: "127.0.0.1:9".parse().unwrap(),
        })
        .to_vec()
    }

    fn hello() -> Vec<u8> {
        hello_from(PEER)
    }

    fn existing(conv: u32, heard: bool) -> Option<Existing> {
        Some(Existing {
            conv,
            heard,
            peer_instance: heard.then_some(PEER),
        })
    }

    #[test]
    fn matching_conv_is_delivered_whatever_it_holds() {
        assert_eq!(
            decide(existing(7, true), 7, &push(7, 5, b"x")),
            Decision::Deliver
        );
    }

    #[test]
    fn only_a_hello_at_sn0_opens() {
        assert_eq!(decide(None, 7, &push(7, 0, &hello())), Decision::Open);
        assert_eq!(decide(None, 7, &push(7, 1, &hello())), Decision::Unknown);
        assert_eq!(decide(None, 7, &push(7, 0, b"garbage")), Decision::Unknown);
        assert_eq!(decide(None, 7, &[0u8; 30]), Decision::Malformed);
        assert_eq!(conv_of(&[1, 2, 3]), None);
    }

    #[test]
    fn simultaneous_open_keeps_the_lower_conv_on_both_sides() {
        // We opened 10, they opened 20: we refuse theirs.
        assert_eq!(
            decide(existing(10, false), 20, &push(20, 0, &hello())),
            Decision::Stale
        );
        // They see the mirror image and adopt ours.
        assert_eq!(
            decide(existing(20, false), 10, &push(10, 0, &hello())),
            Decision::Open
        );
        // A late (reordered) copy of their opener after ours is established
        // comes from the same instance: not a restart.
        assert_eq!(
            decide(existing(10, true), 20, &push(20, 0, &hello())),
            Decision::Stale
        );
    }

    #[test]
    fn a_new_hello_on_an_established_address_is_a_restart() {
        assert_eq!(
            decide(existing(10, true), 99, &push(99, 0, &hello_from(PEER + 1))),
            Decision::Open
        );
        assert_eq!(
            decide(existing(10, true), 99, &push(99, 3, b"old")),
            Decision::Unknown
        );
    }
}
