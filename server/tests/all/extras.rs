//! The server's extras: the generated OpenAPI document, the Prometheus metrics, and moving a paused
//! sandbox between servers as a blob.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use crate::common::{KEY, LIMIT, Server, stdout_of};

/// Every control-plane route, as (method, path): what the document must list, and nothing else.
const CONTROL_PLANE: &[(&str, &str)] = &[
    ("post", "/sandboxes"),
    ("get", "/sandboxes"),
    ("post", "/v2/sandboxes"),
    ("get", "/v2/sandboxes"),
    ("get", "/sandboxes/{id}"),
    ("delete", "/sandboxes/{id}"),
    ("post", "/sandboxes/{id}/pause"),
    ("post", "/sandboxes/{id}/connect"),
    ("post", "/v2/sandboxes/{id}/connect"),
    ("post", "/sandboxes/{id}/timeout"),
    ("post", "/sandboxes/{id}/snapshots"),
    ("post", "/sandboxes/{id}/fork"),
    ("post", "/sandboxes/{id}/clone"),
    ("post", "/sandboxes/{id}/refreshes"),
    ("post", "/sandboxes/{id}/resume"),
    ("put", "/sandboxes/{id}/network"),
    ("get", "/sandboxes/{id}/metrics"),
    ("get", "/sandboxes/metrics"),
    ("get", "/sandboxes/{id}/logs"),
    ("get", "/v2/sandboxes/{id}/logs"),
    ("get", "/snapshots"),
    ("delete", "/snapshots/{id}"),
    ("delete", "/templates/{id}"),
    ("post", "/volumes"),
    ("get", "/volumes"),
    ("get", "/volumes/{id}"),
    ("delete", "/volumes/{id}"),
    ("get", "/sandboxes/{id}/blob"),
    ("post", "/sandboxes/import"),
    ("post", "/templates"),
    ("get", "/templates"),
    ("get", "/metrics"),
];

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

#[tokio::test]
async fn openapi_documents_exactly_the_routes_served() -> anyhow::Result<()> {
    let server = Server::new()?;
    let reply = server
        .send(Request::get("/openapi.json").body(Body::empty())?)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "served without the API key");
    let doc = reply.json();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| (m.to_string(), path.clone()))
        })
        .collect();
    let mut expected: Vec<(String, String)> = CONTROL_PLANE
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    documented.sort();
    expected.sort();
    assert_eq!(documented, expected);

    // The router agrees with the document: every documented operation is routed (not the fallback's
    // 404 or a 405), and on a documented path every other method is 405. A route added beside the
    // document, on a documented path, would fail here.
    for path in paths.keys() {
        let uri = path.replace("{id}", "nosuchsandbox");
        for method in METHODS {
            let request = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&uri)
                .header("X-API-KEY", KEY)
                .body(Body::empty())?;
            let reply = server.send(request).await;
            let is_documented = paths[path].get(method).is_some();
            let unrouted = reply.status == StatusCode::METHOD_NOT_ALLOWED
                || (reply.status == StatusCode::NOT_FOUND
                    && reply.json()["message"] == "no such route");
            assert_eq!(
                !unrouted, is_documented,
                "{method} {uri}: {} {:?}",
                reply.status, reply.body
            );
        }
    }
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
    assert!(doc["components"]["schemas"]["SandboxJson"].is_object());
    Ok(())
}

