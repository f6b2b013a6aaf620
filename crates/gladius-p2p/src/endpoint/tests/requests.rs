//! Requests and their deadlines, in virtual time.

use std::time::Duration;

use super::world::*;
use crate::endpoint::Event;
use crate::wire::Message;

#[test]
fn requests_time_out_in_virtual_time() {
    let mut w = World::new(9, 10, 0.0);
    w.spawn(addr(1), 1);
    let now = w.now;
    let msg = Message::new("ask", "?").expect("message");
    let id = w
        .node(addr(1))
        .request(now, msg, addr(7), Duration::from_millis(1_500))
        .expect("queued");
    let mut answer = None;
    let mut t = 0;
    while answer.is_none() && t < 10_000 {
        t += 100;
        w.node(addr(1)).handle_timeout(t);
        while let Some(e) = w.node(addr(1)).poll_event() {
            if let Event::RequestDone { id: done, result } = e {
                assert_eq!(done, id);
                answer = Some((t, result));
            }
        }
    }
    let (t, result) = answer.expect("an answer");
    assert_eq!(t, 1_500, "answered at its deadline, exactly");
    assert!(result.is_err());
}
