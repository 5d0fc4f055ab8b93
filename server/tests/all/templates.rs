//! User templates: `POST /templates` registers a wasm module, `GET /templates` lists it, sandboxes are
//! created from it (a command module runs through `process.Process/Start` by its name, a reactor is
//! paused and resumed), the registry survives a restart, and every refusal has its status.

use anyhow::Result;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use stasis::RuntimeConfig;
use stasis::lifecycle::ManagerConfig;
use stasis_server::AppState;

use crate::common::{KEY, LIMIT, Reply, Server, envelope, envelopes, module_cache, stdout_of};

/// `POST /templates?name=NAME` with `wasm`, with the API key when `key` is.
async fn register(server: &Server, name: &str, wasm: Vec<u8>, key: bool) -> Reply {
    let mut builder = Request::builder()
        .method("POST")
        .uri(format!("/templates?name={name}"))
        .header("content-type", "application/wasm");
    if key {
        builder = builder.header("X-API-KEY", KEY);
    }
    server
        .send(builder.body(Body::from(wasm)).expect("request"))
        .await
}

fn hello() -> Vec<u8> {
    stasis_guests::bytes(stasis_guests::HELLO)
}

fn stateful() -> Vec<u8> {
    stasis_guests::bytes(stasis_guests::STATEFUL)
}

/// A streaming `process.Process/Start` of `cmd args…` in sandbox `id`; returns the decoded envelopes.
async fn run(server: &Server, id: &str, cmd: &str, args: &[&str]) -> Vec<(u8, Value)> {
    let message = json!({"process": {"cmd": cmd, "args": args, "envs": {}}, "stdin": false});
    let request = server
        .envd(id, "POST", "/process.Process/Start")
        .header("content-type", "application/connect+json")
        .body(Body::from(envelope(0, message.to_string().as_bytes())))
        .expect("request");
    let reply = server.send(request).await;
    assert_eq!(reply.status, StatusCode::OK);
    envelopes(&reply.body)
}

/// The exit code the end event of a Start stream reports.
fn exit_code(events: &[(u8, Value)]) -> Option<i64> {
    events
        .iter()
        .find_map(|(_, e)| e["event"]["end"]["exitCode"].as_i64())
}

/// The listed template `name`, if listed.
async fn listed(server: &Server, name: &str) -> Option<Value> {
    let reply = server.api("GET", "/templates", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    reply
        .json()
        .as_array()
        .expect("a list")
        .iter()
        .find(|t| t["templateID"] == name)
        .cloned()
}

#[tokio::test]
async fn a_command_template_is_registered_listed_and_run_by_name() -> Result<()> {
    let server = Server::new()?;
    let reply = register(&server, "hello", hello(), true).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let body = reply.json();
    assert_eq!(body["templateID"], "hello");
    assert_eq!(body["kind"], "command");
    let sha = body["sha256"].as_str().expect("sha256").to_owned();
    assert_eq!(sha.len(), 64);

    // The same module under the same name again: 200, nothing changes.
    let again = register(&server, "hello", hello(), true).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["sha256"], sha.as_str());

    let item = listed(&server, "hello").await.expect("listed");
    assert_eq!(
        item,
        json!({"templateID": "hello", "sha256": sha, "kind": "command", "builtIn": false})
    );
    let base = listed(&server, "base").await.expect("base listed");
    assert_eq!(base["builtIn"], true);
    assert_eq!(base["kind"], "command");
    assert!(listed(&server, "code-interpreter-v1").await.is_some());

    let id = server.create(json!({"templateID": "hello"})).await;
    for cmd in ["hello", "/usr/bin/hello", "/bin/hello"] {
        let events = run(&server, &id, cmd, &["from", "wasm"]).await;
        assert_eq!(stdout_of(&events), "hello from wasm\n", "{cmd}");
        assert_eq!(exit_code(&events), Some(0));
    }
    // Any other command still goes to the shell.
    let events = run(&server, &id, "/bin/bash", &["-l", "-c", "echo shell"]).await;
    assert_eq!(stdout_of(&events), "shell\n");
    // In a base sandbox the template is a program of the shell, run by its name as a child process.
    let base_box = server.create(json!({"templateID": "base"})).await;
    let events = run(&server, &base_box, "hello", &["x"]).await;
    assert_eq!(stdout_of(&events), "hello x\n");
    let events = run(
        &server,
        &base_box,
        "sh",
        &["-c", "hello y | wc -l; echo $?"],
    )
    .await;
    assert_eq!(stdout_of(&events), "1\n0\n");
    Ok(())
}

#[tokio::test]
async fn a_reactor_template_pauses_and_resumes() -> Result<()> {
    let server = Server::new()?;
    let reply = register(&server, "stateful", stateful(), true).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    assert_eq!(reply.json()["kind"], "reactor");
    let id = server.create(json!({"templateID": "stateful"})).await;
    let paused = server
        .api("POST", &format!("/sandboxes/{id}/pause"), None)
        .await;
    assert_eq!(paused.status, StatusCode::NO_CONTENT, "{:?}", paused.body);
    let resumed = server
        .api("POST", &format!("/sandboxes/{id}/connect"), Some(json!({})))
        .await;
    assert_eq!(resumed.status, StatusCode::CREATED, "{:?}", resumed.body);
    assert_eq!(resumed.json()["templateID"], "stateful");
    assert_eq!(resumed.json()["state"], "running");
    Ok(())
}

