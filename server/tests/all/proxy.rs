//! Requests to a sandbox's port through the server: by Host `<port>-<id>.<domain>` and by the path form
//! `/sandboxes/<id>/ports/<port>/…`, answered by the `net http` guest; the 400/404/502 answers; a pause
//! interrupting the service and a resume (by hand, or by the request itself with auto-resume) bringing it
//! back; an upgrade (WebSocket, raw TCP) passing bytes both ways.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;

use stasis::RuntimeConfig;
use stasis::lifecycle::ManagerConfig;
use stasis_server::AppState;

use crate::common::{KEY, LIMIT, Reply, Server, module_cache};

/// The domain the test servers report.
const DOMAIN: &str = "localhost:3000";
/// The port the guest service listens on.
const PORT: u16 = 8000;

/// The second tenant's API key.
const OTHER_KEY: &str = "other-key";

/// A server (with a second tenant) whose sandboxes can run the `net` guest by name.
async fn server() -> Result<Server> {
    let dir = tempfile::tempdir()?;
    let mut runtime = RuntimeConfig::new(dir.path());
    runtime.cache_dir = Some(module_cache());
    let (state, _) = AppState::open_runtime(
        runtime,
        vec![KEY.to_owned(), OTHER_KEY.to_owned()],
        LIMIT,
        ManagerConfig::default(),
    )?;
    let server = Server { _dir: dir, state };
    server.state.set_domain(DOMAIN);
    let state = server.state.clone();
    tokio::task::spawn_blocking(move || {
        state
            .manager()
            .register_template("net", &stasis_guests::bytes(stasis_guests::NET))
    })
    .await??;
    Ok(server)
}

/// Starts `net http PORT` in sandbox `id`, in the background (its Start stream never ends).
fn serve_http(server: &Server, id: &str) -> tokio::task::JoinHandle<()> {
    let state = server.state.clone();
    let id = id.to_owned();
    tokio::spawn(async move {
        let server = Server {
            _dir: tempfile::tempdir().expect("dir"),
            state,
        };
        server.start(&id, &format!("net http {PORT}")).await;
    })
}

/// A GET of `path` with Host `host` and no API key.
async fn get(server: &Server, host: &str, path: &str) -> Result<Reply> {
    let request = Request::builder()
        .uri(path)
        .header("host", host)
        .body(Body::empty())?;
    Ok(server.send(request).await)
}

/// The host the SDKs' `get_host(port)` gives for sandbox `id`.
fn host(port: u16, id: &str) -> String {
    format!("{port}-{id}.{DOMAIN}")
}

