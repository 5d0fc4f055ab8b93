//! `filesystem.Filesystem` watchers (see [`crate::watch`]): `WatchDir` streams a directory's events as
//! they are seen (`{"start": {}}` first, then `{"filesystem": {"name", "type"}}` and keepalives), until
//! the client goes away or the sandbox pauses; `CreateWatcher` starts a watcher whose events
//! `GetWatcherEvents` takes (what the sync Python SDK's `watch_dir` uses), `RemoveWatcher` stops it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use stasis::lifecycle::SandboxState;

use super::{io_error, lifecycle_error, with_fs};
use crate::auth::envd_sandbox;
use crate::connect::{
    self, Code, ConnectError, STREAM_CONTENT_TYPE, end_stream, envelope, stream_error,
};
use crate::error::ApiError;
use crate::state::AppState;
use crate::watch::{POLL_INTERVAL, WatchError, WatchEvent, Watcher};

/// Keepalive interval of a stream when the client does not say (`Keepalive-Ping-Interval`, seconds).
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(50);

/// Body of `WatchDir` and `CreateWatcher`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchRequest {
    /// The directory to watch.
    #[serde(default)]
    pub path: String,
    /// Watch its subdirectories too.
    #[serde(default)]
    pub recursive: bool,
    /// Add each entry's `EntryInfo` to its events.
    #[serde(default)]
    pub include_entry: bool,
}

/// Body of `GetWatcherEvents` and `RemoveWatcher`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatcherRequest {
    /// The watcher's id.
    #[serde(default)]
    pub watcher_id: String,
}

impl From<WatchError> for ConnectError {
    fn from(error: WatchError) -> Self {
        let code = match error {
            WatchError::TooMany => Code::ResourceExhausted,
            WatchError::NotFound(_) => Code::NotFound,
            WatchError::Ended(_) => Code::FailedPrecondition,
        };
        ConnectError::new(code, error.to_string())
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ConnectError> {
    let body = body.map_err(|r| ConnectError::from(ApiError::new(r.status(), r.body_text())))?;
    connect::decode(headers, &body)
}

/// Starts watching `request.path` in sandbox `id`.
async fn watcher(
    state: &AppState,
    id: &str,
    request: WatchRequest,
) -> Result<Arc<Watcher>, ConnectError> {
    if state.watchers().count(id) >= crate::watch::MAX_PER_SANDBOX {
        return Err(WatchError::TooMany.into());
    }
    let started_at = state
        .manager()
        .info(id)
        .map_err(lifecycle_error)?
        .started_at;
    let sandbox = id.to_owned();
    with_fs(state, id.to_owned(), move |fs| {
        let place = fs.place(&request.path)?;
        let dir = place
            .dir
            .open_dir(&place.relative)
            .map_err(|e| io_error(e, &place.shown))?;
        Ok(Arc::new(Watcher::new(
            sandbox,
            started_at,
            dir,
            place.shown,
            request.recursive,
            request.include_entry,
        )))
    })
    .await
}

/// Whether `watcher`'s sandbox still runs the life it was created in.
fn still_running(state: &AppState, watcher: &Watcher) -> bool {
    state.manager().info(&watcher.sandbox).is_ok_and(|info| {
        info.state == SandboxState::Running && info.started_at == watcher.started_at
    })
}

/// Compares the watcher's tree off the async workers.
async fn poll(watcher: &Arc<Watcher>) -> Vec<WatchEvent> {
    let watcher = watcher.clone();
    tokio::task::spawn_blocking(move || watcher.poll())
        .await
        .unwrap_or_default()
}

/// `POST /filesystem.Filesystem/WatchDir` (server streaming).
pub async fn watch_dir(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = async {
        let id = envd_sandbox(&state, &headers)?;
        let request: WatchRequest = decode(&headers, body)?;
        let watcher = watcher(&state, &id, request).await?;
        // Registered like a `CreateWatcher` one, so streams count against the sandbox's limit too.
        state.watchers().insert(watcher.clone())?;
        Ok::<_, ConnectError>(watcher)
    }
    .await;
    match started {
        Ok(watcher) => event_stream(state, watcher, keepalive_interval(&headers)),
        Err(error) => stream_error(&error),
    }
}

/// What a `WatchDir` response still has to send.
struct StreamState {
    state: AppState,
    watcher: Arc<Watcher>,
    queue: VecDeque<WatchEvent>,
    poll: tokio::time::Interval,
    keepalive: tokio::time::Interval,
    started: bool,
    done: bool,
}

impl Drop for StreamState {
    /// The client went away (or the stream ended): the watcher stops and is forgotten.
    fn drop(&mut self) {
        self.watcher.end();
    }
}

fn event_stream(state: AppState, watcher: Arc<Watcher>, keepalive: Duration) -> Response {
    let now = tokio::time::Instant::now();
    let st = StreamState {
        state,
        watcher,
        queue: VecDeque::new(),
        poll: tokio::time::interval_at(now + POLL_INTERVAL, POLL_INTERVAL),
        keepalive: tokio::time::interval_at(now + keepalive, keepalive),
        started: false,
        done: false,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        let frame = next_frame(&mut st).await;
        Some((Ok::<_, Infallible>(Bytes::from(frame)), st))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, STREAM_CONTENT_TYPE)],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn next_frame(st: &mut StreamState) -> Vec<u8> {
    let message = |m: serde_json::Value| envelope(0, m.to_string().as_bytes());
    if !st.started {
        st.started = true;
        return message(json!({ "start": {} }));
    }
    loop {
        if let Some(event) = st.queue.pop_front() {
            return message(json!({ "filesystem": event.to_json() }));
        }
        tokio::select! {
            _ = st.poll.tick() => {
                if !still_running(&st.state, &st.watcher) {
                    st.done = true;
                    return end_stream(Some(&WatchError::Ended(st.watcher.id.clone()).into()));
                }
                st.queue.extend(poll(&st.watcher).await);
            }
            _ = st.keepalive.tick() => return message(json!({ "keepalive": {} })),
        }
    }
}

fn keepalive_interval(headers: &HeaderMap) -> Duration {
    headers
        .get("keepalive-ping-interval")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.clamp(1, 3600)))
        .unwrap_or(DEFAULT_KEEPALIVE)
}

