//! Small file-system helpers the store needs and std does not have; [`write_atomic`] is also
//! used by the rest of Shoal for every file it replaces whole.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Reserves `len` bytes of disk for `file`, so a full disk shows up now rather than mid-transfer.
/// Falls back to a sparse `set_len` on file systems that cannot preallocate.
pub(crate) fn preallocate(file: &File, len: u64) -> io::Result<()> {
    if len > 0 {
        let len_off = libc::off_t::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file too large"))?;
        // SAFETY: posix_fallocate only reads its integer arguments; the descriptor is open.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len_off) };
        match rc {
            0 => {}
            libc::EOPNOTSUPP | libc::EINVAL => {}
            errno => return Err(io::Error::from_raw_os_error(errno)),
        }
    }
    file.set_len(len)
}

/// Flushes a directory's entries, so a rename or a new file in it survives a power cut.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Bytes a file or directory tree actually occupies on disk (allocated blocks).
pub(crate) fn allocated_bytes(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let own = meta.blocks() * 512;
    if !meta.is_dir() {
        return own;
    }
    let children = std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| allocated_bytes(&e.path()))
                .sum()
        })
        .unwrap_or(0);
    own + children
}

/// Takes an exclusive advisory lock on `file` without waiting; `Ok(false)` if another process has it.
pub(crate) fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: flock only reads its integer arguments; the descriptor is open.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// Writes `bytes` to `path` atomically with permission `mode`: a temporary file next to it
/// (created with `mode`, exactly, whatever the umask), synced, renamed over `path`, then the
/// directory synced. A failed write removes the temporary file. The one helper for every file
/// Shoal replaces whole: store markers, keys, manifests, trust documents, admission files.
///
/// # Errors
///
/// Any IO error on the way; `path` is then unchanged.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp_name);
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // open() filters the mode through the umask; set it exactly.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    sync_dir(dir)
}
