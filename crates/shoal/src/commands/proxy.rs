//! `shoal proxy`: a local gateway to the coordinator that signs every request with the
//! operator's key, as `kubectl proxy` lends a browser or a script the user's credentials. The
//! web page (`/ui`) and tools that cannot sign (curl, schemathesis) go through it.

use crate::failure::{Code, Failure, Outcome};
use crate::http::{OperatorKeyArg, Signer};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use clap::Args;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The largest request body passed on (the coordinator's own limit).
const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// The largest answer passed back.
const MAX_ANSWER_BYTES: u64 = 64 * 1024 * 1024;
/// How long the coordinator may take to answer (a rollout's census waits up to 90 s).
const ANSWER_WITHIN: Duration = Duration::from_secs(120);

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    shoal_net::node::parse_addr(text, "address").map_err(|e| e.to_string())
}

/// `shoal proxy`.
#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// The coordinator's --listen IP:PORT.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_addr)]
    coordinator: SocketAddr,
    #[command(flatten)]
    operator: OperatorKeyArg,
    /// Where to listen: a loopback address, since whoever reaches it acts with the key.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:8001", value_parser = parse_addr)]
    listen: SocketAddr,
}

struct Gateway {
    coordinator: SocketAddr,
    signer: Signer,
}

pub fn run(args: ProxyArgs) -> Outcome {
    if !args.listen.ip().is_loopback() {
        return Err(Failure::new(
            Code::Usage,
            format!(
                "--listen {} is not a loopback address: anyone who reached it would act with \
                 your operator key; listen on 127.0.0.1",
                args.listen
            ),
        ));
    }
    let signer = args.operator.signer()?;
    if !signer.has_key() {
        return Err(Failure::new(
            Code::Usage,
            "a proxy without an operator key signs nothing: pass --key PATH or set \
             SHOAL_OPERATOR_KEY",
        ));
    }
    let gateway = Arc::new(Gateway {
        coordinator: args.coordinator,
        signer,
    });
    super::net::runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| {
                Failure::new(
                    Code::General,
                    format!("cannot listen on {}: {e}", args.listen),
                )
            })?;
        eprintln!(
            "proxy on http://{} to the coordinator {}, signing as {}; the web page is http://{}/ui",
            args.listen,
            args.coordinator,
            gateway.signer.key_name().unwrap_or_default(),
            args.listen
        );
        let app = axum::Router::new().fallback(forward).with_state(gateway);
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(|e| Failure::new(Code::General, format!("the proxy stopped: {e}")))
    })
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

async fn forward(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let method = request.method().as_str().to_owned();
    let target = request
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    let passed: String = [header::CONTENT_TYPE, header::ACCEPT]
        .into_iter()
        .filter_map(|name| {
            let value = request.headers().get(&name)?.to_str().ok()?;
            Some(format!("{name}: {value}\r\n"))
        })
        .collect();
    let Ok(body) = axum::body::to_bytes(request.into_body(), MAX_REQUEST_BYTES).await else {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {MAX_REQUEST_BYTES} bytes"),
        );
    };
    let auth = gateway.signer.header(&method, &target, &body);
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(gateway.coordinator).await?;
        let mut head = format!(
            "{method} {target} HTTP/1.0\r\nHost: {}\r\n{passed}Content-Length: {}\r\n",
            gateway.coordinator,
            body.len()
        );
        if let Some(auth) = auth {
            head.push_str(&format!("Authorization: {auth}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        let mut answer = Vec::new();
        stream
            .take(MAX_ANSWER_BYTES)
            .read_to_end(&mut answer)
            .await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = match tokio::time::timeout(ANSWER_WITHIN, exchange).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => {
            return refuse(
                StatusCode::BAD_GATEWAY,
                format!("the coordinator at {}: {e}", gateway.coordinator),
            );
        }
        Err(_) => {
            return refuse(
                StatusCode::GATEWAY_TIMEOUT,
                format!("the coordinator did not answer within {ANSWER_WITHIN:?}"),
            );
        }
    };
    relay(&answer)
}

/// The coordinator's HTTP/1 answer as a response: its status, content type and body.
fn relay(answer: &[u8]) -> Response {
    let Some(split) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return refuse(
            StatusCode::BAD_GATEWAY,
            "the coordinator's answer is not HTTP".into(),
        );
    };
    let head = String::from_utf8_lossy(&answer[..split]);
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = Response::new(Body::from(answer[split + 4..].to_vec()));
    *response.status_mut() = status;
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-type")
            && let Ok(value) = HeaderValue::from_str(value.trim())
        {
            response.headers_mut().insert(header::CONTENT_TYPE, value);
        }
    }
    response
}
