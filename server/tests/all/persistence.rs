//! What a pause, a snapshot and a fork keep, through the router: `memory: false` pauses and snapshots keep
//! the files and cold-start the template (a reactor's state starts over), `on_resume="reboot"`, the
//! timeout's filesystem-only pause, the snapshot list's filters and pages, the SDKs' snapshot deletion,
//! and forks in the SDK's shape; with every error status.

use anyhow::{Context, Result};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use crate::common::{KEY, Server};

/// A server with the `stateful` reactor registered as a template: its `bump` handler counts in memory.
async fn with_reactor() -> Result<Server> {
    let server = Server::new()?;
    let request = Request::post("/templates?name=stateful")
        .header("X-API-KEY", KEY)
        .header("content-type", "application/wasm")
        .body(Body::from(stasis_guests::bytes(stasis_guests::STATEFUL)))?;
    let reply = server.send(request).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    Ok(server)
}

/// Calls `bump` in sandbox `id`'s reactor: what its counter is now.
fn bump(server: &Server, id: &str) -> Result<String> {
    let answer = server
        .state
        .manager()
        .with_sandbox(id, |s| s.call("bump", b""))??;
    Ok(String::from_utf8(answer)?)
}

async fn post(server: &Server, path: &str, body: Value) -> crate::common::Reply {
    server.api("POST", path, Some(body)).await
}

#[tokio::test]
async fn a_filesystem_pause_keeps_the_files_and_cold_starts_the_reactor() -> Result<()> {
    let server = with_reactor().await?;
    let id = server.create(json!({"templateID": "stateful"})).await;
    bump(&server, &id)?;
    assert_eq!(bump(&server, &id)?, "2 2");
    assert_eq!(
        server
            .upload(&id, "/tmp/kept.txt", b"file".to_vec())
            .await
            .status,
        StatusCode::OK
    );
    let paused = post(
        &server,
        &format!("/sandboxes/{id}/pause"),
        json!({"memory": false}),
    )
    .await;
    assert_eq!(paused.status, StatusCode::NO_CONTENT, "{:?}", paused.body);
    let info = server
        .api("GET", &format!("/sandboxes/{id}"), None)
        .await
        .json();
    assert_eq!(info["state"], "paused");
    assert_eq!(info["pauseMode"], "filesystem");
    // A pause of a paused sandbox is 409 whatever it asks to keep.
    let again = post(
        &server,
        &format!("/sandboxes/{id}/pause"),
        json!({"memory": false}),
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.json()["code"], 409);

    let resumed = post(&server, &format!("/sandboxes/{id}/connect"), json!({})).await;
    assert_eq!(resumed.status, StatusCode::CREATED, "{:?}", resumed.body);
    assert!(
        resumed.json().get("pauseMode").is_none(),
        "running: no pause mode"
    );
    assert_eq!(
        &server.download(&id, "/tmp/kept.txt").await.body[..],
        b"file"
    );
    assert_eq!(bump(&server, &id)?, "1 1", "the reactor started afresh");

    // A full pause after it keeps memory again; a reboot resume ignores it.
    bump(&server, &id)?;
    assert_eq!(
        post(
            &server,
            &format!("/sandboxes/{id}/pause"),
            json!({"requireHealthyGuest": true})
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        server
            .api("GET", &format!("/sandboxes/{id}"), None)
            .await
            .json()["pauseMode"],
        "full"
    );
    post(&server, &format!("/v2/sandboxes/{id}/connect"), json!({})).await;
    assert_eq!(bump(&server, &id)?, "3 3", "a full pause kept the counter");
    server
        .api("POST", &format!("/sandboxes/{id}/pause"), None)
        .await;
    let reboot = post(
        &server,
        &format!("/sandboxes/{id}/connect"),
        json!({"memory": false}),
    )
    .await;
    assert_eq!(reboot.status, StatusCode::CREATED);
    assert_eq!(
        bump(&server, &id)?,
        "1 1",
        "memory: false ignores the memory"
    );
    assert_eq!(
        &server.download(&id, "/tmp/kept.txt").await.body[..],
        b"file"
    );
    Ok(())
}

#[tokio::test]
async fn traffic_does_not_resume_a_filesystem_paused_sandbox() -> Result<()> {
    let server = Server::new()?;
    let id = server
        .create(json!({"autoPause": true, "autoResume": {"enabled": true}}))
        .await;
    post(
        &server,
        &format!("/sandboxes/{id}/pause"),
        json!({"memory": false}),
    )
    .await;
    let reply = server.download(&id, "/tmp").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.body);
    assert!(String::from_utf8_lossy(&reply.body).contains("paused"));
    assert_eq!(
        server
            .api("GET", &format!("/sandboxes/{id}"), None)
            .await
            .json()["state"],
        "paused"
    );
    // A full pause is resumed by traffic, as before.
    post(&server, &format!("/sandboxes/{id}/connect"), json!({})).await;
    server
        .api("POST", &format!("/sandboxes/{id}/pause"), None)
        .await;
    assert_eq!(
        server.upload(&id, "/tmp/x", b"x".to_vec()).await.status,
        StatusCode::OK
    );
    Ok(())
}

