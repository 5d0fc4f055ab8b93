//! Several API keys, each a tenant of its own: a key lists, sees, pauses, resumes, kills, snapshots, forks
//! and exports only what it created, another key's sandboxes and snapshots are answered exactly like
//! unknown ids, a wrong key is 401, records stored before owners existed go to the first key, and
//! `stasis serve` takes its keys from `--api-key` (repeated) or a comma-separated `STASIS_API_KEY`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use stasis::lifecycle::{CreateRequest, ManagerConfig};
use stasis_server::AppState;
use stasis_server::auth::owner_id;

use crate::common::{LIMIT, Reply, Server};

const ALICE: &str = "alice-key-0123456789";
const BOB: &str = "bob-key-9876543210";

/// A server accepting both keys, Alice's first.
fn two_tenants() -> Result<Server> {
    let dir = tempfile::tempdir()?;
    let (state, _) = AppState::open_with_keys(
        dir.path(),
        vec![ALICE.into(), BOB.into()],
        LIMIT,
        ManagerConfig::default(),
    )?;
    Ok(Server { _dir: dir, state })
}

/// A control-plane request with `key`.
async fn as_key(server: &Server, key: &str, method: &str, uri: &str, body: Option<Value>) -> Reply {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("X-API-KEY", key)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .expect("request");
    server.send(request).await
}

async fn create_as(server: &Server, key: &str) -> Result<String> {
    let reply = as_key(server, key, "POST", "/v2/sandboxes", Some(json!({}))).await;
    anyhow::ensure!(reply.status == StatusCode::CREATED, "{:?}", reply.body);
    Ok(reply.json()["sandboxID"]
        .as_str()
        .context("sandboxID")?
        .to_owned())
}

