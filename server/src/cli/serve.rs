//! `stasis serve`: the E2B/Novita-compatible HTTP server on a data directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use stasis::lifecycle::{DEFAULT_MAX_PAUSED, DEFAULT_MIN_FREE_DISK, ManagerConfig};
use stasis_server::config::{DEFAULT_MAX_BODY_BYTES, ServerConfig, parse_size};

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
    /// Do not load the interpreter guests at start, nor make the programs' pre-initialised images; they
    /// are then made by the first code-interpreter call or program start that needs one (which waits for
    /// it). For short-lived servers, such as tests restarting one.
    #[arg(long, env = "STASIS_NO_WARM_UP")]
    no_warm_up: bool,
    /// Seconds between two usage samples of each running sandbox (`GET /sandboxes/{id}/metrics`).
    #[arg(long, env = "STASIS_METRICS_INTERVAL", default_value_t = 5.0)]
    metrics_interval: f64,
    /// Most sandboxes running at once; creating or resuming one more answers 429.
    #[arg(long, env = "STASIS_MAX_RUNNING", default_value_t = ManagerConfig::default().max_running)]
    max_running: usize,
    /// Most sandboxes paused at once (they cost disk, not memory); pausing one more answers 429.
    #[arg(long, env = "STASIS_MAX_PAUSED", default_value_t = DEFAULT_MAX_PAUSED)]
    max_paused: usize,
    /// Free space to keep on the data directory's file system (bytes, or e.g. 256MiB, 1G; 0 for no
    /// floor): a pause that finds less is refused with 507 before it writes anything, and the sandbox
    /// keeps running.
    #[arg(long, env = "STASIS_MIN_FREE_DISK", value_parser = parse_size,
        default_value_t = DEFAULT_MIN_FREE_DISK)]
    min_free_disk: u64,
    /// Compact the sandbox index's journal after this many changes (default: as many as there are
    /// sandboxes, at least 4096). For tests that want compactions to happen often.
    #[arg(long, env = "STASIS_COMPACT_JOURNAL_AFTER", hide = true)]
    compact_journal_after: Option<usize>,
    /// The domain sandbox hosts are under: `get_host(8000)` in the SDKs gives `8000-<id>.DOMAIN`, which
    /// must reach this server (default: localhost:<listen port>).
    #[arg(long, env = "STASIS_DOMAIN")]
    domain: Option<String>,
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
        manager: ManagerConfig {
            max_running: args.max_running,
            max_paused: args.max_paused,
            min_free_disk: args.min_free_disk,
            compact_journal_after: args.compact_journal_after,
            ..ManagerConfig::default()
        },
        domain: args.domain,
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
