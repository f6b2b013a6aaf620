//! Secret key files shared by the plugins that hold a key (signed state's
//! secp256k1 key, gossip's Ed25519 key): one secret per file, as text,
//! created 0600 and never overwritten, with a warning when others may read
//! it.

use std::io::Write;
use std::path::Path;

/// Read a key file's text; warn if its mode lets others read it.
pub(crate) fn read(path: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "key file is readable by others; chmod 600 it");
            }
        }
    }
    Ok(text)
}

/// Write `line` (plus a newline) to a new file, mode 0600 on Unix; an
/// existing file is an error, never overwritten.
pub(crate) fn create(path: &Path, line: &str) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    writeln!(f, "{line}")?;
    f.sync_all()
}
