//! The code-interpreter plane: `/execute` as NDJSON and `/contexts`, on `code-interpreter-v1` sandboxes,
//! through the router. Python and JavaScript contexts keep their variables across cells and across a
//! pause and resume; a runaway cell poisons only its context; every error path has its status.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use stasis::SandboxLimits;

use crate::common::{Reply, Server};

/// Creates a code-interpreter sandbox; returns its id.
async fn interpreter_sandbox(server: &Server) -> String {
    server
        .create(json!({"templateID": "code-interpreter-v1", "timeout": 300}))
        .await
}

/// A code-interpreter request on sandbox `id`, authorized as the Python SDK does it for `/execute`.
fn jupyter(
    server: &Server,
    id: &str,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> Request<Body> {
    server
        .envd(id, method, uri)
        .header("E2b-Sandbox-Port", "49999")
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .expect("request")
}

/// Runs `code` (in `context`, or the default context of `language`) and returns the NDJSON events.
async fn execute(server: &Server, id: &str, body: Value) -> Result<Vec<Value>> {
    let reply = server
        .send(jupyter(server, id, "POST", "/execute", Some(body)))
        .await;
    ensure!(
        reply.status == StatusCode::OK,
        "{}: {}",
        reply.status,
        String::from_utf8_lossy(&reply.body)
    );
    ndjson(&reply)
}

/// The events of an NDJSON body; a blank line fails the test, as the SDKs would choke on it.
fn ndjson(reply: &Reply) -> Result<Vec<Value>> {
    let text = std::str::from_utf8(&reply.body)?;
    ensure!(
        text.ends_with('\n'),
        "the last event ends its line: {text:?}"
    );
    text.lines()
        .map(|line| {
            ensure!(!line.trim().is_empty(), "blank line in {text:?}");
            Ok(serde_json::from_str(line)?)
        })
        .collect()
}

/// The text of the main result, if any.
fn main_result(events: &[Value]) -> Option<String> {
    events
        .iter()
        .find(|e| e["type"] == "result" && e["is_main_result"] == true)
        .and_then(|e| e["text"].as_str().map(str::to_owned))
}

/// Everything printed to `stream`.
fn printed(events: &[Value], stream: &str) -> String {
    events
        .iter()
        .filter(|e| e["type"] == stream)
        .filter_map(|e| e["text"].as_str())
        .collect()
}

/// The error event, if any.
fn error(events: &[Value]) -> Option<&Value> {
    events.iter().find(|e| e["type"] == "error")
}

#[tokio::test]
async fn python_cells_keep_their_variables_and_stream_the_shapes_of_sdk_compat() -> Result<()> {
    let server = Server::new()?;
    let id = interpreter_sandbox(&server).await;
    let first = execute(&server, &id, json!({"code": "x = 41\nprint('hi')"})).await?;
    assert_eq!(printed(&first, "stdout"), "hi\n");
    assert_eq!(main_result(&first), None);
    assert_eq!(
        first.last(),
        Some(&json!({"type": "end_of_execution"})),
        "{first:?}"
    );
    let stdout = first
        .iter()
        .find(|e| e["type"] == "stdout")
        .context("a stdout event")?;
    ensure!(stdout["timestamp"].is_string(), "{stdout}");
    let second = execute(&server, &id, json!({"code": "x + 1", "language": "python"})).await?;
    assert_eq!(main_result(&second).as_deref(), Some("42"));
    let count = second
        .iter()
        .find(|e| e["type"] == "number_of_executions")
        .context("an execution count")?;
    assert_eq!(count["execution_count"], 2);

    let failed = execute(&server, &id, json!({"code": "1 / 0"})).await?;
    let error = error(&failed).context("an error event")?;
    assert_eq!(error["name"], "ZeroDivisionError");
    ensure!(error["traceback"].as_str().is_some_and(|t| !t.is_empty()));
    Ok(())
}

#[tokio::test]
async fn contexts_are_independent_restartable_and_removable() -> Result<()> {
    let server = Server::new()?;
    let id = interpreter_sandbox(&server).await;
    let created = server
        .send(jupyter(
            &server,
            &id,
            "POST",
            "/contexts",
            Some(json!({"language": "python", "cwd": "/tmp"})),
        ))
        .await;
    assert_eq!(created.status, StatusCode::OK);
    let context = created.json();
    assert_eq!(context["language"], "python");
    assert_eq!(context["cwd"], "/tmp");
    let ctx = context["id"].as_str().context("id")?.to_owned();

    execute(
        &server,
        &id,
        json!({"code": "y = 'own'", "context_id": ctx}),
    )
    .await?;
    // The default context does not see the other context's variable.
    let other = execute(&server, &id, json!({"code": "y"})).await?;
    assert_eq!(error(&other).context("NameError")?["name"], "NameError");
    let own = execute(&server, &id, json!({"code": "y", "context_id": ctx})).await?;
    assert_eq!(main_result(&own).as_deref(), Some("'own'"));

    let listed = server
        .send(jupyter(&server, &id, "GET", "/contexts", None))
        .await
        .json();
    let ids: Vec<&str> = listed
        .as_array()
        .context("a list")?
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    ensure!(
        ids.contains(&ctx.as_str()) && ids.contains(&"default-python"),
        "{listed}"
    );

    let restarted = server
        .send(jupyter(
            &server,
            &id,
            "POST",
            &format!("/contexts/{ctx}/restart"),
            None,
        ))
        .await;
    assert_eq!(restarted.status, StatusCode::OK);
    let after = execute(&server, &id, json!({"code": "y", "context_id": ctx})).await?;
    assert_eq!(
        error(&after).context("variables gone")?["name"],
        "NameError"
    );

    let removed = server
        .send(jupyter(
            &server,
            &id,
            "DELETE",
            &format!("/contexts/{ctx}"),
            None,
        ))
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    for (method, uri, body) in [
        ("DELETE", format!("/contexts/{ctx}"), None),
        ("POST", format!("/contexts/{ctx}/restart"), None),
        (
            "POST",
            "/execute".to_owned(),
            Some(json!({"code": "1", "context_id": ctx})),
        ),
    ] {
        let reply = server.send(jupyter(&server, &id, method, &uri, body)).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method} {uri}");
        assert_eq!(reply.json()["code"], 404);
    }
    Ok(())
}

