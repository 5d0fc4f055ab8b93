//! Running the service: bind, serve until SIGINT or SIGTERM, then pause every running sandbox so that a
//! restart finds them paused rather than lost.

use std::future::Future;

use stasis::lifecycle::ManagerConfig;
use tokio::net::TcpListener;

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
    let data_dir = config.data_dir.clone();
    let max_body = config.max_body_bytes;
    let (state, recovery) = tokio::task::spawn_blocking(move || {
        AppState::open_with_keys(&data_dir, api_keys, max_body, ManagerConfig::default())
    })
    .await??;
    tracing::info!(
        paused = recovery.paused.len(),
        lost = recovery.lost.len(),
        snapshots = recovery.snapshots,
        "data directory opened"
    );
    for id in &recovery.lost {
        tracing::warn!(sandbox = %id, "sandbox was running when the previous server stopped; it is lost");
    }
    let listener = TcpListener::bind(config.listen).await?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "listening");
    // A line on stdout too, so a supervisor (or a test) that asked for port 0 learns the port.
    println!("stasis listening on http://{address}");
    axum::serve(listener, app(state.clone()))
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
