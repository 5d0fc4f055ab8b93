//! Running the service: bind, serve until SIGINT or SIGTERM, then pause every running sandbox so that a
//! restart finds them paused rather than lost.

use std::future::Future;
use std::net::SocketAddr;

use stasis::RuntimeConfig;
use tokio::net::{TcpListener, TcpSocket};

use crate::app::app;
use crate::config::{API_KEY_FILE, ServerConfig, load_or_create_secret};
use crate::state::AppState;

/// Runs the server described by `config` until `shutdown` completes (see [`shutdown_signal`]).
pub async fn serve(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let api_keys = if config.api_keys.is_empty() {
        let secret = load_or_create_secret(&config.data_dir, API_KEY_FILE)?;
        if secret.created {
            // Printed once, on the start that created it; later starts read it from the file.
            println!(
                "Generated API key (stored in {}): {}",
                config.data_dir.join(API_KEY_FILE).display(),
                secret.value
            );
        }
        vec![secret.value]
    } else {
        config.api_keys.clone()
    };
    let mut runtime = RuntimeConfig::new(&config.data_dir);
    runtime.cache_dir = config.cache_dir.clone();
    let max_body = config.max_body_bytes;
    let manager = config.manager.clone();
    let (state, recovery) = tokio::task::spawn_blocking(move || {
        AppState::open_runtime(runtime, api_keys, max_body, manager)
    })
    .await??;
    state.samples().set_interval(config.metrics_interval);
    // Compile the interpreters (or map them from the module cache) while the server already answers, so
    // the first cell of a code-interpreter sandbox finds them ready.
    if config.warm_up {
        let interpreters = state.interpreters().clone();
        std::thread::Builder::new()
            .name("interpreter-warm-up".into())
            .spawn(move || interpreters.warm_up())?;
    }
    tracing::info!(
        paused = recovery.paused.len(),
        lost = recovery.lost.len(),
        snapshots = recovery.snapshots,
        index_loaded = recovery.index.loaded,
        index_replayed = recovery.index.replayed,
        "data directory opened"
    );
    if let Some(why) = &recovery.index.rebuilt {
        tracing::info!(%why, "the sandbox index was rebuilt from the record files");
    }
    for (path, why) in &recovery.unreadable {
        tracing::warn!(path = %path.display(), %why, "could not be read");
    }
    for id in &recovery.lost {
        tracing::warn!(sandbox = %id, "sandbox was running when the previous server stopped; it is lost");
    }
    let listener = bind(config.listen)?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "listening");
    let domain = config
        .domain
        .clone()
        .unwrap_or_else(|| format!("localhost:{}", address.port()));
    tracing::info!(%domain, "sandbox ports are reached as <port>-<sandboxID>.<domain>");
    state.set_domain(domain);
    // A line on stdout too, so a supervisor (or a test) that asked for port 0 learns the port.
    println!("stasis listening on http://{address}");
    // A make-service, not the router itself: `axum::serve(listener, router)` rebuilds the router
    // (`clone().with_state(())`, a deep copy of every route and handler) for each connection, which on the
    // single accept task was the top user-space cost of the 200-client load run.
    axum::serve(listener, app(state.clone()).into_make_service())
        .with_graceful_shutdown(shutdown)
        .await?;
    tracing::info!("shutting down: pausing running sandboxes");
    let manager = state.manager().clone();
    let report = tokio::task::spawn_blocking(move || manager.shutdown()).await?;
    tracing::info!(paused = report.paused.len(), "running sandboxes paused");
    for (id, error) in &report.failed {
        tracing::error!(sandbox = %id, error = %crate::error::chain(error), "could not pause");
    }
    Ok(())
}

/// Connections the kernel queues for the server before it accepts them (capped by `net.core.somaxconn`).
/// `TcpListener::bind` uses 128, the standard library's value: a burst of more new connections than that
/// (200 SDK clients each opening one) overflows the queue, the kernel drops the SYNs past it, and those
/// clients wait a full SYN retransmission (1 s, then 3 s) before the server even sees them.
pub const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `address` with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as `TcpListener::bind` sets).
pub fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Completes at the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            // Without a SIGTERM handler, SIGINT still works.
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    tracing::info!("signal received");
}
