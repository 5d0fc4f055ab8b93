//! `stasis serve`: the E2B/Novita-compatible HTTP server on a data directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use stasis_server::config::{DEFAULT_MAX_BODY_BYTES, ServerConfig};

/// Arguments of `stasis serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Directory of sandboxes, blobs, snapshots and secrets.
    #[arg(long, default_value = "./stasis-data")]
    data_dir: PathBuf,
    /// API key clients must send as X-API-KEY. Repeat the option, or separate keys with commas (also in
    /// STASIS_API_KEY), to accept several: each key sees only the sandboxes and snapshots it created.
    /// Generated and stored in the data directory when absent.
    #[arg(
        long = "api-key",
        env = "STASIS_API_KEY",
        hide_env_values = true,
        value_delimiter = ','
    )]
    api_keys: Vec<String>,
    /// Largest request body (uploads included) in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Directory of the compiled-module cache (default: DATA_DIR/cache). Share one between servers, or
    /// test runs, so the interpreter guests are compiled once per machine.
    #[arg(long, env = "STASIS_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Do not load the interpreter guests at start; they are then loaded by the first code-interpreter
    /// call that needs one (which waits for it). For short-lived servers, such as tests restarting one.
    #[arg(long, env = "STASIS_NO_WARM_UP")]
    no_warm_up: bool,
    /// Seconds between two usage samples of each running sandbox (`GET /sandboxes/{id}/metrics`).
    #[arg(long, env = "STASIS_METRICS_INTERVAL", default_value_t = 5.0)]
    metrics_interval: f64,
}

/// Runs the server until SIGINT/SIGTERM.
pub fn serve(args: ServeArgs) -> Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = ServerConfig {
        listen: args.listen,
        data_dir: args.data_dir,
        api_keys: args.api_keys,
        max_body_bytes: args.max_body_bytes,
        cache_dir: args.cache_dir,
        warm_up: !args.no_warm_up,
        metrics_interval: std::time::Duration::try_from_secs_f64(args.metrics_interval)
            .map_err(|e| anyhow::anyhow!("--metrics-interval: {e}"))?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(stasis_server::serve(
        config,
        stasis_server::serve::shutdown_signal(),
    ))?;
    Ok(ExitCode::SUCCESS)
}
