//! One node per identity: `gladius node` holds an exclusive OS file lock on
//! `<data dir>/lock` for as long as it runs.
//!
//! Two daemons on one data directory would share one Noise key and one
//! Ethereum key: peers would see one identity at two addresses, and the
//! second node's signed values would overwrite the first's across the
//! network. The lock is advisory (`flock` on Unix, `LockFileEx` on Windows,
//! through `fs4`): the operating system drops it when the process exits,
//! however it exits (crash and `kill -9` included), so a stale lock file
//! never blocks a restart. The file holds the owner's pid, for the error
//! message only; the lock, not the file's presence, is what counts.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;

/// File name of the lock in the data directory.
pub(crate) const LOCK_FILE: &str = "lock";

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub(crate) struct DataDirLock {
    /// Kept open: closing the file releases the lock.
    _file: File,
}

impl DataDirLock {
    /// Lock `dir` (which must exist) for this process, or say which process
    /// holds it.
    pub(crate) fn acquire(dir: &Path) -> Result<Self, String> {
        let path = dir.join(LOCK_FILE);
        let cannot = |e: std::io::Error| format!("cannot lock {}: {e}", path.display());
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(cannot)?;
        // Called through the trait: std's inherent `File::try_lock` needs a
        // newer Rust than this workspace's minimum.
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => return Err(in_use(dir, &mut file)),
            Err(fs4::TryLockError::Error(e)) => return Err(cannot(e)),
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.flush())
            .map_err(cannot)?;
        Ok(DataDirLock { _file: file })
    }
}

/// The error for a directory another process holds, naming its pid when
/// the lock file says it (it may not yet, for a node that is just starting).
fn in_use(dir: &Path, file: &mut File) -> String {
    let mut text = String::new();
    let pid = file
        .read_to_string(&mut text)
        .ok()
        .and_then(|_| text.trim().parse::<u32>().ok());
    let dir = dir.display();
    match pid {
        Some(pid) => format!("data dir {dir} is in use by pid {pid} (one node per identity)"),
        None => format!("data dir {dir} is in use by another process (one node per identity)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_drop_releases() {
        let dir = std::env::temp_dir().join(format!("gladius-lock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let held = DataDirLock::acquire(&dir).unwrap();
        let err = DataDirLock::acquire(&dir).unwrap_err();
        assert!(
            err.contains(&format!("is in use by pid {}", std::process::id())),
            "{err}"
        );
        drop(held);
        let again = DataDirLock::acquire(&dir);
        assert!(again.is_ok(), "{again:?}");
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
