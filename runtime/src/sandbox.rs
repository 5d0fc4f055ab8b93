//! A live sandbox: a private directory (the guest's `/`), the processes alive in it, and the operations on
//! them — call a reactor (here, or on another thread: [`crate::call`]), spawn one, start a command module
//! ([`crate::command`]) or run one to completion, continue the processes a resume brought back suspended.
//! Pausing and resuming are the pipeline stages of [`crate::capture`] and [`crate::restore`].
//!
//! The process table: every process is either *held* by the sandbox (a reactor between calls, or any
//! process suspended in a call by a pause, waiting to be continued) or *running* on a thread of its own (a
//! command, a handler call started with [`Sandbox::start_call`]), reached through its
//! [`crate::running::Control`]. A running process that finishes comes back (a reactor) or leaves the table
//! (a command) the next time the sandbox is used.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::Val;

use crate::call::ProcessCall;
use crate::command::{Command, CommandIo, prepare};
use crate::instantiate::{SpawnError, initialize, new_process};
use crate::kernel::spawn::Launcher;
use crate::kernel::{ChildInfo, Kernel};
use crate::limits::SandboxLimits;
use crate::net::{ConnectError, EgressPolicy, HostStream, Network};
use crate::process::{CallError, Process};
use crate::running::{Control, StdinWake};
use crate::runtime::Runtime;
use crate::state::ProcessKind;
use crate::template::{ModuleKind, Template};
use crate::usage::SandboxUsage;
use crate::wasi::{
    DiskQuota, Mount, OutputSink, Stdin, StopReason, UnwindGlobals, WasiConfig, WasiCtx, WasiLimits,
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
    /// The policy for its guests' outbound connections; the default one (no loopback, link-local or
    /// private addresses) when `None`.
    pub egress: Option<EgressPolicy>,
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
    /// No suspended command has this id.
    #[error("no suspended command {0} in this sandbox")]
    NoSuchCommand(u32),
    /// The command could not be set up.
    #[error("could not start the command")]
    Spawn(#[from] SpawnError),
}

/// Where a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessStatus {
    /// A reactor between calls.
    Idle,
    /// Running on a thread of its own (a command, or a handler call).
    Running,
    /// Suspended in a call by a pause, and not continued yet since the resume.
    Suspended,
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
    /// A reactor or a command.
    pub kind: ProcessKind,
    /// Idle, running or suspended.
    pub status: ProcessStatus,
}

pub use crate::command::CommandOutput;