/// The value of the first sample line starting with `prefix`.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_count_sandboxes_and_pauses() -> anyhow::Result<()> {
    let server = Server::new()?;
    let unauthenticated = server
        .send(Request::get("/metrics").body(Body::empty())?)
        .await;
    assert_eq!(unauthenticated.status, StatusCode::UNAUTHORIZED);

    let before = server.api("GET", "/metrics", None).await;
    assert_eq!(before.status, StatusCode::OK);
    assert!(
        before.headers["content-type"]
            .to_str()?
            .starts_with("application/openmetrics-text")
    );
    let text = String::from_utf8(before.body.to_vec())?;
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(
        text.contains("# TYPE stasis_pause_seconds histogram"),
        "{text}"
    );
    assert!(text.contains("# TYPE stasis_sandboxes gauge"), "{text}");
    assert_eq!(sample(&text, "stasis_pause_seconds_count"), Some(0.0));
    assert_eq!(
        sample(&text, "stasis_sandboxes{state=\"running\"}"),
        Some(0.0)
    );

    let id = server.create(json!({})).await;
    let running = String::from_utf8(server.api("GET", "/metrics", None).await.body.to_vec())?;
    assert_eq!(
        sample(&running, "stasis_sandboxes{state=\"running\"}"),
        Some(1.0)
    );

    let paused = server
        .api("POST", &format!("/sandboxes/{id}/pause"), None)
        .await;
    assert_eq!(paused.status, StatusCode::NO_CONTENT);
    let after = String::from_utf8(server.api("GET", "/metrics", None).await.body.to_vec())?;
    assert_eq!(sample(&after, "stasis_pause_seconds_count"), Some(1.0));
    assert_eq!(
        sample(&after, "stasis_sandboxes{state=\"paused\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&after, "stasis_sandboxes{state=\"running\"}"),
        Some(0.0)
    );
    assert!(sample(&after, "stasis_blob_bytes_written_total").is_some_and(|b| b > 0.0));
    assert!(
        after.contains(
            "stasis_http_requests_total{route=\"/sandboxes/{id}/pause\",method=\"POST\",status=\"204\"} 1"
        ),
        "{after}"
    );

    server
        .api("POST", &format!("/sandboxes/{id}/connect"), Some(json!({})))
        .await;
    let resumed = String::from_utf8(server.api("GET", "/metrics", None).await.body.to_vec())?;
    assert_eq!(sample(&resumed, "stasis_resume_seconds_count"), Some(1.0));
    Ok(())
}

#[tokio::test]
async fn a_paused_sandbox_moves_to_another_server_as_a_blob() -> anyhow::Result<()> {
    let source = Server::new()?;
    let id = source.create(json!({"metadata": {"moved": "yes"}})).await;
    assert_eq!(
        source
            .upload(&id, "/home/user/note.txt", b"travels".to_vec())
            .await
            .status,
        StatusCode::OK
    );
    let (_, started) = source.start(&id, "echo 41 > /tmp/n").await;
    assert!(!started.is_empty());

    let running = source
        .api("GET", &format!("/sandboxes/{id}/blob"), None)
        .await;
    assert_eq!(
        running.status,
        StatusCode::CONFLICT,
        "a running sandbox has no blob"
    );
    source
        .api("POST", &format!("/sandboxes/{id}/pause"), None)
        .await;
    let exported = source
        .api("GET", &format!("/sandboxes/{id}/blob"), None)
        .await;
    assert_eq!(exported.status, StatusCode::OK);
    assert_eq!(exported.headers["content-type"], "application/octet-stream");
    let blob = exported.body.to_vec();
    assert!(blob.starts_with(b"\x89STASIS\n"));

    let target = Server::new()?;
    let imported = import(&target, blob.clone()).await;
    assert_eq!(imported.status, StatusCode::CREATED, "{:?}", imported.body);
    let info: Value = imported.json();
    let new_id = info["sandboxID"].as_str().expect("id").to_owned();
    assert_eq!(info["state"], "paused");
    assert_eq!(info["templateID"], "base");
    assert_eq!(info["metadata"]["moved"], "yes");

    let connected = target
        .api(
            "POST",
            &format!("/sandboxes/{new_id}/connect"),
            Some(json!({})),
        )
        .await;
    assert_eq!(connected.status, StatusCode::CREATED);
    let note = target.download(&new_id, "/home/user/note.txt").await;
    assert_eq!(&note.body[..], b"travels");
    let (_, envelopes) = target.start(&new_id, "cat /tmp/n").await;
    assert_eq!(stdout_of(&envelopes), "41\n");

    // A corrupt blob is refused with the decoder's reason, and nothing is created.
    let mut corrupt = blob.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0xff;
    let refused = import(&target, corrupt).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let message = refused.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.starts_with("the blob is not valid: "), "{message}");
    let garbage = import(&target, b"not a blob".to_vec()).await;
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST);
    let too_big = import(&target, vec![0; LIMIT + 1]).await;
    assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE);
    let listed = target.api("GET", "/v2/sandboxes", None).await.json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    Ok(())
}

async fn import(server: &Server, blob: Vec<u8>) -> crate::common::Reply {
    let request = Request::post("/sandboxes/import")
        .header("X-API-KEY", KEY)
        .header("content-type", "application/octet-stream")
        .body(Body::from(blob))
        .expect("request");
    server.send(request).await
}
