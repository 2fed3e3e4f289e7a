//! The mesh: `shoal coordinator`, `shoal node --join`, `shoal announce`,
//! `shoal members` and `shoal status --coordinator`.

use super::net::{
    NetArgs, NodeArgs, general, identity, init_logging, runtime, signalled, start_data_plane,
};
use super::{json_failure, print_json, trust};
use crate::failure::{Code, Failure, Outcome, WithCode};
use crate::{http, keyfile};
use clap::Args;
use shoal_core::admission::{self, Certificate, Token};
use shoal_core::control;
use shoal_core::keys::{Role, SecretKey};
use shoal_core::labels::Labels;
use shoal_core::trust::Trust;
use shoal_daemon::agent;
use shoal_daemon::db::Db;
use shoal_daemon::origin::serve_published;
use shoal_daemon::revoke::Revoker;
use shoal_daemon::routes::PublishAnswer;
use shoal_net::api;
use shoal_net::coordinator::{AnnounceRequest, Coordinator};
use shoal_net::mesh::renewal::{CoordinatorRecord, Renewal};
use shoal_net::mesh::{self, FleetStatus, MembersStatus, unix_now};
use shoal_net::node::AdmissionCheck;
use shoal_net::operator_gate::OperatorGate;
use shoal_net::revocations::{SharedRevocations, close_revoked_connections};
use shoal_store::Store;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The admission certificate, in the data directory once admitted.
const CERTIFICATE_FILE: &str = "admission.cert";
/// The trust document received at admission, next to it.
const TRUST_FILE: &str = "admission.trust";
/// Where the coordinator keeps the manifests it published.
const PUBLISHED_DIR: &str = "published";

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    shoal_net::node::parse_addr(text, "address").map_err(|e| e.to_string())
}

