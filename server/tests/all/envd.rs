//! The envd plane through the router: access tokens, processes (Connect streaming), `/files`, and the
//! filesystem service; plus the seed document's pause/resume flow end to end.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;

use crate::common::{LIMIT, Server, envelope, stdout_of};

#[tokio::test]
async fn envd_calls_need_the_sandboxes_own_token() -> anyhow::Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({})).await;
    let other = server.create(json!({})).await;
    let stat = |token: Option<String>, header: &str| {
        let mut request = Request::post("/filesystem.Filesystem/Stat")
            .header(header, id.as_str())
            .header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("X-Access-Token", token);
        }
        request
            .body(Body::from(r#"{"path":"/"}"#))
            .expect("request")
    };
    let reply = server.send(stat(None, "E2b-Sandbox-Id")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json()["code"], "unauthenticated");
    let reply = server
        .send(stat(Some("wrong".into()), "E2b-Sandbox-Id"))
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = server
        .send(stat(
            Some(server.state.access_token(&other)),
            "Novita-Sandbox-Id",
        ))
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = server
        .send(stat(
            Some(server.state.access_token(&id)),
            "Novita-Sandbox-Id",
        ))
        .await;
    assert_eq!(reply.status, StatusCode::OK);

    let no_sandbox = Request::get("/files?path=/x").body(Body::empty())?;
    let reply = server.send(no_sandbox).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["code"], 400);
    let reply = server.download("0123456789abcdefghijklmno", "/x").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn start_streams_start_data_end_then_end_of_stream() -> anyhow::Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({})).await;
    let (reply, envelopes) = server.start(&id, "echo hi").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "application/connect+json");
    let (first, last) = (&envelopes[0], &envelopes[envelopes.len() - 1]);
    assert_eq!(first.0, 0);
    assert!(first.1["event"]["start"]["pid"].is_u64(), "{envelopes:?}");
    assert_eq!(*last, (2, json!({})));
    let end = &envelopes[envelopes.len() - 2].1["event"]["end"];
    assert_eq!(end["exited"], true);
    assert!(end["exitCode"].is_i64(), "{end}");
    assert_eq!(end["status"], format!("exit status {}", end["exitCode"]));
    assert_eq!(stdout_of(&envelopes), "hi\n");
    Ok(())
}

#[tokio::test]
async fn start_passes_envs_and_cwd_and_reports_exit_codes() -> anyhow::Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({})).await;
    let message = json!({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", "pwd; echo $GREETING; exit 3"],
        "envs": {"GREETING": "hola"}, "cwd": "/tmp"}});
    let request = server
        .envd(&id, "POST", "/process.Process/Start")
        .header("content-type", "application/connect+json")
        .body(Body::from(envelope(0, message.to_string().as_bytes())))?;
    let events = crate::common::envelopes(&server.send(request).await.body);
    assert_eq!(stdout_of(&events), "/tmp\nhola\n");
    assert_eq!(events[events.len() - 2].1["event"]["end"]["exitCode"], 3);
    Ok(())
}

#[tokio::test]
async fn start_errors_end_the_stream_with_an_error() -> anyhow::Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({})).await;
    // A malformed envelope.
    let request = server
        .envd(&id, "POST", "/process.Process/Start")
        .header("content-type", "application/connect+json")
        .body(Body::from(vec![0u8, 0, 0, 0, 50, b'{']))?;
    let reply = server.send(request).await;
    assert_eq!(reply.status, StatusCode::OK);
    let envelopes = crate::common::envelopes(&reply.body);
    assert_eq!(envelopes[0].0, 2);
    assert_eq!(envelopes[0].1["error"]["code"], "invalid_argument");

    // A paused sandbox without auto-resume.
    server
        .api("POST", &format!("/sandboxes/{id}/pause"), None)
        .await;
    let (_, envelopes) = server.start(&id, "echo hi").await;
    assert_eq!(envelopes[0].1["error"]["code"], "failed_precondition");
    assert!(
        envelopes[0].1["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("paused")
    );
    Ok(())
}

#[tokio::test]
async fn auto_resume_sandboxes_resume_for_a_command() -> anyhow::Result<()> {
    let server = Server::new()?;
    let id = server
        .create(json!({"autoPause": true, "autoResume": {"enabled": true}}))
        .await;
    server
        .api("POST", &format!("/sandboxes/{id}/pause"), None)
        .await;
    let (_, envelopes) = server.start(&id, "echo hi").await;
    assert!(
        envelopes[0].1["event"]["start"].is_object(),
        "{envelopes:?}"
    );
    assert_eq!(
        server
            .api("GET", &format!("/sandboxes/{id}"), None)
            .await
            .json()["state"],
        "running"
    );
    Ok(())
}

