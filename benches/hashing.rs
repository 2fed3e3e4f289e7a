//! Hashing benchmark: manifest creation next to `b3sum` on the same file in the same run, and
//! piece verification throughput.
//!
//! Run with `cargo bench --bench hashing`. `SHOAL_BENCH_BYTES` sets the file size (default 1 GiB),
//! `SHOAL_BENCH_ROUNDS` the rounds (default 5). The file is written once and read once before
//! measuring, so every figure is for a page-cached file, like the reference figures in DESIGN.md.
//! Each round measures every contender back to back, and the report gives medians and the
//! median of the per-round ratios, so a noisy neighbour moves both sides of a ratio together.

use shoal_core::content::{PieceIndex, PieceLayout, PieceVerifier, default_piece_size};
use shoal_core::keys::{Role, SecretKey};
use shoal_core::manifest::{Manifest, SignedManifest};
use shoal_store::hashing::{default_threads, hash_file};
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run a tiny smoke size then.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let size: u64 = env_or("SHOAL_BENCH_BYTES", if smoke { 8 << 20 } else { 1 << 30 });
    let rounds: usize = env_or("SHOAL_BENCH_ROUNDS", if smoke { 1 } else { 5 });
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let path = dir.path().join("payload.bin");
    write_payload(&path, size);
    warm(&path);

    let publisher = SecretKey::from_seed(Role::Publisher, [7; 32]);
    let shoal_bin = env!("CARGO_BIN_EXE_shoal");
    let keys = dir.path().join("publisher.key");
    std::fs::write(&keys, publisher.to_text()).expect("write key");
    set_private(&keys);

    let b3sum = which("b3sum");
    if b3sum.is_none() {
        println!("b3sum not found: install it (scripts/setup does) to compare against it");
    }
    let threads = default_threads();
    println!(
        "hashing benchmark: {} file, {} rounds, {threads} hashing threads, piece size {}",
        human(size),
        rounds,
        human(u64::from(default_piece_size(size)))
    );

    let mut lib_secs = Vec::new();
    let mut cli_secs = Vec::new();
    let mut b3_secs = Vec::new();
    for _ in 0..rounds {
        if let Some(b3) = &b3sum {
            b3_secs.push(time(|| run(Command::new(b3).arg(&path))));
        }
        lib_secs.push(time(|| create_manifest(&path, size, &publisher, threads)));
        let out = dir.path().join("m.manifest");
        cli_secs.push(time(|| {
            run(Command::new(shoal_bin)
                .args(["release", "create"])
                .arg(&path)
                .args(["--service", "bench", "--version", "1", "--key"])
                .arg(&keys)
                .arg("--out")
                .arg(&out))
        }));
    }

    println!();
    println!("| what | median | throughput | vs b3sum (median of per-round ratios) |");
    println!("|---|---|---|---|");
    report("b3sum FILE", size, &b3_secs, &b3_secs);
    report(
        "shoal release create (CLI, whole command)",
        size,
        &cli_secs,
        &b3_secs,
    );
    report(
        "manifest creation (library: hash + sign + encode)",
        size,
        &lib_secs,
        &b3_secs,
    );

    verification(size.min(256 << 20));
}

/// Piece verification on one core: what a receiver spends per piece before it keeps it.
fn verification(bytes: u64) {
    println!();
    println!("| piece verification, one core | pieces | throughput |");
    println!("|---|---|---|");
    for piece_size in [256u64 << 10, 1 << 20, 4 << 20] {
        let data: Vec<u8> = (0..bytes).map(|i| (i ^ (i >> 9)) as u8).collect();
        let layout = PieceLayout::new(bytes, piece_size).expect("layout");
        let cvs = layout
            .indices()
            .map(|i| piece_value(&layout, i, &data))
            .collect::<Vec<_>>();
        let root = shoal_core::content::combine_root(&cvs).expect("root");
        let verifier = PieceVerifier::new(layout, cvs, root);
        let start = Instant::now();
        for i in layout.indices() {
            let off = layout.offset(i) as usize;
            let piece = &data[off..off + layout.piece_len(i) as usize];
            verifier.verify(i, piece).expect("piece verifies");
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "| {} pieces | {} | {:.2} GB/s |",
            human(piece_size),
            layout.piece_count(),
            bytes as f64 / secs / 1e9
        );
    }
}

fn piece_value(
    layout: &PieceLayout,
    i: PieceIndex,
    data: &[u8],
) -> shoal_core::content::ChainingValue {
    let off = layout.offset(i) as usize;
    shoal_core::content::PieceHasher::new(layout, i)
        .update(&data[off..off + layout.piece_len(i) as usize])
        .finish()
}

fn create_manifest(path: &Path, size: u64, key: &SecretKey, threads: usize) {
    let file = File::open(path).expect("open payload");
    let layout = PieceLayout::new(size, u64::from(default_piece_size(size))).expect("layout");
    let hashed = hash_file(&file, &layout, threads, &|_| {}).expect("hash");
    let manifest = Manifest {
        service: "bench".into(),
        version: "1".into(),
        release_counter: 1,
        size_bytes: size,
        piece_size_bytes: layout.piece_size_bytes(),
        created_at_unix_secs: 0,
        root: hashed.root,
        pieces: hashed.pieces,
        publisher: key.public(),
    };
    let encoded = SignedManifest::sign(manifest, key).expect("sign").encode();
    std::hint::black_box(encoded);
}

fn report(what: &str, size: u64, secs: &[f64], baseline: &[f64]) {
    if secs.is_empty() {
        return;
    }
    let median_secs = median(secs);
    let ratio = if baseline.len() == secs.len() {
        let ratios: Vec<f64> = baseline.iter().zip(secs).map(|(b, s)| b / s).collect();
        format!("{:.2}x", median(&ratios))
    } else {
        "n/a".into()
    };
    println!(
        "| {what} | {:.3} s | {:.2} GB/s | {ratio} |",
        median_secs,
        size as f64 / median_secs / 1e9
    );
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time(f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write_payload(path: &Path, size: u64) {
    // xorshift bytes: incompressible enough, and fast to make.
    let mut file = File::create(path).expect("create payload");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for word in block.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        file.write_all(&block[..n]).expect("write payload");
        left -= n as u64;
    }
    file.sync_all().expect("sync payload");
}

fn warm(path: &Path) {
    let mut buf = vec![0u8; 1 << 20];
    let mut file = File::open(path).expect("open payload");
    while file.read(&mut buf).expect("read payload") > 0 {}
    std::thread::sleep(Duration::from_millis(100));
}

fn set_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}
