//! Byte counts for people.

/// `256.0 MiB`.
pub fn mib(bytes: u64) -> String {
    mib_f(bytes as f64)
}

/// `256.0 MiB`, from a float.
pub fn mib_f(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / f64::from(1u32 << 20))
}