#[tokio::test]
async fn other_process_calls_find_no_process() -> anyhow::Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({})).await;
    let reply = server.unary(&id, "/process.Process/List", json!({})).await;
    assert_eq!(reply.json(), json!({"processes": []}));
    for method in ["SendSignal", "SendInput", "CloseStdin"] {
        let body = json!({"process": {"pid": 4242}, "signal": "SIGNAL_SIGKILL"});
        let reply = server
            .unary(&id, &format!("/process.Process/{method}"), body)
            .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method}");
        assert_eq!(reply.json()["code"], "not_found");
        assert!(
            reply.json()["message"]
                .as_str()
                .unwrap_or("")
                .contains("4242")
        );
    }
    let request = server
        .envd(&id, "POST", "/process.Process/Connect")
        .header("content-type", "application/connect+json")
        .body(Body::from(envelope(0, br#"{"process":{"pid":1}}"#)))?;
    let reply = server.send(request).await;
    assert_eq!(
        crate::common::envelopes(&reply.body)[0].1["error"]["code"],
        "not_found"
    );
    Ok(())
}

#[tokio::test]
async fn files_upload_download_and_errors() -> anyhow::Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({})).await;
    let reply = server
        .upload(&id, "/home/user/a.txt", b"one".to_vec())
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json(),
        json!([{"name": "a.txt", "type": "file", "path": "/home/user/a.txt"}])
    );
    assert_eq!(
        &server.download(&id, "/home/user/a.txt").await.body[..],
        b"one"
    );

    // Multipart, the way the SDKs write several files: each part's file name is its path.
    let boundary = "XyZ";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"/m/b.txt\"\r\n\
         Content-Type: application/octet-stream\r\n\r\ntwo\r\n--{boundary}--\r\n"
    );
    let request = server
        .envd(&id, "POST", "/files")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(body))?;
    let reply = server.send(request).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.json()[0]["path"], "/m/b.txt");
    assert_eq!(&server.download(&id, "/m/b.txt").await.body[..], b"two");

    let reply = server.download(&id, "/missing.txt").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.json()["code"], 404);
    let reply = server.download(&id, "/../../../../etc/passwd").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{:?}", reply.body);
    let reply = server.upload(&id, "/big.bin", vec![0; LIMIT + 1]).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.json()["code"], 413);
    Ok(())
}

#[tokio::test]
async fn the_filesystem_service_lists_stats_makes_moves_and_removes() -> anyhow::Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({})).await;
    let reply = server
        .unary(
            &id,
            "/filesystem.Filesystem/MakeDir",
            json!({"path": "/work/sub"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["entry"]["type"], "FILE_TYPE_DIRECTORY");
    let reply = server
        .unary(
            &id,
            "/filesystem.Filesystem/MakeDir",
            json!({"path": "/work/sub"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.json()["code"], "already_exists");
    server.upload(&id, "/work/f.txt", b"12345".to_vec()).await;

    let reply = server
        .unary(
            &id,
            "/filesystem.Filesystem/ListDir",
            json!({"path": "/work", "depth": 1}),
        )
        .await;
    let entries = reply.json()["entries"].clone();
    assert_eq!(entries.as_array().map(Vec::len), Some(2), "{entries}");
    assert_eq!(entries[0]["name"], "f.txt");
    assert_eq!(entries[0]["path"], "/work/f.txt");
    assert_eq!(entries[0]["size"], 5);
    assert_eq!(entries[1]["type"], "FILE_TYPE_DIRECTORY");
    for field in ["mode", "permissions", "owner", "group", "modifiedTime"] {
        assert!(!entries[0][field].is_null(), "{field}");
    }

    let reply = server
        .unary(
            &id,
            "/filesystem.Filesystem/Move",
            json!({"source": "/work/f.txt", "destination": "/work/sub/g.txt"}),
        )
        .await;
    assert_eq!(reply.json()["entry"]["path"], "/work/sub/g.txt");
    let reply = server
        .unary(
            &id,
            "/filesystem.Filesystem/Stat",
            json!({"path": "/work/f.txt"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.json()["code"], "not_found");
    let reply = server
        .unary(
            &id,
            "/filesystem.Filesystem/Remove",
            json!({"path": "/work"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = server
        .unary(&id, "/filesystem.Filesystem/Stat", json!({"path": "/work"}))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = server
        .unary(&id, "/filesystem.Filesystem/Remove", json!({"path": "/"}))
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    Ok(())
}

#[tokio::test]
async fn envd_calls_on_a_paused_sandbox_say_it_is_paused() -> anyhow::Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({})).await;
    server
        .api("POST", &format!("/sandboxes/{id}/pause"), None)
        .await;
    let reply = server
        .unary(&id, "/filesystem.Filesystem/Stat", json!({"path": "/"}))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["code"], "failed_precondition");
    Ok(())
}

/// The seed document's flow: create with metadata, write a file with a command, pause, connect (201),
/// read the file back, find the paused sandbox by metadata, kill it, and kill again (404).
#[tokio::test]
async fn seed_flow_pause_connect_read_list_kill() -> anyhow::Result<()> {
    let server = Server::new()?;
    let id = server
        .create(json!({"templateID": "base", "metadata": {"session": "seed"}}))
        .await;
    let (_, events) = server.start(&id, "echo hello > /tmp/message.txt").await;
    assert_eq!(
        events[events.len() - 2].1["event"]["end"]["exitCode"],
        0,
        "{events:?}"
    );
    assert_eq!(
        server
            .api("POST", &format!("/sandboxes/{id}/pause"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );

    let listed = server
        .api(
            "GET",
            "/v2/sandboxes?state=paused&metadata=session%3Dseed",
            None,
        )
        .await;
    assert_eq!(listed.json()[0]["sandboxID"], id.as_str());
    assert_eq!(listed.json()[0]["metadata"]["session"], "seed");

    let reply = server
        .api(
            "POST",
            &format!("/sandboxes/{id}/connect"),
            Some(json!({"timeout": 600})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(
        &server.download(&id, "/tmp/message.txt").await.body[..],
        b"hello\n"
    );
    let (_, events) = server.start(&id, "cat /tmp/message.txt").await;
    assert_eq!(stdout_of(&events), "hello\n");

    assert_eq!(
        server
            .api("DELETE", &format!("/sandboxes/{id}"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        server
            .api("DELETE", &format!("/sandboxes/{id}"), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    Ok(())
}
