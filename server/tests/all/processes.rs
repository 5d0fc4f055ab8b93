//! Commands as processes over the envd plane: events streamed as they happen, background commands listed
//! until they end, stdin written and closed while they run, signals, re-attaching with `Connect`, a running
//! command suspended by a pause and continued by the resume; and gzip uploads. Assertions are on the order and content of events,
//! never on timing: commands wait on their stdin or are stopped explicitly.

use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::common::{LIMIT, Server, envelope};

/// A streaming response read envelope by envelope, as a client sees it arrive.
pub(crate) struct Events {
    body: Body,
    buf: Vec<u8>,
}

impl Events {
    /// The next envelope; fails after a minute without one (a hang, not a timing assertion).
    pub(crate) async fn next(&mut self) -> anyhow::Result<(u8, Value)> {
        loop {
            if self.buf.len() >= 5 {
                let length = u32::from_be_bytes(self.buf[1..5].try_into()?) as usize;
                if self.buf.len() >= 5 + length {
                    let json = serde_json::from_slice(&self.buf[5..5 + length])?;
                    let flags = self.buf[0];
                    self.buf.drain(..5 + length);
                    return Ok((flags, json));
                }
            }
            let frame = tokio::time::timeout(Duration::from_secs(60), self.body.frame())
                .await?
                .ok_or_else(|| anyhow::anyhow!("the stream ended"))??;
            if let Ok(data) = frame.into_data() {
                self.buf.extend_from_slice(&data);
            }
        }
    }

    /// The next event that is not a keepalive.
    pub(crate) async fn event(&mut self) -> anyhow::Result<Value> {
        loop {
            let (flags, message) = self.next().await?;
            anyhow::ensure!(flags == 0, "end of stream before an event: {message}");
            if message["event"].get("keepalive").is_none() {
                return Ok(message["event"].clone());
            }
        }
    }

    /// Stdout of the next data event.
    async fn stdout(&mut self) -> anyhow::Result<String> {
        let event = self.event().await?;
        let data = event["data"]["stdout"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("not stdout: {event}"))?;
        Ok(String::from_utf8(BASE64.decode(data)?)?)
    }

    /// Everything up to the end event: (stdout, end event), checking the end-of-stream envelope follows.
    async fn finish(&mut self) -> anyhow::Result<(String, Value)> {
        let mut stdout = String::new();
        loop {
            let event = self.event().await?;
            if let Some(data) = event["data"]["stdout"].as_str() {
                stdout.push_str(&String::from_utf8(BASE64.decode(data)?)?);
            } else if event.get("end").is_some() {
                assert_eq!(self.next().await?, (2, json!({})));
                return Ok((stdout, event["end"].clone()));
            }
        }
    }
}

/// Opens a streaming call and returns its events once the response has started.
pub(crate) async fn stream(
    server: &Server,
    id: &str,
    method: &str,
    message: Value,
) -> anyhow::Result<Events> {
    let request = server
        .envd(id, "POST", &format!("/process.Process/{method}"))
        .header("content-type", "application/connect+json")
        .body(Body::from(envelope(0, message.to_string().as_bytes())))?;
    let response = server.app().oneshot(request).await?;
    assert_eq!(response.status(), StatusCode::OK);
    Ok(Events {
        body: response.into_body(),
        buf: Vec::new(),
    })
}

