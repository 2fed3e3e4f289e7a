//! The coordinator against its OpenAPI document: a real coordinator and three nodes, a
//! published release, and schemathesis (PyPI, installed by `scripts/setup`) sending generated
//! requests to every operation through `shoal proxy`, which signs them with the harness's
//! operator key. No answer may be a server error, and every status, content type and body must
//! be one the document names. The deployment-API shapes are then driven by hand: a deploy in
//! batches, its status, progress and rollback, and the inventory.
#![allow(clippy::unwrap_used)]

#[path = "support/mesh.rs"]
mod harness;
#[path = "support/http.rs"]
mod http;
#[path = "support/rollout_fleet.rs"]
mod rollout_fleet;

/// A plain HTTP/1.0 exchange through the proxy: status and JSON body.
fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let answer = http::call(addr, method, path, &body);
    (answer.status, answer.json())
}

use harness::{Work, report, run_with_timeout};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// schemathesis's whole run: a few hundred requests, each answered in milliseconds.
const SCHEMATHESIS_WITHIN: Duration = Duration::from_secs(600);

fn schemathesis() -> &'static Path {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tools-venv/bin/schemathesis");
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup, which installs it",
        path.display()
    );
    Box::leak(path.into_boxed_path())
}

#[test]
fn the_coordinator_answers_as_its_openapi_document_says() {
    let work = Work::new("openapi");
    let mut fleet = rollout_fleet::fleet(&work, 3, rollout_fleet::cell_labels);
    fleet.publish("1.0", 1, "1.0");

    let (_proxy, proxy_at) = http::start_proxy(&work, fleet.mesh.coordinator.listen());

    // The document served is the one in configs/.
    let (code, served) = call(proxy_at, "GET", "/v1/openapi.json", None);
    assert_eq!(code, 200);
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/openapi.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(served, file);

    // Through the proxy every request is signed, so the operations' security requirement is
    // dropped from the copy schemathesis reads (it would send requests without the header and
    // expect a refusal). tests/operators.rs checks the refusals on the coordinator itself.
    let mut through_proxy = file.clone();
    through_proxy.as_object_mut().unwrap().remove("security");
    for path in through_proxy["paths"].as_object_mut().unwrap().values_mut() {
        for operation in path.as_object_mut().unwrap().values_mut() {
            operation.as_object_mut().unwrap().remove("security");
        }
    }
    let document = work.file("openapi-through-proxy.json");
    std::fs::write(&document, through_proxy.to_string()).unwrap();

    let mut cmd = std::process::Command::new(schemathesis());
    cmd.args([
        "run",
        "--url",
        &format!("http://{proxy_at}"),
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,\
         response_schema_conformance,negative_data_rejection",
        "--max-examples",
        "10",
        "--workers",
        "1",
        "--phases",
        "examples,coverage,fuzzing",
        "--suppress-health-check",
        "all",
        "--no-color",
    ])
    .arg(&document)
    .current_dir(work.path());
    let out = run_with_timeout(cmd, SCHEMATHESIS_WITHIN).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> = stdout.lines().rev().take(12).collect();
    report(&format!(
        "schemathesis: {}",
        summary.into_iter().rev().collect::<Vec<_>>().join("\n  ")
    ));
    assert!(
        out.status.success(),
        "schemathesis found answers the document does not allow:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The deployment-API shapes, by hand.
    let (code, inventory) = call(
        proxy_at,
        "GET",
        "/v1/inventory/instances?labels=region=r1",
        None,
    );
    assert_eq!(code, 200, "{inventory}");
    assert_eq!(inventory["count"], 1);
    assert_eq!(inventory["instances"][0]["labels"]["region"], "r1");
    let deploy = json!({
        "service": "web",
        "version": "1.0",
        "labels": {},
        "batch_size": 1,
        "failure_threshold": 1
    });
    let (code, started) = call(proxy_at, "POST", "/v1/deploy", Some(&deploy));
    assert_eq!(code, 200, "{started}");
    assert_eq!(started["stages"][0]["name"], "batch-1");
    let (code, again) = call(proxy_at, "POST", "/v1/deploy", Some(&deploy));
    if started["state"] == "running" {
        assert_eq!(code, 400, "a second deployment while one runs: {again}");
        assert!(
            again["error"]
                .as_str()
                .unwrap()
                .contains("one deployment runs at a time")
        );
    }
    let (code, progressed) = call(proxy_at, "POST", "/v1/deploy/progress", Some(&json!({})));
    assert!(code == 200 || code == 400, "{progressed}");
    let id = started["id"].as_u64().unwrap();
    fleet.wait_state(id, "completed");
    let (code, status) = call(proxy_at, "GET", "/v1/deploy/status", None);
    assert_eq!(
        (code, status["state"].as_str()),
        (200, Some("completed")),
        "{status}"
    );
    let (code, back) = call(proxy_at, "POST", "/v1/deploy/rollback", Some(&json!({})));
    assert_eq!(
        code, 400,
        "nothing to go back to after a first release: {back}"
    );
}