async fn listed_ids(server: &Server, key: &str, uri: &str) -> Vec<String> {
    let reply = as_key(server, key, "GET", uri, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let mut ids: Vec<String> = reply
        .json()
        .as_array()
        .expect("a list")
        .iter()
        .map(|s| {
            s["snapshotID"]
                .as_str()
                .or_else(|| s["sandboxID"].as_str())
                .or_else(|| s["volumeID"].as_str())
                .expect("an id")
                .to_owned()
        })
        .collect();
    ids.sort();
    ids
}

/// The reply to `method uri` on `id` and on a well-formed id that does not exist, the latter's id replaced
/// by `id`: a foreign sandbox must be indistinguishable from a missing one.
async fn foreign_and_unknown(
    server: &Server,
    key: &str,
    method: &str,
    template: &str,
    id: &str,
    unknown: &str,
    body: Option<Value>,
) -> (Reply, Reply) {
    let foreign = as_key(
        server,
        key,
        method,
        &template.replace("{id}", id),
        body.clone(),
    )
    .await;
    let mut missing = as_key(
        server,
        key,
        method,
        &template.replace("{id}", unknown),
        body,
    )
    .await;
    missing.body = String::from_utf8_lossy(&missing.body)
        .replace(unknown, id)
        .into_bytes()
        .into();
    (foreign, missing)
}

#[tokio::test]
async fn each_key_lists_and_sees_only_its_own_sandboxes() -> Result<()> {
    let server = two_tenants()?;
    let alices = create_as(&server, ALICE).await?;
    let bobs = create_as(&server, BOB).await?;
    for uri in [
        "/sandboxes",
        "/v2/sandboxes",
        "/v2/sandboxes?state=running,paused",
    ] {
        assert_eq!(
            listed_ids(&server, ALICE, uri).await,
            std::slice::from_ref(&alices)
        );
        assert_eq!(
            listed_ids(&server, BOB, uri).await,
            std::slice::from_ref(&bobs)
        );
    }
    let own = as_key(&server, ALICE, "GET", &format!("/sandboxes/{alices}"), None).await;
    assert_eq!(own.status, StatusCode::OK);
    // A wrong key is 401 whatever the sandbox.
    let wrong = as_key(
        &server,
        "carol",
        "GET",
        &format!("/sandboxes/{alices}"),
        None,
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    Ok(())
}

#[tokio::test]
async fn another_keys_sandbox_is_404_like_an_unknown_id_for_every_operation() -> Result<()> {
    let server = two_tenants()?;
    let alices = create_as(&server, ALICE).await?;
    // An id of the right shape that names nothing: one of Bob's, killed.
    let unknown = create_as(&server, BOB).await?;
    let gone = as_key(
        &server,
        BOB,
        "DELETE",
        &format!("/sandboxes/{unknown}"),
        None,
    )
    .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    let operations: [(&str, &str, Option<Value>); 10] = [
        ("GET", "/sandboxes/{id}", None),
        ("POST", "/sandboxes/{id}/pause", None),
        (
            "POST",
            "/sandboxes/{id}/connect",
            Some(json!({"timeout": 60})),
        ),
        ("POST", "/v2/sandboxes/{id}/connect", Some(json!({}))),
        (
            "POST",
            "/sandboxes/{id}/timeout",
            Some(json!({"timeout": 60})),
        ),
        ("POST", "/sandboxes/{id}/snapshots", Some(json!({}))),
        ("POST", "/sandboxes/{id}/fork", Some(json!({"count": 1}))),
        ("GET", "/sandboxes/{id}/blob", None),
        ("DELETE", "/sandboxes/{id}", None),
        ("DELETE", "/sandboxes/{id}", None),
    ];
    for (method, uri, body) in operations {
        let (foreign, missing) =
            foreign_and_unknown(&server, BOB, method, uri, &alices, &unknown, body).await;
        assert_eq!(foreign.status, StatusCode::NOT_FOUND, "{method} {uri}");
        assert_eq!(foreign.body, missing.body, "{method} {uri}");
    }
    // Bob made nothing of Alice's: no snapshot, no fork, and her sandbox runs on, untouched.
    assert!(listed_ids(&server, BOB, "/snapshots").await.is_empty());
    assert!(listed_ids(&server, BOB, "/v2/sandboxes").await.is_empty());
    assert!(listed_ids(&server, ALICE, "/snapshots").await.is_empty());
    let info = as_key(&server, ALICE, "GET", &format!("/sandboxes/{alices}"), None).await;
    assert_eq!(info.status, StatusCode::OK);
    assert_eq!(info.json()["state"], "running");
    // Alice herself can do all of it.
    let paused = as_key(
        &server,
        ALICE,
        "POST",
        &format!("/sandboxes/{alices}/pause"),
        None,
    )
    .await;
    assert_eq!(paused.status, StatusCode::NO_CONTENT);
    let blob = as_key(
        &server,
        ALICE,
        "GET",
        &format!("/sandboxes/{alices}/blob"),
        None,
    )
    .await;
    assert_eq!(blob.status, StatusCode::OK);
    let killed = as_key(
        &server,
        ALICE,
        "DELETE",
        &format!("/sandboxes/{alices}"),
        None,
    )
    .await;
    assert_eq!(killed.status, StatusCode::NO_CONTENT);
    Ok(())
}

#[tokio::test]
async fn snapshots_forks_and_imports_belong_to_the_key_that_made_them() -> Result<()> {
    let server = two_tenants()?;
    let alices = create_as(&server, ALICE).await?;
    let reply = as_key(
        &server,
        ALICE,
        "POST",
        &format!("/sandboxes/{alices}/snapshots"),
        Some(json!({"name": "mine"})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let snapshot = reply.json()["snapshotID"]
        .as_str()
        .context("snapshotID")?
        .to_owned();
    assert_eq!(
        listed_ids(&server, ALICE, "/snapshots").await,
        std::slice::from_ref(&snapshot)
    );
    assert!(listed_ids(&server, BOB, "/snapshots").await.is_empty());

    // Bob can neither start from it, fork it nor delete it: each is what an unknown snapshot gets.
    let unknown = "snap_000000000000000000000000";
    for (method, uri, body) in [
        ("POST", "/v2/sandboxes", Some(json!({"templateID": "{id}"}))),
        ("POST", "/sandboxes/{id}/fork", Some(json!({}))),
        ("DELETE", "/snapshots/{id}", None),
    ] {
        let body = |id: &str| {
            body.as_ref()
                .map(|b| serde_json::from_str(&b.to_string().replace("{id}", id)).expect("json"))
        };
        let foreign = as_key(
            &server,
            BOB,
            method,
            &uri.replace("{id}", &snapshot),
            body(&snapshot),
        )
        .await;
        let missing = as_key(
            &server,
            BOB,
            method,
            &uri.replace("{id}", unknown),
            body(unknown),
        )
        .await;
        assert_eq!(foreign.status, StatusCode::NOT_FOUND, "{method} {uri}");
        assert_eq!(foreign.status, missing.status, "{method} {uri}");
        assert_eq!(
            String::from_utf8_lossy(&foreign.body),
            String::from_utf8_lossy(&missing.body).replace(unknown, &snapshot),
            "{method} {uri}"
        );
    }

    // Alice forks her snapshot; the forks are hers.
    let forks = as_key(
        &server,
        ALICE,
        "POST",
        &format!("/sandboxes/{snapshot}/fork"),
        Some(json!({"count": 2})),
    )
    .await;
    assert_eq!(forks.status, StatusCode::CREATED, "{:?}", forks.body);
    assert_eq!(listed_ids(&server, ALICE, "/v2/sandboxes").await.len(), 3);
    assert!(listed_ids(&server, BOB, "/v2/sandboxes").await.is_empty());

    // A blob Alice exports and Bob imports is Bob's copy, not a way into Alice's sandbox.
    as_key(
        &server,
        ALICE,
        "POST",
        &format!("/sandboxes/{alices}/pause"),
        None,
    )
    .await;
    let blob = as_key(
        &server,
        ALICE,
        "GET",
        &format!("/sandboxes/{alices}/blob"),
        None,
    )
    .await;
    let request = Request::post("/sandboxes/import")
        .header("X-API-KEY", BOB)
        .header("content-type", "application/octet-stream")
        .body(Body::from(blob.body))?;
    let imported = server.send(request).await;
    assert_eq!(imported.status, StatusCode::CREATED);
    let copy = imported.json()["sandboxID"]
        .as_str()
        .context("id")?
        .to_owned();
    assert_eq!(
        listed_ids(&server, BOB, "/v2/sandboxes").await,
        std::slice::from_ref(&copy)
    );
    assert!(
        !listed_ids(&server, ALICE, "/v2/sandboxes")
            .await
            .contains(&copy)
    );
    Ok(())
}

#[tokio::test]
async fn records_stored_without_an_owner_go_to_the_first_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (legacy, snapshot) = {
        let (state, _) = AppState::open(
            dir.path(),
            "old-key".into(),
            LIMIT,
            ManagerConfig::default(),
        )?;
        // What a server before owners existed stored: a paused sandbox and a snapshot, no owner.
        let info = state.manager().create(CreateRequest {
            template: "base".into(),
            ..CreateRequest::default()
        })?;
        assert_eq!(info.owner, None);
        let snapshot = state.manager().snapshot(&info.id, None)?;
        state.manager().pause(&info.id)?;
        let record =
            std::fs::read_to_string(dir.path().join("boxes").join(&info.id).join("record.json"))?;
        assert!(!record.contains("owner"), "{record}");
        (info.id, snapshot.id)
    };
    let (state, _) = AppState::open_with_keys(
        dir.path(),
        vec![BOB.into(), ALICE.into()],
        LIMIT,
        ManagerConfig::default(),
    )?;
    let server = Server { _dir: dir, state };
    assert_eq!(
        listed_ids(&server, BOB, "/v2/sandboxes").await,
        std::slice::from_ref(&legacy)
    );
    assert_eq!(listed_ids(&server, BOB, "/snapshots").await, [snapshot]);
    assert!(listed_ids(&server, ALICE, "/v2/sandboxes").await.is_empty());
    assert!(listed_ids(&server, ALICE, "/snapshots").await.is_empty());
    // The record now names its owner by a digest of the key, never the key.
    let record = std::fs::read_to_string(
        server
            ._dir
            .path()
            .join("boxes")
            .join(&legacy)
            .join("record.json"),
    )?;
    assert!(record.contains(&owner_id(BOB)), "{record}");
    assert!(!record.contains(BOB), "{record}");
    let resumed = as_key(
        &server,
        BOB,
        "POST",
        &format!("/sandboxes/{legacy}/connect"),
        Some(json!({})),
    )
    .await;
    assert_eq!(resumed.status, StatusCode::CREATED);
    Ok(())
}

#[test]
fn no_key_or_an_empty_key_is_refused_at_open() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for keys in [vec![], vec![ALICE.to_owned(), " ".to_owned()]] {
        let error = AppState::open_with_keys(dir.path(), keys, LIMIT, ManagerConfig::default())
            .err()
            .context("opened")?;
        assert!(
            matches!(
                error,
                stasis_server::state::OpenError::NoApiKey
                    | stasis_server::state::OpenError::EmptyApiKey
            ),
            "{error:?}"
        );
    }
    Ok(())
}

/// Starts `stasis serve` with `args` and `env`, returns it and its address.
fn serve(
    args: &[&str],
    env: Option<&str>,
    data_dir: &std::path::Path,
) -> Result<(std::process::Child, String)> {
    let mut command = crate::common::stasis_command();
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .env_remove("STASIS_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(keys) = env {
        command.env("STASIS_API_KEY", keys);
    }
    let mut child = command.spawn()?;
    let stdout = child.stdout.take().context("piped stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let Some(line) = lines.next() else {
            bail!("stasis serve exited before listening: {:?}", child.wait()?)
        };
        if let Some(address) = line?.strip_prefix("stasis listening on http://") {
            return Ok((child, address.to_owned()));
        }
    }
}

/// The status of `GET /v2/sandboxes` with `key`.
fn list_status(address: &str, key: &str) -> Result<u16> {
    let mut stream = TcpStream::connect(address)?;
    write!(
        stream,
        "GET /v2/sandboxes HTTP/1.1\r\nHost: {address}\r\nX-API-KEY: {key}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status line")
}

#[test]
fn serve_takes_repeated_and_comma_separated_keys() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for (args, env) in [
        (vec!["--api-key", "k1", "--api-key", "k2"], None),
        (vec![], Some("k1,k2")),
    ] {
        let (mut child, address) = serve(&args, env, dir.path())?;
        let statuses = (
            list_status(&address, "k1"),
            list_status(&address, "k2"),
            list_status(&address, "k1,k2"),
        );
        child.kill()?;
        child.wait()?;
        assert_eq!((statuses.0?, statuses.1?, statuses.2?), (200, 200, 401));
    }
    // No key given: one is generated into the data directory, as before.
    let (mut child, address) = serve(&[], None, dir.path())?;
    let generated = std::fs::read_to_string(dir.path().join("api-key"));
    let status = generated
        .as_ref()
        .map(|key| list_status(&address, key.trim()));
    child.kill()?;
    child.wait()?;
    assert_eq!(status.map_err(|e| anyhow::anyhow!("{e}"))??, 200);
    Ok(())
}