/// A server state on `dir`, sharing the test run's module cache.
fn open(dir: &std::path::Path) -> Result<AppState> {
    let mut runtime = RuntimeConfig::new(dir);
    runtime.cache_dir = Some(module_cache());
    let (state, _) = AppState::open_runtime(
        runtime,
        vec![KEY.to_owned()],
        LIMIT,
        ManagerConfig::default(),
    )?;
    Ok(state)
}

#[tokio::test]
async fn templates_and_their_paused_sandboxes_survive_a_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (sha, paused_id) = {
        let first = Server {
            _dir: tempfile::tempdir()?,
            state: open(dir.path())?,
        };
        let reply = register(&first, "stateful", stateful(), true).await;
        assert_eq!(reply.status, StatusCode::CREATED);
        let hello_reply = register(&first, "hello", hello(), true).await;
        assert_eq!(hello_reply.status, StatusCode::CREATED);
        let id = first.create(json!({"templateID": "stateful"})).await;
        let paused = first
            .api("POST", &format!("/sandboxes/{id}/pause"), None)
            .await;
        assert_eq!(paused.status, StatusCode::NO_CONTENT);
        (reply.json()["sha256"].clone(), id)
    };
    assert!(dir.path().join("templates/stateful.wasm").is_file());

    let second = Server {
        _dir: tempfile::tempdir()?,
        state: open(dir.path())?,
    };
    let item = listed(&second, "stateful").await.expect("still registered");
    assert_eq!(item["sha256"], sha);
    assert_eq!(item["builtIn"], false);
    let resumed = second
        .api(
            "POST",
            &format!("/sandboxes/{paused_id}/connect"),
            Some(json!({})),
        )
        .await;
    assert_eq!(resumed.status, StatusCode::CREATED, "{:?}", resumed.body);
    let id = second.create(json!({"templateID": "hello"})).await;
    assert_eq!(
        stdout_of(&run(&second, &id, "hello", &[]).await),
        "hello \n"
    );
    // Registering it again after the restart is the idempotent case, not a conflict.
    let again = register(&second, "hello", hello(), true).await;
    assert_eq!(again.status, StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn refusals_have_their_statuses() -> Result<()> {
    let server = Server::new()?;
    let no_key = register(&server, "hello", hello(), false).await;
    assert_eq!(no_key.status, StatusCode::UNAUTHORIZED);
    let list = server
        .send(Request::get("/templates").body(Body::empty())?)
        .await;
    assert_eq!(list.status, StatusCode::UNAUTHORIZED);

    for bad in [
        "Hello",
        "-x",
        ".x",
        "a%2Fb",
        "a%20b",
        "%C3%A9",
        &"a".repeat(64),
    ] {
        let reply = register(&server, bad, hello(), true).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(reply.json()["code"], 400);
    }
    let unnamed = server
        .send(
            Request::post("/templates")
                .header("X-API-KEY", KEY)
                .body(Body::from(hello()))?,
        )
        .await;
    assert_eq!(unnamed.status, StatusCode::BAD_REQUEST);

    for reserved in ["base", "code-interpreter-v1"] {
        let reply = register(&server, reserved, hello(), true).await;
        assert_eq!(reply.status, StatusCode::CONFLICT, "{reserved}");
    }

    let invalid = register(&server, "junk", b"not wasm at all".to_vec(), true).await;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    let message = invalid.json()["message"].as_str().unwrap_or("").to_owned();
    assert!(
        message.starts_with("the module cannot be a template: "),
        "{message}"
    );
    // A module importing its memory: header, then an import section of `env.memory`.
    let mut imported_memory = b"\0asm\x01\0\0\0".to_vec();
    imported_memory.extend_from_slice(&[2, 15, 1, 3]);
    imported_memory.extend_from_slice(b"env\x06memory");
    imported_memory.extend_from_slice(&[2, 0, 1]);
    let reply = register(&server, "memory", imported_memory, true).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.body);
    assert!(listed(&server, "junk").await.is_none());
    assert!(listed(&server, "memory").await.is_none());

    let oversized = register(&server, "big", vec![0; LIMIT + 1], true).await;
    assert_eq!(oversized.status, StatusCode::PAYLOAD_TOO_LARGE);

    // A name already taken by another module, and a module already registered under another name.
    let first = register(&server, "hello", hello(), true).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let taken = register(&server, "hello", stateful(), true).await;
    assert_eq!(taken.status, StatusCode::CONFLICT);
    let duplicate = register(&server, "hello2", hello(), true).await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT);
    let shell = register(
        &server,
        "myshell",
        stasis_guests::bytes(stasis_guests::SH),
        true,
    )
    .await;
    assert_eq!(shell.status, StatusCode::CONFLICT);
    assert_eq!(
        listed(&server, "hello").await.expect("kept")["kind"],
        "command"
    );

    let unknown = server
        .api("POST", "/sandboxes", Some(json!({"templateID": "nope"})))
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    Ok(())
}
