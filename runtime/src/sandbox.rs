//! A live sandbox: a private directory (the guest's `/`), the processes alive in it, and the operations on
//! them — call a reactor, spawn one, start a command module ([`crate::command`]) or run one to completion.
//! Pausing and resuming are the pipeline stages of [`crate::capture`] and [`crate::restore`].

use std::collections::{BTreeMap, btree_map::Entry};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use wasmtime::Val;

use crate::command::{Command, CommandControl, CommandIo, arm};
use crate::instantiate::{SpawnError, initialize, instantiate, new_store};
use crate::limits::SandboxLimits;
use crate::process::{CallError, Process};
use crate::runtime::Runtime;
use crate::template::{ModuleKind, Template};
use crate::usage::SandboxUsage;
use crate::wasi::{
    DiskQuota, Interrupt, Mount, OutputSink, Stdin, StopReason, WasiConfig, WasiCtx, WasiLimits,
};

/// How a sandbox is created.
#[derive(Debug, Clone, Default)]
pub struct SandboxOptions {
    /// The host directory the guest sees as `/`. It is created if missing. When `None`, a fresh directory
    /// under the runtime's data directory is used and removed again when the sandbox is paused or dropped.
    pub dir: Option<PathBuf>,
    /// Arguments every process of the sandbox sees (after the program name).
    pub args: Vec<String>,
    /// Environment variables every process of the sandbox sees.
    pub env: Vec<(String, String)>,
    /// User metadata kept with the sandbox, and in its blobs.
    pub metadata: BTreeMap<String, String>,
    /// Limits; the runtime's defaults when `None`.
    pub limits: Option<SandboxLimits>,
    /// Host directories every process of the sandbox sees besides its root (volumes), in this order.
    /// They are not part of the sandbox: a pause leaves them out of the blob, and a resume must be given
    /// the same mounts ([`crate::ResumeOptions::mounts`]).
    pub mounts: Vec<Mount>,
}

/// Why a sandbox could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The sandbox directory could not be created.
    #[error("could not create the sandbox directory {path}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// The template's reactor could not be started.
    #[error("could not start the template's process")]
    Spawn(#[from] SpawnError),
}

/// Why a command could not be run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The sandbox is paused; resume it first.
    #[error("the sandbox is paused")]
    Paused,
    /// Only command modules (with `_start`) can be run.
    #[error("template {0} is a reactor module; spawn it instead of running it")]
    NotACommand(String),
    /// The command could not be set up.
    #[error("could not start the command")]
    Spawn(#[from] SpawnError),
}

/// A live process of a sandbox, as [`Sandbox::processes`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The process id inside the sandbox.
    pub pid: u32,
    /// Name of the template the process runs.
    pub template: String,
    /// The label it was spawned with (empty for none).
    pub label: String,
    /// Whether a trap or a CPU timeout left it unusable until it is killed and spawned again.
    pub poisoned: bool,
}

pub use crate::command::CommandOutput;

/// A live sandbox.
pub struct Sandbox {
    pub(crate) runtime: Runtime,
    pub(crate) template: Template,
    pub(crate) dir: PathBuf,
    /// Whether the runtime created `dir` and so removes it when the sandbox releases it.
    pub(crate) owns_dir: bool,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) limits: SandboxLimits,
    /// The disk quota of the sandbox directory, shared by all its processes.
    pub(crate) quota: Arc<DiskQuota>,
    pub(crate) processes: BTreeMap<u32, Process>,
    pub(crate) next_pid: u32,
    pub(crate) paused: bool,
    /// Commands started and not yet seen to end; they count against `max_processes`.
    pub(crate) commands: Vec<CommandControl>,
    /// Extra host directories every process sees (see [`SandboxOptions::mounts`]).
    pub(crate) mounts: Vec<Mount>,
    /// What the sandbox's processes use, shared with their stores (see [`crate::usage`]).
    pub(crate) usage: Arc<SandboxUsage>,
}

