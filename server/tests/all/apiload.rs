//! Regressions found by schemathesis against `/openapi.json` (`tests/schemathesis/run.sh`) and by the
//! 200-client load run (`stasis-bench --load-only`): one test per bug, named after it.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;

use crate::common::{KEY, Server};

#[tokio::test]
async fn an_id_that_is_not_utf8_is_a_json_400_not_plain_text() -> anyhow::Result<()> {
    let server = Server::new()?;
    for (method, path) in [
        ("GET", "/sandboxes/%FF"),
        ("DELETE", "/sandboxes/%C3%28"),
        ("POST", "/sandboxes/%FF/pause"),
        ("POST", "/v2/sandboxes/%FF/connect"),
        ("GET", "/sandboxes/%FF/blob"),
        ("DELETE", "/snapshots/%FF"),
    ] {
        let reply = server.api(method, path, None).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{method} {path}");
        assert_eq!(reply.headers["content-type"], "application/json");
        assert_eq!(reply.json()["code"], 400, "{method} {path}");
    }
    Ok(())
}

#[tokio::test]
async fn odd_unicode_ids_are_404() -> anyhow::Result<()> {
    let server = Server::new()?;
    for path in [
        "/sandboxes/%C3%A9%F0%9F%98%80",
        "/sandboxes/%00",
        "/sandboxes/%E2%80%AE..",
    ] {
        let reply = server.api("GET", path, None).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(reply.json()["code"], 404);
    }
    Ok(())
}

#[tokio::test]
async fn integral_float_timeouts_and_counts_are_accepted() -> anyhow::Result<()> {
    let server = Server::new()?;
    // JSON Schema's `integer` includes 300.0; serde's u64 refused it with a 400.
    let id = server.create(json!({"timeout": 300.0})).await;
    let reply = server
        .api(
            "POST",
            &format!("/sandboxes/{id}/timeout"),
            Some(json!({"timeout": 60.0})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let reply = server
        .api(
            "POST",
            &format!("/sandboxes/{id}/fork"),
            Some(json!({"count": 1.0})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    Ok(())
}

#[tokio::test]
async fn negative_fractional_and_huge_numbers_are_400() -> anyhow::Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({})).await;
    for (path, body) in [
        ("/v2/sandboxes".to_owned(), json!({"timeout": -1})),
        ("/v2/sandboxes".to_owned(), json!({"timeout": 0.5})),
        ("/v2/sandboxes".to_owned(), json!({"timeout": 1e300})),
        (format!("/sandboxes/{id}/connect"), json!({"timeout": -1})),
        (format!("/sandboxes/{id}/timeout"), json!({"timeout": -5})),
        (format!("/sandboxes/{id}/timeout"), json!({"timeout": null})),
        (format!("/sandboxes/{id}/timeout"), json!({})),
        (format!("/sandboxes/{id}/fork"), json!({"count": 1e20})),
        (format!("/sandboxes/{id}/fork"), json!({"count": -1})),
    ] {
        let reply = server.api("POST", &path, Some(body.clone())).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path} {body}");
        assert_eq!(reply.json()["code"], 400);
    }
    Ok(())
}

#[tokio::test]
async fn the_largest_timeout_saturates_rather_than_overflowing() -> anyhow::Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({"timeout": u64::MAX})).await;
    for path in [
        format!("/sandboxes/{id}/timeout"),
        format!("/sandboxes/{id}/connect"),
    ] {
        let reply = server
            .api("POST", &path, Some(json!({"timeout": u64::MAX})))
            .await;
        assert!(reply.status.is_success(), "{path}: {}", reply.status);
    }
    let reply = server.api("GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(reply.status, StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn a_null_body_means_no_options() -> anyhow::Result<()> {
    let server = Server::new()?;
    // The document marks optional bodies nullable, so `null` is as valid as no body.
    let request = Request::post("/v2/sandboxes")
        .header("X-API-KEY", KEY)
        .header("content-type", "application/json")
        .body(Body::from("null"))?;
    let reply = server.send(request).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let id = reply.json()["sandboxID"].as_str().unwrap_or("").to_owned();
    let request = Request::post(format!("/sandboxes/{id}/snapshots"))
        .header("X-API-KEY", KEY)
        .body(Body::from(" null "))?;
    assert_eq!(server.send(request).await.status, StatusCode::CREATED);
    Ok(())
}

