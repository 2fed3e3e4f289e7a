//! The on-disk bitmap of verified pieces.
//!
//! Format: `SHOALBM` `\0`, the piece count as a little-endian `u32`, then the bitfield bytes. A bit
//! is set only after its piece's bytes are on disk, and a byte is rewritten in place, so the file
//! never claims a piece whose bytes were not written first. A file that is missing, short or
//! malformed reads as "no pieces", which is always safe: those pieces are fetched again.

use shoal_core::bitfield::Bitfield;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

const MAGIC: &[u8; 8] = b"SHOALBM\0";
const HEADER_BYTES: u64 = 12;

/// An open bitmap file.
#[derive(Debug)]
pub(crate) struct BitmapFile {
    file: File,
}

impl BitmapFile {
    /// Creates a bitmap of `pieces` empty bits at `path`.
    pub(crate) fn create(path: &Path, pieces: u32) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        let mut bytes = Vec::with_capacity(HEADER_BYTES as usize + pieces.div_ceil(8) as usize);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&pieces.to_le_bytes());
        bytes.extend_from_slice(Bitfield::new(pieces).as_bytes());
        file.write_all_at(&bytes, 0)?;
        Ok(Self { file })
    }

    /// Opens the bitmap at `path` for a release of `pieces` pieces and reads it. A malformed file
    /// reads as empty and, when `writable`, is rewritten empty; the returned flag says whether it
    /// was malformed. A read-only bitmap refuses every write.
    pub(crate) fn open(
        path: &Path,
        pieces: u32,
        writable: bool,
    ) -> io::Result<(Self, Bitfield, bool)> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .create(writable)
            .truncate(false)
            .open(path)?;
        let this = Self { file };
        match this.read(pieces) {
            Some(field) => Ok((this, field, false)),
            None if !writable => Ok((this, Bitfield::new(pieces), true)),
            None => {
                let empty = Bitfield::new(pieces);
                this.file.set_len(0)?;
                let mut bytes = MAGIC.to_vec();
                bytes.extend_from_slice(&pieces.to_le_bytes());
                bytes.extend_from_slice(empty.as_bytes());
                this.file.write_all_at(&bytes, 0)?;
                Ok((this, empty, true))
            }
        }
    }

    fn read(&self, pieces: u32) -> Option<Bitfield> {
        let expected = HEADER_BYTES + u64::from(pieces.div_ceil(8));
        if self.file.metadata().ok()?.len() != expected {
            return None;
        }
        let mut bytes = vec![0u8; expected as usize];
        self.file.read_exact_at(&mut bytes, 0).ok()?;
        let (header, body) = bytes.split_at(HEADER_BYTES as usize);
        if &header[..8] != MAGIC || header[8..12] != pieces.to_le_bytes() {
            return None;
        }
        Bitfield::from_bytes(pieces, body).ok()
    }

    /// Writes the bytes of `field` that hold the bits `indices`, in one write from the first such
    /// byte to the last.
    pub(crate) fn store_bits(&self, field: &Bitfield, indices: &[u32]) -> io::Result<()> {
        let (Some(&first), Some(&last)) = (indices.iter().min(), indices.iter().max()) else {
            return Ok(());
        };
        let (first, last) = ((first / 8) as usize, (last / 8) as usize);
        self.file
            .write_all_at(&field.as_bytes()[first..=last], HEADER_BYTES + first as u64)
    }

    /// Rewrites every bit, e.g. after bits were cleared.
    pub(crate) fn store_all(&self, field: &Bitfield) -> io::Result<()> {
        self.file.write_all_at(field.as_bytes(), HEADER_BYTES)
    }

    /// Flushes the bitmap to disk.
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_survive_a_reopen_and_garbage_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pieces");
        let file = BitmapFile::create(&path, 20).unwrap();
        let mut field = Bitfield::new(20);
        field.insert(3);
        field.insert(19);
        file.store_bits(&field, &[3]).unwrap();
        file.store_bits(&field, &[19]).unwrap();
        drop(file);
        let (_, read, reset) = BitmapFile::open(&path, 20, true).unwrap();
        assert_eq!(read, field);
        assert!(!reset);
        // Opened with another piece count (a different release's bitmap), it reads as empty.
        let (_, read, reset) = BitmapFile::open(&path, 21, true).unwrap();
        assert!(reset);
        assert_eq!(read.count(), 0);
        std::fs::write(&path, b"garbage").unwrap();
        let (_, read, reset) = BitmapFile::open(&path, 21, true).unwrap();
        assert!(reset && read.count() == 0);
    }
}
