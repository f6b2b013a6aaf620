//! Where the daemon's events go: every event is serialized once, written
//! to stdout, and offered to the HTTP event stream's clients
//! (`GET /api/events`).
//!
//! stdout is the main reader: when it is slow, emitters wait for room in
//! its [`OUT_QUEUE`] events, but only up to [`OUT_BYTES`] of queued lines:
//! past that (a reader that stalls while large messages arrive), events
//! are dropped and counted, and once stdout takes lines again a
//! `{"event":"dropped","events":N,"bytes":B}` line says what was lost.
//! Stream clients are not waited for: each may fall at most
//! [`STREAM_QUEUE`] events behind; a client further behind is told so with
//! an `end` event and disconnected, so a stalled browser tab never holds
//! the node back nor grows its memory.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::Stream;
use serde_json::Value;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc};

/// Lines waiting for stdout. When full, emitters wait (the `cli` plugin's
/// own bounded queue then fills and the core counts what it drops), so a
/// reader that stops reading never grows memory.
pub(crate) const OUT_QUEUE: usize = 4096;
/// Bytes of lines waiting for stdout (16 MiB); an event that would pass it
/// is dropped and counted instead of waited for.
pub(crate) const OUT_BYTES: usize = 16 << 20;

/// What is queued for stdout, and what was dropped since last said.
#[derive(Debug, Default)]
pub(crate) struct OutBudget {
    queued: AtomicUsize,
    dropped_events: AtomicU64,
    dropped_bytes: AtomicU64,
}

/// The stdout writer's end: the lines, and the budget they are counted in.
#[derive(Debug)]
pub(crate) struct StdoutQueue {
    rx: mpsc::Receiver<StdoutLine>,
    budget: Arc<OutBudget>,
}
/// Events a stream client may lag behind before it is ended. The backlog
/// is shared by all clients and an event is freed once every client has
/// it, so this bounds memory to 256 events (256 KiB at 1 KiB an event; a
/// `message` event is as large as its body) and is a few seconds of a busy
/// node.
pub(crate) const STREAM_QUEUE: usize = 256;

/// One event: its name (`message`, `peer_connected`, …) and its JSON line.
#[derive(Debug)]
pub(crate) struct Event {
    pub(crate) name: String,
    pub(crate) json: String,
}

impl Event {
    fn new(v: &Value) -> Self {
        Event {
            name: v
                .get("event")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            json: v.to_string(),
        }
    }
}

/// A message for the stdout writer; `None` tells it to flush and stop.
pub(crate) type StdoutLine = Option<Arc<Event>>;

/// Emits events to stdout and to the stream clients. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct EventSink {
    stdout: mpsc::Sender<StdoutLine>,
    budget: Arc<OutBudget>,
    live: broadcast::Sender<Arc<Event>>,
}

impl EventSink {
    /// A sink and the receiving end for the stdout writer.
    pub(crate) fn new() -> (Self, StdoutQueue) {
        let (stdout, rx) = mpsc::channel(OUT_QUEUE);
        let (live, _) = broadcast::channel(STREAM_QUEUE);
        let budget = Arc::new(OutBudget::default());
        let queue = StdoutQueue {
            rx,
            budget: budget.clone(),
        };
        (
            EventSink {
                stdout,
                budget,
                live,
            },
            queue,
        )
    }

    /// Write `v` to stdout (waiting for room, or dropped past
    /// [`OUT_BYTES`]) and offer it to the stream clients (never waiting).
    pub(crate) async fn emit(&self, v: Value) {
        let event = Arc::new(Event::new(&v));
        // No clients is not an error.
        let _ = self.live.send(event.clone());
        let len = event.json.len() + 1;
        let before = self.budget.queued.fetch_add(len, Ordering::AcqRel);
        if before + len > OUT_BYTES {
            self.budget.queued.fetch_sub(len, Ordering::AcqRel);
            self.budget.dropped_events.fetch_add(1, Ordering::Relaxed);
            self.budget
                .dropped_bytes
                .fetch_add(len as u64, Ordering::Relaxed);
            return;
        }
        // An error means the writer is gone: the node is stopping.
        if self.stdout.send(Some(event)).await.is_err() {
            self.budget.queued.fetch_sub(len, Ordering::AcqRel);
        }
    }