#[tokio::test]
async fn javascript_runs_in_its_own_contexts() -> Result<()> {
    let server = Server::new()?;
    let id = interpreter_sandbox(&server).await;
    execute(
        &server,
        &id,
        json!({"code": "let a = 2; console.log('js')", "language": "js"}),
    )
    .await?;
    let events = execute(
        &server,
        &id,
        json!({"code": "a * 21", "language": "javascript"}),
    )
    .await?;
    assert_eq!(main_result(&events).as_deref(), Some("42"));
    let thrown = execute(
        &server,
        &id,
        json!({"code": "undefinedThing", "language": "js"}),
    )
    .await?;
    assert_eq!(
        error(&thrown).context("an error")?["name"],
        "ReferenceError"
    );
    Ok(())
}

#[tokio::test]
async fn variables_survive_a_pause_and_resume() -> Result<()> {
    let server = Server::new()?;
    let id = interpreter_sandbox(&server).await;
    execute(
        &server,
        &id,
        json!({"code": "import math\nkept = math.factorial(10)"}),
    )
    .await?;
    execute(
        &server,
        &id,
        json!({"code": "var js = 'still here'", "language": "js"}),
    )
    .await?;
    let paused = server
        .api("POST", &format!("/sandboxes/{id}/pause"), None)
        .await;
    assert_eq!(paused.status, StatusCode::NO_CONTENT);
    // A cell to a paused sandbox without auto-resume is refused, not run.
    let refused = server
        .send(jupyter(
            &server,
            &id,
            "POST",
            "/execute",
            Some(json!({"code": "kept"})),
        ))
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{:?}", refused.body);
    let resumed = server
        .api(
            "POST",
            &format!("/sandboxes/{id}/connect"),
            Some(json!({"timeout": 300})),
        )
        .await;
    assert_eq!(resumed.status, StatusCode::CREATED);
    let python = execute(&server, &id, json!({"code": "kept"})).await?;
    assert_eq!(main_result(&python).as_deref(), Some("3628800"));
    let js = execute(&server, &id, json!({"code": "js", "language": "js"})).await?;
    assert_eq!(main_result(&js).as_deref(), Some("\"still here\""));
    Ok(())
}

