//! Per-sandbox resource limits and their defaults.
//!
//! A guest is untrusted code: every resource it can consume on the host has a bound here. The memory bound
//! is enforced by wasmtime's `ResourceLimiter` (a `memory.grow` beyond it fails in the guest), CPU time by
//! epoch interruption (the call traps with a timeout and the process must be restarted), and the rest by the
//! WASI host (errno to the guest).

use std::time::Duration;

/// Limits applied to one sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Largest linear memory one process may grow to, in bytes.
    pub max_memory_bytes: u64,
    /// Longest a single call into a guest may run before it is interrupted: a handler call's wall time
    /// (its host sleeps included), a command's time spent running wasm (sleeps and stdin waits excluded).
    pub cpu_time_per_call: Duration,
    /// Longest a command may take from start to end in wall time, sleeps and stdin waits included; the
    /// bound for a command that mostly waits, which [`SandboxLimits::cpu_time_per_call`] does not catch.
    pub wall_time_per_command: Duration,
    /// Most bytes of file content the sandbox's directory may hold.
    pub max_disk_bytes: u64,
    /// Most files and directories the sandbox's directory may hold.
    pub max_files: u64,
    /// Most file descriptors one process may hold open.
    pub max_open_fds: u32,
    /// Longest path a guest may pass to the filesystem, in bytes.
    pub max_path_len: u32,
    /// Most bytes of stdout (and, separately, stderr) kept per process between reads.
    pub max_output_bytes: usize,
    /// Largest response a reactor handler may return, in bytes.
    pub max_response_bytes: u64,
    /// Most processes that may be alive in one sandbox at once.
    pub max_processes: u32,
    /// How long a pause or snapshot waits for a running process to unwind (it does at its next sleep,
    /// read or loop header, so within microseconds when it can); one that has not by then is ended
    /// (pause) or makes the snapshot fail.
    pub suspend_deadline: Duration,
    /// Most ports the sandbox's guests may listen on at once (one more `listen` is `ENFILE`).
    pub max_listeners: u32,
    /// Most connections alive in the sandbox at once: accepted, waiting to be, and outbound.
    pub max_connections: u32,
    /// Bytes a connection buffers each way; a writer finding the buffer full waits for the reader.
    pub socket_buffer_bytes: u32,
}

impl SandboxLimits {
    /// The bounds of the sandbox's network.
    pub fn network(&self) -> crate::net::NetworkLimits {
        crate::net::NetworkLimits {
            max_listeners: self.max_listeners as usize,
            max_connections: self.max_connections as usize,
            buffer_bytes: self.socket_buffer_bytes as usize,
            ..crate::net::NetworkLimits::default()
        }
    }
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            max_memory_bytes: 2 << 30,
            cpu_time_per_call: Duration::from_secs(30),
            wall_time_per_command: Duration::from_secs(3600),
            max_disk_bytes: 1 << 30,
            max_files: 100_000,
            max_open_fds: 1024,
            max_path_len: 4096,
            max_output_bytes: 16 << 20,
            max_response_bytes: 64 << 20,
            max_processes: 64,
            suspend_deadline: Duration::from_secs(2),
            max_listeners: 64,
            max_connections: 512,
            socket_buffer_bytes: 64 * 1024,
        }
    }
}
