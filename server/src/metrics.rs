//! The server's Prometheus metrics (`GET /metrics`, OpenMetrics text): sandboxes by state, read from the
//! manager at scrape time so the gauge can never drift from the truth; pause and resume latencies and
//! blob bytes written, observed by the handlers that do them; and requests by route and status.

use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use stasis::lifecycle::{LifecycleError, Manager, SandboxState};

use crate::state::AppState;

/// Every state a sandbox can be reported in; each gets a gauge sample, zero included, so a dashboard
/// sees "0 paused" rather than a missing series.
const STATES: [SandboxState; 5] = [
    SandboxState::Running,
    SandboxState::Pausing,
    SandboxState::Paused,
    SandboxState::Resuming,
    SandboxState::Lost,
];

/// Label of the sandbox gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

/// Labels of the request counter. `route` is the matched route pattern (`/sandboxes/{id}`), never the
/// raw path, so ids do not multiply series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: String,
}

/// Why the metrics could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Listing the sandboxes failed.
    #[error("the sandboxes could not be counted")]
    Count(#[from] LifecycleError),
    /// The exposition could not be written.
    #[error("the metrics could not be encoded")]
    Encode(#[from] std::fmt::Error),
}

/// The server's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    sandboxes: Family<StateLabels, Gauge>,
    pause_seconds: Histogram,
    resume_seconds: Histogram,
    blob_bytes_written: Counter,
    requests: Family<RequestLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty metrics, registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("stasis");
        let sandboxes = Family::<StateLabels, Gauge>::default();
        // 1 ms to ~33 s: a pause of a small sandbox takes milliseconds, one of a large sandbox seconds.
        let pause_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let resume_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let blob_bytes_written = Counter::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("sandboxes", "Sandboxes by state", sandboxes.clone());
        registry.register(
            "pause_seconds",
            "Time to pause a sandbox to its blob, through the API",
            pause_seconds.clone(),
        );
        registry.register(
            "resume_seconds",
            "Time to resume a paused sandbox, through the API",
            resume_seconds.clone(),
        );
        registry.register(
            "blob_bytes_written",
            "Bytes of blobs written by pauses, snapshots and imports through the API",
            blob_bytes_written.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        Self {
            registry,
            sandboxes,
            pause_seconds,
            resume_seconds,
            blob_bytes_written,
            requests,
        }
    }

    /// A pause that took `elapsed` and wrote a blob of `blob_bytes`.
    pub fn observe_pause(&self, elapsed: Duration, blob_bytes: u64) {
        self.pause_seconds.observe(elapsed.as_secs_f64());
        self.blob_bytes_written.inc_by(blob_bytes);
    }

    /// A resume that took `elapsed`.
    pub fn observe_resume(&self, elapsed: Duration) {
        self.resume_seconds.observe(elapsed.as_secs_f64());
    }

    /// A blob of `bytes` written other than by a pause (a snapshot, an import).
    pub fn observe_blob_written(&self, bytes: u64) {
        self.blob_bytes_written.inc_by(bytes);
    }

    /// One answered request.
    pub fn observe_request(&self, route: &str, method: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                status: status.to_string(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition, with the sandbox gauge refreshed from `manager`.
    pub fn encode(&self, manager: &Manager) -> Result<String, MetricsError> {
        let counts = count_by_state(manager)?;
        for (state, count) in STATES.iter().zip(counts) {
            self.sandboxes
                .get_or_create(&StateLabels {
                    state: state.as_str().to_owned(),
                })
                .set(count);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// How many sandboxes are in each of [`STATES`], as the manager's index counts them (no sandbox visited).
fn count_by_state(manager: &Manager) -> Result<[i64; STATES.len()], LifecycleError> {
    Ok(STATES.map(|state| i64::try_from(manager.count(state)).unwrap_or(i64::MAX)))
}

/// Middleware: counts every request by its matched route (`unmatched` for the fallback) and status.
pub async fn track_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    state
        .metrics()
        .observe_request(&route, &method, response.status().as_u16());
    response
}