#[tokio::test]
async fn lifecycle_settings_of_the_wrong_shape_are_400() -> anyhow::Result<()> {
    let server = Server::new()?;
    for body in [
        json!({"lifecycle": false}),
        json!({"lifecycle": "pause"}),
        json!({"autoResume": 3}),
        json!({"autoResume": {"enabled": "yes"}}),
    ] {
        let reply = server
            .api("POST", "/v2/sandboxes", Some(body.clone()))
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
    }
    // Both spellings the SDK families use still work.
    for body in [
        json!({"autoResume": true}),
        json!({"autoResume": {"enabled": true}}),
        json!({"lifecycle": {"onTimeout": "pause", "autoResume": {"enabled": true}}}),
        json!({"lifecycle": {"on_timeout": "kill", "auto_resume": false}}),
    ] {
        let reply = server
            .api("POST", "/v2/sandboxes", Some(body.clone()))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{body}");
    }
    Ok(())
}

#[tokio::test]
async fn every_link_in_the_document_names_an_operation_in_camel_case() -> anyhow::Result<()> {
    let server = Server::new()?;
    let reply = server
        .send(Request::get("/openapi.json").body(Body::empty())?)
        .await;
    let document = reply.json();
    let paths = document["paths"].as_object().cloned().unwrap_or_default();
    let operations: BTreeSet<String> = paths
        .values()
        .filter_map(|item| item.as_object())
        .flat_map(|methods| methods.values())
        .filter_map(|op| op["operationId"].as_str().map(str::to_owned))
        .collect();
    let mut links = 0;
    for (path, item) in &paths {
        for (method, op) in item.as_object().into_iter().flatten() {
            for (status, response) in op["responses"].as_object().into_iter().flatten() {
                for (name, link) in response["links"].as_object().into_iter().flatten() {
                    // utoipa's own Link serializes `operation_id`, which OpenAPI tools reject.
                    let target = link["operationId"].as_str().unwrap_or_default();
                    assert!(
                        operations.contains(target),
                        "{method} {path} {status} link {name}: {link}"
                    );
                    let id = link["parameters"]["id"].as_str().unwrap_or_default();
                    assert!(id.starts_with('$'), "{name}: {link}");
                    links += 1;
                }
            }
        }
    }
    // create links to pause, export links back, snapshots link to their deletion.
    for (path, method, status, target) in [
        ("/v2/sandboxes", "post", "201", "pause"),
        ("/sandboxes/{id}/pause", "post", "204", "export"),
        (
            "/sandboxes/{id}/snapshots",
            "post",
            "201",
            "delete_snapshot",
        ),
    ] {
        let link = &document["paths"][path][method]["responses"][status]["links"][target];
        assert!(link.is_object(), "{method} {path} {status} -> {target}");
    }
    assert!(links > 50, "{links} links");
    Ok(())
}

/// The server's listener takes a burst of connections far past the standard library's backlog of 128
/// before accepting any. With 128, the kernel dropped the SYNs past the queue and 200 concurrent SDK
/// clients waited a SYN retransmission (a second or more) to connect. The listener is never accepted
/// from here, so every connect below completes only if the kernel queued it.
#[tokio::test]
async fn the_listener_queues_hundreds_of_connections_before_accepting() -> anyhow::Result<()> {
    let listener = stasis_server::serve::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let address = listener.local_addr()?;
    let connects = tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
        let mut streams = Vec::new();
        for n in 0..300 {
            // A queued connect completes at once on loopback; a dropped SYN is retried after 1 s.
            let stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
                .map_err(|e| anyhow::anyhow!("connection {n} was not queued: {e}"))?;
            streams.push(stream);
        }
        Ok(streams.len())
    })
    .await??;
    assert_eq!(connects, 300);
    drop(listener);
    Ok(())
}