#[tokio::test]
async fn a_runaway_cell_poisons_only_its_context() -> Result<()> {
    let server = Server::with_limits(SandboxLimits {
        cpu_time_per_call: Duration::from_secs(3),
        ..SandboxLimits::default()
    })?;
    let id = interpreter_sandbox(&server).await;
    execute(&server, &id, json!({"code": "kept = 1"})).await?;
    let spun = execute(&server, &id, json!({"code": "while True: pass"})).await?;
    let timeout = error(&spun).context("a timeout")?;
    assert_eq!(timeout["name"], "TimeoutError");
    ensure!(
        timeout["value"]
            .as_str()
            .is_some_and(|v| v.contains("restart")),
        "{timeout}"
    );
    ensure!(
        !spun.iter().any(|e| e["type"] == "number_of_executions"),
        "{spun:?}"
    );
    let again = execute(&server, &id, json!({"code": "kept"})).await?;
    assert_eq!(
        error(&again).context("still poisoned")?["name"],
        "ContextRestartRequired"
    );
    // Another context of the sandbox is untouched.
    let js = execute(&server, &id, json!({"code": "1 + 1", "language": "js"})).await?;
    assert_eq!(main_result(&js).as_deref(), Some("2"));
    // A restart makes the context usable again (its variables gone).
    let restarted = server
        .send(jupyter(
            &server,
            &id,
            "POST",
            "/contexts/default-python/restart",
            None,
        ))
        .await;
    assert_eq!(restarted.status, StatusCode::OK, "{:?}", restarted.body);
    let fresh = execute(&server, &id, json!({"code": "2 * 21"})).await?;
    assert_eq!(main_result(&fresh).as_deref(), Some("42"));
    Ok(())
}