#[tokio::test]
async fn volumes_belong_to_the_key_that_made_them() -> Result<()> {
    let server = two_tenants()?;
    let made = as_key(
        &server,
        ALICE,
        "POST",
        "/volumes",
        Some(json!({"name": "hers"})),
    )
    .await;
    assert_eq!(made.status, StatusCode::CREATED);
    let volume = made.json()["volumeID"]
        .as_str()
        .context("volumeID")?
        .to_owned();
    assert_eq!(
        listed_ids(&server, ALICE, "/volumes").await,
        std::slice::from_ref(&volume)
    );
    assert!(listed_ids(&server, BOB, "/volumes").await.is_empty());
    // Bob may use the same name for a volume of his own.
    let his = as_key(
        &server,
        BOB,
        "POST",
        "/volumes",
        Some(json!({"name": "hers"})),
    )
    .await;
    assert_eq!(his.status, StatusCode::CREATED);
    assert_eq!(listed_ids(&server, BOB, "/volumes").await.len(), 1);
    for (method, uri) in [("GET", "/volumes/{id}"), ("DELETE", "/volumes/{id}")] {
        let reply = as_key(&server, BOB, method, &uri.replace("{id}", &volume), None).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method} {uri}");
    }
    // Mounting her volume by id is what an unknown volume gets.
    let mounted = as_key(
        &server,
        BOB,
        "POST",
        "/v2/sandboxes",
        Some(json!({"volumeMounts": [{"name": volume, "path": "/data"}]})),
    )
    .await;
    assert_eq!(mounted.status, StatusCode::NOT_FOUND);
    assert!(listed_ids(&server, BOB, "/v2/sandboxes").await.is_empty());
    Ok(())
}
