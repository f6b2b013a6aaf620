//! The one background task a plugin runs from `startup` to `close` (its
//! rounds, its timers): started once, replaced if `startup` comes again,
//! aborted at `close`.

use std::sync::Mutex;

use tokio::task::JoinHandle;

/// A slot for a plugin's background task.
#[derive(Debug, Default)]
pub(crate) struct Background(Mutex<Option<JoinHandle<()>>>);

impl Background {
    /// Keep `task`, aborting the one started before, if any.
    pub(crate) fn start(&self, task: JoinHandle<()>) {
        // A panic while holding the lock leaves a valid Option.
        let old = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(task);
        if let Some(old) = old {
            old.abort();
        }
    }

    /// Abort the task, if any.
    pub(crate) fn stop(&self) {
        let task = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            task.abort();
        }
    }
}