#[tokio::test]
async fn the_timeout_pauses_filesystem_only_when_asked_and_refuses_auto_resume_with_it()
-> Result<()> {
    let server = with_reactor().await?;
    for body in [
        json!({"autoPause": true, "autoPauseMemory": false, "autoResume": {"enabled": true}}),
        json!({"lifecycle": {"onTimeout": {"action": "pause", "mode": "filesystem"}, "autoResume": true}}),
    ] {
        let reply = post(&server, "/v2/sandboxes", body.clone()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            reply.json()["message"]
                .as_str()
                .unwrap_or("")
                .contains("autoResume")
        );
    }
    let id = server
        .create(json!({"templateID": "stateful", "timeout": 1, "autoPause": true, "autoPauseMemory": false}))
        .await;
    let info = server
        .api("GET", &format!("/sandboxes/{id}"), None)
        .await
        .json();
    assert_eq!(
        info["lifecycle"],
        json!({"onTimeout": "pause", "autoResume": false})
    );
    bump(&server, &id)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let info = server
            .api("GET", &format!("/sandboxes/{id}"), None)
            .await
            .json();
        if info["state"] == "paused" {
            assert_eq!(info["pauseMode"], "filesystem");
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the timeout did not pause it"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    post(
        &server,
        &format!("/sandboxes/{id}/connect"),
        json!({"timeout": 60}),
    )
    .await;
    assert_eq!(bump(&server, &id)?, "1 1");
    Ok(())
}