impl Runtime {
    /// Creates a sandbox from `template`. A reactor template is started at once as process 1 (its start
    /// function and `_initialize` run); a command template starts nothing until [`Sandbox::run`].
    pub fn create_sandbox(
        &self,
        template: &Template,
        options: SandboxOptions,
    ) -> Result<Sandbox, CreateError> {
        let (dir, owns_dir) = match options.dir {
            Some(dir) => (dir, false),
            None => (
                self.config().data_dir.join("scratch").join(random_name()),
                true,
            ),
        };
        std::fs::create_dir_all(&dir).map_err(|source| CreateError::Dir {
            path: dir.clone(),
            source,
        })?;
        let limits = options
            .limits
            .unwrap_or_else(|| self.config().limits.clone());
        let mut sandbox = Sandbox {
            runtime: self.clone(),
            template: template.clone(),
            dir,
            owns_dir,
            args: options.args,
            env: options.env,
            metadata: options.metadata,
            quota: Arc::new(DiskQuota::new(limits.max_disk_bytes, limits.max_files)),
            limits,
            processes: BTreeMap::new(),
            next_pid: 1,
            paused: false,
            commands: Vec::new(),
            mounts: options.mounts,
            usage: SandboxUsage::new(),
        };
        if template.kind() == ModuleKind::Reactor {
            sandbox.spawn(template)?;
        }
        Ok(sandbox)
    }
}

impl Sandbox {
    /// The template the sandbox was created from.
    pub fn template(&self) -> &Template {
        &self.template
    }

    /// The host directory the guest sees as `/`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The sandbox's metadata.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The sandbox's limits.
    pub fn limits(&self) -> &SandboxLimits {
        &self.limits
    }

    /// Whether the sandbox has been paused (its processes released).
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// The extra host directories the sandbox's processes see.
    pub fn mounts(&self) -> &[Mount] {
        &self.mounts
    }

    /// What the sandbox's processes use right now (memory, CPU time), readable from any thread.
    pub fn usage(&self) -> Arc<SandboxUsage> {
        self.usage.clone()
    }

    /// Ids of the live processes, in ascending order.
    pub fn pids(&self) -> Vec<u32> {
        self.processes.keys().copied().collect()
    }

    /// The WASI configuration for a new process of this sandbox.
    pub(crate) fn wasi_config(&self, program: &str, args: &[String], stdin: Stdin) -> WasiConfig {
        let mut argv = Vec::with_capacity(args.len() + 1);
        argv.push(program.to_owned());
        argv.extend(args.iter().cloned());
        WasiConfig {
            args: argv,
            env: self.env.clone(),
            root: Some(self.dir.clone()),
            mounts: self.mounts.clone(),
            stdin,
            stdout: OutputSink::capture(self.limits.max_output_bytes),
            stderr: OutputSink::capture(self.limits.max_output_bytes),
            limits: WasiLimits {
                max_open_fds: self.limits.max_open_fds as usize,
                max_path_len: self.limits.max_path_len as usize,
                disk_quota: Some(self.quota.clone()),
            },
        }
    }

    /// Every live process: its id, module, label and whether a trap poisoned it, in ascending pid order.
    pub fn processes(&self) -> Vec<ProcessInfo> {
        self.processes
            .values()
            .map(|p| ProcessInfo {
                pid: p.pid,
                template: p.template.name().to_owned(),
                label: p.label.clone(),
                poisoned: p.poisoned,
            })
            .collect()
    }

    /// Starts a new reactor process from `template` and returns its id.
    pub fn spawn(&mut self, template: &Template) -> Result<u32, SpawnError> {
        self.spawn_labeled(template, "")
    }

    /// Like [`Sandbox::spawn`], naming the process `label`: a name of the embedder's that is saved with the
    /// process and listed by [`Sandbox::processes`], so it can find the process again after a resume.
    pub fn spawn_labeled(&mut self, template: &Template, label: &str) -> Result<u32, SpawnError> {
        if self.paused {
            return Err(SpawnError::Paused);
        }
        if template.kind() != ModuleKind::Reactor {
            return Err(SpawnError::NotAReactor(template.name().to_owned()));
        }
        self.check_process_limit()?;
        let wasi = WasiCtx::new(self.wasi_config(template.name(), &self.args, Stdin::Empty))?;
        let engine = self.runtime.engine();
        let mut store = new_store(engine, &self.limits, wasi, &self.usage);
        let instance = instantiate(template, &mut store)?;
        let pid = self.next_pid;
        let mut process = Process {
            pid,
            template: template.clone(),
            store,
            instance,
            poisoned: false,
            label: label.to_owned(),
        };
        let cpu = self.usage.running();
        let initialized = initialize(template, &mut process.store, &instance);
        drop(cpu);
        if let Err(error) = initialized {
            return Err(SpawnError::Init(
                process.classify_trap(error, self.limits.cpu_time_per_call),
            ));
        }
        self.next_pid += 1;
        self.processes.insert(pid, process);
        Ok(pid)
    }

