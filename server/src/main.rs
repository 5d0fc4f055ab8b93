//! `stasis`: the Stasis command-line tool.
//!
//! - `stasis run [--dir HOST::GUEST]... [--env K=V]... MODULE [ARGS...]` runs a WASI command module with
//!   Stasis's own `wasi_snapshot_preview1` host, the way `wasmtime run` does.
//! - `stasis serve [--listen ADDR] [--data-dir DIR] [--api-key KEY]` serves the E2B/Novita-compatible API.
//! - `stasis sandbox list|create|pause|resume|kill|exec` is a client of a running server (`--url`,
//!   `--api-key` or `STASIS_API_KEY`).
//! - `stasis blob inspect FILE` shows and verifies a blob, offline.

mod cli;

use clap::{Parser, Subcommand};

/// The Stasis command-line tool.
#[derive(Parser, Debug)]
#[command(
    name = "stasis",
    version,
    about = "WebAssembly sandboxes that pause to a blob and resume exactly where they were"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a WASI command module with Stasis's WASI host; exits with the guest's exit code.
    Run(cli::run::RunArgs),
    /// Serve the E2B/Novita-compatible HTTP API; SIGINT/SIGTERM pause running sandboxes and stop.
    Serve(cli::serve::ServeArgs),
    /// Manage sandboxes on a running server.
    Sandbox(cli::sandbox::SandboxArgs),
    /// Look at blob files, offline.
    Blob(cli::blob::BlobArgs),
    /// Look at what instrumentation makes of a guest module, offline.
    Template(cli::template::TemplateArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Run(args) => cli::run::run(args),
        Command::Serve(args) => cli::serve::serve(args),
        Command::Sandbox(args) => cli::sandbox::sandbox(args),
        Command::Blob(args) => cli::blob::blob(args),
        Command::Template(args) => cli::template::template(args),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("Error: {error:?}");
            std::process::ExitCode::from(1)
        }
    }
}
