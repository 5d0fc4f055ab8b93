//! `stasis-bench`: measures Stasis's pause, resume, fork, create, command and density figures against the
//! machine's own limits measured in the same run, then the server under concurrent load, and writes
//! `results.json`, `report.md` and a plot. Exits non-zero if any request of the load run failed.
//!
//! `cargo run --release -p stasis-bench -- [--quick] [--out DIR]`
//! `cargo run --release -p stasis-bench -- --load-only [--load-secs 20] [--url http://HOST:PORT --api-key KEY]`
//! `cargo run --release -p stasis-bench -- --store-only [--store-count 100000]`

mod http;
mod load;
mod network;
mod programs;
mod reference;
mod report;
mod scenarios;
mod stats;
mod store;
mod unwind;

use std::path::PathBuf;

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Parser;
use stasis::lifecycle::ManagerConfig;

use crate::scenarios::Bench;
use crate::stats::Measurement;

/// Benchmark harness for Stasis.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// A short run (under three minutes on two cores): smaller sizes and fewer repetitions.
    #[arg(long)]
    quick: bool,
    /// Where to write results.json, report.md and latency.svg.
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
    /// Samples per figure (default: 3 quick, 7 full).
    #[arg(long)]
    repeats: Option<usize>,
    /// Memory sizes (MiB) of the pause/resume scenario, instead of the mode's (quick: 1,16,64; full:
    /// 1,16,64,256,1024).
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<usize>,
    /// Run only the pause/resume scenario.
    #[arg(long)]
    pause_resume_only: bool,
    /// Run only the load scenario.
    #[arg(long, conflicts_with = "pause_resume_only")]
    load_only: bool,
    /// Concurrent clients of the load scenario.
    #[arg(long, default_value_t = 200)]
    load_clients: usize,
    /// Seconds the load scenario runs (default: 3 quick, 20 full).
    #[arg(long)]
    load_secs: Option<u64>,
    /// Drive the server at this URL (`http://HOST:PORT`) in the load scenario instead of one started
    /// in this process; it must allow `--load-clients` running sandboxes.
    #[arg(long, requires = "api_key")]
    url: Option<String>,
    /// The API key of the server at `--url`.
    #[arg(long)]
    api_key: Option<String>,
    /// Run only the Python code-interpreter scenario.
    #[arg(long, conflicts_with_all = ["pause_resume_only", "load_only"])]
    python_only: bool,
    /// Run only the unwind stage's scenarios (its overhead; pausing and resuming a running command).
    #[arg(long, conflicts_with_all = ["pause_resume_only", "load_only", "python_only", "store_only"])]
    unwind_only: bool,
    /// Run only the program-start scenario (a program through host pipes; `python3 -c pass` from the
    /// shell unless `--quick`).
    #[arg(long, conflicts_with_all = ["pause_resume_only", "load_only", "python_only", "unwind_only"])]
    programs_only: bool,
    /// Run only the guest-service scenario: `--load-clients` clients at once against the HTTP service of
    /// `examples/service` in a sandbox for `--load-secs`, through its virtual network (against the same
    /// service on the host) and through a Stasis server's routing to its port.
    #[arg(long, conflicts_with_all = ["pause_resume_only", "load_only", "python_only", "unwind_only", "programs_only"])]
    network_only: bool,
    /// Run only the store-at-scale scenario (many paused sandboxes in one data directory).
    #[arg(long, conflicts_with_all = ["pause_resume_only", "load_only", "python_only"])]
    store_only: bool,
    /// Paused sandboxes of the store scenario (default: 2,000 quick, 100,000 full).
    #[arg(long)]
    store_count: Option<usize>,
    /// Make the store scenario's data directories in this directory and keep them (to look at, or to
    /// serve with `stasis serve --data-dir DIR/store-COUNT`; its API key is `bench-key`).
    #[arg(long)]
    store_dir: Option<PathBuf>,
    /// Internal: serve this data directory as `stasis serve` does (the store scenario's server process).
    #[arg(long, hide = true)]
    serve_child: Option<PathBuf>,
    /// Internal: the compiled-module cache of `--serve-child`.
    #[arg(long, hide = true, requires = "serve_child")]
    serve_cache: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(data_dir) = args.serve_child {
        return store::serve_child(data_dir, args.serve_cache);
    }
    let repeats = args.repeats.unwrap_or(if args.quick { 3 } else { 7 });
    let work = tempfile::Builder::new()
        .prefix("stasis-bench-")
        .tempdir_in(std::env::temp_dir())?;
    let bench = Bench::new(work.path(), repeats)?;
    let mode_sizes: &[usize] = if args.quick {
        &[1, 16, 64]
    } else {
        &[1, 16, 64, 256, 1024]
    };
    let sizes = if args.sizes.is_empty() {
        mode_sizes
    } else {
        &args.sizes[..]
    };
    let fork_counts: &[usize] = if args.quick { &[1, 10] } else { &[1, 10, 100] };

    println!("{}", report::PUBLISHED);
    println!("{}", report::table_header());
    let mut results: Vec<Measurement> = Vec::new();

    if args.load_only {
        let errors = record_load(&mut results, &args, work.path())?;
        return finish(&args, &results, errors);
    }
    if args.python_only {
        record(&mut results, scenarios::python(&bench)?);
        return finish(&args, &results, 0);
    }
    if args.programs_only {
        record(&mut results, programs::start(&bench, args.quick)?);
        return finish(&args, &results, 0);
    }
    let network_secs = args.load_secs.unwrap_or(if args.quick { 2 } else { 10 }) as f64;
    if args.network_only {
        record(
            &mut results,
            network::load(&bench, args.load_clients, network_secs)?,
        );
        record(
            &mut results,
            network::load_through_server(work.path(), args.load_clients, network_secs)?,
        );
        return finish(&args, &results, 0);
    }
    if args.unwind_only {
        record(&mut results, unwind::suspended_command(&bench)?);
        record(&mut results, unwind::overhead(&bench, args.quick)?);
        return finish(&args, &results, 0);
    }
    let store = store::StoreOptions {
        count: args
            .store_count
            .unwrap_or(if args.quick { 2_000 } else { 100_000 }),
        due: if args.quick { 100 } else { 1_000 },
        repeats,
    };
    let store_work = args
        .store_dir
        .clone()
        .unwrap_or_else(|| work.path().to_owned());
    if args.store_only {
        record(&mut results, store::run(&store_work, &store)?);
        return finish(&args, &results, 0);
    }
    for contents in ["typical", "random"] {
        for &mib in sizes {
            record(
                &mut results,
                scenarios::pause_resume(&bench, mib, contents)?,
            );
        }
    }
    if args.pause_resume_only {
        report::write_all(&args.out, &results, &machine_description(), args.quick)?;
        println!(
            "\nwrote {}/results.json, report.md and latency.svg",
            args.out.display()
        );
        return Ok(());
    }
    record(
        &mut results,
        scenarios::incremental(&bench, if args.quick { 64 } else { 256 })?,
    );
    for &count in fork_counts {
        record(
            &mut results,
            scenarios::fork(&bench, if args.quick { 16 } else { 64 }, count)?,
        );
    }
    record(&mut results, scenarios::create(&bench)?);
    record(&mut results, scenarios::command_round_trip(&bench)?);
    record(&mut results, unwind::suspended_command(&bench)?);
    record(&mut results, unwind::overhead(&bench, args.quick)?);
    record(&mut results, programs::start(&bench, args.quick)?);
    record(
        &mut results,
        network::load(&bench, args.load_clients, network_secs)?,
    );
    record(
        &mut results,
        network::load_through_server(work.path(), args.load_clients, network_secs)?,
    );
    record(
        &mut results,
        scenarios::density(&bench, if args.quick { 50 } else { 500 })?,
    );
    record(&mut results, scenarios::python(&bench)?);
    record(&mut results, store::run(&store_work, &store)?);
    let errors = record_load(&mut results, &args, work.path())?;
    finish(&args, &results, errors)
}

