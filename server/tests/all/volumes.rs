//! Volumes through the router: the control plane (`/volumes`), the volume file API (`/volumecontent`,
//! authorized by the volume's token), mounting into sandboxes (commands and the envd file API see the
//! volume; a pause leaves it out of the blob; kill leaves it intact), and every refusal.

use anyhow::{Context, Result};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use crate::common::{Reply, Server, stdout_of};

/// Creates volume `name`; returns its id and token.
async fn volume(server: &Server, name: &str) -> Result<(String, String)> {
    let reply = server
        .api("POST", "/volumes", Some(json!({"name": name})))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let body = reply.json();
    Ok((
        body["volumeID"].as_str().context("volumeID")?.to_owned(),
        body["token"].as_str().context("token")?.to_owned(),
    ))
}

/// A volume file API call with `token`.
async fn content(
    server: &Server,
    token: Option<&str>,
    method: &str,
    uri: &str,
    body: Vec<u8>,
) -> Reply {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    server
        .send(request.body(Body::from(body)).expect("request"))
        .await
}

#[tokio::test]
async fn volumes_are_created_listed_and_destroyed_with_every_refusal() -> Result<()> {
    let server = Server::new()?;
    let (id, token) = volume(&server, "data").await?;
    assert!(id.starts_with("vol_"));
    let again = server
        .api("POST", "/volumes", Some(json!({"name": "data"})))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.json()["code"], 409);
    for bad in [
        json!({"name": "../x"}),
        json!({}),
        json!({"name": "q", "quotaSizeGiB": 0}),
        json!({"name": "q", "quotaSizeGiB": 65}),
    ] {
        let reply = server.api("POST", "/volumes", Some(bad.clone())).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let listed = server.api("GET", "/volumes", None).await.json();
    assert_eq!(listed[0]["volumeID"], id.as_str());
    assert!(
        listed[0].get("token").is_none(),
        "list items carry no token"
    );
    let info = server
        .api("GET", &format!("/volumes/{id}"), None)
        .await
        .json();
    assert_eq!(info["token"], token.as_str());
    assert_eq!(info["quotaSizeGiB"], 1);
    assert_eq!(
        server
            .api("DELETE", &format!("/volumes/{id}"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    for method in ["GET", "DELETE"] {
        let reply = server.api(method, &format!("/volumes/{id}"), None).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method}");
    }
    Ok(())
}

#[tokio::test]
async fn the_volume_file_api_needs_the_volumes_token_and_stays_inside_it() -> Result<()> {
    let server = Server::new()?;
    let (id, token) = volume(&server, "files").await?;
    let (other, _) = volume(&server, "other").await?;
    let file = format!("/volumecontent/{id}/file?path=/a/b.txt");
    let put = content(&server, Some(&token), "PUT", &file, b"hello".to_vec()).await;
    assert_eq!(put.status, StatusCode::CREATED, "{:?}", put.body);
    let stat = put.json();
    assert_eq!(
        (
            stat["name"].clone(),
            stat["type"].clone(),
            stat["size"].clone()
        ),
        (json!("b.txt"), json!("file"), json!(5))
    );
    for key in ["mode", "uid", "gid", "atime", "mtime", "ctime", "path"] {
        assert!(stat.get(key).is_some(), "{key}: {stat}");
    }
    assert_eq!(
        &content(&server, Some(&token), "GET", &file, vec![])
            .await
            .body[..],
        b"hello"
    );
    assert_eq!(
        content(&server, None, "GET", &file, vec![]).await.status,
        StatusCode::UNAUTHORIZED
    );
    let other_token = server.state.volume_token(&other);
    assert_eq!(
        content(&server, Some(&other_token), "GET", &file, vec![])
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        content(
            &server,
            Some(&server.state.access_token("x")),
            "GET",
            &file,
            vec![]
        )
        .await
        .status,
        StatusCode::FORBIDDEN,
        "a sandbox's access token is no volume token"
    );

    let dir = format!("/volumecontent/{id}/dir?path=/made");
    assert_eq!(
        content(&server, Some(&token), "POST", &dir, vec![])
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(
        content(&server, Some(&token), "POST", &dir, vec![])
            .await
            .status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        content(
            &server,
            Some(&token),
            "POST",
            &format!("{dir}&force=true"),
            vec![]
        )
        .await
        .status,
        StatusCode::CREATED,
        "force accepts one that exists"
    );
    let deep = format!("/volumecontent/{id}/dir?path=/x/y/z");
    assert_eq!(
        content(&server, Some(&token), "POST", &deep, vec![])
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let listing = content(
        &server,
        Some(&token),
        "GET",
        &format!("/volumecontent/{id}/dir?path=/&depth=2"),
        vec![],
    )
    .await;
    let names: Vec<Value> = listing
        .json()
        .as_array()
        .context("list")?
        .iter()
        .map(|e| e["path"].clone())
        .collect();
    assert_eq!(names, vec![json!("/a"), json!("/a/b.txt"), json!("/made")]);

    let path = format!("/volumecontent/{id}/path?path=/a/b.txt");
    let request = Request::patch(&path)
        .header("Authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(json!({"mode": 0o600}).to_string()))?;
    let patched = server.send(request).await;
    assert_eq!(patched.status, StatusCode::OK);
    assert_eq!(patched.json()["mode"], 0o600);
    let request = Request::patch(&path)
        .header("Authorization", format!("Bearer {token}"))
        .body(Body::from(json!({"uid": 0}).to_string()))?;
    assert_eq!(
        server.send(request).await.status,
        StatusCode::BAD_REQUEST,
        "uid cannot be set"
    );
    for escape in ["../../etc/passwd", "/../x"] {
        let uri = format!("/volumecontent/{id}/file?path={escape}");
        let reply = content(&server, Some(&token), "GET", &uri, vec![]).await;
        assert!(
            matches!(reply.status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND),
            "{escape}: {}",
            reply.status
        );
    }
    assert_eq!(
        content(&server, Some(&token), "DELETE", &path, vec![])
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        content(&server, Some(&token), "GET", &path, vec![])
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        content(
            &server,
            Some(&token),
            "DELETE",
            &format!("/volumecontent/{id}/path?path=/"),
            vec![]
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    let missing_path = content(
        &server,
        Some(&token),
        "GET",
        &format!("/volumecontent/{id}/file"),
        vec![],
    )
    .await;
    assert_eq!(missing_path.status, StatusCode::BAD_REQUEST);
    let unknown = content(
        &server,
        Some(&token),
        "GET",
        "/volumecontent/vol_0123456789abcdefghijklmno/file?path=/a",
        vec![],
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn a_mounted_volume_is_shared_survives_pause_and_kill_and_blocks_destroy() -> Result<()> {
    let server = Server::new()?;
    let (id, token) = volume(&server, "shared").await?;
    let mounts = json!({"volumeMounts": [{"name": "shared", "path": "/data"}]});
    let first = server.create(mounts.clone()).await;
    let second = server
        .create(json!({"volumeMounts": [{"name": id, "path": "/mnt/v/"}]}))
        .await;
    let info = server
        .api("GET", &format!("/sandboxes/{second}"), None)
        .await
        .json();
    assert_eq!(
        info["volumeMounts"],
        json!([{"name": "shared", "path": "/mnt/v"}])
    );

    let (_, written) = server
        .start(&first, "echo from one > /data/one.txt; ls /")
        .await;
    assert!(
        stdout_of(&written).contains("data"),
        "the mount point is listed: {written:?}"
    );
    let (_, read) = server.start(&second, "cat /mnt/v/one.txt").await;
    assert_eq!(stdout_of(&read), "from one\n");
    assert_eq!(
        server
            .upload(&second, "/mnt/v/api.txt", b"api".to_vec())
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        &server.download(&first, "/data/api.txt").await.body[..],
        b"api"
    );
    let got = content(
        &server,
        Some(&token),
        "GET",
        &format!("/volumecontent/{id}/file?path=/one.txt"),
        vec![],
    )
    .await;
    assert_eq!(&got.body[..], b"from one\n");

    // A pause leaves the volume out of the blob: a change made meanwhile is seen after the resume.
    server.upload(&first, "/tmp/own.txt", b"own".to_vec()).await;
    assert_eq!(
        server
            .api("POST", &format!("/sandboxes/{first}/pause"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let blob = std::fs::read(server.state.blob_path(&first))?;
    assert!(
        !blob.windows(9).any(|w| w == b"from one\n"),
        "the volume's files are not in the blob"
    );
    content(
        &server,
        Some(&token),
        "PUT",
        &format!("/volumecontent/{id}/file?path=/later.txt"),
        b"later".to_vec(),
    )
    .await;
    server
        .api(
            "POST",
            &format!("/sandboxes/{first}/connect"),
            Some(json!({})),
        )
        .await;
    let (_, after) = server
        .start(&first, "cat /data/later.txt /tmp/own.txt")
        .await;
    assert_eq!(stdout_of(&after), "laterown");

    // Destroying it is refused while a sandbox mounts it, running or paused; kill leaves it intact.
    server
        .api("POST", &format!("/sandboxes/{second}/pause"), None)
        .await;
    let refused = server.api("DELETE", &format!("/volumes/{id}"), None).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(
        refused.json()["message"]
            .as_str()
            .unwrap_or("")
            .contains("mounted")
    );
    for sandbox in [&first, &second] {
        server
            .api("DELETE", &format!("/sandboxes/{sandbox}"), None)
            .await;
    }
    let kept = content(
        &server,
        Some(&token),
        "GET",
        &format!("/volumecontent/{id}/file?path=/api.txt"),
        vec![],
    )
    .await;
    assert_eq!(&kept.body[..], b"api");
    assert_eq!(
        server
            .api("DELETE", &format!("/volumes/{id}"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    Ok(())
}

#[tokio::test]
async fn bad_mounts_are_refused_before_anything_is_created() -> Result<()> {
    let server = Server::new()?;
    volume(&server, "v").await?;
    for (mounts, status) in [
        (
            json!([{"name": "nosuch", "path": "/data"}]),
            StatusCode::NOT_FOUND,
        ),
        (
            json!([{"name": "v", "path": "data"}]),
            StatusCode::BAD_REQUEST,
        ),
        (json!([{"name": "v", "path": "/"}]), StatusCode::BAD_REQUEST),
        (
            json!([{"name": "v", "path": "/a/../b"}]),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!([{"name": "v", "path": "/a"}, {"name": "v", "path": "/a/b"}]),
            StatusCode::BAD_REQUEST,
        ),
        (json!({"name": "v"}), StatusCode::BAD_REQUEST),
    ] {
        let reply = server
            .api(
                "POST",
                "/v2/sandboxes",
                Some(json!({"volumeMounts": mounts})),
            )
            .await;
        assert_eq!(reply.status, status, "{mounts}");
        assert_eq!(reply.json()["code"], status.as_u16());
    }
    assert_eq!(
        server.api("GET", "/v2/sandboxes", None).await.json(),
        json!([])
    );
    Ok(())
}

#[tokio::test]
async fn a_volume_quota_bounds_what_sandboxes_write_into_it() -> Result<()> {
    let server = Server::new()?;
    // A 16-byte volume, made through the runtime (the API's smallest quota is 1 GiB).
    let owner = stasis_server::auth::owner_id(crate::common::KEY);
    let tiny = server
        .state
        .manager()
        .volumes()
        .create("tiny", Some(owner), Some(16))?;
    let sandbox = server
        .create(json!({"volumeMounts": [{"name": "tiny", "path": "/v"}]}))
        .await;
    let (_, fits) = server.start(&sandbox, "echo 12345 > /v/small").await;
    assert_eq!(
        fits.iter()
            .find_map(|(_, e)| e["event"]["end"]["exitCode"].as_i64()),
        Some(0)
    );
    let (_, full) = server
        .start(&sandbox, "echo 0123456789abcdef > /v/big")
        .await;
    let data = server.state.manager().volumes().data_dir(&tiny.id)?;
    let written = std::fs::read(data.join("big")).unwrap_or_default();
    assert!(
        written.len() < 17,
        "a write past the volume's quota is refused: {written:?} {full:?}"
    );
    let quota = server.state.manager().volumes().quota(&tiny.id)?;
    assert!(quota.used_bytes() <= 16, "{}", quota.used_bytes());
    Ok(())
}