/// `shoal coordinator`.
#[derive(Args, Debug)]
pub struct CoordinatorArgs {
    #[command(flatten)]
    net: NetArgs,
    /// The coordinator's signing key (role coordinator, named in the trust document).
    #[arg(long, value_name = "COORD_KEY")]
    key: PathBuf,
    /// The trust document.
    #[arg(long, value_name = "TRUST_FILE")]
    trust: PathBuf,
    /// How long the admission certificates it issues and renews are valid, e.g. 30days, 12h;
    /// members renew theirs in its last third.
    #[arg(long, value_name = "DURATION", default_value = "30days", value_parser = parse_certificate_ttl)]
    certificate_ttl: Duration,
    /// A config file (TOML) whose keys are these flags, as in `configs/coordinator.toml`; a
    /// flag given here wins over the file. `shoal config check FILE` checks one.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// `shoal announce`.
#[derive(Args, Debug)]
pub struct AnnounceArgs {
    /// The release's signed manifest.
    manifest: PathBuf,
    /// The payload; the coordinator reads it from this path on its own host and serves it.
    #[arg(long)]
    file: PathBuf,
    /// The coordinator's --listen IP:PORT.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_addr)]
    coordinator: SocketAddr,
    #[command(flatten)]
    operator: crate::http::OperatorKeyArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `shoal members`.
#[derive(Args, Debug)]
pub struct MembersArgs {
    /// The member's --listen IP:PORT.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_addr)]
    node: SocketAddr,
    /// Signs the request, which the coordinator (but no node) requires.
    #[command(flatten)]
    operator: crate::http::OperatorKeyArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn parse_certificate_ttl(text: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if !(CERTIFICATE_TTL_MIN..=CERTIFICATE_TTL_MAX).contains(&ttl) {
        return Err(format!(
            "{text} is outside {} to {}",
            humantime::format_duration(CERTIFICATE_TTL_MIN),
            humantime::format_duration(CERTIFICATE_TTL_MAX)
        ));
    }
    Ok(ttl)
}

/// The shortest certificate lifetime a coordinator takes: renewals come every two thirds of it.
const CERTIFICATE_TTL_MIN: Duration = Duration::from_secs(30);
/// The longest: a year.
const CERTIFICATE_TTL_MAX: Duration = Duration::from_secs(365 * 86_400);

/// The check every peer's certificate must pass on the data plane.
fn admission_check(trust: Arc<Trust>, revocations: SharedRevocations) -> AdmissionCheck {
    AdmissionCheck(Arc::new(move |peer, bytes| {
        if bytes.is_empty() {
            return Err(
                "it sent no admission certificate: this node serves only mesh members, \
                 which join with a token from `shoal token create`"
                    .into(),
            );
        }
        Certificate::decode(bytes)
            .and_then(|c| {
                c.verify(&trust, &peer.to_bytes(), unix_now())?;
                c.check_revocations(&revocations.current())
            })
            .map_err(|e| e.to_string())
    }))
}

fn failed(code: Code) -> impl Fn(anyhow::Error) -> Failure {
    move |e| Failure::new(code, format!("{e:#}"))
}

pub fn coordinator(args: CoordinatorArgs) -> Outcome {
    init_logging();
    let key =
        keyfile::read_secret(&args.key, Role::Coordinator).map_err(failed(Code::Unreadable))?;
    let trust = trust::load(&args.trust)?;
    if !trust.is_coordinator(&key.public()) {
        return Err(Failure::new(
            Code::Trust,
            format!(
                "the key in {} ({}) is not a coordinator key of the trust document {}: sign a trust document that names it",
                args.key.display(),
                key.public().fingerprint(),
                args.trust.display()
            ),
        ));
    }
    let trust = Arc::new(trust);
    runtime()?.block_on(async {
        let identity = identity(&args.net)?;
        let now = unix_now();
        let db = Arc::new(Db::open(&args.net.data_dir).map_err(failed(Code::General))?);
        let mut revoked = db.revocations().map_err(failed(Code::General))?;
        if revoked.prune(now) {
            db.put_revocations(&revoked)
                .map_err(failed(Code::General))?;
        }
        let revocations = SharedRevocations::new(revoked);
        let certificate = Certificate::issue(
            &key,
            identity.peer_id().to_bytes(),
            args.net.labels.clone(),
            now,
            now + admission::DEFAULT_CERTIFICATE_TTL_SECS,
            None,
        );
        let check = admission_check(trust.clone(), revocations.clone());
        let (node, listener) = start_data_plane(
            &args.net,
            Vec::new(),
            None,
            Some((certificate.encode(), check)),
        )
        .await?;
        close_revoked_connections(&revocations, node.clone());
        let shutdown = node.shutdown_signal();
        let config = mesh::Config {
            listen: args.net.listen,
            seeds: Vec::new(),
            certificate,
            trust: trust.clone(),
            control: control::Config::source(),
            source_key: Some(SecretKey::from_seed(Role::Coordinator, key.seed())),
            data_dir: args.net.data_dir.clone(),
            revocations: revocations.clone(),
            certificate_ttl_secs: args.certificate_ttl.as_secs(),
        };
        let mesh = mesh::start(&identity, config, mesh::Local::source(), shutdown.clone())
            .await
            .map_err(general)?;
        let list = revocations.current();
        if !list.entries().is_empty()
            && let Err(e) = mesh.broadcast_revocations((*list).clone()).await
        {
            tracing::error!("cannot broadcast the revocation list again: {e:#}");
        }
        let conductor = shoal_daemon::conductor::start(db.clone(), mesh.clone(), shutdown.clone())
            .map_err(failed(Code::General))?;
        let coordinator = Arc::new(Coordinator {
            key,
            trust: trust.clone(),
            node: node.clone(),
            mesh: mesh.clone(),
        });
        let republish = (db.clone(), node.clone(), trust.clone());
        tokio::spawn(async move {
            match serve_published(republish.0, republish.1, republish.2).await {
                Ok(0) => {}
                Ok(n) => tracing::info!("serving {n} published releases again"),
                Err(e) => tracing::error!("{e:#}"),
            }
        });
        let metrics = shoal_daemon::metrics::coordinator(conductor.clone());
        let routes = shoal_daemon::routes::coordinator(
            conductor.clone(),
            coordinator.clone(),
            args.net.data_dir.join(PUBLISHED_DIR),
        )
        .merge(shoal_daemon::query::routes(mesh.clone()))
        .merge(shoal_daemon::openapi::routes())
        .merge(shoal_daemon::ui::routes())
        .merge(shoal_daemon::deploy::routes(
            conductor.clone(),
            mesh.clone(),
        ))
        .merge(shoal_daemon::revoke::routes(Arc::new(Revoker {
            db: db.clone(),
            mesh: mesh.clone(),
            shared: revocations,
            trust: trust.clone(),
            certificate_ttl_secs: args.certificate_ttl.as_secs(),
            lock: tokio::sync::Mutex::new(()),
        })));
        if trust.operators().is_empty() {
            eprintln!(
                "warning: the trust document names no operator key, so this coordinator refuses \
                 every request but its probes and metrics; sign one that does with \
                 shoal trust init --operator KEY.pub=admin,release,read"
            );
        }
        let gate = OperatorGate::new(&trust, Some(shoal_daemon::routes::audit_hook(db.clone())));
        let extras = api::Extras {
            mesh: Some(mesh),
            coordinator: Some(coordinator),
            routes: Some(routes),
            metrics: Some(metrics),
            gate: Some(gate),
        };
        api::spawn(listener, node.clone(), extras, shutdown)
            .code(Code::General, || "cannot start the control API".into())?;
        eprintln!(
            "coordinator {} listening on {} (control plane UDP {})",
            node.peer_id(),
            args.net.listen,
            mesh::control_addr(args.net.listen)
        );
        signalled().await;
        node.shutdown().await;
        Ok(())
    })
}

/// This node's certificate and trust document: from the data directory if it holds a valid
/// pair, else by redeeming `token` (and then saved there).
async fn admitted(
    identity: &shoal_net::identity::Identity,
    data_dir: &Path,
    token: Option<&str>,
    labels: &Labels,
) -> Result<(Certificate, Trust), Failure> {
    let own = identity.peer_id().to_bytes();
    let stored = std::fs::read(data_dir.join(CERTIFICATE_FILE))
        .ok()
        .zip(std::fs::read(data_dir.join(TRUST_FILE)).ok())
        .and_then(|(cert, trust)| {
            let certificate = Certificate::decode(&cert).ok()?;
            let trust = Trust::decode(&trust).ok()?;
            certificate.verify(&trust, &own, unix_now()).ok()?;
            (certificate.labels() == labels).then_some((certificate, trust))
        });
    let Some(token) = token else {
        return stored.ok_or_else(|| {
            Failure::new(
                Code::General,
                format!(
                    "{} holds no valid admission certificate for these labels: pass --token TOKEN (from `shoal token create` on the coordinator's host)",
                    data_dir.display()
                ),
            )
        });
    };
    if let Some(stored) = stored {
        return Ok(stored);
    }
    let token: Token = token.parse().map_err(|e: admission::AdmissionError| {
        Failure::new(Code::Usage, format!("--token: {e}"))
    })?;
    let (certificate, trust) = mesh::redeem_token(identity, &token, labels)
        .await
        .map_err(|e| Failure::new(Code::General, format!("cannot join the mesh: {e:#}")))?;
    let write = |name: &str, bytes: &[u8]| {
        shoal_store::fsutil::write_atomic(&data_dir.join(name), bytes, 0o600)
            .code(Code::General, || {
                format!("cannot save {} in {}", name, data_dir.display())
            })
    };
    write(TRUST_FILE, trust.encode().as_bytes())?;
    write(CERTIFICATE_FILE, &certificate.encode())?;
    match CoordinatorRecord::from_token(token.claims()) {
        Ok(record) => record
            .save(data_dir)
            .map_err(|e| Failure::new(Code::General, format!("{e:#}")))?,
        Err(e) => tracing::warn!("{e:#}; the certificate will not be renewed"),
    }
    Ok((certificate, trust))
}

/// Starts renewing the node's certificate at the coordinator that admitted it, if the data
/// directory names that coordinator.
fn keep_renewed(
    data_dir: &Path,
    (certificate, trust, identity): (Certificate, Arc<Trust>, shoal_net::identity::Identity),
    node: &shoal_net::node::Node,
    mesh: &mesh::Mesh,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    match CoordinatorRecord::load(data_dir) {
        Ok(Some(coordinator)) => {
            let renewal = Renewal {
                identity,
                coordinator,
                trust,
                certificate_path: data_dir.join(CERTIFICATE_FILE),
                node: node.clone(),
                mesh: mesh.clone(),
            };
            tokio::spawn(renewal.run(certificate, shutdown));
        }
        Ok(None) => tracing::warn!(
            "{} does not name the coordinator that admitted this node, so its certificate \
             cannot be renewed: it expires at unix time {}; join again with a token then",
            data_dir.display(),
            certificate.expires_unix_secs()
        ),
        Err(e) => tracing::warn!("{e:#}; the certificate will not be renewed"),
    }
}

/// `shoal node --join ... [--token ...]`: a mesh member whose agent machine prefetches
/// announced releases from swarm peers it finds through membership and activates them as
/// rollout directives say.
pub fn node(args: NodeArgs) -> Outcome {
    init_logging();
    if args.join.is_empty() {
        return Err(Failure::new(
            Code::Usage,
            "--token needs at least one --join IP:PORT (a seed: the coordinator or any member)",
        ));
    }
    let services = match &args.services {
        Some(path) => shoal_daemon::services::load(path)
            .map_err(|e| Failure::new(Code::Usage, format!("--services: {e:#}")))?,
        None => Default::default(),
    };
    let mut seeds = Vec::new();
    for seed in &args.join {
        seeds.extend(seed.resolve()?);
    }
    let store = Store::open(&args.net.data_dir, shoal_store::Config::default())
        .code(Code::General, || "cannot open the store".into())?;
    runtime()?.block_on(async {
        let identity = identity(&args.net)?;
        let revocations = SharedRevocations::load(&args.net.data_dir).map_err(general)?;
        let (certificate, trust) = admitted(
            &identity,
            &args.net.data_dir,
            args.token.as_deref(),
            &args.net.labels,
        )
        .await?;
        certificate
            .check_revocations(&revocations.current())
            .map_err(|e| {
                Failure::new(
                    Code::General,
                    format!(
                        "{e}: this node was admitted with it; remove {} and join again with a \
                         new token",
                        args.net.data_dir.join(CERTIFICATE_FILE).display()
                    ),
                )
            })?;
        let trust = Arc::new(trust);
        let renewal = (certificate.clone(), trust.clone(), identity.clone());
        let check = admission_check(trust.clone(), revocations.clone());
        let (node, listener) = start_data_plane(
            &args.net,
            Vec::new(),
            args.download_limit,
            Some((certificate.encode(), check)),
        )
        .await?;
        close_revoked_connections(&revocations, node.clone());
        let shutdown = node.shutdown_signal();
        let config = mesh::Config {
            listen: args.net.listen,
            seeds,
            certificate,
            trust,
            control: control::Config::default(),
            source_key: None,
            data_dir: args.net.data_dir.clone(),
            revocations,
            certificate_ttl_secs: admission::DEFAULT_CERTIFICATE_TTL_SECS,
        };
        let agent = agent::prepare(
            agent::Config {
                data_dir: args.net.data_dir.clone(),
                node_id: identity.peer_id().to_bytes(),
                name: format!("{} {}", args.net.listen, identity.peer_id()),
                labels: args.net.labels.clone(),
                services,
            },
            store,
            node.clone(),
        )
        .await
        .map_err(failed(Code::General))?;
        let mesh = mesh::start(&identity, config, agent.local, shutdown.clone())
            .await
            .map_err(general)?;
        keep_renewed(&args.net.data_dir, renewal, &node, &mesh, shutdown.clone());
        let extras = api::Extras {
            mesh: Some(mesh.clone()),
            coordinator: None,
            routes: Some(shoal_daemon::routes::node(agent.handle, args.net.listen)),
            metrics: Some(shoal_daemon::metrics::node(agent.events)),
            gate: None,
        };
        api::spawn(listener, node.clone(), extras, shutdown)
            .code(Code::General, || "cannot start the control API".into())?;
        eprintln!(
            "node {} listening on {}, joining through {}",
            node.peer_id(),
            args.net.listen,
            args.join
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        signalled().await;
        node.shutdown().await;
        agent.executor.shutdown().await;
        Ok(())
    })
}

pub fn announce(args: AnnounceArgs) -> Outcome {
    let absolute = |path: &Path| {
        std::path::absolute(path).code(Code::Unreadable, || {
            format!("cannot resolve {}", path.display())
        })
    };
    let request = AnnounceRequest {
        manifest: absolute(&args.manifest).map_err(|f| json_failure(args.json, f))?,
        file: absolute(&args.file).map_err(|f| json_failure(args.json, f))?,
    };
    // Publishing also records the release at the coordinator, so it can be rolled out.
    let signer = args
        .operator
        .signer()
        .map_err(|f| json_failure(args.json, f))?;
    let answer: PublishAnswer = signer
        .post(
            args.coordinator,
            shoal_daemon::routes::PUBLISH_PATH,
            &request,
            Duration::from_secs(3600),
        )
        .map_err(|f| json_failure(args.json, f))?;
    let name = format!("{}@{}", answer.service, answer.version);
    if args.json {
        return print_json(&serde_json::json!({
            "root": answer.root,
            "name": name,
            "seq": answer.seq,
        }));
    }
    println!(
        "announced {name} (root {}) as broadcast {}",
        answer.root, answer.seq
    );
    Ok(())
}

pub fn members(args: MembersArgs) -> Outcome {
    let members: MembersStatus = args
        .operator
        .signer()
        .and_then(|s| s.get(args.node, api::MEMBERS_PATH))
        .map_err(|f| json_failure(args.json, f))?;
    if args.json {
        let value = serde_json::to_value(&members)
            .map_err(|e| Failure::new(Code::General, e.to_string()))?;
        return print_json(&value);
    }
    println!(
        "member {} on {} ({})",
        members.peer_id, members.addr, members.labels
    );
    println!(
        "  latest broadcast {}, parent {}, slowness x{}",
        members.latest_seq,
        members.parent.as_deref().unwrap_or("-"),
        members.slowness_factor
    );
    println!("active view ({}):", members.active.len());
    for n in &members.active {
        let rtt = n.rtt_ms.map_or("-".to_string(), |r| format!("{r:.1} ms"));
        println!(
            "  {} {}  rtt {rtt}{}{}",
            n.peer_id,
            n.addr,
            if n.suspect { "  SUSPECT" } else { "" },
            if n.eager { "  tree" } else { "" }
        );
    }
    println!("passive view ({}):", members.passive.len());
    for e in &members.passive {
        println!("  {} {}", e.peer_id, e.addr);
    }
    println!("locality cache ({}):", members.locality.len());
    for e in &members.locality {
        println!("  {} {}", e.peer_id, e.addr);
    }
    println!(
        "refused peers {}, refused envelopes {}, malformed frames {}, declared dead {}",
        members.refused_peers,
        members.refused_envelopes,
        members.malformed_frames,
        members.declared_dead
    );
    Ok(())
}

/// `shoal status --coordinator ADDR`.
pub fn fleet_status(addr: SocketAddr, signer: &http::Signer, json: bool) -> Outcome {
    let fleet: FleetStatus = signer
        .get(addr, api::FLEET_PATH)
        .map_err(|f| json_failure(json, f))?;
    if json {
        let value =
            serde_json::to_value(&fleet).map_err(|e| Failure::new(Code::General, e.to_string()))?;
        return print_json(&value);
    }
    println!(
        "fleet: {} nodes (healthy {}, degraded {}, failed {}, unknown {}), latest broadcast {}",
        fleet.nodes,
        fleet.states.healthy,
        fleet.states.degraded,
        fleet.states.failed,
        fleet.states.unknown,
        fleet.latest_seq
    );
    for r in &fleet.releases {
        println!(
            "release {}: complete on {}, fetching on {}",
            r.root, r.complete, r.fetching
        );
    }
    Ok(())
}