#[tokio::test]
async fn every_error_path_has_its_status() -> Result<()> {
    let server = Server::new()?;
    let id = interpreter_sandbox(&server).await;
    let base = server.create(json!({"templateID": "base"})).await;

    let expect = |reply: Reply, status: StatusCode| -> Result<()> {
        ensure!(
            reply.status == status,
            "expected {status}, got {}: {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
        ensure!(reply.json()["code"] == status.as_u16(), "{:?}", reply.body);
        Ok(())
    };
    // Unsupported languages, for a cell and for a context; a `base` sandbox has a shell and no
    // interpreter.
    for (sandbox, uri, body) in [
        (&id, "/execute", json!({"code": "1", "language": "cobol"})),
        (&id, "/contexts", json!({"language": "r"})),
        (&base, "/execute", json!({"code": "1"})),
    ] {
        let reply = server
            .send(jupyter(&server, sandbox, "POST", uri, Some(body)))
            .await;
        expect(reply, StatusCode::BAD_REQUEST)?;
    }
    // Malformed JSON.
    let malformed = server
        .envd(&id, "POST", "/execute")
        .header("content-type", "application/json")
        .body(Body::from("{not json"))?;
    expect(server.send(malformed).await, StatusCode::BAD_REQUEST)?;
    // No sandbox header, an unknown sandbox, no token, a wrong token.
    let no_header = Request::post("/execute").body(Body::from(r#"{"code":"1"}"#))?;
    expect(server.send(no_header).await, StatusCode::BAD_REQUEST)?;
    let unknown = Request::post("/contexts")
        .header("E2b-Sandbox-Id", "nosuchsandbox")
        .header("X-Access-Token", "x")
        .body(Body::empty())?;
    expect(server.send(unknown).await, StatusCode::NOT_FOUND)?;
    let no_token = Request::get("/contexts")
        .header("E2b-Sandbox-Id", &id)
        .body(Body::empty())?;
    expect(server.send(no_token).await, StatusCode::UNAUTHORIZED)?;
    let wrong_token = Request::get("/contexts")
        .header("E2b-Sandbox-Id", &id)
        .header("E2B-Traffic-Access-Token", server.state.access_token(&base))
        .body(Body::empty())?;
    expect(server.send(wrong_token).await, StatusCode::FORBIDDEN)?;
    // The traffic token alone is what the Python SDK sends on context calls: accepted.
    let traffic = Request::get("/contexts")
        .header("E2b-Sandbox-Id", &id)
        .header("E2B-Traffic-Access-Token", server.state.access_token(&id))
        .body(Body::empty())?;
    assert_eq!(server.send(traffic).await.status, StatusCode::OK);
    Ok(())
}

/// A sandbox killed while a cell runs (by a client, or its timeout) answers the cell as E2B's proxy answers
/// for a sandbox that is gone: 502 "… was not found", which the SDK raises as its timeout exception, not a
/// 500.
#[tokio::test]
async fn a_cell_running_when_the_sandbox_is_killed_answers_502_not_found() -> Result<()> {
    let server = Server::new()?;
    let id = interpreter_sandbox(&server).await;
    let cell = "open('/tmp/started', 'w').write('yes')\nimport time\nfor i in range(600):\n    time.sleep(0.1)\n";
    let kill = async {
        // Killed once the cell is known to run (it wrote its file), not after a guessed delay.
        for _ in 0..600 {
            if server.download(&id, "/tmp/started").await.status == StatusCode::OK {
                let reply = server
                    .api("DELETE", &format!("/sandboxes/{id}"), None)
                    .await;
                return Ok(reply.status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("the cell never started")
    };
    let (reply, killed) = tokio::join!(
        server.send(jupyter(
            &server,
            &id,
            "POST",
            "/execute",
            Some(json!({ "code": cell }))
        )),
        kill
    );
    assert_eq!(killed?, StatusCode::NO_CONTENT);
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{:?}", reply.body);
    let message = String::from_utf8_lossy(&reply.body).into_owned();
    ensure!(message.contains("was not found"), "{message}");
    Ok(())
}

#[tokio::test]
async fn a_cell_running_when_the_pause_comes_finishes_after_the_resume() -> Result<()> {
    let server = Server::new()?;
    let id = interpreter_sandbox(&server).await;
    // The interpreter is loaded and the list exists before the long cell starts.
    execute(&server, &id, json!({"code": "import time\nxs = []"})).await?;
    let cell = "for i in range(20):\n    xs.append(i)\n    time.sleep(0.1)\n";
    let pause = async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let started = std::time::Instant::now();
        let reply = server
            .api("POST", &format!("/sandboxes/{id}/pause"), Some(json!({})))
            .await;
        (reply.status, started.elapsed())
    };
    let (interrupted, (status, took)) =
        tokio::join!(execute(&server, &id, json!({ "code": cell })), pause);
    assert_eq!(status, StatusCode::NO_CONTENT);
    ensure!(took < Duration::from_secs(3), "the pause took {took:?}");
    let interrupted = interrupted?;
    let paused = error(&interrupted).context("the cell reports the pause")?;
    assert_eq!(paused["name"], "SandboxPaused", "{interrupted:?}");
    let reply = server
        .api("POST", &format!("/sandboxes/{id}/connect"), Some(json!({})))
        .await;
    assert!(reply.status.is_success());
    // The next cell waits for the interrupted one, which finished with its full effect.
    let after = execute(&server, &id, json!({"code": "xs == list(range(20))"})).await?;
    assert_eq!(main_result(&after).as_deref(), Some("True"), "{after:?}");
    Ok(())
}
