//! Starting a program: looking its name up among the runtime's programs, giving it a WASI context over
//! the sandbox's directories with the fds its parent handed down, and instantiating it as a command
//! ([`crate::Command`]) with the sandbox's budgets, from its pre-initialised image ([`super::preinit`]) when
//! it has one: what [`crate::Sandbox::start_command`] does for the commands an embedder starts, without
//! the sandbox's lock.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::Kernel;
use crate::command::{Command, prepare};
use crate::instantiate::{SpawnError, new_process};
use crate::limits::SandboxLimits;
use crate::running::StdinWake;
use crate::runtime::Runtime;
use crate::state::ProcessKind;
use crate::template::ModuleKind;
use crate::usage::SandboxUsage;
use crate::wasi::errno::Errno;
use crate::wasi::process::{ChildStdio, SpawnRequest};
use crate::wasi::{DiskQuota, Mount, OutputSink, Stdin, WasiConfig, WasiCtx, WasiLimits};

/// The export a reactor program runs: the reactor ABI's `main` handler.
pub(crate) const MAIN_EXPORT: &str = "stasis_handle_main";

/// What a sandbox's children are made of: its runtime (engine and programs), directories and limits.
pub(crate) struct Launcher {
    pub(crate) runtime: Runtime,
    pub(crate) dir: PathBuf,
    pub(crate) mounts: Vec<Mount>,
    pub(crate) limits: SandboxLimits,
    pub(crate) quota: Arc<DiskQuota>,
    pub(crate) usage: Arc<SandboxUsage>,
    /// The sandbox's network, which every process shares.
    pub(crate) network: crate::net::Network,
}

impl Launcher {
    /// Process `pid`, running `request` with `stdio`, ready to run.
    pub(crate) fn command(
        &self,
        kernel: Arc<Kernel>,
        pid: u32,
        request: &SpawnRequest,
        stdio: ChildStdio,
    ) -> Result<Command, Errno> {
        let template = self.runtime.program(&request.program).ok_or(Errno::Noent)?;
        if template.kind() == ModuleKind::Reactor && !template.exports_function(MAIN_EXPORT) {
            return Err(Errno::Noexec);
        }
        let mut env = request.env.clone();
        if let Some(cwd) = &request.cwd {
            env.retain(|(name, _)| name != "PWD");
            env.push(("PWD".into(), cwd.clone()));
        }
        let config = WasiConfig {
            args: request.args.clone(),
            env,
            root: Some(self.dir.clone()),
            mounts: self.mounts.clone(),
            stdin: Stdin::Empty,
            stdout: OutputSink::discard(),
            stderr: OutputSink::discard(),
            limits: WasiLimits {
                max_open_fds: self.limits.max_open_fds as usize,
                max_path_len: self.limits.max_path_len as usize,
                disk_quota: Some(self.quota.clone()),
            },
        };
        let mut wasi = WasiCtx::new(config).map_err(|_| Errno::Io)?;
        for (fd, entry) in (0..).zip(stdio) {
            if let Some(entry) = entry {
                wasi.install_stdio(fd, entry);
            }
        }
        let stdin = wasi.fd0_stdin_pipe();
        wasi.set_process_host(pid, kernel);
        wasi.set_network(self.network.clone());
        let mut process = new_process(
            self.runtime.engine(),
            &self.limits,
            &self.usage,
            &template,
            pid,
            "",
            ProcessKind::Command,
            wasi,
        )
        .map_err(|error| match error {
            SpawnError::TooManyProcesses(_) => Errno::Again,
            _ => Errno::Nomem,
        })?;
        // From its image, the program's memory and globals are those of its start, already made: nothing
        // of its initialisation runs again. An image that does not fit this instance (a memory limit below
        // its size) means a child that cannot start at all, as a fresh start would fail the same way.
        let initialized = match self.runtime.program_image(&template) {
            Some(image) => {
                image
                    .apply(&template, &mut process.store, &process.instance)
                    .map_err(|error| {
                        tracing::warn!(
                            program = template.name(),
                            %error,
                            "the program's image does not fit its process"
                        );
                        Errno::Nomem
                    })?;
                true
            }
            None => false,
        };
        let mut command = prepare(
            self.runtime.engine(),
            &self.limits,
            Box::new(process),
            stdin.map_or(StdinWake::None, StdinWake::Shared),
            (Duration::ZERO, Duration::ZERO),
        );
        command.initialized = initialized;
        Ok(command)
    }
}