/// `POST /filesystem.Filesystem/CreateWatcher`: `{"watcherId"}`; the watcher keeps events until
/// `GetWatcherEvents` takes them.
pub async fn create_watcher(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ConnectError> {
    let id = envd_sandbox(&state, &headers)?;
    let request: WatchRequest = decode(&headers, body)?;
    let watcher = watcher(&state, &id, request).await?;
    state.watchers().insert(watcher.clone())?;
    let background = (state.clone(), watcher.clone());
    tokio::spawn(async move {
        let (state, watcher) = background;
        let mut ticks = tokio::time::interval(POLL_INTERVAL);
        while !watcher.is_ended() {
            ticks.tick().await;
            if !still_running(&state, &watcher) {
                watcher.end();
                break;
            }
            let polled = watcher.clone();
            if tokio::task::spawn_blocking(move || polled.poll_pending())
                .await
                .is_err()
            {
                break;
            }
        }
    });
    Ok(Json(json!({ "watcherId": watcher.id })))
}

/// `POST /filesystem.Filesystem/GetWatcherEvents`: `{"events"}` since the previous call, the tree compared
/// once more first, so a change made just before the call is in the answer.
pub async fn get_watcher_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ConnectError> {
    let id = envd_sandbox(&state, &headers)?;
    let request: WatcherRequest = decode(&headers, body)?;
    let watcher = state.watchers().get(&id, &request.watcher_id)?;
    if watcher.is_ended() || !still_running(&state, &watcher) {
        watcher.end();
        return Err(WatchError::Ended(watcher.id.clone()).into());
    }
    let polled = watcher.clone();
    let events = tokio::task::spawn_blocking(move || {
        polled.poll_pending();
        polled.take()
    })
    .await
    .map_err(|e| ConnectError::from(ApiError::from(e)))?;
    let events: Vec<serde_json::Value> = events.iter().map(WatchEvent::to_json).collect();
    Ok(Json(json!({ "events": events })))
}

/// `POST /filesystem.Filesystem/RemoveWatcher`: `{}`; `not_found` for an unknown watcher.
pub async fn remove_watcher(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ConnectError> {
    let id = envd_sandbox(&state, &headers)?;
    let request: WatcherRequest = decode(&headers, body)?;
    state.watchers().remove(&id, &request.watcher_id)?;
    Ok(Json(json!({})))
}
