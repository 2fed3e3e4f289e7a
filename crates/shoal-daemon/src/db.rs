//! The coordinator's database (redb): published releases, rollouts, the audit log of the
//! conductor's decisions and of operators' requests.
//!
//! Everything the conductor decides is written here, in one transaction per decision (the
//! audit record and the rollouts' state together), before the directive it causes is
//! broadcast. A coordinator that crashes and starts again reads its rollouts back and resumes
//! them; the audit log only ever grows.

use anyhow::{Context, Result};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use shoal_core::revocation::Revocations;
use shoal_core::rollout::Release;
use shoal_core::rollout::conductor::{Record, Rollout};
use std::path::{Path, PathBuf};

/// The database file in the coordinator's data directory.
pub const DB_FILE: &str = "coordinator.redb";

const RELEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("releases");
const ROLLOUTS: TableDefinition<u64, &[u8]> = TableDefinition::new("rollouts");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
const REVOKED: TableDefinition<&str, &[u8]> = TableDefinition::new("revoked_tokens");
/// The key of the revocation list in [`REVOKED`]: the list is kept whole.
const REVOKED_KEY: &str = "list";

/// A release the coordinator announced, and where its files are on this host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// The service.
    pub service: String,
    /// Version, root and counter.
    pub release: Release,
    /// The signed manifest, kept in the coordinator's data directory.
    pub manifest: PathBuf,
    /// The payload the coordinator serves as origin.
    pub file: PathBuf,
    /// When it was announced (Unix seconds).
    pub announced_unix: u64,
}

/// One audit-log entry as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log, from 1.
    pub seq: u64,
    /// The rollout, if the entry concerns one.
    #[serde(default)]
    pub rollout: Option<u64>,
    /// The operator key (its fingerprint) whose request this entry records; none for the
    /// conductor's own decisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// When (Unix milliseconds).
    pub at_unix_ms: u64,
    /// The wave (1-based), if the entry concerns one.
    pub wave: Option<u32>,
    /// What happened.
    pub event: String,
}

/// The open database.
pub struct Db {
    db: Database,
}

impl Db {
    /// Opens (or creates) the database in `data_dir`.
    ///
    /// # Errors
    ///
    /// If the file cannot be opened or is not a redb database.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(DB_FILE);
        let db = Database::create(&path)
            .with_context(|| format!("cannot open the coordinator database {}", path.display()))?;
        let txn = db.begin_write()?;
        {
            txn.open_table(RELEASES)?;
            txn.open_table(ROLLOUTS)?;
            txn.open_table(AUDIT)?;
            txn.open_table(REVOKED)?;
        }
        txn.commit()?;
        Ok(Db { db })
    }

    /// Records a published release (replacing one with the same root).
    ///
    /// # Errors
    ///
    /// If the write fails.
    pub fn put_release(&self, published: &Published) -> Result<()> {
        let bytes = serde_json::to_vec(published)?;
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(RELEASES)?;
            table.insert(published.release.root.to_hex().as_str(), bytes.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Every published release.
    ///
    /// # Errors
    ///
    /// If the read fails or an entry does not decode.
    pub fn releases(&self) -> Result<Vec<Published>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RELEASES)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, value) = entry?;
            out.push(serde_json::from_slice(value.value()).context("a release entry")?);
        }
        Ok(out)
    }

    /// Every saved rollout.
    ///
    /// # Errors
    ///
    /// If the read fails or an entry does not decode.
    pub fn rollouts(&self) -> Result<Vec<(u64, Rollout)>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ROLLOUTS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            let rollout = serde_json::from_slice(value.value()).context("a rollout entry")?;
            out.push((key.value(), rollout));
        }
        Ok(out)
    }

    /// Appends `records` to the audit log and saves `rollouts`, in one transaction.
    ///
    /// # Errors
    ///
    /// If the write fails; then nothing of it is kept.
    pub fn commit(&self, records: &[Record], rollouts: &[(u64, Rollout)]) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut audit = txn.open_table(AUDIT)?;
            let first = audit.last()?.map_or(0, |(k, _)| k.value()) + 1;
            for (seq, r) in (first..).zip(records) {
                let entry = AuditEntry {
                    seq,
                    rollout: Some(r.rollout),
                    actor: None,
                    at_unix_ms: u64::try_from(r.at.as_millis()).unwrap_or(u64::MAX),
                    wave: r.wave.map(|w| w + 1),
                    event: r.event.clone(),
                };
                audit.insert(seq, serde_json::to_vec(&entry)?.as_slice())?;
            }
            let mut table = txn.open_table(ROLLOUTS)?;
            for (id, rollout) in rollouts {
                table.insert(*id, serde_json::to_vec(rollout)?.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The revocation list (empty if no token was ever revoked).
    ///
    /// # Errors
    ///
    /// If the read fails or the list does not decode.
    pub fn revocations(&self) -> Result<Revocations> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(REVOKED)?;
        match table.get(REVOKED_KEY)? {
            Some(value) => serde_json::from_slice(value.value()).context("the revocation list"),
            None => Ok(Revocations::default()),
        }
    }

    /// Saves the revocation list.
    ///
    /// # Errors
    ///
    /// If the write fails.
    pub fn put_revocations(&self, list: &Revocations) -> Result<()> {
        let bytes = serde_json::to_vec(list)?;
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(REVOKED)?;
            table.insert(REVOKED_KEY, bytes.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Appends an operator's request to the audit log.
    ///
    /// # Errors
    ///
    /// If the write fails.
    pub fn record_action(
        &self,
        actor: String,
        rollout: Option<u64>,
        event: String,
        at_unix_ms: u64,
    ) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut audit = txn.open_table(AUDIT)?;
            let seq = audit.last()?.map_or(0, |(k, _)| k.value()) + 1;
            let entry = AuditEntry {
                seq,
                rollout,
                actor: Some(actor),
                at_unix_ms,
                wave: None,
                event,
            };
            audit.insert(seq, serde_json::to_vec(&entry)?.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// The audit log, oldest first.
    ///
    /// # Errors
    ///
    /// If the read fails.
    pub fn audit(&self) -> Result<Vec<AuditEntry>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(AUDIT)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, value) = entry?;
            out.push(serde_json::from_slice(value.value()).context("an audit entry")?);
        }
        Ok(out)
    }
}
