//! The coordinator's check of operator requests, in front of every route of its API.
//!
//! Each request that [`required_scope`] does not leave open is read whole (up to
//! [`MAX_BODY_BYTES`]) and given to the core's [`Gate`] with its `Authorization` header and the
//! time. A refused request is answered 401, 403 or 429 with the gate's message; an accepted one
//! goes on with its [`Operator`] in the request's extensions. Every change an operator asks for,
//! and every refusal of a key the trust document names, is written to the audit log through an
//! [`AuditHook`] before the answer goes out.

use crate::metrics::Sample;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shoal_core::operator::{Gate, Operator, RefusalKind, Scope, required_scope};
use shoal_core::trust::Trust;
use std::sync::{Arc, Mutex};

/// The largest request body the coordinator reads.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// One operator action or refusal, for the audit log.
#[derive(Clone, Debug)]
pub struct OperatorAction {
    /// The operator key's fingerprint.
    pub actor: String,
    /// `METHOD /path`.
    pub request: String,
    /// The HTTP status it was answered with.
    pub status: u16,
    /// The refusal's reason, if it was refused by the gate.
    pub refused: Option<String>,
}

/// Writes an [`OperatorAction`] to the audit log. It is called on a blocking thread.
pub type AuditHook = Arc<dyn Fn(OperatorAction) + Send + Sync>;

/// The gate and where its decisions are recorded.
pub struct OperatorGate {
    gate: Mutex<Gate>,
    audit: Option<AuditHook>,
}

impl OperatorGate {
    /// A gate for the operator keys `trust` names, recording to `audit`.
    pub fn new(trust: &Trust, audit: Option<AuditHook>) -> Arc<Self> {
        Arc::new(Self {
            gate: Mutex::new(Gate::new(trust.operators())),
            audit,
        })
    }

    /// The gate's counts as metrics samples.
    pub fn samples(&self) -> Vec<Sample> {
        let counts = self
            .gate
            .lock()
            .expect("the gate lock is never poisoned")
            .counts()
            .clone();
        let mut out = vec![Sample {
            name: "operator_requests",
            help: "Operator requests to the coordinator, accepted or refused by reason",
            counter: true,
            labels: vec![("outcome", "accepted".into())],
            value: counts.accepted as f64,
        }];
        for (kind, n) in RefusalKind::ALL.iter().zip(counts.refused) {
            out.push(Sample {
                name: "operator_requests",
                help: "Operator requests to the coordinator, accepted or refused by reason",
                counter: true,
                labels: vec![("outcome", kind.as_str().into())],
                value: n as f64,
            });
        }
        out
    }

    async fn record(&self, action: OperatorAction) {
        let Some(hook) = self.audit.clone() else {
            return;
        };
        if let Err(e) = tokio::task::spawn_blocking(move || hook(action)).await {
            tracing::error!("the audit writer failed: {e}");
        }
    }
}

fn answer(status: StatusCode, message: String) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// The middleware: `axum::middleware::from_fn_with_state(gate, operator_gate::check)`.
pub async fn check(
    State(gate): State<Arc<OperatorGate>>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().as_str().to_owned();
    let target = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_owned(),
        |p| p.as_str().to_owned(),
    );
    let Some(scope) = required_scope(&method, &target) else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {MAX_BODY_BYTES} bytes, or was cut off"),
        );
    };
    // A header that is not ASCII is passed on as text that cannot parse.
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let path = target.split('?').next().unwrap_or("").to_owned();
    let decision = gate
        .gate
        .lock()
        .expect("the gate lock is never poisoned")
        .check(
            crate::mesh::unix_now(),
            scope,
            &method,
            &target,
            &bytes,
            authorization,
        );
    match decision {
        Err(refusal) => {
            let status = StatusCode::from_u16(refusal.kind.http_status())
                .expect("the gate answers with valid statuses");
            if let Some(key) = refusal.key {
                gate.record(OperatorAction {
                    actor: key.fingerprint(),
                    request: format!("{method} {path}"),
                    status: status.as_u16(),
                    refused: Some(refusal.kind.as_str().to_owned()),
                })
                .await;
            }
            answer(status, refusal.message)
        }
        Ok(operator) => {
            let actor = operator.name();
            let mut request = Request::from_parts(parts, Body::from(bytes));
            request.extensions_mut().insert::<Operator>(operator);
            let response = next.run(request).await;
            if scope != Scope::Read {
                gate.record(OperatorAction {
                    actor,
                    request: format!("{method} {path}"),
                    status: response.status().as_u16(),
                    refused: None,
                })
                .await;
            }
            response
        }
    }
}
