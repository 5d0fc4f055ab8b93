//! `stasis template inspect FILE`: what instrumentation makes of a guest module, offline — whether its calls
//! can be paused mid-way (and why not, when they cannot), how much the unwind stage rewrote, and the size
//! of the module before and after. Exits 1 when the module is refused.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use stasis::instrument::{InstrumentOptions, instrument_with};

/// Arguments of `stasis template`.
#[derive(Args, Debug)]
pub struct TemplateArgs {
    #[command(subcommand)]
    command: TemplateCommand,
}

#[derive(Subcommand, Debug)]
enum TemplateCommand {
    /// Instrument a module as a server would and report what came of it; exits 1 if it is refused.
    Inspect {
        /// The `.wasm` file.
        file: PathBuf,
    },
}

/// Runs `stasis template …`.
pub fn template(args: TemplateArgs) -> Result<ExitCode> {
    match args.command {
        TemplateCommand::Inspect { file } => inspect(&file),
    }
}

fn inspect(file: &std::path::Path) -> Result<ExitCode> {
    let wasm = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    println!("file:          {}", file.display());
    let started = std::time::Instant::now();
    let out = match instrument_with(&wasm, &InstrumentOptions::default()) {
        Ok(out) => out,
        Err(error) => {
            println!("verdict:       REFUSED: {error}");
            return Ok(ExitCode::from(1));
        }
    };
    println!("{}", out.pausable);
    println!(
        "size:          {} -> {} bytes ({:+.1}%)",
        wasm.len(),
        out.wasm.len(),
        (out.wasm.len() as f64 / wasm.len().max(1) as f64 - 1.0) * 100.0
    );
    if let Some(unwind) = &out.unwind {
        println!(
            "unwind stage:  {} functions rewritten, {} unwind points, frame buffer up to {} MiB",
            unwind.rewritten_functions,
            unwind.unwind_points,
            u64::from(unwind.frame_memory_max_pages) * 64 / 1024
        );
        let imports: Vec<&str> = unwind
            .unwind_imports
            .iter()
            .map(|(_, n)| n.as_str())
            .collect();
        println!("unwind imports: {}", imports.join(", "));
    }
    println!(
        "state:         {} globals, {} memories, {} tables exported",
        out.globals.len(),
        out.memories.len(),
        out.tables.len()
    );
    println!("took:          {:.2?}", started.elapsed());
    Ok(ExitCode::SUCCESS)
}