/// Starts `bash -l -c LINE` (stdin open when `stdin`); returns its events and pid.
async fn start(
    server: &Server,
    id: &str,
    line: &str,
    stdin: bool,
    tag: Option<&str>,
) -> anyhow::Result<(Events, u64)> {
    let mut message = json!({
        "process": {"cmd": "/bin/bash", "args": ["-l", "-c", line], "envs": {}},
        "stdin": stdin,
    });
    if let Some(tag) = tag {
        message["tag"] = json!(tag);
    }
    let mut events = stream(server, id, "Start", message).await?;
    let start = events.event().await?;
    let pid = start["start"]["pid"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no start event: {start}"))?;
    Ok((events, pid))
}

async fn send_input(server: &Server, id: &str, pid: u64, bytes: &[u8]) -> crate::common::Reply {
    let body = json!({"process": {"pid": pid}, "input": {"stdin": BASE64.encode(bytes)}});
    server.unary(id, "/process.Process/SendInput", body).await
}

async fn listed(server: &Server, id: &str) -> Vec<Value> {
    let reply = server.unary(id, "/process.Process/List", json!({})).await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.json()["processes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn output_reaches_the_client_before_the_command_ends() -> anyhow::Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({})).await;
    let (mut events, pid) = start(&server, &id, "echo a; read x; echo b$x", true, None).await?;
    // `a` arrives while the command waits for a line it has not been sent: it is still running.
    assert_eq!(events.stdout().await?, "a\n");
    assert_eq!(listed(&server, &id).await.len(), 1);
    assert_eq!(
        send_input(&server, &id, pid, b"c\n").await.status,
        StatusCode::OK
    );
    let (rest, end) = events.finish().await?;
    assert_eq!((rest.as_str(), end["exitCode"].clone()), ("bc\n", json!(0)));

    // The same with a sleep: `a` comes as an event of its own, before `b`.
    let (mut events, _) = start(&server, &id, "echo a; sleep 1; echo b", false, None).await?;
    assert_eq!(events.stdout().await?, "a\n");
    assert_eq!(events.finish().await?.0, "b\n");
    Ok(())
}

#[tokio::test]
async fn stdin_round_trip_through_send_input_and_close_stdin() -> anyhow::Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({})).await;
    let (mut events, pid) = start(&server, &id, "cat", true, None).await?;
    for part in [&b"hello "[..], b"world"] {
        assert_eq!(
            send_input(&server, &id, pid, part).await.status,
            StatusCode::OK
        );
    }
    let close = json!({"process": {"pid": pid}});
    let reply = server
        .unary(&id, "/process.Process/CloseStdin", close.clone())
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let (stdout, end) = events.finish().await?;
    assert_eq!(
        (stdout.as_str(), end["exitCode"].clone()),
        ("hello world", json!(0))
    );
    // Gone once ended: the SDKs read not_found as "already finished".
    let reply = server
        .unary(&id, "/process.Process/CloseStdin", close)
        .await;
    assert_eq!(reply.json()["code"], "not_found");
    Ok(())
}

#[tokio::test]
async fn stdin_errors_are_clear() -> anyhow::Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({})).await;
    // Started without stdin: input is refused.
    let (mut events, pid) = start(&server, &id, "echo up; sleep 100", false, None).await?;
    assert_eq!(events.stdout().await?, "up\n");
    let reply = send_input(&server, &id, pid, b"x").await;
    assert_eq!(reply.json()["code"], "failed_precondition");
    let bad = [
        json!({"process": {"pid": pid}, "input": {"stdin": "***"}}),
        json!({"process": {"pid": pid}, "input": {"stdin": 7}}),
        json!({"process": {"pid": pid}, "input": {}}),
        json!({"process": {"pid": pid}}),
        json!({"process": {}, "input": {"stdin": "eA=="}}),
    ];
    for body in bad {
        let reply = server
            .unary(&id, "/process.Process/SendInput", body.clone())
            .await;
        assert_eq!(reply.json()["code"], "invalid_argument", "{body}");
    }
    let signal = json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGHUP"});
    let reply = server
        .unary(&id, "/process.Process/SendSignal", signal)
        .await;
    assert_eq!(reply.json()["code"], "invalid_argument");
    // It has no terminal: typing into it or resizing it is refused as such.
    let no_pty = [
        (
            "SendInput",
            json!({"process": {"pid": pid}, "input": {"pty": "eA=="}}),
        ),
        (
            "Update",
            json!({"process": {"pid": pid}, "pty": {"size": {"cols": 80, "rows": 24}}}),
        ),
    ];
    for (method, body) in no_pty {
        let reply = server
            .unary(&id, &format!("/process.Process/{method}"), body)
            .await;
        assert_eq!(reply.json()["code"], "failed_precondition", "{method}");
    }
    let kill = json!({"process": {"pid": pid}, "signal": 9});
    let reply = server.unary(&id, "/process.Process/SendSignal", kill).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(events.finish().await?.1["exitCode"], 137);

    // Closed stdin: input is refused.
    let (mut events, pid) = start(&server, &id, "echo up; sleep 100", true, None).await?;
    assert_eq!(events.stdout().await?, "up\n");
    let close = json!({"process": {"pid": pid}});
    server
        .unary(&id, "/process.Process/CloseStdin", close)
        .await;
    let reply = send_input(&server, &id, pid, b"x").await;
    assert_eq!(reply.json()["code"], "failed_precondition");
    let kill = json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"});
    server.unary(&id, "/process.Process/SendSignal", kill).await;
    events.finish().await?;
    Ok(())
}

