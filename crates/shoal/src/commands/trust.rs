//! `shoal trust`: the trust document.

use crate::failure::{Code, Outcome, WithCode};
use crate::keyfile;
use clap::Subcommand;
use shoal_core::keys::Role;
use shoal_core::operator::{OperatorGrant, Scope};
use shoal_core::trust::Trust;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum TrustCommand {
    /// Sign a trust document naming the publisher, coordinator and operator keys.
    Init {
        /// The root secret key that signs the document.
        #[arg(long, value_name = "ROOT_KEY")]
        root: PathBuf,
        /// A publisher public key (PATH.pub); repeat for several.
        #[arg(long = "publisher", value_name = "PUB.pub", required = true)]
        publishers: Vec<PathBuf>,
        /// A coordinator public key (PATH.pub); repeat for several.
        #[arg(long = "coordinator", value_name = "COORD.pub", required = true)]
        coordinators: Vec<PathBuf>,
        /// An operator public key and its scopes (admin, release, read); repeat for several.
        /// Without one, the coordinator refuses every request but its probes.
        #[arg(long = "operator", value_name = "OP.pub=SCOPE,...", value_parser = parse_operator)]
        operators: Vec<(PathBuf, Vec<Scope>)>,
        /// Where to write the trust document.
        #[arg(long, value_name = "TRUST_FILE")]
        out: PathBuf,
    },
    /// Check a trust document's signature and print the keys it names.
    Show {
        /// The trust document.
        trust: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: TrustCommand) -> Outcome {
    match cmd {
        TrustCommand::Init {
            root,
            publishers,
            coordinators,
            operators,
            out,
        } => {
            let root = keyfile::read_secret(&root, Role::Root)?;
            crate::files::check_replaceable(&out, "trust document", |head| {
                head.trim_ascii_start().starts_with(b"{")
            })
            .map_err(|e| crate::failure::Failure::new(Code::General, e))?;
            let publishers = publishers
                .iter()
                .map(|p| keyfile::read_public(p, Role::Publisher))
                .collect::<Result<Vec<_>, _>>()?;
            let coordinators = coordinators
                .iter()
                .map(|p| keyfile::read_public(p, Role::Coordinator))
                .collect::<Result<Vec<_>, _>>()?;
            let operators = operators
                .iter()
                .map(|(path, scopes)| {
                    keyfile::read_public(path, Role::Operator).map(|key| OperatorGrant {
                        key,
                        scopes: scopes.clone(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let trust = Trust::sign_with_operators(
                &root,
                publishers,
                coordinators,
                operators,
                super::unix_now(),
            )
            .code(Code::General, || "cannot create the trust document".into())?;
            shoal_store::fsutil::write_atomic(&out, trust.encode().as_bytes(), 0o644)
                .code(Code::General, || format!("cannot write {}", out.display()))?;
            eprintln!(
                "wrote trust document {} signed by root {}",
                out.display(),
                root.public().fingerprint()
            );
            Ok(())
        }
        TrustCommand::Show { trust, json } => {
            let trust = load(&trust)?;
            let body = trust.body();
            if json {
                return super::print_json(
                    &serde_json::to_value(body).map_err(anyhow::Error::from)?,
                );
            }
            println!("root         {}", body.root.fingerprint());
            for p in &body.publishers {
                println!("publisher    {}", p.fingerprint());
            }
            for c in &body.coordinators {
                println!("coordinator  {}", c.fingerprint());
            }
            for o in &body.operators {
                let scopes: Vec<&str> = o.scopes.iter().map(Scope::as_str).collect();
                println!("operator     {} {}", o.key.fingerprint(), scopes.join(","));
            }
            println!("issued       {}", super::rfc3339(body.issued_at_unix_secs));
            Ok(())
        }
    }
}

/// Parses `PATH=SCOPE,...`: an operator's public key file and its scopes, sorted.
fn parse_operator(text: &str) -> Result<(PathBuf, Vec<Scope>), String> {
    let (path, scopes) = text.rsplit_once('=').ok_or_else(|| {
        format!("{text:?} names no scopes: write OP.pub=admin,release,read (or a part of them)")
    })?;
    if path.is_empty() {
        return Err(format!("{text:?} names no key file before '='"));
    }
    let mut parsed = scopes
        .split(',')
        .map(|s| s.trim().parse::<Scope>())
        .collect::<Result<Vec<_>, _>>()?;
    parsed.sort();
    parsed.dedup();
    Ok((PathBuf::from(path), parsed))
}

/// Reads and checks a trust document.
pub fn load(path: &Path) -> Result<Trust, crate::failure::Failure> {
    let bytes = crate::files::read_limited(path, shoal_core::trust::MAX_TRUST_BYTES)
        .code(Code::Unreadable, || {
            format!("cannot read trust document {}", path.display())
        })?;
    Trust::decode(&bytes).code(Code::Trust, || {
        format!("{} is not a usable trust document", path.display())
    })
}
