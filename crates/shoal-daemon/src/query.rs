//! Fleet queries at the coordinator: `GET /v1/query?select=K=V,...&version_not=VER&state=STATE
//! &limit=N&wait_secs=S` broadcasts a [`Query`] and answers with what came up the health tree
//! within the deadline it states: how many nodes answered and match, and a sample of them.
//! `GET /v1/inventory/instances` is the same query in the shape of a simple deployment API.

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::extract::RawQuery;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use shoal_core::labels::Labels;
pub use shoal_core::query::CellMatch;
use shoal_core::query::{MAX_QUERY_SAMPLE, Query, QueryHit, VersionRef, parse_state};
use shoal_net::mesh::{Mesh, unix_now};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Ask the fleet (`GET`).
pub const QUERY_PATH: &str = "/v1/query";

/// How long the coordinator collects answers unless told otherwise.
pub const DEFAULT_WAIT_SECS: u64 = 5;
/// The longest it collects them.
pub const MAX_WAIT_SECS: u64 = 30;
/// The sample size unless told otherwise.
pub const DEFAULT_LIMIT: u16 = 20;
/// How often the coordinator looks at its summary while it waits.
const POLL: Duration = Duration::from_millis(100);
/// How long nodes keep answering after the deadline, for answers still on their way.
const GRACE_SECS: u64 = 10;

/// The query string of `GET /v1/query`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryParams {
    /// Labels a node must carry, `k=v,k=v`.
    pub select: Option<String>,
    /// `VERSION` or `SERVICE@VERSION`: match only nodes not running it.
    pub version_not: Option<String>,
    /// A service state: match only nodes with a service in it.
    pub state: Option<String>,
    /// The most nodes to sample.
    pub limit: Option<u16>,
    /// How long to collect answers, in seconds.
    pub wait_secs: Option<u64>,
}

/// One sampled node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SampleNode {
    /// Its peer id.
    pub peer_id: String,
    /// Its `--listen` address.
    pub addr: String,
    /// Its labels.
    pub labels: Labels,
    /// Its services: name, running version, state.
    pub services: Vec<SampleService>,
}

/// One service of a sampled node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SampleService {
    /// The service.
    pub service: String,
    /// The version it runs, if any.
    pub version: Option<String>,
    /// Its state.
    pub state: String,
}

/// The answer to `GET /v1/query`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueryResult {
    /// The query's id.
    pub id: u64,
    /// Nodes that match.
    pub matched: u32,
    /// Nodes that answered.
    pub answered: u32,
    /// Nodes the coordinator counts in the fleet.
    pub fleet: u32,
    /// Whether every counted node answered before the deadline.
    pub complete: bool,
    /// The deadline the coordinator gave itself, in milliseconds.
    pub deadline_ms: u64,
    /// How long it took, in milliseconds.
    pub waited_ms: u64,
    /// Matching machines per region and fault domain (their `region` and `fd` labels).
    pub cells: Vec<CellMatch>,
    /// Some matching nodes: the ones with the smallest ids, at most the limit.
    pub sample: Vec<SampleNode>,
}

/// A parsed, checked request.
struct Request {
    query: Query,
    wait: Duration,
}

/// Parses and checks the query string.
fn parse(raw: Option<&str>, id: u64) -> Result<Request> {
    let params: QueryParams = serde_urlencoded::from_str(raw.unwrap_or(""))
        .context("the query string (known keys: select, version_not, state, limit, wait_secs)")?;
    let select: Labels = params
        .select
        .as_deref()
        .unwrap_or("")
        .parse()
        .map_err(|e| anyhow::anyhow!("select: {e}"))?;
    let version_not = params
        .version_not
        .as_deref()
        .map(str::parse::<VersionRef>)
        .transpose()
        .map_err(|e| anyhow::anyhow!("version_not: {e}"))?;
    let state = params
        .state
        .as_deref()
        .map(parse_state)
        .transpose()
        .map_err(|e| anyhow::anyhow!("state: {e}"))?;
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if limit > MAX_QUERY_SAMPLE {
        bail!("limit {limit} is past the maximum of {MAX_QUERY_SAMPLE}");
    }
    let wait_secs = params.wait_secs.unwrap_or(DEFAULT_WAIT_SECS);
    if wait_secs == 0 || wait_secs > MAX_WAIT_SECS {
        bail!("wait_secs {wait_secs} is outside 1 to {MAX_WAIT_SECS}");
    }
    Ok(Request {
        query: Query {
            id,
            select,
            version_not,
            state,
            limit,
            expires_unix_secs: unix_now() + wait_secs + GRACE_SECS,
        },
        wait: Duration::from_secs(wait_secs),
    })
}

/// A query id: increasing, so the newest queries are the ones summaries keep.
fn next_id() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = u64::try_from(crate::conductor::wall_now().as_micros()).unwrap_or(u64::MAX);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let id = now.max(last + 1);
        match LAST.compare_exchange(last, id, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return id,
            Err(seen) => last = seen,
        }
    }
}

/// Broadcasts the query in `raw` and collects its answers.
///
/// # Errors
///
/// A bad query string (the message names the key), or a mesh that has stopped.
pub async fn run(mesh: &Mesh, raw: Option<&str>) -> Result<QueryResult> {
    let request = parse(raw, next_id())?;
    let id = request.query.id;
    let start = Instant::now();
    let fleet_when_asked = mesh.subtree().await?.nodes;
    mesh.broadcast_query(request.query).await?;
    loop {
        let summary = mesh.subtree().await?;
        let fleet = fleet_when_asked.max(summary.nodes);
        let answer = summary.query(id);
        let answered = answer.map_or(0, |a| a.answered);
        let complete = answer.is_some_and(|a| a.is_complete(fleet_when_asked, summary.nodes));
        if complete || start.elapsed() >= request.wait {
            let sample = answer.map_or_else(Vec::new, |a| a.sample.iter().map(sample).collect());
            return Ok(QueryResult {
                id,
                matched: answer.map_or(0, |a| a.matched),
                answered,
                fleet,
                complete,
                deadline_ms: u64::try_from(request.wait.as_millis()).unwrap_or(u64::MAX),
                waited_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
                cells: answer.map_or_else(Vec::new, |a| a.cells.clone()),
                sample,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A sampled node as the API shows it. A daemon node's name is `ADDR PEER_ID`; its id bytes
/// are its peer id.
fn sample(hit: &QueryHit) -> SampleNode {
    let mut words = hit.name.split_whitespace();
    let addr = words.next().unwrap_or("").to_owned();
    let peer_id = libp2p_identity::PeerId::from_bytes(&hit.node_id)
        .map_or_else(|_| words.next().unwrap_or("").to_owned(), |p| p.to_string());
    SampleNode {
        peer_id,
        addr,
        labels: hit.labels.clone(),
        services: hit
            .services
            .iter()
            .map(|s| SampleService {
                service: s.service.clone(),
                version: s.version.clone(),
                state: s.state.as_str().to_owned(),
            })
            .collect(),
    }
}

/// The route.
pub fn routes(mesh: Mesh) -> Router {
    Router::new().route(
        QUERY_PATH,
        get(move |RawQuery(raw): RawQuery| {
            let mesh = mesh.clone();
            async move { crate::routes::outcome(run(&mesh, raw.as_deref()).await) }
        }),
    )
}
