//! The control plane through the router: every route, every error status, the SDKs' response shapes.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;

use crate::common::{KEY, Server};

#[tokio::test]
async fn health_needs_no_key() -> anyhow::Result<()> {
    let server = Server::new()?;
    let reply = server
        .send(Request::get("/health").body(Body::empty())?)
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    Ok(())
}

#[tokio::test]
async fn the_control_plane_needs_the_api_key() -> anyhow::Result<()> {
    let server = Server::new()?;
    for key in [None, Some("wrong")] {
        let mut request = Request::get("/v2/sandboxes");
        if let Some(key) = key {
            request = request.header("X-API-KEY", key);
        }
        let reply = server.send(request.body(Body::empty())?).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.json()["code"], 401);
        assert_eq!(reply.headers["content-type"], "application/json");
    }
    let bearer = Request::get("/sandboxes").header("Authorization", format!("Bearer {KEY}"));
    assert_eq!(
        server.send(bearer.body(Body::empty())?).await.status,
        StatusCode::OK
    );
    Ok(())
}

#[tokio::test]
async fn create_answers_201_with_what_the_sdks_require() -> anyhow::Result<()> {
    let server = Server::new()?;
    for path in ["/sandboxes", "/v2/sandboxes"] {
        let body = json!({"templateID": "base", "timeout": 60, "metadata": {"user": "ada"}, "envVars": {"A": "1"}});
        let reply = server.api("POST", path, Some(body)).await;
        assert_eq!(reply.status, StatusCode::CREATED);
        let sandbox = reply.json();
        for field in [
            "templateID",
            "sandboxID",
            "clientID",
            "envdAccessToken",
            "startedAt",
            "endAt",
        ] {
            assert!(sandbox[field].is_string(), "{field}: {sandbox}");
        }
        assert_eq!(sandbox["envdVersion"], "0.5.7");
        assert_eq!(sandbox["templateID"], "base");
        assert_eq!(sandbox["state"], "running");
        assert_eq!(sandbox["metadata"], json!({"user": "ada"}));
        assert!(
            sandbox["cpuCount"].is_u64()
                && sandbox["memoryMB"].is_u64()
                && sandbox["diskSizeMB"].is_u64()
        );
        assert!(sandbox["startedAt"].as_str().unwrap_or("").ends_with('Z'));
    }
    // No body fields at all: the default template.
    let reply = server.api("POST", "/sandboxes", Some(json!({}))).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    Ok(())
}

#[tokio::test]
async fn bad_bodies_are_400_and_unknown_templates_too() -> anyhow::Result<()> {
    let server = Server::new()?;
    let request = Request::post("/v2/sandboxes")
        .header("X-API-KEY", KEY)
        .header("content-type", "application/json")
        .body(Body::from("{not json"))?;
    let reply = server.send(request).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["code"], 400);
    let reply = server
        .api("POST", "/v2/sandboxes", Some(json!({"templateID": "nope"})))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = server
        .api("POST", "/v2/sandboxes", Some(json!({"metadata": {"n": 1}})))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    Ok(())
}

