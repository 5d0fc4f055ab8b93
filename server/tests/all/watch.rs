//! Filesystem watchers through the router: `CreateWatcher`/`GetWatcherEvents`/`RemoveWatcher` and the
//! `WatchDir` stream, with guest paths relative to the watched directory, recursive or not, across a
//! volume mount, ending when the sandbox pauses; and every refusal.

use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::Body;
use axum::http::StatusCode;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::common::{Server, envelope};

/// The (name, type) pairs of a `GetWatcherEvents` answer.
fn events(reply: &Value) -> Vec<(String, String)> {
    reply["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["name"].as_str().unwrap_or("").to_owned(),
                        e["type"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_watcher_reports_guest_relative_changes_until_removed() -> Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({})).await;
    server
        .unary(
            &id,
            "/filesystem.Filesystem/MakeDir",
            json!({"path": "/home/user/w"}),
        )
        .await;
    let create =
        |recursive: bool| {
            let (server, id) = (&server, &id);
            async move {
                let reply = server
                .unary(id, "/filesystem.Filesystem/CreateWatcher",
                    json!({"path": "/home/user/w", "recursive": recursive, "includeEntry": true}))
                .await;
                assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
                reply.json()["watcherId"].as_str().unwrap_or("").to_owned()
            }
        };
    let deep = create(true).await;
    let flat = create(false).await;
    server
        .upload(&id, "/home/user/w/a.txt", b"a".to_vec())
        .await;
    server
        .start(
            &id,
            "mkdir /home/user/w/sub; echo b > /home/user/w/sub/b.txt",
        )
        .await;
    let got = server
        .unary(
            &id,
            "/filesystem.Filesystem/GetWatcherEvents",
            json!({"watcherId": deep}),
        )
        .await
        .json();
    let seen = events(&got);
    for expected in [
        ("a.txt", "EVENT_TYPE_CREATE"),
        ("a.txt", "EVENT_TYPE_WRITE"),
        ("sub", "EVENT_TYPE_CREATE"),
        ("sub/b.txt", "EVENT_TYPE_CREATE"),
    ] {
        assert!(
            seen.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{expected:?} in {seen:?}"
        );
    }
    let entry = got["events"]
        .as_array()
        .context("events")?
        .iter()
        .find(|e| e["name"] == "sub/b.txt")
        .context("b")?;
    assert_eq!(entry["entry"]["path"], "/home/user/w/sub/b.txt");
    let flat_seen = events(
        &server
            .unary(
                &id,
                "/filesystem.Filesystem/GetWatcherEvents",
                json!({"watcherId": flat}),
            )
            .await
            .json(),
    );
    assert!(
        flat_seen.iter().all(|(name, _)| !name.contains('/')),
        "{flat_seen:?}"
    );
    assert!(
        events(
            &server
                .unary(
                    &id,
                    "/filesystem.Filesystem/GetWatcherEvents",
                    json!({"watcherId": deep})
                )
                .await
                .json()
        )
        .is_empty()
    );

    let removed = server
        .unary(
            &id,
            "/filesystem.Filesystem/RemoveWatcher",
            json!({"watcherId": deep}),
        )
        .await;
    assert_eq!(removed.status, StatusCode::OK);
    for call in [
        "/filesystem.Filesystem/GetWatcherEvents",
        "/filesystem.Filesystem/RemoveWatcher",
    ] {
        let reply = server.unary(&id, call, json!({"watcherId": deep})).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{call}");
        assert_eq!(reply.json()["code"], "not_found");
    }
    // Another sandbox cannot read this one's watcher.
    let other = server.create(json!({})).await;
    let foreign = server
        .unary(
            &other,
            "/filesystem.Filesystem/GetWatcherEvents",
            json!({"watcherId": flat}),
        )
        .await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND);

    // A pause ends the watcher.
    server
        .api("POST", &format!("/sandboxes/{id}/pause"), None)
        .await;
    server
        .api("POST", &format!("/sandboxes/{id}/connect"), Some(json!({})))
        .await;
    let ended = server
        .unary(
            &id,
            "/filesystem.Filesystem/GetWatcherEvents",
            json!({"watcherId": flat}),
        )
        .await;
    assert_eq!(ended.status, StatusCode::BAD_REQUEST);
    assert_eq!(ended.json()["code"], "failed_precondition");
    Ok(())
}

#[tokio::test]
async fn watch_refusals() -> Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({})).await;
    server.upload(&id, "/tmp/file", b"x".to_vec()).await;
    for (body, code) in [
        (json!({"path": "/nowhere"}), "not_found"),
        (json!({"path": "/tmp/file"}), "invalid_argument"),
        (json!({"path": 7}), "invalid_argument"),
    ] {
        let reply = server
            .unary(&id, "/filesystem.Filesystem/CreateWatcher", body.clone())
            .await;
        assert_eq!(reply.json()["code"], code, "{body}");
    }
    for _ in 0..32 {
        let reply = server
            .unary(
                &id,
                "/filesystem.Filesystem/CreateWatcher",
                json!({"path": "/tmp"}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let over = server
        .unary(
            &id,
            "/filesystem.Filesystem/CreateWatcher",
            json!({"path": "/tmp"}),
        )
        .await;
    assert_eq!(over.json()["code"], "resource_exhausted");
    let unknown = server
        .unary(
            &id,
            "/filesystem.Filesystem/GetWatcherEvents",
            json!({"watcherId": "nope"}),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn watch_dir_streams_events_and_watches_inside_a_volume() -> Result<()> {
    let server = Server::new()?;
    server
        .api("POST", "/volumes", Some(json!({"name": "w"})))
        .await;
    let id = server
        .create(json!({"volumeMounts": [{"name": "w", "path": "/data"}]}))
        .await;
    let message = json!({"path": "/data", "recursive": true});
    let request = server
        .envd(&id, "POST", "/filesystem.Filesystem/WatchDir")
        .header("content-type", "application/connect+json")
        .body(Body::from(envelope(0, message.to_string().as_bytes())))?;
    let response = server.app().oneshot(request).await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/connect+json"
    );
    let mut body = response.into_body();
    let mut buffer = Vec::new();
    let mut frames = Vec::new();
    let mut wrote = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !frames
        .iter()
        .any(|f: &Value| f["filesystem"]["name"] == "in-volume.txt")
    {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no event: {frames:?}"
        );
        if frames.first().is_some_and(|f| f.get("start").is_some()) && !wrote {
            server.start(&id, "echo v > /data/in-volume.txt").await;
            wrote = true;
        }
        let frame = tokio::time::timeout(Duration::from_secs(1), body.frame()).await;
        if let Ok(Some(frame)) = frame
            && let Ok(data) = frame?.into_data()
        {
            buffer.extend_from_slice(&data);
        }
        while buffer.len() >= 5 {
            let length = u32::from_be_bytes(buffer[1..5].try_into()?) as usize;
            if buffer.len() < 5 + length {
                break;
            }
            frames.push(serde_json::from_slice(&buffer[5..5 + length])?);
            buffer.drain(..5 + length);
        }
    }
    assert_eq!(frames[0], json!({"start": {}}));
    let event = frames
        .iter()
        .find(|f| f["filesystem"]["name"] == "in-volume.txt")
        .context("event")?;
    assert_eq!(event["filesystem"]["type"], "EVENT_TYPE_CREATE");
    Ok(())
}