#[tokio::test]
async fn send_signal_ends_sleeping_and_looping_commands() -> anyhow::Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({})).await;
    for (line, signal, code) in [
        ("echo up; sleep 100", "SIGNAL_SIGKILL", 137),
        ("echo up; while true; do x=1; done", "SIGNAL_SIGTERM", 143),
    ] {
        let (mut events, pid) = start(&server, &id, line, false, None).await?;
        assert_eq!(events.stdout().await?, "up\n");
        let body = json!({"process": {"pid": pid}, "signal": signal});
        let reply = server
            .unary(&id, "/process.Process/SendSignal", body.clone())
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{line}");
        let (_, end) = events.finish().await?;
        assert_eq!(end["exitCode"], code, "{line}");
        assert!(
            end["error"].as_str().unwrap_or("").contains(&signal[7..]),
            "{end}"
        );
        let reply = server.unary(&id, "/process.Process/SendSignal", body).await;
        assert_eq!(reply.json()["code"], "not_found");
    }
    Ok(())
}

#[tokio::test]
async fn list_shows_a_background_command_until_it_ends() -> anyhow::Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({})).await;
    let (mut events, pid) = start(&server, &id, "echo up; cat", true, Some("worker")).await?;
    assert_eq!(events.stdout().await?, "up\n");
    let processes = listed(&server, &id).await;
    assert_eq!(processes.len(), 1);
    assert_eq!(processes[0]["pid"], pid);
    assert_eq!(processes[0]["tag"], "worker");
    assert_eq!(processes[0]["config"]["cmd"], "/bin/bash");
    assert_eq!(processes[0]["config"]["args"][2], "echo up; cat");
    // Another sandbox does not see it.
    let other = server.create(json!({})).await;
    assert!(listed(&server, &other).await.is_empty());
    // Addressed by tag.
    let reply = server
        .unary(
            &id,
            "/process.Process/CloseStdin",
            json!({"process": {"tag": "worker"}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    events.finish().await?;
    assert!(listed(&server, &id).await.is_empty());
    Ok(())
}

#[tokio::test]
async fn connect_reattaches_to_a_running_command() -> anyhow::Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({})).await;
    let (mut first, pid) = start(&server, &id, "echo a; read x; echo b$x; cat", true, None).await?;
    assert_eq!(first.stdout().await?, "a\n");
    // The first client goes away; the command carries on.
    drop(first);
    let mut again = stream(&server, &id, "Connect", json!({"process": {"pid": pid}})).await?;
    assert_eq!(again.event().await?["start"]["pid"], pid);
    assert_eq!(
        send_input(&server, &id, pid, b"z\n").await.status,
        StatusCode::OK
    );
    assert_eq!(again.stdout().await?, "bz\n");
    // Two streams at once both get what follows.
    let mut third = stream(&server, &id, "Connect", json!({"process": {"pid": pid}})).await?;
    third.event().await?;
    send_input(&server, &id, pid, b"tail").await;
    server
        .unary(
            &id,
            "/process.Process/CloseStdin",
            json!({"process": {"pid": pid}}),
        )
        .await;
    assert_eq!(again.finish().await?, ("tail".into(), again_end()));
    assert_eq!(third.finish().await?, ("tail".into(), again_end()));
    // Connect to a finished process: not found, in the streaming form.
    let mut gone = stream(&server, &id, "Connect", json!({"process": {"pid": pid}})).await?;
    let (flags, message) = gone.next().await?;
    assert_eq!(
        (flags, message["error"]["code"].clone()),
        (2, json!("not_found"))
    );
    Ok(())
}

fn again_end() -> Value {
    json!({"exitCode": 0, "exited": true, "status": "exit status 0"})
}

