//! Metrics and logs through the router: samples of CPU, memory and disk over a sandbox's life (and the
//! bulk form), its own event log in both of E2B's shapes, their query filters and every refusal.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::common::Server;
use axum::http::StatusCode;

/// Waits until `check` finds what it wants in `GET path`, or fails after 20 s.
async fn until(server: &Server, path: &str, check: impl Fn(&Value) -> bool) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = server.api("GET", path, None).await;
        anyhow::ensure!(reply.status == StatusCode::OK, "{path}: {}", reply.status);
        let body = reply.json();
        if check(&body) {
            return Ok(body);
        }
        anyhow::ensure!(Instant::now() < deadline, "{path}: never {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn samples_measure_disk_cpu_and_the_processes_memory() -> Result<()> {
    let server = Server::new()?;
    server
        .state
        .samples()
        .set_interval(Duration::from_millis(100));
    let id = server.create(json!({})).await;
    server.upload(&id, "/tmp/blob", vec![7; 100_000]).await;
    let metrics = until(&server, &format!("/sandboxes/{id}/metrics"), |m| {
        m.as_array()
            .is_some_and(|a| a.iter().any(|s| s["diskUsed"].as_u64() >= Some(100_000)))
    })
    .await?;
    let sample = &metrics.as_array().context("list")?[0];
    for field in [
        "timestamp",
        "timestampUnix",
        "cpuCount",
        "cpuUsedPct",
        "memUsed",
        "memTotal",
        "memCache",
        "diskUsed",
        "diskTotal",
    ] {
        assert!(sample.get(field).is_some(), "{field}: {sample}");
    }
    assert_eq!(sample["memTotal"], 2u64 << 30);

    // A running command's CPU and memory show while it runs.
    let server2 = server.state.clone();
    let busy = tokio::spawn({
        let id = id.clone();
        async move {
            let server = Server {
                _dir: tempfile::tempdir().expect("dir"),
                state: server2,
            };
            server.start(&id, "seq 1 20000000 | wc -l").await
        }
    });
    let during = until(&server, &format!("/sandboxes/{id}/metrics"), |m| {
        m.as_array().is_some_and(|a| {
            a.iter()
                .any(|s| s["cpuUsedPct"].as_f64() > Some(30.0) && s["memUsed"].as_u64() > Some(0))
        })
    })
    .await?;
    busy.abort();
    assert!(during.as_array().is_some_and(|a| a.len() >= 2));

    // A time window, and a window that ends before it starts.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let future = server
        .api(
            "GET",
            &format!("/sandboxes/{id}/metrics?start={}", now + 3600),
            None,
        )
        .await;
    assert_eq!(future.json(), json!([]));
    let empty = server
        .api(
            "GET",
            &format!("/sandboxes/{id}/metrics?start=10&end=5"),
            None,
        )
        .await;
    assert_eq!(
        empty.json(),
        json!([]),
        "a window that ends before it starts"
    );
    for bad in ["?start=x", "?end=-1"] {
        let reply = server
            .api("GET", &format!("/sandboxes/{id}/metrics{bad}"), None)
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
    }

    // Bulk: the newest sample of each of the caller's sandboxes asked about; others left out.
    let bulk = server
        .api(
            "GET",
            &format!("/sandboxes/metrics?sandbox_ids={id},0123456789abcdefghijklmno"),
            None,
        )
        .await;
    assert_eq!(bulk.status, StatusCode::OK);
    let sandboxes = bulk.json()["sandboxes"].clone();
    assert_eq!(sandboxes.as_object().map(|o| o.len()), Some(1));
    assert!(sandboxes[&id]["diskUsed"].as_u64() >= Some(100_000));
    for bad in ["", "?sandbox_ids=", "?sandbox_ids=0.5", "?sandbox_ids=a/b"] {
        let reply = server
            .api("GET", &format!("/sandboxes/metrics{bad}"), None)
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let many: Vec<String> = (0..101).map(|i| format!("s{i}")).collect();
    let too_many = server
        .api(
            "GET",
            &format!("/sandboxes/metrics?sandbox_ids={}", many.join(",")),
            None,
        )
        .await;
    assert_eq!(too_many.status, StatusCode::BAD_REQUEST);

    // A paused sandbox keeps its history and takes no new samples.
    server
        .api("POST", &format!("/sandboxes/{id}/pause"), None)
        .await;
    let before = server
        .api("GET", &format!("/sandboxes/{id}/metrics"), None)
        .await
        .json();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let after = server
        .api("GET", &format!("/sandboxes/{id}/metrics"), None)
        .await
        .json();
    assert_eq!(
        before.as_array().map(Vec::len),
        after.as_array().map(Vec::len)
    );
    Ok(())
}

#[tokio::test]
async fn the_log_has_the_sandboxs_own_events_with_filters() -> Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({})).await;
    server.start(&id, "echo hi").await;
    server.start(&id, "exit 4").await;
    server
        .api("POST", &format!("/sandboxes/{id}/pause"), None)
        .await;
    server
        .api("POST", &format!("/sandboxes/{id}/connect"), Some(json!({})))
        .await;
    let logs = server
        .api("GET", &format!("/v2/sandboxes/{id}/logs"), None)
        .await;
    assert_eq!(logs.status, StatusCode::OK);
    let entries = logs.json()["logs"].as_array().cloned().context("logs")?;
    let kinds: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["fields"]["event"].as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "created",
            "command_started",
            "command_ended",
            "command_started",
            "command_ended",
            "paused",
            "resumed"
        ]
    );
    for entry in &entries {
        assert!(
            entry["timestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')),
            "{entry}"
        );
        assert!(
            entry["message"].is_string() && entry["level"].is_string(),
            "{entry}"
        );
    }
    let failed = &entries[4];
    assert_eq!(
        (
            failed["level"].clone(),
            failed["fields"]["exitCode"].clone()
        ),
        (json!("warn"), json!("4"))
    );

    let warn = server
        .api("GET", &format!("/v2/sandboxes/{id}/logs?level=warn"), None)
        .await
        .json();
    assert_eq!(warn["logs"].as_array().map(Vec::len), Some(1));
    let search = server
        .api(
            "GET",
            &format!("/v2/sandboxes/{id}/logs?search=paused"),
            None,
        )
        .await
        .json();
    assert_eq!(search["logs"][0]["fields"]["event"], "paused");
    let newest = server
        .api(
            "GET",
            &format!("/v2/sandboxes/{id}/logs?direction=backward&limit=2"),
            None,
        )
        .await
        .json();
    let newest: Vec<&str> = newest["logs"]
        .as_array()
        .context("logs")?
        .iter()
        .filter_map(|e| e["fields"]["event"].as_str())
        .collect();
    assert_eq!(newest, ["resumed", "paused"]);
    let cursor = server
        .api(
            "GET",
            &format!("/v2/sandboxes/{id}/logs?cursor={}", u64::MAX / 2),
            None,
        )
        .await
        .json();
    assert_eq!(cursor["logs"], json!([]));
    let old = server
        .api("GET", &format!("/sandboxes/{id}/logs?limit=3"), None)
        .await
        .json();
    assert_eq!(old["logs"].as_array().map(Vec::len), Some(3));
    assert_eq!(old["logEntries"][0]["fields"]["event"], "created");
    assert!(
        old["logs"][0]["line"]
            .as_str()
            .unwrap_or("")
            .contains("Sandbox created")
    );
    for bad in [
        "?limit=0",
        "?limit=1001",
        "?direction=up",
        "?level=loud",
        "?cursor=x",
    ] {
        let reply = server
            .api("GET", &format!("/v2/sandboxes/{id}/logs{bad}"), None)
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(reply.json()["code"], 400);
    }
    server
        .api("DELETE", &format!("/sandboxes/{id}"), None)
        .await;
    assert_eq!(
        server
            .api("GET", &format!("/v2/sandboxes/{id}/logs"), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    Ok(())
}