    /// Calls handler `name` of the sandbox's main process (the template's reactor, the lowest live pid).
    pub fn call(&mut self, name: &str, request: &[u8]) -> Result<Vec<u8>, CallError> {
        let pid = *self.processes.keys().next().ok_or(if self.paused {
            CallError::Paused
        } else {
            CallError::NoMainProcess
        })?;
        self.call_process(pid, name, request)
    }

    /// Calls handler `name` of process `pid` with `request` and returns the handler's response.
    ///
    /// A call that traps or runs past the CPU limit poisons the process: later calls fail with
    /// [`CallError::Poisoned`] until it is killed and spawned again. A guest that exits ends its process.
    pub fn call_process(
        &mut self,
        pid: u32,
        name: &str,
        request: &[u8],
    ) -> Result<Vec<u8>, CallError> {
        if self.paused {
            return Err(CallError::Paused);
        }
        let ticks = self
            .runtime
            .engine()
            .ticks_for(self.limits.cpu_time_per_call);
        let process = self
            .processes
            .get_mut(&pid)
            .ok_or(CallError::NoSuchProcess(pid))?;
        let result = process.call(
            name,
            request,
            ticks,
            self.limits.cpu_time_per_call,
            self.limits.max_response_bytes,
        );
        if matches!(result, Err(CallError::Exited(_))) {
            self.processes.remove(&pid);
        }
        result
    }

    /// Calls any export `name` of process `pid` with plain wasm values, for guests that do not use the
    /// reactor ABI of `stasis-guest`. The same CPU limit and poisoning rules as [`Sandbox::call_process`]
    /// apply.
    pub fn invoke(&mut self, pid: u32, name: &str, params: &[Val]) -> Result<Vec<Val>, CallError> {
        if self.paused {
            return Err(CallError::Paused);
        }
        let ticks = self
            .runtime
            .engine()
            .ticks_for(self.limits.cpu_time_per_call);
        let cpu_limit = self.limits.cpu_time_per_call;
        let process = self
            .processes
            .get_mut(&pid)
            .ok_or(CallError::NoSuchProcess(pid))?;
        let result = process.invoke(name, params, ticks, cpu_limit);
        if matches!(result, Err(CallError::Exited(_))) {
            self.processes.remove(&pid);
        }
        result
    }

    /// Ends process `pid`; returns whether it was alive.
    pub fn kill_process(&mut self, pid: u32) -> bool {
        self.processes.remove(&pid).is_some()
    }

    /// Takes what process `pid` wrote to stdout since the last call to this.
    pub fn take_stdout(&mut self, pid: u32) -> Vec<u8> {
        self.processes
            .get_mut(&pid)
            .map(|p| p.store.data_mut().wasi.take_stdout())
            .unwrap_or_default()
    }

    /// Takes what process `pid` wrote to stderr since the last call to this.
    pub fn take_stderr(&mut self, pid: u32) -> Vec<u8> {
        self.processes
            .get_mut(&pid)
            .map(|p| p.store.data_mut().wasi.take_stderr())
            .unwrap_or_default()
    }

    /// Runs command module `template` to completion in this sandbox's directory, with `args` after the
    /// program name and `stdin` as its standard input, and returns its output and exit code.
    pub fn run(
        &mut self,
        template: &Template,
        args: &[String],
        stdin: &[u8],
    ) -> Result<CommandOutput, RunError> {
        self.run_with_env(template, args, &[], stdin)
    }

    /// Like [`Sandbox::run`], with `env` added to the sandbox's environment for this command only (a name
    /// given in both takes the value from `env`): what a server needs to honour a request's own variables,
    /// such as `PWD`, without changing the sandbox's.
    pub fn run_with_env(
        &mut self,
        template: &Template,
        args: &[String],
        env: &[(String, String)],
        stdin: &[u8],
    ) -> Result<CommandOutput, RunError> {
        let io = CommandIo {
            stdin: Stdin::Bytes(stdin.to_vec()),
            stdout: OutputSink::capture(self.limits.max_output_bytes),
            stderr: OutputSink::capture(self.limits.max_output_bytes),
        };
        Ok(self.start_command(template, args, env, io)?.run())
    }