/// GETs `path` on `host` until the service answers 200 (it starts listening a moment after its start).
async fn answered(server: &Server, host: &str, path: &str) -> Result<Reply> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = get(server, host, path).await?;
        if reply.status == StatusCode::OK {
            return Ok(reply);
        }
        if Instant::now() > deadline {
            bail!(
                "{host}{path} never answered: {} {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn text(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn host_and_path_forms_reach_the_service_and_a_pause_interrupts_it() -> Result<()> {
    let server = server().await?;
    let created = server.api("POST", "/v2/sandboxes", Some(json!({}))).await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.json()["domain"], DOMAIN, "get_host builds on it");
    let id = created.json()["sandboxID"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    // Nothing listens yet: 502 saying so.
    let early = get(&server, &host(PORT, &id), "/").await?;
    assert_eq!(early.status, StatusCode::BAD_GATEWAY);
    assert!(
        text(&early).contains("nothing listens on port 8000"),
        "{}",
        text(&early)
    );

    let _service = serve_http(&server, &id);
    let reply = answered(&server, &host(PORT, &id), "/hello?x=1").await?;
    assert!(text(&reply).contains("GET /hello?x=1"), "{}", text(&reply));

    // The path form: the prefix is not the guest's business.
    let by_path = get(
        &server,
        DOMAIN,
        &format!("/sandboxes/{id}/ports/{PORT}/a/b?c"),
    )
    .await?;
    assert_eq!(by_path.status, StatusCode::OK, "{}", text(&by_path));
    assert!(text(&by_path).contains("GET /a/b?c"), "{}", text(&by_path));

    // Another port: nothing there.
    let other = get(&server, &host(8001, &id), "/").await?;
    assert_eq!(other.status, StatusCode::BAD_GATEWAY);
    assert!(text(&other).contains("8001"), "{}", text(&other));

    // Paused: 502 naming the sandbox.
    let paused = server
        .api("POST", &format!("/sandboxes/{id}/pause"), None)
        .await;
    assert_eq!(paused.status, StatusCode::NO_CONTENT, "{}", text(&paused));
    let during = get(&server, &host(PORT, &id), "/").await?;
    assert_eq!(during.status, StatusCode::BAD_GATEWAY);
    assert!(
        text(&during).contains(&id) && text(&during).contains("paused"),
        "{}",
        text(&during)
    );

    // Resumed: answered again.
    let resumed = server
        .api(
            "POST",
            &format!("/sandboxes/{id}/connect"),
            Some(json!({"timeout": 300})),
        )
        .await;
    assert!(resumed.status.is_success(), "{}", text(&resumed));
    let again = answered(&server, &host(PORT, &id), "/again").await?;
    assert!(text(&again).contains("GET /again"), "{}", text(&again));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_resumes_a_sandbox_with_auto_resume() -> Result<()> {
    let server = server().await?;
    let id = server
        .create(json!({"lifecycle": {"onTimeout": "pause", "autoResume": true}}))
        .await;
    let _service = serve_http(&server, &id);
    answered(&server, &host(PORT, &id), "/").await?;
    let paused = server
        .api("POST", &format!("/sandboxes/{id}/pause"), None)
        .await;
    assert_eq!(paused.status, StatusCode::NO_CONTENT, "{}", text(&paused));
    let info = server.api("GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(info.json()["state"], "paused");

    let woken = answered(&server, &host(PORT, &id), "/woken").await?;
    assert!(text(&woken).contains("GET /woken"), "{}", text(&woken));
    let info = server.api("GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(info.json()["state"], "running");
    Ok(())
}

#[tokio::test]
async fn bad_addresses_unknown_sandboxes_and_other_tenants() -> Result<()> {
    let server = server().await?;
    for bad in [
        "www.localhost:3000",
        "0-abc.localhost:3000",
        "99999-abc.localhost:3000",
        "8000-.localhost:3000",
    ] {
        let reply = get(&server, bad, "/").await?;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            text(&reply)
        );
    }
    let reply = get(&server, DOMAIN, "/sandboxes/abc/ports/http/").await?;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    let unknown = get(&server, &host(PORT, "nosuchsandbox"), "/").await?;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", text(&unknown));
    let unknown = get(&server, DOMAIN, "/sandboxes/nosuchsandbox/ports/8000/").await?;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", text(&unknown));

    // The API and the envd plane still answer on the bare domain and on the envd host.
    let health = get(&server, DOMAIN, "/health").await?;
    assert_eq!(health.status, StatusCode::NO_CONTENT);
    let id = server.create(json!({})).await;
    let request = Request::builder()
        .method("POST")
        .uri("/filesystem.Filesystem/ListDir")
        .header("host", host(49983, &id))
        .header("X-Access-Token", server.state.access_token(&id))
        .header("content-type", "application/json")
        .body(Body::from(json!({"path": "/"}).to_string()))?;
    let listed = server.send(request).await;
    assert_eq!(
        listed.status,
        StatusCode::OK,
        "envd by host: {}",
        text(&listed)
    );

    // Another tenant's key: answered like an unknown sandbox. The owner's key is fine, and so is none.
    for (key, status) in [
        (OTHER_KEY, StatusCode::NOT_FOUND),
        (KEY, StatusCode::BAD_GATEWAY),
    ] {
        let request = Request::builder()
            .uri("/")
            .header("host", host(PORT, &id))
            .header("X-API-KEY", key)
            .body(Body::empty())?;
        let reply = server.send(request).await;
        assert_eq!(reply.status, status, "{key}: {}", text(&reply));
    }
    Ok(())
}

#[tokio::test]
async fn a_private_sandbox_wants_its_traffic_token() -> Result<()> {
    let server = server().await?;
    let created = server
        .api(
            "POST",
            "/v2/sandboxes",
            Some(json!({"network": {"allowPublicTraffic": false}})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", text(&created));
    let id = created.json()["sandboxID"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let token = created.json()["trafficAccessToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let none = get(&server, &host(PORT, &id), "/").await?;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED, "{}", text(&none));
    for (value, status) in [
        ("wrong", StatusCode::FORBIDDEN),
        (token.as_str(), StatusCode::BAD_GATEWAY),
    ] {
        let request = Request::builder()
            .uri("/")
            .header("host", host(PORT, &id))
            .header("e2b-traffic-access-token", value)
            .body(Body::empty())?;
        let reply = server.send(request).await;
        assert_eq!(reply.status, status, "{}", text(&reply));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_joins_the_client_and_the_guest() -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let server = server().await?;
    let id = server.create(json!({})).await;
    let state = server.state.clone();
    let service = id.clone();
    let _service = tokio::spawn(async move {
        let server = Server {
            _dir: tempfile::tempdir().expect("dir"),
            state,
        };
        server.start(&service, &format!("net upgrade {PORT}")).await;
    });
    // Upgrades need a real connection: the router served on loopback.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let app = server.app().into_make_service();
    let _serving = tokio::spawn(async move { axum::serve(listener, app).await });

    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut connection, head) = loop {
        let mut connection = tokio::net::TcpStream::connect(address).await?;
        let request = format!(
            "GET /chat HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
            host(PORT, &id)
        );
        connection.write_all(request.as_bytes()).await?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
            if connection.read(&mut byte).await? == 0 {
                break;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        if head.starts_with("HTTP/1.1 101") {
            break (connection, head);
        }
        if Instant::now() > deadline {
            bail!("never upgraded: {head}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        head.to_ascii_lowercase().contains("upgrade: echo"),
        "{head}"
    );
    for message in [&b"ping"[..], b"and more"] {
        connection.write_all(message).await?;
        let mut back = vec![0u8; message.len()];
        connection.read_exact(&mut back).await?;
        assert_eq!(back, message);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_backlog_is_503() -> Result<()> {
    use tower::ServiceExt;

    let server = server().await?;
    let id = server.create(json!({})).await;
    let state = server.state.clone();
    let service = id.clone();
    // Listens with a backlog of one and never accepts.
    let _service = tokio::spawn(async move {
        let server = Server {
            _dir: tempfile::tempdir().expect("dir"),
            state,
        };
        server
            .start(&service, &format!("net backlog {PORT} 1"))
            .await;
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    // Requests that wait in the backlog get no answer: they are dropped at the end. The one that finds it
    // full waits for room for two seconds (as TCP retries a SYN), then is answered 503.
    let mut waiting = Vec::new();
    let full = loop {
        let app = server.app();
        let request = Request::builder()
            .uri("/")
            .header("host", host(PORT, &id))
            .body(Body::empty())?;
        let mut sent = tokio::spawn(async move { app.oneshot(request).await });
        match tokio::time::timeout(Duration::from_secs(5), &mut sent).await {
            Ok(response) => {
                let response = response??;
                if response.status() == StatusCode::SERVICE_UNAVAILABLE {
                    break response;
                }
                assert_eq!(
                    response.status(),
                    StatusCode::BAD_GATEWAY,
                    "not listening yet"
                );
            }
            Err(_) => waiting.push(sent),
        }
        if Instant::now() > deadline {
            bail!("the backlog never filled ({} waiting)", waiting.len());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let body = http_body_util::BodyExt::collect(full.into_body())
        .await?
        .to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("backlog"), "{body}");
    assert!(!waiting.is_empty(), "one request waits in the backlog");
    for request in waiting {
        request.abort();
    }
    Ok(())
}

/// A raw HTTP/1.1 GET to `address` with Host `host`: (status, body).
fn raw_get(address: &str, host: &str) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address)?;
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    Ok((status, body))
}

#[test]
fn serve_reports_its_domain_and_routes_hosts_under_it() -> Result<()> {
    use crate::serve::Serve;

    let create = |server: &Serve| -> Result<serde_json::Value> {
        let (status, body) = server.send(
            "POST",
            "/v2/sandboxes",
            &[("Content-Type", "application/json")],
            b"{}",
        )?;
        assert_eq!(status, 201);
        Ok(serde_json::from_slice(&body)?)
    };

    // By default: localhost and the port it listens on, which curl and browsers resolve to loopback.
    let dir = tempfile::tempdir()?;
    let server = Serve::start(dir.path())?;
    let port = server.address.rsplit(':').next().unwrap_or_default();
    let created = create(&server)?;
    let domain = format!("localhost:{port}");
    assert_eq!(created["domain"], domain.as_str());
    let id = created["sandboxID"].as_str().unwrap_or_default();
    let (status, body) = raw_get(&server.address, &format!("8000-{id}.{domain}"))?;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("nothing listens on port 8000"), "{body}");

    // A real domain from STASIS_DOMAIN (or --domain): hosts under it must be sandbox hosts.
    let dir = tempfile::tempdir()?;
    let server = Serve::start_with(dir.path(), &[], &[("STASIS_DOMAIN", "sbx.example.com")])?;
    let created = create(&server)?;
    assert_eq!(created["domain"], "sbx.example.com");
    let id = created["sandboxID"].as_str().unwrap_or_default();
    let (status, body) = raw_get(&server.address, &format!("8000-{id}.sbx.example.com"))?;
    assert_eq!(status, 502, "{body}");
    let (status, body) = raw_get(&server.address, "www.sbx.example.com")?;
    assert_eq!(status, 400, "{body}");
    let (status, body) = raw_get(&server.address, &format!("8000-{id}.localhost:1"))?;
    assert_eq!(status, 502, "the SDKs' form routes under any name: {body}");
    Ok(())
}