#[tokio::test]
async fn snapshots_answer_the_sdk_shape_and_list_by_sandbox_name_and_page() -> Result<()> {
    let server = Server::new()?;
    let a = server.create(json!({})).await;
    let b = server.create(json!({})).await;
    let named = post(
        &server,
        &format!("/sandboxes/{a}/snapshots"),
        json!({"name": "release"}),
    )
    .await;
    assert_eq!(named.status, StatusCode::CREATED);
    let named = named.json();
    assert_eq!(named["names"], json!(["release"]));
    assert_eq!(named["mode"], "full");
    let plain = post(&server, &format!("/sandboxes/{a}/snapshots"), json!({}))
        .await
        .json();
    assert_eq!(plain["names"], json!([]));
    let other = post(
        &server,
        &format!("/sandboxes/{b}/snapshots"),
        json!({"memory": false}),
    )
    .await
    .json();
    assert_eq!(other["mode"], "filesystem");
    let ids = |reply: &crate::common::Reply| -> Vec<String> {
        reply
            .json()
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s["snapshotID"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let id = |v: &Value| v["snapshotID"].as_str().unwrap_or("").to_owned();

    let of_a = server
        .api("GET", &format!("/snapshots?sandboxID={a}"), None)
        .await;
    assert_eq!(ids(&of_a), vec![id(&named), id(&plain)]);
    let by_name = server.api("GET", "/snapshots?name=release", None).await;
    assert_eq!(ids(&by_name), vec![id(&named)]);
    let by_id = server
        .api("GET", &format!("/snapshots?name={}", id(&other)), None)
        .await;
    assert_eq!(ids(&by_id), vec![id(&other)]);

    // Pages of one, the cursor in x-next-token, none on the last page.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let path = match &token {
            Some(t) => format!("/snapshots?limit=1&nextToken={t}"),
            None => "/snapshots?limit=1".to_owned(),
        };
        let page = server.api("GET", &path, None).await;
        assert_eq!(page.status, StatusCode::OK);
        seen.extend(ids(&page));
        match page.headers.get("x-next-token") {
            Some(next) => token = Some(next.to_str()?.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, vec![id(&named), id(&plain), id(&other)]);
    for bad in [
        "/snapshots?limit=0",
        "/snapshots?limit=101",
        "/snapshots?nextToken=nonsense",
        "/snapshots?limit=x",
    ] {
        let reply = server.api("GET", bad, None).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(reply.json()["code"], 400);
    }

    // A name starts the newest snapshot of that name; a template's name cannot be a snapshot's.
    let from_name = post(&server, "/v2/sandboxes", json!({"templateID": "release"})).await;
    assert_eq!(
        from_name.status,
        StatusCode::CREATED,
        "{:?}",
        from_name.body
    );
    for bad in [
        json!({"name": "../x"}),
        json!({"name": ""}),
        json!({"name": 5}),
    ] {
        let reply = post(&server, &format!("/sandboxes/{a}/snapshots"), bad.clone()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let taken = post(
        &server,
        &format!("/sandboxes/{a}/snapshots"),
        json!({"name": "base"}),
    )
    .await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "a template's name");

    // The SDKs delete through /templates/{id}: 204, then 404; a template is 400.
    let path = format!("/templates/{}", id(&named));
    assert_eq!(
        server.api("DELETE", &path, None).await.status,
        StatusCode::NO_CONTENT
    );
    let gone = server.api("DELETE", &path, None).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.json()["code"], 404);
    assert_eq!(
        server.api("DELETE", "/templates/base", None).await.status,
        StatusCode::CONFLICT
    );
    Ok(())
}

#[tokio::test]
async fn a_filesystem_snapshot_starts_cold_and_a_full_one_warm() -> Result<()> {
    let server = with_reactor().await?;
    let id = server.create(json!({"templateID": "stateful"})).await;
    bump(&server, &id)?;
    bump(&server, &id)?;
    server.upload(&id, "/tmp/f", b"f".to_vec()).await;
    let full = post(&server, &format!("/sandboxes/{id}/snapshots"), json!({}))
        .await
        .json();
    let cold = post(
        &server,
        &format!("/sandboxes/{id}/snapshots"),
        json!({"memory": false}),
    )
    .await
    .json();
    assert_eq!(
        bump(&server, &id)?,
        "3 3",
        "the source keeps running with its memory"
    );
    let warm = server
        .create(json!({"templateID": full["snapshotID"]}))
        .await;
    assert_eq!(bump(&server, &warm)?, "3 3");
    let started = server
        .create(json!({"templateID": cold["snapshotID"]}))
        .await;
    assert_eq!(bump(&server, &started)?, "1 1");
    assert_eq!(&server.download(&started, "/tmp/f").await.body[..], b"f");
    Ok(())
}

#[tokio::test]
async fn forks_report_each_sandbox_or_error_within_the_sdk_bounds() -> Result<()> {
    let server = with_reactor().await?;
    let id = server
        .create(json!({"templateID": "stateful", "metadata": {"team": "a"}}))
        .await;
    bump(&server, &id)?;
    let reply = post(
        &server,
        &format!("/sandboxes/{id}/fork"),
        json!({"count": 3}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let forks = reply.json();
    let forks = forks.as_array().context("a list")?;
    assert_eq!(forks.len(), 3);
    for fork in forks {
        let sandbox = &fork["sandbox"];
        assert!(fork.get("error").is_none(), "{fork}");
        assert_eq!(sandbox["envdVersion"], "0.5.7");
        assert!(sandbox["envdAccessToken"].is_string());
        assert_eq!(
            sandbox["metadata"],
            json!({"team": "a"}),
            "the source's metadata"
        );
        let fork_id = sandbox["sandboxID"].as_str().context("sandboxID")?;
        assert_eq!(bump(&server, fork_id)?, "2 2", "the source's memory");
        let end =
            chrono_free_seconds(&sandbox["endAt"]) - chrono_free_seconds(&sandbox["startedAt"]);
        assert_eq!(end, 15, "the E2B API's default fork timeout");
    }
    assert_eq!(bump(&server, &id)?, "2 2", "the source runs on, untouched");
    for (body, status) in [
        (json!({"count": 0}), StatusCode::BAD_REQUEST),
        (json!({"count": 21}), StatusCode::BAD_REQUEST),
        (json!({"count": "2"}), StatusCode::BAD_REQUEST),
        (json!({"timeout": -1}), StatusCode::BAD_REQUEST),
    ] {
        let reply = post(&server, &format!("/sandboxes/{id}/fork"), body.clone()).await;
        assert_eq!(reply.status, status, "{body}");
        assert_eq!(reply.json()["code"], status.as_u16());
    }
    let unknown = post(
        &server,
        "/sandboxes/0123456789abcdefghijklmno/fork",
        json!({}),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn a_fork_that_cannot_start_is_reported_on_its_own() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut runtime = stasis::RuntimeConfig::new(dir.path());
    runtime.cache_dir = Some(crate::common::module_cache());
    let config = stasis::lifecycle::ManagerConfig {
        max_running: 3,
        ..Default::default()
    };
    let (state, _) = stasis_server::AppState::open_runtime(
        runtime,
        vec![KEY.to_owned()],
        crate::common::LIMIT,
        config,
    )?;
    let server = Server { _dir: dir, state };
    let id = server.create(json!({})).await;
    let reply = post(
        &server,
        &format!("/sandboxes/{id}/fork"),
        json!({"count": 4}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let forks = reply.json();
    let forks = forks.as_array().context("a list")?;
    assert_eq!(forks.len(), 4);
    let started = forks.iter().filter(|f| f["sandbox"].is_object()).count();
    assert_eq!(
        started, 2,
        "three running at most: the source and two forks"
    );
    for refused in forks.iter().filter(|f| f["error"].is_object()) {
        assert_eq!(refused["error"]["code"], 429, "{refused}");
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("running sandboxes")
        );
    }
    Ok(())
}

/// Seconds of an RFC 3339 time (`…T12:34:56.789Z`) since midnight, enough to compare two of one day.
fn chrono_free_seconds(time: &Value) -> i64 {
    let text = time.as_str().unwrap_or("");
    let clock = text.split('T').nth(1).unwrap_or("");
    let mut parts = clock.trim_end_matches('Z').split(':');
    let h: i64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let m: i64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let s: f64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0.0);
    h * 3600 + m * 60 + s.round() as i64
}

#[tokio::test]
async fn an_exported_filesystem_blob_cold_starts_where_it_is_imported() -> Result<()> {
    let server = with_reactor().await?;
    let id = server.create(json!({"templateID": "stateful"})).await;
    bump(&server, &id)?;
    post(
        &server,
        &format!("/sandboxes/{id}/pause"),
        json!({"memory": false}),
    )
    .await;
    let blob = server
        .api("GET", &format!("/sandboxes/{id}/blob"), None)
        .await;
    assert_eq!(blob.status, StatusCode::OK);
    let request = Request::post("/sandboxes/import")
        .header("X-API-KEY", KEY)
        .header("content-type", "application/octet-stream")
        .body(Body::from(blob.body.clone()))?;
    let imported = server.send(request).await;
    assert_eq!(imported.status, StatusCode::CREATED, "{:?}", imported.body);
    let copy = imported.json()["sandboxID"]
        .as_str()
        .context("id")?
        .to_owned();
    assert_eq!(
        server
            .api("GET", &format!("/sandboxes/{copy}"), None)
            .await
            .json()["pauseMode"],
        "filesystem"
    );
    post(&server, &format!("/sandboxes/{copy}/connect"), json!({})).await;
    assert_eq!(
        bump(&server, &copy)?,
        "1 1",
        "its template's process, started afresh"
    );
    Ok(())
}