/// Runs the load scenario against the server at `--url` or a new one in this process (its data under
/// `work`), records its rows and returns how many requests failed.
fn record_load(
    results: &mut Vec<Measurement>,
    args: &Args,
    work: &std::path::Path,
) -> Result<usize> {
    let options = load::LoadOptions {
        clients: args.load_clients,
        duration: Duration::from_secs(args.load_secs.unwrap_or(if args.quick { 3 } else { 20 })),
    };
    let server = match (&args.url, &args.api_key) {
        (Some(url), Some(key)) => http::Server::at(url, key)?,
        _ => {
            let config = ManagerConfig::default();
            if config.max_running < options.clients {
                bail!(
                    "{} clients need {} running sandboxes; the server allows {}",
                    options.clients,
                    options.clients,
                    config.max_running
                );
            }
            // Tokio's default worker count, as `stasis serve` runs.
            http::Server::start_with(&work.join("load-data"), config, None)?
        }
    };
    let outcome = load::run(&server, &options)?;
    record(results, outcome.measurements);
    for error in &outcome.first_errors {
        eprintln!("load error: {error}");
    }
    Ok(outcome.errors)
}

/// Writes the report, then fails if the load run had errors.
fn finish(args: &Args, results: &[Measurement], load_errors: usize) -> Result<()> {
    let machine = machine_description();
    report::write_all(&args.out, results, &machine, args.quick)?;
    println!(
        "\nwrote {}/results.json, report.md and latency.svg",
        args.out.display()
    );
    if load_errors > 0 {
        bail!("{load_errors} requests of the load run failed");
    }
    Ok(())
}

/// Prints a batch of measurements as table rows and keeps them.
fn record(results: &mut Vec<Measurement>, batch: Vec<Measurement>) {
    for m in &batch {
        println!("{}", report::table_row(m));
    }
    results.extend(batch);
}

/// CPU model, core count and memory of this machine, for the report.
fn machine_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|kib| kib.parse::<u64>().ok())
        .map(|kib| format!("{:.1} GiB", kib as f64 / (1 << 20) as f64))
        .unwrap_or_else(|| "unknown memory".into());
    format!("{cpu}, {cores} cores, {memory}")
}
