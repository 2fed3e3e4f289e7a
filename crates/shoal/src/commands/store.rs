//! `shoal store`: inspect and manage a machine's piece store.

use crate::failure::{Code, Failure, Outcome, WithCode};
use crate::progress;
use clap::{Args, Subcommand};
use serde_json::json;
use shoal_core::units::{human_bytes, parse_size};
use shoal_store::{Config, GcPlan, GcReason, Release, Store};
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Add a published release to the store from a local copy of its payload, verifying every
    /// piece. An interrupted import resumes where it stopped.
    Import {
        /// The release's manifest.
        manifest: PathBuf,
        /// The payload file.
        #[arg(long)]
        file: PathBuf,
        /// The trust document naming the allowed publishers.
        #[arg(long, value_name = "TRUST_FILE")]
        trust: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the releases in the store.
    List {
        #[command(flatten)]
        store: DirArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one release: its manifest, its pieces and where its payload is.
    Show {
        /// The release root, or a unique prefix of at least 4 hex digits.
        root: String,
        #[command(flatten)]
        store: DirArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-hash a release's payload on disk; pieces that no longer verify are marked missing.
    Verify {
        /// The release root, or a unique prefix.
        root: String,
        #[command(flatten)]
        store: DirArg,
    },
    /// Pin a release: garbage collection never removes it.
    Pin {
        /// The release root, or a unique prefix.
        root: String,
        #[command(flatten)]
        store: DirArg,
    },
    /// Unpin a release.
    Unpin {
        /// The release root, or a unique prefix.
        root: String,
        #[command(flatten)]
        store: DirArg,
    },
    /// Remove a release (refused while it is pinned).
    Remove {
        /// The release root, or a unique prefix.
        root: String,
        #[command(flatten)]
        store: DirArg,
    },
    /// Remove releases beyond retention and, over the budget, the oldest ones; never the newest
    /// release of a service, never a pinned one.
    Gc {
        #[command(flatten)]
        store: StoreArgs,
        /// Show what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The data directory.
#[derive(Args, Debug)]
pub struct DirArg {
    /// The store's data directory.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
}

/// The data directory and the store's retention settings.
#[derive(Args, Debug)]
pub struct StoreArgs {
    /// The store's data directory.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Releases to keep per service besides the newest.
    #[arg(long, default_value_t = 2, value_name = "N")]
    keep_previous: usize,
    /// The most disk the store may use, e.g. 50GiB; the oldest releases go first.
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    budget: Option<u64>,
}

impl StoreArgs {
    fn open(&self) -> Result<Store, Failure> {
        Store::open(
            &self.data_dir,
            Config {
                keep_previous: self.keep_previous,
                budget_bytes: self.budget,
                ..Config::default()
            },
        )
        .code(Code::General, || "cannot open the store".into())
    }
}

impl DirArg {
    fn open_read_only(&self) -> Result<Store, Failure> {
        Store::open_read_only(&self.data_dir).code(Code::General, || "cannot open the store".into())
    }

    fn open(&self) -> Result<Store, Failure> {
        Store::open(&self.data_dir, Config::default())
            .code(Code::General, || "cannot open the store".into())
    }
}

pub fn run(cmd: StoreCommand) -> Outcome {
    match cmd {
        StoreCommand::Import {
            manifest,
            file,
            trust,
            store,
        } => import(&manifest, &file, &trust, &store),
        StoreCommand::List { store, json } => list(&store.open_read_only()?, json),
        StoreCommand::Show { root, store, json } => {
            let store = store.open_read_only()?;
            let release = find(&store, &root)?;
            show(&release, json)
        }
        StoreCommand::Verify { root, store } => {
            let store = store.open()?;
            let release = find(&store, &root)?;
            release
                .finish()
                .code(Code::FileMismatch, || format!("release {}", release.root()))?;
            if release.is_complete() {
                println!(
                    "ok: {} payload matches root {}",
                    release.manifest().name(),
                    release.root()
                );
            } else {
                println!(
                    "ok so far: {} has {} of {} pieces, all matching",
                    release.manifest().name(),
                    release.have_count(),
                    release.layout().piece_count()
                );
            }
            Ok(())
        }
        StoreCommand::Pin { root, store } => set_pinned(&store, &root, true),
        StoreCommand::Unpin { root, store } => set_pinned(&store, &root, false),
        StoreCommand::Remove { root, store } => {
            let mut store = store.open()?;
            let release = find(&store, &root)?;
            store
                .remove(&release.root())
                .code(Code::General, || "cannot remove".into())?;
            eprintln!("removed {} ({})", release.manifest().name(), release.root());
            Ok(())
        }
        StoreCommand::Gc {
            store,
            dry_run,
            json,
        } => {
            let mut opened = store.open()?;
            let plan = if dry_run {
                opened.plan_gc()
            } else {
                opened
                    .gc()
                    .code(Code::General, || "garbage collection stopped".into())?
            };
            print_gc(&plan, dry_run, json)
        }
    }
}

fn import(manifest: &Path, file: &Path, trust: &Path, store: &StoreArgs) -> Outcome {
    let trust = super::trust::load(trust)?;
    let verified = super::release::load_manifest(manifest, &trust)?;
    let source = std::fs::File::open(file).code(Code::Unreadable, || {
        format!("cannot read payload {}", file.display())
    })?;
    let mut store = store.open()?;
    let bar = progress::bytes(verified.layout().size_bytes(), "importing");
    let result = store.import(&verified, &source, file, &|n| bar.inc(n));
    bar.finish_and_clear();
    let release = result.code(Code::General, || {
        format!("cannot import {}", file.display())
    })?;
    eprintln!(
        "stored {} ({}): {} pieces verified, payload at {}",
        release.manifest().name(),
        release.root(),
        release.have_count(),
        release.payload_path().display()
    );
    Ok(())
}

fn find(store: &Store, root: &str) -> Result<std::sync::Arc<Release>, Failure> {
    store.find(root).map_err(|e| Failure::new(Code::General, e))
}

fn set_pinned(dir: &DirArg, root: &str, pinned: bool) -> Outcome {
    let store = dir.open()?;
    let release = find(&store, root)?;
    store
        .set_pinned(&release.root(), pinned)
        .code(Code::General, || "cannot change the pin".into())?;
    eprintln!(
        "{} {} ({})",
        if pinned { "pinned" } else { "unpinned" },
        release.manifest().name(),
        release.root()
    );
    Ok(())
}

fn release_json(r: &Release) -> serde_json::Value {
    let m = r.manifest();
    json!({
        "root": m.root.to_hex(),
        "service": m.service,
        "version": m.version,
        "release_counter": m.release_counter,
        "size": m.size_bytes,
        "piece_size": m.piece_size_bytes,
        "have": r.have_count(),
        "total": r.layout().piece_count(),
        "complete": r.is_complete(),
        "pinned": r.is_pinned(),
        "path": r.payload_path(),
    })
}

fn list(store: &Store, json: bool) -> Outcome {
    if json {
        return super::print_json(&json!({
            "data_dir": store.dir(),
            "used_bytes": store.used_bytes(),
            "releases": store.releases().map(|r| release_json(r)).collect::<Vec<_>>(),
            "broken": store.broken().iter().map(|b| json!({"dir": b.dir, "reason": b.reason})).collect::<Vec<_>>(),
        }));
    }
    println!(
        "{:<14} {:<32} {:>10} {:>13} STATE",
        "ROOT", "RELEASE", "SIZE", "PIECES"
    );
    for r in store.releases() {
        let state = match (r.is_complete(), r.is_pinned()) {
            (true, true) => "complete, pinned",
            (true, false) => "complete",
            (false, true) => "partial, pinned",
            (false, false) => "partial",
        };
        println!(
            "{:<14} {:<32} {:>10} {:>13} {state}",
            r.root().short(),
            format!("{} #{}", r.manifest().name(), r.manifest().release_counter),
            human_bytes(r.manifest().size_bytes),
            format!("{}/{}", r.have_count(), r.layout().piece_count()),
        );
    }
    for b in store.broken() {
        println!("broken         {} ({})", b.dir.display(), b.reason);
    }
    println!(
        "{} used in {}",
        human_bytes(store.used_bytes()),
        store.dir().display()
    );
    Ok(())
}

fn show(r: &Release, json: bool) -> Outcome {
    if json {
        return super::print_json(&release_json(r));
    }
    let m = r.manifest();
    println!("release   {} (counter {})", m.name(), m.release_counter);
    println!("root      {}", m.root);
    println!(
        "size      {} ({} bytes)",
        human_bytes(m.size_bytes),
        m.size_bytes
    );
    println!(
        "pieces    {}/{} of {}",
        r.have_count(),
        r.layout().piece_count(),
        human_bytes(u64::from(m.piece_size_bytes))
    );
    println!("complete  {}", r.is_complete());
    println!("pinned    {}", r.is_pinned());
    println!("publisher {}", m.publisher.fingerprint());
    println!("created   {}", super::rfc3339(m.created_at_unix_secs));
    println!("payload   {}", r.payload_path().display());
    Ok(())
}

fn print_gc(plan: &GcPlan, dry_run: bool, json: bool) -> Outcome {
    let reason = |r: &GcReason| match r {
        GcReason::Broken(why) => format!("broken: {why}"),
        GcReason::Retention => "beyond retention".into(),
        GcReason::Budget => "over budget".into(),
    };
    if json {
        return super::print_json(&json!({
            "dry_run": dry_run,
            "removed": plan.remove.iter().map(|a| json!({
                "root": a.root.map(|r| r.to_hex()),
                "release": a.name,
                "dir": a.dir,
                "bytes": a.bytes,
                "reason": reason(&a.reason),
            })).collect::<Vec<_>>(),
            "used_bytes_before": plan.used_bytes_before,
            "used_bytes_after": plan.used_bytes_after,
            "budget_bytes": plan.budget_bytes,
            "over_budget_bytes": plan.over_budget_bytes,
        }));
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    for a in &plan.remove {
        println!(
            "{verb} {} {} ({}, {})",
            a.root.map_or("-".into(), |r| r.short()),
            a.name
                .as_deref()
                .unwrap_or_else(|| a.dir.to_str().unwrap_or("?")),
            human_bytes(a.bytes),
            reason(&a.reason)
        );
    }
    println!(
        "store: {} before, {} after{}",
        human_bytes(plan.used_bytes_before),
        human_bytes(plan.used_bytes_after),
        plan.budget_bytes
            .map_or(String::new(), |b| format!(", budget {}", human_bytes(b)))
    );
    if plan.over_budget_bytes > 0 {
        println!(
            "still {} over budget: the rest is pinned or the newest release of its service",
            human_bytes(plan.over_budget_bytes)
        );
    }
    Ok(())
}