#[tokio::test]
async fn stream_input_writes_every_data_message() -> anyhow::Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({})).await;
    let (mut events, pid) = start(&server, &id, "cat", true, None).await?;
    let mut body = envelope(
        0,
        json!({"start": {"process": {"pid": pid}}})
            .to_string()
            .as_bytes(),
    );
    for part in ["one ", "two"] {
        let data = json!({"data": {"input": {"stdin": BASE64.encode(part)}}});
        body.extend(envelope(0, data.to_string().as_bytes()));
    }
    body.extend(envelope(0, br#"{"keepalive":{}}"#));
    let request = server
        .envd(&id, "POST", "/process.Process/StreamInput")
        .header("content-type", "application/connect+json")
        .body(Body::from(body))?;
    let reply = server.send(request).await;
    assert_eq!(
        crate::common::envelopes(&reply.body),
        vec![(0, json!({})), (2, json!({}))]
    );
    server
        .unary(
            &id,
            "/process.Process/CloseStdin",
            json!({"process": {"pid": pid}}),
        )
        .await;
    assert_eq!(events.finish().await?.0, "one two");
    Ok(())
}

#[tokio::test]
async fn pausing_suspends_a_running_command_which_continues_after_the_resume() -> anyhow::Result<()>
{
    let server = Server::new()?;
    let id = server.create(json!({})).await;
    let (mut events, pid) = start(
        &server,
        &id,
        "echo up; echo kept > /tmp/k; read x; echo got $x; sleep 0.2; echo done",
        true,
        Some("the reader"),
    )
    .await?;
    assert_eq!(events.stdout().await?, "up\n");
    let reply = server
        .api("POST", &format!("/sandboxes/{id}/pause"), Some(json!({})))
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    // The client's stream ends with an error saying so; the command did not end.
    let (flags, end) = events.next().await?;
    assert_eq!(flags, 2, "the end of the stream, not an event: {end}");
    assert_eq!(end["error"]["code"], "unavailable");
    assert!(
        end["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("continues after"),
        "{end}"
    );
    let reply = server
        .api("POST", &format!("/sandboxes/{id}/connect"), Some(json!({})))
        .await;
    assert!(reply.status.is_success());
    // Back under its pid and tag, with its config; Connect re-attaches, stdin works, the exit code comes.
    let processes = listed(&server, &id).await;
    assert_eq!(processes.len(), 1, "{processes:?}");
    assert_eq!(processes[0]["pid"], json!(pid));
    assert_eq!(processes[0]["tag"], "the reader");
    assert_eq!(processes[0]["config"]["cmd"], "/bin/bash");
    let mut events = stream(&server, &id, "Connect", json!({"process": {"pid": pid}})).await?;
    assert_eq!(events.event().await?["start"]["pid"], json!(pid));
    assert_eq!(
        send_input(&server, &id, pid, b"line\n").await.status,
        StatusCode::OK
    );
    let (stdout, end) = events.finish().await?;
    assert_eq!(stdout, "got line\ndone\n");
    assert_eq!(end["exitCode"], 0);
    assert_eq!(
        server.download(&id, "/tmp/k").await.body.as_ref(),
        b"kept\n"
    );
    assert!(listed(&server, &id).await.is_empty());
    // A new command does not take a pid of one that came back.
    let (_events, next) = start(&server, &id, "true", false, None).await?;
    assert!(next > pid);
    Ok(())
}

/// A command suspended by a pause travels with its sandbox's blob: exported from this server, imported
/// into a `stasis serve` of its own (a new OS process, its own data directory), it continues there under
/// its pid and finishes, its output in order.
#[tokio::test]
async fn a_suspended_command_moves_to_a_new_server_process_and_finishes_there() -> anyhow::Result<()>
{
    let source = Server::new()?;
    let id = source.create(json!({})).await;
    let (mut events, pid) = start(
        &source,
        &id,
        "i=0; while [ $i -lt 8 ]; do i=$((i+1)); echo $i >> /tmp/tick; echo $i; sleep 0.2; done; \
         echo finished > /tmp/done",
        false,
        Some("mover"),
    )
    .await?;
    // Paused mid-loop: after its second tick, long before its last.
    assert_eq!(events.stdout().await?, "1\n");
    assert_eq!(events.stdout().await?, "2\n");
    let paused = source
        .api("POST", &format!("/sandboxes/{id}/pause"), Some(json!({})))
        .await;
    assert_eq!(paused.status, StatusCode::NO_CONTENT);
    let blob = source
        .api("GET", &format!("/sandboxes/{id}/blob"), None)
        .await;
    assert_eq!(blob.status, StatusCode::OK);
    drop(source);

    let dir = tempfile::tempdir()?;
    let target = crate::serve::Serve::start(dir.path())?;
    let (status, body) = target.send(
        "POST",
        "/sandboxes/import",
        &[("Content-Type", "application/octet-stream")],
        &blob.body,
    )?;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let imported: Value = serde_json::from_slice(&body)?;
    let new_id = imported["sandboxID"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (status, body) = target.send(
        "POST",
        &format!("/sandboxes/{new_id}/connect"),
        &[("Content-Type", "application/json")],
        b"{}",
    )?;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let connected: Value = serde_json::from_slice(&body)?;
    let token = connected["envdAccessToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let envd = |method: &str, path: &str, content_type: &str, body: &[u8]| {
        target.send(
            method,
            path,
            &[
                ("E2b-Sandbox-Id", new_id.as_str()),
                ("X-Access-Token", token.as_str()),
                ("Content-Type", content_type),
            ],
            body,
        )
    };
    // Listed there under its pid and tag while it runs (it has ≥ 1 s of ticks left)…
    let (status, body) = envd("POST", "/process.Process/List", "application/json", b"{}")?;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let listed: Value = serde_json::from_slice(&body)?;
    assert_eq!(listed["processes"][0]["pid"], json!(pid), "{listed}");
    assert_eq!(listed["processes"][0]["tag"], "mover", "{listed}");
    // …and it finishes there: every tick once, in order.
    let started = std::time::Instant::now();
    loop {
        let (status, body) = envd("GET", "/files?path=/tmp/done", "application/json", b"")?;
        if status == 200 {
            assert_eq!(body, b"finished\n");
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "the moved command did not finish (last answer {status})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, ticks) = envd("GET", "/files?path=/tmp/tick", "application/json", b"")?;
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8(ticks)?, "1\n2\n3\n4\n5\n6\n7\n8\n");
    Ok(())
}

#[tokio::test]
async fn killing_the_sandbox_ends_its_commands() -> anyhow::Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({})).await;
    let (mut events, _) = start(&server, &id, "echo up; sleep 100", false, None).await?;
    assert_eq!(events.stdout().await?, "up\n");
    let reply = server
        .api("DELETE", &format!("/sandboxes/{id}"), None)
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let (_, end) = events.finish().await?;
    assert_eq!(end["exitCode"], 137);
    assert!(
        end["error"].as_str().unwrap_or("").contains("killed"),
        "{end}"
    );
    Ok(())
}

fn gzip(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes)?;
    Ok(encoder.finish()?)
}

async fn upload_encoded(
    server: &Server,
    id: &str,
    path: &str,
    encoding: &str,
    body: Vec<u8>,
) -> anyhow::Result<crate::common::Reply> {
    let request = server
        .envd(id, "POST", &format!("/files?path={path}"))
        .header("content-type", "application/octet-stream")
        .header("content-encoding", encoding)
        .body(Body::from(body))?;
    Ok(server.send(request).await)
}

#[tokio::test]
async fn gzip_uploads_are_decompressed_and_bounded() -> anyhow::Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({})).await;
    let content = b"compressed content\n".repeat(100);
    let reply = upload_encoded(&server, &id, "/tmp/z.txt", "gzip", gzip(&content)?).await?;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.json()[0]["path"], "/tmp/z.txt");
    assert_eq!(
        server.download(&id, "/tmp/z.txt").await.body.as_ref(),
        content.as_slice()
    );

    // Multipart bodies may be compressed too.
    let boundary = "XyZ";
    let mut form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"/tmp/m.txt\"\r\n\r\n"
    )
    .into_bytes();
    form.extend_from_slice(b"from a form");
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let request = server
        .envd(&id, "POST", "/files")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .header("content-encoding", "gzip")
        .body(Body::from(gzip(&form)?))?;
    assert_eq!(server.send(request).await.status, StatusCode::OK);
    assert_eq!(
        server.download(&id, "/tmp/m.txt").await.body.as_ref(),
        b"from a form"
    );

    let corrupt =
        upload_encoded(&server, &id, "/tmp/c", "gzip", b"not gzip at all".to_vec()).await?;
    assert_eq!(corrupt.status, StatusCode::BAD_REQUEST);
    assert_eq!(corrupt.json()["code"], 400);
    let mut truncated = gzip(&content)?;
    truncated.truncate(truncated.len() / 2);
    let reply = upload_encoded(&server, &id, "/tmp/c", "gzip", truncated).await?;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    // A small body that inflates past the body limit.
    let bomb = gzip(&vec![0u8; 4 * LIMIT])?;
    assert!(bomb.len() < LIMIT / 10);
    let reply = upload_encoded(&server, &id, "/tmp/bomb", "gzip", bomb).await?;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.json()["code"], 413);
    assert_eq!(
        server.download(&id, "/tmp/bomb").await.status,
        StatusCode::NOT_FOUND
    );

    let reply = upload_encoded(&server, &id, "/tmp/b", "br", b"x".to_vec()).await?;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    Ok(())
}
