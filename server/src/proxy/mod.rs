//! Requests to the services in sandboxes: a request addressed to port P of a sandbox ([`address`]) is
//! forwarded over a new connection to the guest listening on P ([`forward`], over [`stream`]); every
//! other request goes on to this server's own routes.
//!
//! Traffic is public, as on E2B by default: no API key is needed, the unguessable sandbox id in the host
//! is the address. A sandbox created with `allowPublicTraffic: false` wants its traffic token in
//! `E2b-Traffic-Access-Token` (or `Novita-Traffic-Access-Token`). A request that carries a valid API key
//! of another tenant is answered as for an unknown sandbox. A paused sandbox answers 502 naming it,
//! unless its lifecycle resumes it on activity: then the request resumes it and is served.

pub mod address;
pub mod forward;
pub mod stream;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use stasis::ConnectError;
use stasis::lifecycle::LifecycleError;

use self::address::{Address, Target, address};
use crate::auth::{API_KEY_HEADER, SANDBOX_ID_HEADERS, TRAFFIC_TOKEN_HEADERS, constant_time_eq};
use crate::error::ApiError;
use crate::state::AppState;

/// Middleware: forwards requests for a sandbox's port, passes the rest on. Envd and Jupyter hosts
/// (`49983-<id>.<domain>`) go to this server's planes with the sandbox id header set from the host.
pub async fn route(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let domain = state.domain();
    match address(request.uri(), request.headers(), domain.as_deref()) {
        Ok(Address::Server) => next.run(request).await,
        Ok(Address::Plane { sandbox, .. }) => {
            let headers = request.headers_mut();
            if !SANDBOX_ID_HEADERS.iter().any(|h| headers.contains_key(*h))
                && let Ok(value) = HeaderValue::from_str(&sandbox)
            {
                headers.insert(SANDBOX_ID_HEADERS[0], value);
            }
            next.run(request).await
        }
        Ok(Address::Guest(target)) => match proxy(&state, target, request).await {
            Ok(response) => response,
            Err(error) => error.into_response(),
        },
        Err(error) => ApiError::bad_request(error.to_string()).into_response(),
    }
}

/// How long a connection waits for room in a full backlog before the request is answered 503.
const BACKLOG_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Checks access to `target`, connects to it (resuming its sandbox if its policy says so) and forwards.
async fn proxy(
    state: &AppState,
    target: Target,
    mut request: Request,
) -> Result<Response, ApiError> {
    let Target {
        sandbox,
        port,
        path_and_query,
    } = target;
    authorize(state, &sandbox, &mut request)?;
    // A full backlog is waited out for a while, as a host's TCP retries a SYN its listener had no room
    // for: a burst of clients larger than the backlog is served, not refused; one that outlasts the wait
    // is 503.
    let deadline = tokio::time::Instant::now() + BACKLOG_WAIT;
    let mut pause = std::time::Duration::from_millis(1);
    let stream = loop {
        let manager = state.manager().clone();
        let id = sandbox.clone();
        let connected =
            crate::api::blocking(move || manager.with_sandbox(&id, |s| s.connect(port)))
                .await?
                .map_err(|error| lifecycle_error(&sandbox, error))?;
        match connected {
            Err(ConnectError::BacklogFull(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_millis(20));
            }
            other => break other.map_err(|error| connect_error(&sandbox, port, error))?,
        }
    };
    forward::forward(stream, request, &path_and_query)
        .await
        .map_err(|error| {
            tracing::debug!(sandbox = %sandbox, port, error = %crate::error::chain(&error), "proxy");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("port {port} of sandbox {sandbox}: {error}"),
            )
        })
}

/// 404 for an unknown sandbox or another tenant's (by the API key the request carries, if any);
/// 401/403 without the right traffic token when the sandbox's traffic is not public. The traffic token
/// is this server's secret, not the service's: it is removed before forwarding.
fn authorize(state: &AppState, sandbox: &str, request: &mut Request) -> Result<(), ApiError> {
    let info = state.manager().info(sandbox).map_err(ApiError::from)?;
    let headers = request.headers();
    let caller = headers
        .get(API_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|key| state.authenticate(key));
    if let Some(caller) = caller
        && info.owner.as_deref() != Some(caller.owner())
    {
        return Err(ApiError::from(LifecycleError::NotFound(sandbox.to_owned())));
    }
    let private = info
        .network
        .as_ref()
        .is_some_and(|n| n.allow_public_traffic == Some(false));
    let token = TRAFFIC_TOKEN_HEADERS
        .iter()
        .find_map(|h| headers.get(*h))
        .map(|v| v.as_bytes().to_vec());
    if private {
        let token = token.ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                format!("sandbox {sandbox} is not public: send its traffic token in E2b-Traffic-Access-Token"),
            )
        })?;
        if !constant_time_eq(&token, state.access_token(sandbox).as_bytes()) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "the traffic token is not this sandbox's",
            ));
        }
    }
    for header in TRAFFIC_TOKEN_HEADERS {
        request.headers_mut().remove(header);
    }
    Ok(())
}

/// A sandbox that cannot take the connection: paused (without auto-resume) or lost is 502 naming it.
fn lifecycle_error(sandbox: &str, error: LifecycleError) -> ApiError {
    match error {
        LifecycleError::Paused(_) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("sandbox {sandbox} is paused: resume it (connect) to reach its services"),
        ),
        LifecycleError::Lost(_) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("sandbox {sandbox} was lost when the server stopped: its services are gone"),
        ),
        other => ApiError::from(other),
    }
}

/// Nothing listening is 502; a backlog still full after [`BACKLOG_WAIT`], or too many connections, is
/// 503 (retrying may succeed).
fn connect_error(sandbox: &str, port: u16, error: ConnectError) -> ApiError {
    let status = match error {
        ConnectError::NotListening(_) | ConnectError::Closed => StatusCode::BAD_GATEWAY,
        ConnectError::BacklogFull(_) | ConnectError::TooManyConnections(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    let message = match error {
        ConnectError::NotListening(_) => {
            format!("nothing listens on port {port} in sandbox {sandbox}")
        }
        ConnectError::Closed => format!("sandbox {sandbox} is paused or gone"),
        other => format!("port {port} of sandbox {sandbox}: {other}"),
    };
    ApiError::new(status, message)
}