    /// Prepares command module `template` to run in this sandbox's directory with `args` after the program
    /// name, `env` added to the sandbox's environment, and `io` as its streams; [`Command::run`] runs it,
    /// on any thread and without the sandbox (see [`crate::command`]). Until it ends it counts against
    /// the sandbox's process limit, and pausing or dropping the sandbox stops it.
    pub fn start_command(
        &mut self,
        template: &Template,
        args: &[String],
        env: &[(String, String)],
        io: CommandIo,
    ) -> Result<Command, RunError> {
        if self.paused {
            return Err(RunError::Paused);
        }
        if template.kind() != ModuleKind::Command {
            return Err(RunError::NotACommand(template.name().to_owned()));
        }
        self.check_process_limit()?;
        let pipe = match &io.stdin {
            Stdin::Pipe(pipe) => Some(pipe.clone()),
            _ => None,
        };
        let mut config = self.wasi_config(template.name(), args, io.stdin);
        config.stdout = io.stdout;
        config.stderr = io.stderr;
        for (name, value) in env {
            config.env.retain(|(n, _)| n != name);
            config.env.push((name.clone(), value.clone()));
        }
        let interrupt = Arc::new(Interrupt::new());
        let mut wasi = WasiCtx::new(config).map_err(SpawnError::from)?;
        wasi.set_interrupt(interrupt.clone());
        let engine = self.runtime.engine();
        let mut store = new_store(engine, &self.limits, wasi, &self.usage);
        let wall_deadline = Instant::now().checked_add(self.limits.wall_time_per_command);
        arm(
            &mut store,
            interrupt.clone(),
            engine.ticks_for(self.limits.cpu_time_per_call),
            wall_deadline,
        );
        let instance = instantiate(template, &mut store)?;
        let control = CommandControl::new(interrupt, pipe);
        self.commands.push(control.clone());
        Ok(Command {
            store,
            instance,
            template: template.clone(),
            control,
            cpu_limit: self.limits.cpu_time_per_call,
            wall_limit: self.limits.wall_time_per_command,
            wall_deadline,
        })
    }

    /// How many commands started in this sandbox are still running.
    pub fn running_commands(&mut self) -> usize {
        self.commands.retain(|c| !c.is_finished());
        self.commands.len()
    }

    /// Stops every running command for `reason` and waits until they have all ended.
    pub fn stop_commands(&mut self, reason: StopReason) {
        for command in &self.commands {
            command.stop(reason);
        }
        for command in self.commands.drain(..) {
            command.wait();
        }
    }

    /// Fails when live reactors and running commands together reach the process limit.
    fn check_process_limit(&mut self) -> Result<(), SpawnError> {
        if self.processes.len() + self.running_commands() >= self.limits.max_processes as usize {
            return Err(SpawnError::TooManyProcesses(self.limits.max_processes));
        }
        Ok(())
    }

    /// The sha256 of all of process `pid`'s linear memories, in index order: two processes with equal
    /// digests have identical memory.
    pub fn memory_digest(&mut self, pid: u32) -> Option<[u8; 32]> {
        let process = self.processes.get_mut(&pid)?;
        let mut hasher = Sha256::new();
        for memory in &process.template.inner.layout.memories {
            let memory = process
                .instance
                .get_memory(&mut process.store, &memory.export_name)?;
            hasher.update(memory.data(&process.store));
        }
        Some(hasher.finalize().into())
    }

    /// Removes the sandbox directory if the runtime created it.
    pub(crate) fn release_dir(&mut self) {
        if self.owns_dir {
            // Best effort: a directory we cannot remove is garbage, not lost data (the blob has it).
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Registers a restored process under its saved id.
    pub(crate) fn insert_process(&mut self, process: Process) {
        self.next_pid = self.next_pid.max(process.pid + 1);
        if let Entry::Vacant(slot) = self.processes.entry(process.pid) {
            slot.insert(process);
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Commands write into the directory about to be removed: they end first.
        self.stop_commands(StopReason::SandboxGone);
        self.processes.clear();
        self.release_dir();
    }
}

/// A random, URL-safe name for a directory: 128 bits from the OS's generator.
pub(crate) fn random_name() -> String {
    let mut bytes = [0u8; 16];
    crate::lifecycle::id::fill_random(&mut bytes);
    hex::encode(bytes)
}