/// A process of the sandbox's table.
pub(crate) enum Entry {
    /// Held by the sandbox: a reactor between calls, or a process suspended in a call.
    Held(Box<Process>),
    /// Running on a thread of its own.
    Running(Control),
}

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
    pub(crate) processes: BTreeMap<u32, Entry>,
    /// Starts the processes that processes start, and gives every process its pid.
    pub(crate) kernel: Arc<Kernel>,
    pub(crate) paused: bool,
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
        let quota = Arc::new(DiskQuota::new(limits.max_disk_bytes, limits.max_files));
        let usage = SandboxUsage::new();
        let network = Network::new(dir.display().to_string(), limits.network());
        if let Some(policy) = options.egress {
            network.set_egress_policy(policy);
        }
        let kernel = new_kernel(
            self,
            &dir,
            &options.mounts,
            &limits,
            &quota,
            &usage,
            network,
        );
        let mut sandbox = Sandbox {
            runtime: self.clone(),
            template: template.clone(),
            dir,
            owns_dir,
            args: options.args,
            env: options.env,
            metadata: options.metadata,
            quota,
            limits,
            processes: BTreeMap::new(),
            kernel,
            paused: false,
            mounts: options.mounts,
            usage,
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

    /// The sandbox's virtual network: the ports its guests listen on, [`Network::connect`] to reach
    /// them from the host, and the egress policy. Clones are the same network; it is closed when the
    /// sandbox is paused or dropped (a resumed sandbox has a new one).
    pub fn network(&self) -> Network {
        self.kernel.network().clone()
    }

    /// The ports the sandbox's guests listen on, ascending.
    pub fn listening_ports(&self) -> Vec<u16> {
        self.kernel.network().listening_ports()
    }

    /// Connects to the guest listening on `port`, as a client outside the sandbox (see
    /// [`Network::connect`]).
    pub fn connect(&self, port: u16) -> Result<HostStream, ConnectError> {
        self.kernel.network().connect(port)
    }

    /// The policy for the guests' outbound connections.
    pub fn egress_policy(&self) -> EgressPolicy {
        self.kernel.network().egress_policy()
    }

    /// Replaces the policy for the guests' outbound connections (open connections stay open).
    pub fn set_egress_policy(&self, policy: EgressPolicy) {
        self.kernel.network().set_egress_policy(policy);
    }

    /// Ids of the live processes, in ascending order.
    pub fn pids(&mut self) -> Vec<u32> {
        self.reap();
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

    /// Brings back into the table the running processes whose runs have ended.
    pub(crate) fn reap(&mut self) {
        for control in self.kernel.take_started() {
            self.processes
                .insert(control.pid(), Entry::Running(control));
        }
        let ended: Vec<(u32, Option<Box<Process>>)> = self
            .processes
            .iter()
            .filter_map(|(&pid, entry)| match entry {
                Entry::Running(control) => control.take_finished().map(|back| (pid, back)),
                Entry::Held(_) => None,
            })
            .collect();
        for (pid, back) in ended {
            self.kernel.orphan(pid);
            match back {
                Some(process) => {
                    self.processes.insert(pid, Entry::Held(process));
                }
                None => {
                    self.processes.remove(&pid);
                }
            }
        }
    }

    /// The processes that processes of the sandbox started (a shell running `python3`), with their
    /// parents and argv, in pid order — also those that ended and were not waited for yet. They are in
    /// [`Sandbox::processes`] too while they run.
    pub fn children(&mut self) -> Vec<ChildInfo> {
        self.reap();
        self.kernel.children()
    }

    /// Every live process — its id, module, label, kind and where it is — in ascending pid order.
    pub fn processes(&mut self) -> Vec<ProcessInfo> {
        self.reap();
        self.processes
            .values()
            .map(|entry| match entry {
                Entry::Held(p) => ProcessInfo {
                    pid: p.pid,
                    template: p.template.name().to_owned(),
                    label: p.label.clone(),
                    poisoned: p.poisoned,
                    kind: p.kind,
                    status: if p.suspended.is_some() {
                        ProcessStatus::Suspended
                    } else {
                        ProcessStatus::Idle
                    },
                },
                Entry::Running(c) => ProcessInfo {
                    pid: c.pid(),
                    template: c.template().to_owned(),
                    label: c.label().to_owned(),
                    poisoned: false,
                    kind: c.kind(),
                    status: ProcessStatus::Running,
                },
            })
            .collect()
    }

    /// The control of process `pid` while it runs on a thread of its own: to wait for its call to end
    /// before making another, or to stop it.
    pub fn running(&mut self, pid: u32) -> Option<Control> {
        self.reap();
        match self.processes.get(&pid)? {
            Entry::Running(control) => Some(control.clone()),
            Entry::Held(_) => None,
        }
    }

    /// Instantiates `template` as a new process (not initialised), with its own interrupt and the unwind
    /// stage's globals handed to its WASI context, able to start others through the sandbox's kernel.
    pub(crate) fn new_process(
        &self,
        template: &Template,
        pid: u32,
        label: &str,
        kind: ProcessKind,
        mut wasi: WasiCtx,
    ) -> Result<Process, SpawnError> {
        wasi.set_process_host(pid, self.kernel.clone());
        wasi.set_network(self.kernel.network().clone());
        new_process(
            self.runtime.engine(),
            &self.limits,
            &self.usage,
            template,
            pid,
            label,
            kind,
            wasi,
        )
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
        let pid = self.kernel.allocate_pid();
        let mut process = self.new_process(template, pid, label, ProcessKind::Reactor, wasi)?;
        let instance = process.instance;
        let cpu = self.usage.running();
        let initialized = initialize(template, &mut process.store, &instance);
        drop(cpu);
        if let Err(error) = initialized {
            return Err(SpawnError::Init(
                process.classify_trap(error, self.limits.cpu_time_per_call),
            ));
        }
        self.processes.insert(pid, Entry::Held(Box::new(process)));
        Ok(pid)
    }

    /// The lowest pid of a reactor: the sandbox's main process.
    fn main_pid(&mut self) -> Result<u32, CallError> {
        self.reap();
        if self.paused {
            return Err(CallError::Paused);
        }
        self.processes
            .iter()
            .find(|(_, entry)| match entry {
                Entry::Held(p) => p.kind == ProcessKind::Reactor,
                Entry::Running(c) => c.kind() == ProcessKind::Reactor,
            })
            .map(|(&pid, _)| pid)
            .ok_or(CallError::NoMainProcess)
    }

    /// Calls handler `name` of the sandbox's main process (the template's reactor, the lowest live pid).
    pub fn call(&mut self, name: &str, request: &[u8]) -> Result<Vec<u8>, CallError> {
        let pid = self.main_pid()?;
        self.call_process(pid, name, request)
    }

    /// Calls handler `name` of process `pid` with `request` on this thread and returns the handler's
    /// response; what the process prints stays for [`Sandbox::take_stdout`]. A process suspended in a call
    /// by a pause finishes that call first.
    ///
    /// A call that traps or runs past the CPU limit poisons the process: later calls fail with
    /// [`CallError::Poisoned`] until it is killed and spawned again. A guest that exits ends its process.
    pub fn call_process(
        &mut self,
        pid: u32,
        name: &str,
        request: &[u8],
    ) -> Result<Vec<u8>, CallError> {
        let mut call = self.checkout_call(pid, Some((name.to_owned(), request.to_vec())))?;
        call.keep_output = true;
        let result = call.run().result;
        self.reap();
        if matches!(result, Err(CallError::Exited(_))) {
            self.processes.remove(&pid);
        }
        result
    }

    /// Takes reactor process `pid` out of the sandbox to call handler `name` with `request` on any thread
    /// ([`ProcessCall::run`]), without the sandbox: the sandbox can be used — and paused, which suspends
    /// the call — meanwhile. The process comes back when the call ends.
    pub fn start_call(
        &mut self,
        pid: u32,
        name: &str,
        request: &[u8],
    ) -> Result<ProcessCall, CallError> {
        self.checkout_call(pid, Some((name.to_owned(), request.to_vec())))
    }

    /// Like [`Sandbox::start_call`], to finish the call process `pid` was suspended in by a pause: after a
    /// resume, what makes an interrupted call go on (on a thread of the caller's).
    pub fn continue_call(&mut self, pid: u32) -> Result<ProcessCall, CallError> {
        match self.processes.get(&pid) {
            Some(Entry::Held(p)) if p.suspended.is_some() && p.kind == ProcessKind::Reactor => {}
            _ => return Err(CallError::NoSuchProcess(pid)),
        }
        self.checkout_call(pid, None)
    }

    fn checkout_call(
        &mut self,
        pid: u32,
        call: Option<(String, Vec<u8>)>,
    ) -> Result<ProcessCall, CallError> {
        self.reap();
        if self.paused {
            return Err(CallError::Paused);
        }
        let process = match self.processes.remove(&pid) {
            Some(Entry::Held(process)) => process,
            Some(running @ Entry::Running(_)) => {
                self.processes.insert(pid, running);
                return Err(CallError::Busy(pid));
            }
            None => return Err(CallError::NoSuchProcess(pid)),
        };
        if process.kind != ProcessKind::Reactor {
            let pid = process.pid;
            self.processes.insert(pid, Entry::Held(process));
            return Err(CallError::NotAReactor(pid));
        }
        let control = Control::new(
            &process,
            StdinWake::None,
            self.runtime.engine().engine().clone(),
        );
        self.processes.insert(pid, Entry::Running(control.clone()));
        let engine = self.runtime.engine();
        Ok(ProcessCall {
            process: Some(process),
            control,
            call,
            ticks: engine.ticks_for(self.limits.cpu_time_per_call),
            tick: engine.epoch_tick(),
            cpu_limit: self.limits.cpu_time_per_call,
            max_response: self.limits.max_response_bytes,
            keep_output: false,
        })
    }

    /// Calls any export `name` of process `pid` with plain wasm values, for guests that do not use the
    /// reactor ABI of `stasis-guest`. The same CPU limit and poisoning rules as [`Sandbox::call_process`]
    /// apply.
    pub fn invoke(&mut self, pid: u32, name: &str, params: &[Val]) -> Result<Vec<Val>, CallError> {
        self.reap();
        if self.paused {
            return Err(CallError::Paused);
        }
        let ticks = self
            .runtime
            .engine()
            .ticks_for(self.limits.cpu_time_per_call);
        let cpu_limit = self.limits.cpu_time_per_call;
        let process = match self.processes.get_mut(&pid) {
            Some(Entry::Held(process)) => process,
            Some(Entry::Running(_)) => return Err(CallError::Busy(pid)),
            None => return Err(CallError::NoSuchProcess(pid)),
        };
        let result = process.invoke(name, params, ticks, cpu_limit);
        if matches!(result, Err(CallError::Exited(_))) {
            self.processes.remove(&pid);
        }
        result
    }

    /// Ends process `pid` (a running one is stopped: SIGKILL); returns whether it was alive.
    pub fn kill_process(&mut self, pid: u32) -> bool {
        self.reap();
        match self.processes.remove(&pid) {
            Some(Entry::Held(_)) => {
                // A suspended child killed before it continued: its parent's wait sees the kill.
                if self.kernel.is_child(pid) {
                    self.kernel.exited(pid, StopReason::Kill.exit_code());
                }
                true
            }
            Some(Entry::Running(control)) => {
                control.stop(StopReason::Kill);
                self.processes.insert(pid, Entry::Running(control));
                true
            }
            None => false,
        }
    }

    /// Stops child `pid` (a program a process of the sandbox started, [`Sandbox::children`]) for
    /// `reason`; false when no such child runs.
    pub fn stop_child(&mut self, pid: u32, reason: StopReason) -> bool {
        self.reap();
        match self.processes.get(&pid) {
            Some(Entry::Running(control)) if self.kernel.is_child(pid) => control.stop(reason),
            _ => false,
        }
    }

    /// Takes what process `pid` wrote to stdout since the last call to this.
    pub fn take_stdout(&mut self, pid: u32) -> Vec<u8> {
        match self.processes.get_mut(&pid) {
            Some(Entry::Held(p)) => p.store.data_mut().wasi.take_stdout(),
            _ => Vec::new(),
        }
    }

    /// Takes what process `pid` wrote to stderr since the last call to this.
    pub fn take_stderr(&mut self, pid: u32) -> Vec<u8> {
        match self.processes.get_mut(&pid) {
            Some(Entry::Held(p)) => p.store.data_mut().wasi.take_stderr(),
            _ => Vec::new(),
        }
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
        let output = self.start_command(template, args, env, io)?.run();
        self.reap();
        Ok(output)
    }

    /// Prepares command module `template` to run in this sandbox's directory with `args` after the program
    /// name, `env` added to the sandbox's environment, and `io` as its streams; [`Command::run`] runs it,
    /// on any thread and without the sandbox (see [`crate::command`]). Until it ends it counts against
    /// the sandbox's process limit, and pausing or dropping the sandbox suspends or stops it.
    pub fn start_command(
        &mut self,
        template: &Template,
        args: &[String],
        env: &[(String, String)],
        io: CommandIo,
    ) -> Result<Command, RunError> {
        self.start_command_labeled(template, args, env, io, "")
    }

    /// Like [`Sandbox::start_command`], naming the command `label`: saved with it should a pause suspend
    /// it, so the embedder finds it again after the resume ([`Sandbox::suspended`]) — a server keeps its
    /// client-visible id, tag and configuration there.
    pub fn start_command_labeled(
        &mut self,
        template: &Template,
        args: &[String],
        env: &[(String, String)],
        io: CommandIo,
        label: &str,
    ) -> Result<Command, RunError> {
        self.reap();
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
        let wasi = WasiCtx::new(config).map_err(SpawnError::from)?;
        let pid = self.kernel.allocate_pid();
        let process = self.new_process(template, pid, label, ProcessKind::Command, wasi)?;
        Ok(self.launch(Box::new(process), pipe, Duration::ZERO, Duration::ZERO))
    }

    /// Continues command `pid`, suspended by a pause and brought back by a resume, with `io` as its streams:
    /// the returned command, when run, carries on exactly where it was (a sleep sleeps what was left of
    /// it). When `io`'s stdin is a pipe, what the command had not read of its old one comes first, and the
    /// pipe is closed if the old one was.
    pub fn continue_command(&mut self, pid: u32, io: CommandIo) -> Result<Command, RunError> {
        self.reap();
        if self.paused {
            return Err(RunError::Paused);
        }
        if self.kernel.is_child(pid) {
            // A child's streams are its parent's: it continues with it ([`Sandbox::continue_children`]).
            return Err(RunError::NoSuchCommand(pid));
        }
        let mut process = match self.processes.remove(&pid) {
            Some(Entry::Held(p)) if p.suspended.is_some() && p.kind == ProcessKind::Command => p,
            Some(other) => {
                self.processes.insert(pid, other);
                return Err(RunError::NoSuchCommand(pid));
            }
            None => return Err(RunError::NoSuchCommand(pid)),
        };
        let suspended = process
            .suspended
            .clone()
            .unwrap_or_else(|| crate::state::SuspendedCall {
                export: "_start".into(),
                args: Vec::new(),
                cpu_used_ms: 0,
                wall_used_ms: 0,
                stdin: None,
            });
        let pipe = match &io.stdin {
            Stdin::Pipe(pipe) => {
                if let Some(saved) = &suspended.stdin {
                    // Within the pipe's capacity when it is at least the old one's, as the server's are.
                    let _ = pipe.write(&saved.unread);
                    if saved.closed {
                        pipe.close();
                    }
                }
                Some(pipe.clone())
            }
            _ => None,
        };
        let stdin = match (io.stdin, &suspended.stdin) {
            (Stdin::Bytes(more), Some(saved)) => {
                let mut bytes = saved.unread.clone();
                bytes.extend_from_slice(&more);
                Stdin::Bytes(bytes)
            }
            (stdin, _) => stdin,
        };
        process
            .store
            .data_mut()
            .wasi
            .replace_stdio(stdin, io.stdout, io.stderr);
        let command = self.launch(
            process,
            pipe,
            Duration::from_millis(suspended.cpu_used_ms),
            Duration::from_millis(suspended.wall_used_ms),
        );
        // The programs it had started continue with it, now that the streams they share are its new ones.
        self.continue_children();
        Ok(command)
    }

    /// Registers a command's process as running and arms its budgets, less what it used before a pause.
    fn launch(
        &mut self,
        process: Box<Process>,
        pipe: Option<crate::wasi::StdinPipe>,
        cpu_used: Duration,
        wall_used: Duration,
    ) -> Command {
        let command = prepare(
            self.runtime.engine(),
            &self.limits,
            process,
            pipe.map_or(StdinWake::None, StdinWake::Own),
            (cpu_used, wall_used),
        );
        self.processes
            .insert(command.control.pid(), Entry::Running(command.control()));
        command
    }

    /// The processes a resume brought back suspended in a call, not continued yet: commands to continue
    /// with [`Sandbox::continue_command`], reactors with [`Sandbox::continue_call`] (or by calling them).
    ///
    /// Children that processes of the sandbox started are not listed: they continue with the command
    /// whose streams they share ([`Sandbox::continue_command`] continues them, and
    /// [`Sandbox::continue_children`] does for orphans).
    pub fn suspended(&mut self) -> Vec<ProcessInfo> {
        let kernel = self.kernel.clone();
        self.processes()
            .into_iter()
            .filter(|p| p.status == ProcessStatus::Suspended && !kernel.is_child(p.pid))
            .collect()
    }

    /// Continues every child a resume brought back suspended (a program a shell had started when the
    /// pause came), each on a thread of its own, exactly where it was: its pipes hold what they held and
    /// its streams are those of the processes that handed them down. Returns how many continued.
    pub fn continue_children(&mut self) -> usize {
        self.reap();
        if self.paused {
            return 0;
        }
        let mut continued = 0;
        for pid in self.kernel.suspended() {
            let process = match self.processes.remove(&pid) {
                Some(Entry::Held(p)) if p.suspended.is_some() => p,
                Some(other) => {
                    self.processes.insert(pid, other);
                    continue;
                }
                None => continue,
            };
            let (cpu_used, wall_used) = process
                .suspended
                .as_ref()
                .map_or((0, 0), |call| (call.cpu_used_ms, call.wall_used_ms));
            let stdin = process.store.data().wasi.fd0_stdin_pipe();
            let command = prepare(
                self.runtime.engine(),
                &self.limits,
                process,
                stdin.map_or(StdinWake::None, StdinWake::Shared),
                (
                    Duration::from_millis(cpu_used),
                    Duration::from_millis(wall_used),
                ),
            );
            self.processes
                .insert(pid, Entry::Running(command.control()));
            if self.kernel.continue_child(pid, command) {
                continued += 1;
            }
        }
        continued
    }

    /// How many commands started in this sandbox are still running.
    pub fn running_commands(&mut self) -> usize {
        self.reap();
        self.processes
            .values()
            .filter(|e| matches!(e, Entry::Running(c) if c.kind() == ProcessKind::Command))
            .count()
    }

    /// Stops every running process (commands and handler calls) for `reason` and waits until they have
    /// all ended.
    pub fn stop_commands(&mut self, reason: StopReason) {
        let running: Vec<Control> = self
            .processes
            .values()
            .filter_map(|e| match e {
                Entry::Running(c) => Some(c.clone()),
                Entry::Held(_) => None,
            })
            .collect();
        for control in &running {
            control.stop(reason);
        }
        for control in &running {
            // One parked by a pause that never decided (its sandbox is going away) is released.
            if let crate::running::Waited::Parked(_) = control.wait_parked(Instant::now()) {
                control.release();
            }
            control.wait();
        }
        self.reap();
    }

    /// Fails when live processes (running commands included) reach the process limit.
    fn check_process_limit(&mut self) -> Result<(), SpawnError> {
        if self.processes.len() >= self.limits.max_processes as usize {
            return Err(SpawnError::TooManyProcesses(self.limits.max_processes));
        }
        Ok(())
    }

    /// The sha256 of all of process `pid`'s own linear memories (not the unwind stage's frame buffer), in
    /// index order: two processes with equal digests have identical memory.
    pub fn memory_digest(&mut self, pid: u32) -> Option<[u8; 32]> {
        self.reap();
        let Some(Entry::Held(process)) = self.processes.get_mut(&pid) else {
            return None;
        };
        let layout = &process.template.inner.layout;
        let frames = layout.unwind.as_ref().map(|u| u.frame_memory);
        let mut hasher = Sha256::new();
        for memory in &layout.memories {
            if Some(memory.index) == frames {
                continue;
            }
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
        self.kernel.reserve_pid(process.pid);
        self.processes
            .entry(process.pid)
            .or_insert_with(|| Entry::Held(Box::new(process)));
    }
}

/// Hands the instance's unwind-stage globals to its WASI context, for modules that have them.
pub(crate) fn attach_unwind_globals(
    template: &Template,
    store: &mut wasmtime::Store<crate::process::ProcessData>,
    instance: &wasmtime::Instance,
) -> Result<(), SpawnError> {
    let Some(unwind) = &template.inner.layout.unwind else {
        return Ok(());
    };
    let global = |store: &mut wasmtime::Store<_>, index: u32| {
        instance
            .get_global(&mut *store, &crate::instrument::global_export_name(index))
            .ok_or_else(|| {
                SpawnError::Instantiate(wasmtime::Error::msg(format!(
                    "the unwind global {index} is not exported"
                )))
            })
    };
    let state = global(store, unwind.state_global)?;
    let countdown = match unwind.countdown_global {
        Some(index) => Some(global(store, index)?),
        None => None,
    };
    store
        .data_mut()
        .wasi
        .set_unwind_globals(UnwindGlobals { state, countdown });
    Ok(())
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Running processes write into the directory about to be removed: they end first.
        self.stop_commands(StopReason::SandboxGone);
        self.processes.clear();
        self.kernel.network().close();
        self.release_dir();
    }
}

/// A random, URL-safe name for a directory: 128 bits from the OS's generator.
/// The kernel of a sandbox with these directories and limits.
pub(crate) fn new_kernel(
    runtime: &Runtime,
    dir: &Path,
    mounts: &[Mount],
    limits: &SandboxLimits,
    quota: &Arc<DiskQuota>,
    usage: &Arc<SandboxUsage>,
    network: Network,
) -> Arc<Kernel> {
    Kernel::new(
        Launcher {
            runtime: runtime.clone(),
            dir: dir.to_owned(),
            mounts: mounts.to_vec(),
            limits: limits.clone(),
            quota: quota.clone(),
            usage: usage.clone(),
            network,
        },
        1,
    )
}

pub(crate) fn random_name() -> String {
    let mut bytes = [0u8; 16];
    crate::lifecycle::id::fill_random(&mut bytes);
    hex::encode(bytes)
}
