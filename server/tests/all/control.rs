//! The remaining control-plane calls of the SDKs: the network policy (stored and reported), refreshes,
//! the older resume, and what `GET /sandboxes/{id}` reports (lifecycle, state, envd version).

use anyhow::Result;
use axum::http::StatusCode;
use serde_json::json;

use crate::common::Server;

#[tokio::test]
async fn the_network_policy_is_stored_reported_replaced_and_checked() -> Result<()> {
    let server = Server::new()?;
    let id = server
        .create(json!({
            "network": {"allowOut": ["1.1.1.1", "*.example.com"], "denyOut": ["0.0.0.0/0"],
                "egressProxy": {"address": "proxy.example.com:1080", "username": "u", "password": "secret"}},
            "allow_internet_access": false,
        }))
        .await;
    let info = server.api("GET", &format!("/sandboxes/{id}"), None).await;
    let body = info.json();
    assert_eq!(
        body["network"]["allowOut"],
        json!(["1.1.1.1", "*.example.com"])
    );
    assert_eq!(
        body["network"]["egressProxy"],
        json!({"address": "proxy.example.com:1080", "username": "u"})
    );
    assert!(
        !String::from_utf8_lossy(&info.body).contains("secret"),
        "a password is never reported"
    );
    assert_eq!(body["allowInternetAccess"], false);

    let put = |body: serde_json::Value| {
        let server = &server;
        let id = &id;
        async move {
            server
                .api("PUT", &format!("/sandboxes/{id}/network"), Some(body))
                .await
        }
    };
    assert_eq!(
        put(json!({"denyOut": ["10.0.0.0/8"]})).await.status,
        StatusCode::NO_CONTENT
    );
    let network = server
        .api("GET", &format!("/sandboxes/{id}"), None)
        .await
        .json()["network"]
        .clone();
    assert_eq!(
        network,
        json!({"denyOut": ["10.0.0.0/8"]}),
        "a field left out is cleared"
    );
    for bad in [
        json!({"denyOut": ["example.com"]}),
        json!({"allowOut": ["1.2.3.4/40"]}),
        json!({"dnsServers": ["::1"]}),
        json!({"allowOut": "1.1.1.1"}),
        json!({"rules": ["not", "an", "object"]}),
    ] {
        let reply = put(bad.clone()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(reply.json()["code"], 400);
    }
    // Paused, it is stored all the same (and reported after the resume).
    server
        .api("POST", &format!("/sandboxes/{id}/pause"), None)
        .await;
    assert_eq!(put(json!({})).await.status, StatusCode::NO_CONTENT);
    assert!(
        server
            .api("GET", &format!("/sandboxes/{id}"), None)
            .await
            .json()
            .get("network")
            .is_none()
    );
    let create_bad = server
        .api(
            "POST",
            "/v2/sandboxes",
            Some(json!({"network": {"denyOut": ["x.y"]}})),
        )
        .await;
    assert_eq!(create_bad.status, StatusCode::BAD_REQUEST);
    Ok(())
}

#[tokio::test]
async fn refreshes_keep_a_running_sandbox_alive_and_refuse_a_paused_one() -> Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({"timeout": 60})).await;
    let end = |server: &Server| {
        let id = id.clone();
        let state = server.state.clone();
        move || state.manager().info(&id).map(|i| i.end_at)
    };
    let before = end(&server)()?;
    let reply = server
        .api(
            "POST",
            &format!("/sandboxes/{id}/refreshes"),
            Some(json!({"duration": 600})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(end(&server)()?.duration_since(before)?.as_secs() >= 539);
    // A shorter one does not bring the end forward.
    let later = end(&server)()?;
    server
        .api(
            "POST",
            &format!("/sandboxes/{id}/refreshes"),
            Some(json!({"duration": 1})),
        )
        .await;
    assert_eq!(end(&server)()?, later);
    assert_eq!(
        server
            .api("POST", &format!("/sandboxes/{id}/refreshes"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let bad = server
        .api(
            "POST",
            &format!("/sandboxes/{id}/refreshes"),
            Some(json!({"duration": -1})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    server
        .api("POST", &format!("/sandboxes/{id}/pause"), None)
        .await;
    let paused = server
        .api(
            "POST",
            &format!("/sandboxes/{id}/refreshes"),
            Some(json!({"duration": 5})),
        )
        .await;
    assert_eq!(paused.status, StatusCode::CONFLICT);
    assert_eq!(paused.json()["code"], 409);
    Ok(())
}

#[tokio::test]
async fn resume_resumes_a_paused_sandbox_and_is_409_for_a_running_one() -> Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({})).await;
    let running = server
        .api("POST", &format!("/sandboxes/{id}/resume"), Some(json!({})))
        .await;
    assert_eq!(running.status, StatusCode::CONFLICT);
    server
        .api("POST", &format!("/sandboxes/{id}/pause"), None)
        .await;
    let resumed = server
        .api(
            "POST",
            &format!("/sandboxes/{id}/resume"),
            Some(json!({"timeout": 30})),
        )
        .await;
    assert_eq!(resumed.status, StatusCode::CREATED);
    let body = resumed.json();
    assert_eq!(
        (body["state"].clone(), body["envdVersion"].clone()),
        (json!("running"), json!("0.5.7"))
    );
    assert_eq!(
        body["lifecycle"],
        json!({"onTimeout": "kill", "autoResume": false})
    );
    assert_eq!(body["volumeMounts"], json!([]));
    let bad = server
        .api(
            "POST",
            &format!("/sandboxes/{id}/resume"),
            Some(json!({"timeout": "x"})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    Ok(())
}
