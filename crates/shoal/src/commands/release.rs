//! `shoal release`: create and verify signed release manifests.

use crate::failure::{Code, Failure, Outcome, WithCode};
use crate::{files, keyfile, progress};
use clap::{Args, Subcommand};
use serde_json::json;
use shoal_core::content::{PieceIndex, PieceLayout, default_piece_size};
use shoal_core::keys::Role;
use shoal_core::manifest::{
    MAX_MANIFEST_BYTES, Manifest, ManifestErrorKind, SignedManifest, VerifiedManifest,
};
use shoal_core::units::{human_bytes, parse_size};
use shoal_store::hashing;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

#[derive(Subcommand, Debug)]
pub enum ReleaseCommand {
    /// Hash a payload into pieces and write a manifest signed by a publisher key.
    Create(CreateArgs),
    /// Check a manifest's signature chain and piece list, and optionally a payload file.
    ///
    /// Exit codes: 0 all checks pass; 3 an input is unreadable; 4 the manifest is malformed;
    /// 5 the trust document is invalid; 6 the signature chain fails (unknown publisher or bad
    /// signature); 7 the piece list does not combine to the root; 8 the file differs.
    Verify {
        /// The manifest.
        manifest: PathBuf,
        /// The trust document naming the allowed publishers.
        #[arg(long, value_name = "TRUST_FILE")]
        trust: PathBuf,
        /// Also check this payload file against the manifest.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Require the trust document to be signed by this root public key.
        #[arg(long, value_name = "ROOT.pub")]
        root: Option<PathBuf>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// What a new release is made of: `release create` and `publish` both take these.
#[derive(Args, Debug)]
pub struct ReleaseInput {
    /// The payload file (for `publish`: on the coordinator's host, which reads and serves it).
    file: PathBuf,
    /// The service the release belongs to.
    #[arg(long)]
    service: String,
    /// The release's version label.
    #[arg(long)]
    version: String,
    /// The publisher secret key.
    #[arg(long, value_name = "PUBLISHER_KEY")]
    key: PathBuf,
    /// Piece size: a power of two from 16KiB to 64MiB [default: 1 MiB below 4 GiB payloads,
    /// then growing so a payload has 2048 to 4096 pieces, at most 16 MiB].
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    piece_size: Option<u64>,
    /// The release counter, which must grow with every release of the service
    /// [default: the current Unix time in seconds].
    #[arg(long, value_name = "N")]
    release_counter: Option<u64>,
}

/// What `release create` takes.
#[derive(Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    release: ReleaseInput,
    /// Where to write the manifest.
    #[arg(long, value_name = "MANIFEST")]
    out: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: ReleaseCommand) -> Outcome {
    match cmd {
        ReleaseCommand::Create(args) => {
            let json = args.json;
            create(args).map_err(|f| super::json_failure(json, f))
        }
        ReleaseCommand::Verify {
            manifest,
            trust,
            file,
            root,
            json,
        } => verify(&manifest, &trust, file.as_deref(), root.as_deref(), json)
            .map_err(|f| super::json_failure(json, f)),
    }
}

/// What `shoal publish` takes.
#[derive(Args, Debug)]
pub struct PublishArgs {
    #[command(flatten)]
    release: ReleaseInput,
    /// The coordinator's --listen IP:PORT.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_coordinator)]
    coordinator: std::net::SocketAddr,
    /// The operator key that signs the request (default: $SHOAL_OPERATOR_KEY); --key is the
    /// publisher key that signs the manifest.
    #[arg(long, value_name = "OPERATOR_KEY", env = crate::http::OPERATOR_KEY_ENV)]
    operator_key: Option<std::path::PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn parse_coordinator(text: &str) -> Result<std::net::SocketAddr, String> {
    shoal_net::node::parse_addr(text, "address").map_err(|e| e.to_string())
}

/// `shoal publish`: `release create` into a temporary manifest, then the coordinator verifies
/// both files, keeps the manifest, serves the payload and broadcasts the announcement.
pub fn publish(args: PublishArgs) -> Outcome {
    let json = args.json;
    publish_inner(args).map_err(|f| super::json_failure(json, f))
}

fn publish_inner(args: PublishArgs) -> Outcome {
    let signer = crate::http::Signer::load(args.operator_key.as_deref())?;
    let dir = tempfile_dir()?;
    let out = dir.join("release.manifest");
    let file = std::path::absolute(&args.release.file).code(Code::Unreadable, || {
        format!("cannot resolve {}", args.release.file.display())
    })?;
    let release = ReleaseInput {
        file: file.clone(),
        ..args.release
    };
    let signed = sign(&release, &out);
    let result = signed.and_then(|_| {
        let request = shoal_net::coordinator::AnnounceRequest {
            manifest: out.clone(),
            file,
        };
        signer.post::<_, shoal_daemon::routes::PublishAnswer>(
            args.coordinator,
            shoal_daemon::routes::PUBLISH_PATH,
            &request,
            std::time::Duration::from_secs(3600),
        )
    });
    let _ = std::fs::remove_dir_all(&dir);
    let answer = result?;
    if args.json {
        return super::print_json(&json!({
            "root": answer.root,
            "service": answer.service,
            "version": answer.version,
            "release_counter": answer.counter,
            "seq": answer.seq,
        }));
    }
    println!("{}", answer.root);
    eprintln!(
        "published {}@{} (counter {}) as broadcast {}",
        answer.service, answer.version, answer.counter, answer.seq
    );
    Ok(())
}

/// A fresh private directory for a temporary manifest.
fn tempfile_dir() -> Result<PathBuf, Failure> {
    let dir = std::env::temp_dir().join(format!(
        "shoal-publish-{}-{}",
        std::process::id(),
        super::unix_now()
    ));
    std::fs::create_dir_all(&dir).code(Code::General, || {
        format!("cannot create a temporary directory {}", dir.display())
    })?;
    Ok(dir)
}

fn create(args: CreateArgs) -> Outcome {
    let (signed, seconds) = sign(&args.release, &args.out)?;
    let size = signed.manifest.size_bytes;
    let layout = PieceLayout::new(size, u64::from(signed.manifest.piece_size_bytes))
        .code(Code::General, || "the signed manifest's layout".into())?;
    let m = &signed.manifest;
    if args.json {
        let mut value = summary(m);
        value["manifest"] = json!(args.out);
        value["seconds"] = json!(seconds);
        value["bytes_per_second"] = json!(size as f64 / seconds.max(1e-9));
        return super::print_json(&value);
    }
    println!("{}", m.root);
    eprintln!(
        "{} {}: {} in {} piece{} of {}, hashed in {seconds:.2} s ({}/s), signed by {}; manifest {}",
        m.name(),
        m.release_counter,
        human_bytes(size),
        layout.piece_count(),
        if layout.piece_count() == 1 { "" } else { "s" },
        human_bytes(u64::from(layout.piece_size_bytes())),
        human_bytes((size as f64 / seconds.max(1e-9)) as u64),
        m.publisher.fingerprint(),
        args.out.display()
    );
    Ok(())
}

/// Hashes the payload, signs the manifest and writes it to `out`; returns it and the hashing
/// time in seconds.
fn sign(args: &ReleaseInput, out: &Path) -> Result<(SignedManifest, f64), Failure> {
    shoal_core::manifest::check_name("service", &args.service)
        .code(Code::Usage, || "--service".into())?;
    shoal_core::manifest::check_name("version", &args.version)
        .code(Code::Usage, || "--version".into())?;
    let key = keyfile::read_secret(&args.key, Role::Publisher)?;
    files::check_replaceable(out, "shoal manifest", |head| {
        head.starts_with(shoal_core::manifest::MAGIC)
    })
    .map_err(|e| Failure::new(Code::General, e))?;
    let (file, before) = open_payload(&args.file)?;
    let size = before.len;
    let piece_size = args
        .piece_size
        .unwrap_or_else(|| u64::from(default_piece_size(size)));
    let layout = PieceLayout::new(size, piece_size).code(Code::Usage, || "--piece-size".into())?;

    let started = Instant::now();
    let hashed = hash_with_progress(&file, &args.file, &layout)?;
    let seconds = started.elapsed().as_secs_f64();
    let after = file.metadata().code(Code::Unreadable, || {
        format!("cannot read {}", args.file.display())
    })?;
    if after.len() != before.len || after.modified().ok() != before.modified {
        return Err(Failure::new(
            Code::General,
            format!(
                "{} changed while it was being hashed; make sure nothing writes it and try again",
                args.file.display()
            ),
        ));
    }

    let created = super::unix_now();
    let manifest = Manifest {
        service: args.service.clone(),
        version: args.version.clone(),
        release_counter: args.release_counter.unwrap_or(created),
        size_bytes: size,
        piece_size_bytes: layout.piece_size_bytes(),
        created_at_unix_secs: created,
        root: hashed.root,
        pieces: hashed.pieces,
        publisher: key.public(),
    };
    let signed = SignedManifest::sign(manifest, &key)
        .code(Code::General, || "cannot sign the manifest".into())?;
    shoal_store::fsutil::write_atomic(out, &signed.encode(), 0o644).code(Code::General, || {
        format!("cannot write manifest {}", out.display())
    })?;

    Ok((signed, seconds))
}

fn verify(
    manifest_path: &Path,
    trust_path: &Path,
    file: Option<&Path>,
    root: Option<&Path>,
    json: bool,
) -> Outcome {
    let trust = super::trust::load(trust_path)?;
    if let Some(root) = root {
        let expected = keyfile::read_public(root, Role::Root)
            .map_err(|e| Failure::new(Code::Unreadable, format!("{e:#}")))?;
        trust.require_root(&expected).code(Code::Trust, || {
            format!("{} is not trusted", trust_path.display())
        })?;
    }
    let verified = load_manifest(manifest_path, &trust)?;
    let file_check = match file {
        Some(path) => {
            check_file(&verified, path)?;
            "ok"
        }
        None => "not checked",
    };
    let m = verified.manifest();
    if json {
        let mut value = summary(m);
        value["ok"] = json!(true);
        value["checks"] = json!({
            "signature": "ok",
            "piece_list": "ok",
            "file": file_check,
        });
        value["trust_root"] = json!(trust.body().root.fingerprint());
        return super::print_json(&value);
    }
    println!(
        "ok: {} {} root {} signed by {} (trust root {}); payload file {file_check}",
        m.name(),
        m.release_counter,
        m.root,
        m.publisher.fingerprint(),
        trust.body().root.fingerprint()
    );
    Ok(())
}

/// Reads a manifest and checks it against `trust`, with the exit code of whichever check fails.
pub fn load_manifest(
    path: &Path,
    trust: &shoal_core::trust::Trust,
) -> Result<VerifiedManifest, Failure> {
    let bytes = files::read_limited(path, MAX_MANIFEST_BYTES).code(Code::Unreadable, || {
        format!("cannot read manifest {}", path.display())
    })?;
    let signed = SignedManifest::decode(&bytes).code(Code::Malformed, || {
        format!("{} is not a valid manifest", path.display())
    })?;
    signed.verify(trust).map_err(|e| {
        let code = match e.kind() {
            ManifestErrorKind::Malformed => Code::Malformed,
            ManifestErrorKind::Signature => Code::Signature,
            ManifestErrorKind::Pieces => Code::Pieces,
        };
        Failure::new(code, format!("{} failed verification: {e}", path.display()))
    })
}

fn check_file(verified: &VerifiedManifest, path: &Path) -> Outcome {
    let (file, meta) = open_payload(path)?;
    let layout = verified.layout();
    if meta.len != layout.size_bytes() {
        return Err(Failure::new(
            Code::FileMismatch,
            format!(
                "{} is {} bytes, but the manifest's payload is {} bytes",
                path.display(),
                meta.len,
                layout.size_bytes()
            ),
        ));
    }
    let hashed = hash_with_progress(&file, path, layout)?;
    let bad: Vec<u32> = (0..layout.piece_count())
        .filter(|&i| verified.verifier().expected(PieceIndex(i)) != hashed.pieces.get(i as usize))
        .collect();
    if !bad.is_empty() || hashed.root != verified.root() {
        let shown: Vec<String> = bad.iter().take(10).map(u32::to_string).collect();
        return Err(Failure::new(
            Code::FileMismatch,
            format!(
                "{} does not match the manifest: root {} instead of {}; {} of {} pieces differ (first: {}{})",
                path.display(),
                hashed.root,
                verified.root(),
                bad.len(),
                layout.piece_count(),
                shown.join(", "),
                if bad.len() > shown.len() { ", ..." } else { "" }
            ),
        ));
    }
    Ok(())
}

/// The fields every manifest summary in JSON has.
fn summary(m: &Manifest) -> serde_json::Value {
    json!({
        "root": m.root.to_hex(),
        "size": m.size_bytes,
        "piece_size": m.piece_size_bytes,
        "pieces": m.pieces.len(),
        "service": m.service,
        "version": m.version,
        "release_counter": m.release_counter,
        "created_at": super::rfc3339(m.created_at_unix_secs),
        "publisher": m.publisher.fingerprint(),
    })
}

/// What is known of a payload file when it is opened, to notice changes while it is hashed.
struct PayloadMeta {
    len: u64,
    modified: Option<SystemTime>,
}

fn open_payload(path: &Path) -> Result<(File, PayloadMeta), Failure> {
    let unreadable = || format!("cannot read payload {}", path.display());
    let file = File::open(path).code(Code::Unreadable, unreadable)?;
    let meta = file.metadata().code(Code::Unreadable, unreadable)?;
    if !meta.is_file() {
        return Err(Failure::new(
            Code::Unreadable,
            format!("payload {} is not a regular file", path.display()),
        ));
    }
    Ok((
        file,
        PayloadMeta {
            len: meta.len(),
            modified: meta.modified().ok(),
        },
    ))
}

fn hash_with_progress(
    file: &File,
    path: &Path,
    layout: &PieceLayout,
) -> Result<hashing::HashedPayload, Failure> {
    let bar = progress::bytes(layout.size_bytes(), "hashing");
    let result = hashing::hash_file(file, layout, hashing::default_threads(), &|n| bar.inc(n));
    bar.finish_and_clear();
    result.code(Code::Unreadable, || {
        format!("cannot read {}", path.display())
    })
}