    /// Clients of the event stream now.
    pub(crate) fn stream_clients(&self) -> usize {
        self.live.receiver_count()
    }

    /// Tell the stdout writer to flush and stop.
    pub(crate) async fn finish(&self) {
        let _ = self.stdout.send(None).await;
    }

    /// The events from now on whose names are in `types` (all when
    /// `None`), ending with an `end` item when the client fell too far
    /// behind or the node stops.
    pub(crate) fn subscribe(&self, types: Option<Vec<String>>) -> impl Stream<Item = Item> {
        let rx = self.live.subscribe();
        futures_util::stream::unfold(Some((rx, types)), |state| async move {
            let (mut rx, types) = state?;
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        if types.as_ref().is_none_or(|t| t.contains(&ev.name)) {
                            return Some((Item::Event(ev), Some((rx, types))));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        return Some((Item::End(End::TooSlow { missed }), None));
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        return Some((Item::End(End::Closing), None));
                    }
                }
            }
        })
    }
}

/// Write the queued lines to `out` until told to stop or `out` fails;
/// after a line is taken, report the events dropped meanwhile, if any.
pub(crate) async fn write_lines(mut queue: StdoutQueue, mut out: impl AsyncWrite + Unpin) {
    while let Some(Some(ev)) = queue.rx.recv().await {
        let ok =
            out.write_all(ev.json.as_bytes()).await.is_ok() && out.write_all(b"\n").await.is_ok();
        queue
            .budget
            .queued
            .fetch_sub(ev.json.len() + 1, Ordering::AcqRel);
        if !ok {
            break; // stdout is gone; nothing more can be said
        }
        let events = queue.budget.dropped_events.swap(0, Ordering::AcqRel);
        if events > 0 {
            let bytes = queue.budget.dropped_bytes.swap(0, Ordering::AcqRel);
            let line = serde_json::json!({"event": "dropped", "events": events, "bytes": bytes});
            if out.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                break;
            }
        }
        if queue.rx.is_empty() && out.flush().await.is_err() {
            break;
        }
    }
    let _ = out.flush().await;
}

/// One item of a client's stream.
#[derive(Debug)]
pub(crate) enum Item {
    /// An event, as on stdout.
    Event(Arc<Event>),
    /// The last item: why the stream stops.
    End(End),
}

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The client fell more than [`STREAM_QUEUE`] events behind; `missed`
    /// events were lost to it.
    TooSlow { missed: u64 },
    /// The node is shutting down.
    Closing,
}

impl End {
    /// The `end` event's JSON.
    pub(crate) fn to_json(self) -> Value {
        match self {
            End::TooSlow { missed } => serde_json::json!({
                "event": "end",
                "reason": "too_slow",
                "missed": missed,
                "queue": STREAM_QUEUE,
            }),
            End::Closing => serde_json::json!({"event": "end", "reason": "closing"}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use serde_json::json;

    #[tokio::test]
    async fn a_filtered_client_sees_its_types_in_order() {
        let (sink, mut stdout) = EventSink::new();
        let mut s = Box::pin(sink.subscribe(Some(vec!["b".into()])));
        for (i, name) in ["a", "b", "a", "b"].iter().enumerate() {
            sink.emit(json!({"event": name, "i": i})).await;
        }
        for want in [1, 3] {
            let Some(Item::Event(ev)) = s.next().await else {
                panic!("no event")
            };
            assert_eq!(ev.name, "b");
            assert_eq!(ev.json, json!({"event": "b", "i": want}).to_string());
        }
        // stdout got everything.
        for _ in 0..4 {
            assert!(stdout.rx.recv().await.flatten().is_some());
        }
    }

    #[tokio::test]
    async fn a_client_too_far_behind_gets_an_end_and_stops() {
        let (sink, _stdout) = EventSink::new();
        let mut s = Box::pin(sink.subscribe(None));
        for i in 0..STREAM_QUEUE + 5 {
            sink.emit(json!({"event": "x", "i": i})).await;
        }
        match s.next().await {
            Some(Item::End(End::TooSlow { missed })) => assert_eq!(missed, 5),
            other => panic!("{other:?}"),
        }
        assert!(s.next().await.is_none(), "nothing after the end");
    }
}