#[tokio::test]
async fn unknown_ids_are_404_everywhere() -> anyhow::Result<()> {
    let server = Server::new()?;
    let id = "0123456789abcdefghijklmno";
    for (method, path) in [
        ("GET", format!("/sandboxes/{id}")),
        ("DELETE", format!("/sandboxes/{id}")),
        ("POST", format!("/sandboxes/{id}/pause")),
        ("POST", format!("/sandboxes/{id}/connect")),
        ("POST", format!("/v2/sandboxes/{id}/connect")),
        ("POST", format!("/sandboxes/{id}/snapshots")),
        ("POST", format!("/sandboxes/{id}/fork")),
        ("POST", format!("/sandboxes/{id}/clone")),
        ("POST", format!("/sandboxes/{id}/refreshes")),
        ("POST", format!("/sandboxes/{id}/resume")),
        ("PUT", format!("/sandboxes/{id}/network")),
        ("GET", format!("/sandboxes/{id}/metrics")),
        ("GET", format!("/sandboxes/{id}/logs")),
        ("GET", format!("/v2/sandboxes/{id}/logs")),
        ("GET", "/sandboxes/..%2F..%2Fetc".to_owned()),
        ("DELETE", "/snapshots/snap_x".to_owned()),
        ("DELETE", "/templates/snap_x".to_owned()),
        ("GET", "/volumes/vol_x".to_owned()),
        ("DELETE", "/volumes/vol_x".to_owned()),
    ] {
        let reply = server.api(method, &path, None).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(reply.json()["code"], 404);
    }
    let reply = server
        .api(
            "POST",
            &format!("/sandboxes/{id}/timeout"),
            Some(json!({"timeout": 5})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn pause_is_409_when_paused_and_connect_201_when_resumed() -> anyhow::Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({})).await;
    // The JS SDK pauses with no body and no content type.
    let reply = server
        .api("POST", &format!("/sandboxes/{id}/pause"), None)
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let reply = server
        .api("POST", &format!("/sandboxes/{id}/pause"), Some(json!({})))
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.json()["code"], 409);
    assert_eq!(
        server
            .api("GET", &format!("/sandboxes/{id}"), None)
            .await
            .json()["state"],
        "paused"
    );

    let reply = server
        .api(
            "POST",
            &format!("/v2/sandboxes/{id}/connect"),
            Some(json!({"timeout": 600})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.json()["state"], "running");
    assert_eq!(reply.json()["sandboxID"], id.as_str());
    let reply = server
        .api("POST", &format!("/sandboxes/{id}/connect"), Some(json!({})))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn timeout_sets_the_end_time() -> anyhow::Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({"timeout": 10})).await;
    let before = server
        .api("GET", &format!("/sandboxes/{id}"), None)
        .await
        .json();
    let reply = server
        .api(
            "POST",
            &format!("/sandboxes/{id}/timeout"),
            Some(json!({"timeout": 3600})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let after = server
        .api("GET", &format!("/sandboxes/{id}"), None)
        .await
        .json();
    assert!(
        after["endAt"].as_str() > before["endAt"].as_str(),
        "{before} {after}"
    );
    let reply = server
        .api("POST", &format!("/sandboxes/{id}/timeout"), Some(json!({})))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    Ok(())
}

#[tokio::test]
async fn list_filters_by_state_and_metadata_and_pages() -> anyhow::Result<()> {
    let server = Server::new()?;
    let a = server
        .create(json!({"metadata": {"job": "x", "user": "ada"}}))
        .await;
    let b = server.create(json!({"metadata": {"job": "x"}})).await;
    let c = server.create(json!({"metadata": {"job": "y"}})).await;
    assert_eq!(
        server
            .api("POST", &format!("/sandboxes/{b}/pause"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );

    let ids = |reply: &crate::common::Reply| -> Vec<String> {
        reply
            .json()
            .as_array()
            .expect("array")
            .iter()
            .map(|s| s["sandboxID"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    // metadata is a URL-encoded query string of its own, as the Python SDK sends it.
    let reply = server
        .api("GET", "/v2/sandboxes?metadata=job%3Dx", None)
        .await;
    assert_eq!(ids(&reply), [a.clone(), b.clone()]);
    let reply = server
        .api("GET", "/v2/sandboxes?metadata=job%3Dx%26user%3Dada", None)
        .await;
    assert_eq!(ids(&reply), [a.as_str()]);
    let reply = server.api("GET", "/v2/sandboxes?state=paused", None).await;
    assert_eq!(ids(&reply), [b.as_str()]);
    let reply = server
        .api("GET", "/v2/sandboxes?state=running%2Cpaused", None)
        .await;
    assert_eq!(ids(&reply).len(), 3);
    assert!(reply.json()[0].get("envdAccessToken").is_none());

    let first = server.api("GET", "/v2/sandboxes?limit=2", None).await;
    assert_eq!(ids(&first), [a, b]);
    let token = first.headers["x-next-token"].to_str()?.to_owned();
    let second = server
        .api(
            "GET",
            &format!("/v2/sandboxes?limit=2&nextToken={token}"),
            None,
        )
        .await;
    assert_eq!(ids(&second), [c]);
    assert!(second.headers.get("x-next-token").is_none());

    for bad in ["state=sleeping", "limit=lots", "limit=0", "nextToken=zz"] {
        let reply = server
            .api("GET", &format!("/v2/sandboxes?{bad}"), None)
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    Ok(())
}

#[tokio::test]
async fn kill_is_204_then_404() -> anyhow::Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({})).await;
    assert_eq!(
        server
            .api("DELETE", &format!("/sandboxes/{id}"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let reply = server
        .api("DELETE", &format!("/sandboxes/{id}"), None)
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.json()["code"], 404);
    Ok(())
}

#[tokio::test]
async fn snapshots_and_forks_start_new_sandboxes_with_the_files() -> anyhow::Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({})).await;
    assert_eq!(
        server
            .upload(&id, "/data/a.txt", b"kept".to_vec())
            .await
            .status,
        StatusCode::OK
    );

    let reply = server
        .api(
            "POST",
            &format!("/sandboxes/{id}/snapshots"),
            Some(json!({"name": "v1"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let snapshot = reply.json()["snapshotID"].as_str().unwrap_or("").to_owned();
    let listed = server.api("GET", "/snapshots", None).await.json();
    assert_eq!(listed[0]["snapshotID"], snapshot.as_str());
    assert_eq!(listed[0]["name"], "v1");

    let from_snapshot = server.create(json!({"templateID": snapshot})).await;
    assert_eq!(
        &server.download(&from_snapshot, "/data/a.txt").await.body[..],
        b"kept"
    );

    let reply = server
        .api(
            "POST",
            &format!("/sandboxes/{id}/fork"),
            Some(json!({"count": 2, "metadata": {"fork": "1"}})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let forks = reply.json();
    assert_eq!(forks.as_array().map(Vec::len), Some(2));
    let fork = forks[0]["sandbox"]["sandboxID"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert_ne!(
        fork,
        forks[1]["sandbox"]["sandboxID"].as_str().unwrap_or("")
    );
    assert_eq!(
        &server.download(&fork, "/data/a.txt").await.body[..],
        b"kept"
    );
    let reply = server
        .api(
            "POST",
            &format!("/sandboxes/{id}/fork"),
            Some(json!({"count": 0})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    assert_eq!(
        server
            .api("DELETE", &format!("/snapshots/{snapshot}"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        server.api("GET", "/snapshots", None).await.json(),
        json!([])
    );
    Ok(())
}

/// `novita-sandbox`'s `Sandbox.clone`: `POST /sandboxes/{id}/clone` starts copies of a running sandbox
/// (files and memory), answers them in the SDK's shape (no `clientID`, which it would append to the ids),
/// keeps the source running, and refuses a bad count or body.
#[tokio::test]
async fn clone_starts_copies_in_the_novita_shape() -> anyhow::Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({"templateID": "base"})).await;
    server.upload(&id, "/data/a.txt", b"kept".to_vec()).await;
    let reply = server
        .api(
            "POST",
            &format!("/sandboxes/{id}/clone"),
            Some(json!({"count": 2, "strict": true, "nodeID": "n1", "timeout": 60})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let body = reply.json();
    let clones = body["sandboxes"].as_array().cloned().unwrap_or_default();
    assert_eq!(clones.len(), 2, "{body}");
    for clone in &clones {
        let clone_id = clone["sandboxID"].as_str().unwrap_or_default();
        assert_ne!(clone_id, id);
        assert!(clone.get("clientID").is_none(), "{clone}");
        assert!(clone["envdAccessToken"].is_string(), "{clone}");
        assert_eq!(
            &server.download(clone_id, "/data/a.txt").await.body[..],
            b"kept"
        );
    }
    assert_ne!(clones[0]["sandboxID"], clones[1]["sandboxID"]);
    let source = server.api("GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(source.json()["state"], "running");
    for bad in [
        json!({"count": 0}),
        json!({"count": 21}),
        json!({"strict": "yes"}),
    ] {
        let reply = server
            .api("POST", &format!("/sandboxes/{id}/clone"), Some(bad.clone()))
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    Ok(())
}

#[tokio::test]
async fn unknown_routes_are_a_json_404() -> anyhow::Result<()> {
    let server = Server::new()?;
    let reply = server.api("GET", "/no/such/route", None).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.json()["code"], 404);
    Ok(())
}
