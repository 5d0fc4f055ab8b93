//! `stasis run`: a WASI command module under Stasis's own preview1 host, with stdio passed through and the
//! guest's exit code as the process's own — the same contract as `wasmtime run`, so tools written for that
//! (the WASI testsuite's adapters, for one) can drive Stasis's host.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args;
use stasis::wasi::{Mount, OutputSink, ProcExit, Stdin, WasiConfig, WasiCtx, add_to_linker};

/// Arguments of `stasis run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// A host directory to preopen, as `HOST::GUEST` (or `HOST`, seen under the same name). Preopens get
    /// fds 3, 4, … in the order given; there are no others.
    #[arg(long = "dir", value_name = "HOST::GUEST")]
    dirs: Vec<String>,
    /// An environment variable for the guest, as `NAME=VALUE`.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    envs: Vec<String>,
    /// The `.wasm` command module to run.
    module: PathBuf,
    /// Arguments passed to the guest after its program name.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// Runs the module and returns the guest's exit code.
pub fn run(args: RunArgs) -> Result<ExitCode> {
    // Like `wasmtime run`: the guest sees exactly the `--dir` preopens, in order, from fd 3 (the testsuite's
    // programs probe fd 3 expecting EBADF when given none). A guest name of `/` is an ordinary preopen here.
    let mounts = args
        .dirs
        .iter()
        .map(|dir| {
            let (host, guest) = dir.split_once("::").unwrap_or((dir.as_str(), dir.as_str()));
            Mount {
                host: host.into(),
                guest: guest.to_owned(),
                read_only: false,
                quota: None,
            }
        })
        .collect();
    let mut env = Vec::new();
    for pair in &args.envs {
        let Some((name, value)) = pair.split_once('=') else {
            bail!("--env takes NAME=VALUE, got {pair:?}")
        };
        env.push((name.to_owned(), value.to_owned()));
    }
    let program = args
        .module
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut config = WasiConfig::without_root();
    config.args = std::iter::once(program)
        .chain(args.args.iter().cloned())
        .collect();
    config.env = env;
    config.mounts = mounts;
    config.stdin = Stdin::Reader(Box::new(std::io::stdin()));
    config.stdout = OutputSink::callback(|bytes| {
        let mut out = std::io::stdout().lock();
        // A closed stdout (a pipe whose reader left) is the guest's problem to notice, not a host failure.
        let _ = out.write_all(bytes).and_then(|()| out.flush());
    });
    config.stderr = OutputSink::callback(|bytes| {
        let _ = std::io::stderr().write_all(bytes);
    });

    let engine = wasmtime::Engine::default();
    let module = wasmtime::Module::from_file(&engine, &args.module)
        .map_err(|e| anyhow::anyhow!("loading {}: {e:?}", args.module.display()))?;
    let mut linker = wasmtime::Linker::new(&engine);
    add_to_linker(&mut linker, |ctx: &mut WasiCtx| ctx)?;
    let mut store = wasmtime::Store::new(&engine, WasiCtx::new(config)?);
    let instance = linker.instantiate(&mut store, &module)?;
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .map_err(|e| anyhow::anyhow!("the module has no _start: {e}"))?;
    match start.call(&mut store, ()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(error) => match error.downcast_ref::<ProcExit>() {
            Some(&ProcExit(code)) => Ok(ExitCode::from(code as u8)),
            None => {
                eprintln!("Error: the guest trapped: {error:?}");
                Ok(ExitCode::from(134))
            }
        },
    }
}
