//! Reactors that can also be run as programs: one build of a module serves both as a long-lived reactor
//! (handlers called again and again, as a code interpreter's cells are) and as a command-line program
//! (`python3 script.py`, `node -e …`) started by the sandbox's shell.
//!
//! # The convention
//!
//! A reactor module that exports the handler [`MAIN_HANDLER`] (the export `stasis_handle_main`) can be run as
//! a program. To run it, the host
//!
//! 1. instantiates a fresh instance of the module and runs its `_initialize`;
//! 2. calls handler `main` once, with an **empty** request;
//! 3. reads the exit status from the response.
//!
//! What the program sees is what any WASI program sees:
//!
//! - its argv from `args_get` ([`std::env::args`]): argv\[0\] is the program's name as typed (`python3`),
//!   then its arguments;
//! - its environment from `environ_get` ([`std::env::vars`]);
//! - its stdin, stdout and stderr as WASI fds 0, 1 and 2, which may be pipes: it reads stdin until end of
//!   file, and everything it wrote is flushed before the handler returns;
//! - its working directory from the variable `PWD`: when it is set, the program changes into it before
//!   anything else, so relative paths resolve against it (WASI has no working directory of its own; wasi-libc
//!   keeps one per instance, starting at `/`).
//!
//! The handler's OK response is the exit status as ASCII decimal (`b"0"`, `b"2"`), from 0 to 255: as POSIX
//! `exit` does, only the low 8 bits of the status the program returns are kept. An error response
//! ([`crate::STATUS_ERROR`]) is a host-level failure — the program could not be started at all (its
//! interpreter failed to build), not a program that failed, which is a non-zero status.
//!
//! A program that calls [`std::process::exit`] ends its instance through WASI `proc_exit` instead of
//! returning; the host sees that exit and its status, but nothing flushes the program's buffered output on
//! that path, so returning the status is preferred.
//!
//! # Writing one
//!
//! Write the program as a function returning its status (an [`ExitStatus`]: an `i32`, or a
//! `Result<i32, String>` whose error is a host-level failure) and export it with
//! [`export_main!`](crate::export_main):
//!
//! ```ignore
//! fn cat() -> i32 {
//!     let mut input = String::new();
//!     if std::io::Read::read_to_string(&mut std::io::stdin(), &mut input).is_err() {
//!         eprintln!("cat: stdin is not UTF-8");
//!         return 1;
//!     }
//!     print!("{input}");
//!     0
//! }
//! stasis_guest::export_main!(cat);
//! ```

//!
//! # Starting from an image
//!
//! A program whose start is expensive (an interpreter that builds its runtime and imports its standard
//! library) may also export the handler [`PREINIT_HANDLER`] (`stasis_handle_preinit`) with
//! [`export_preinit!`](crate::export_preinit). The host then runs `_initialize` and `preinit` once per
//! module, in a neutral world — argv is the bare program name, no environment, an empty root directory,
//! output discarded — saves the instance's memory and globals as the program's *image*, and starts every
//! run of the program from a copy of it: `main` is called on an instance that never ran `_initialize`
//! itself, whose memory is the image's.
//!
//! What `preinit` does must therefore hold for every run: it may build data structures and read the
//! module's own resources, but must not keep anything of the neutral world — argv, the environment, the
//! standard streams' state, files (it must close every file it opens), the time or random numbers it
//! would use later. [`preinitialized`] tells `main` that it runs from an image. Before `main` runs, this
//! module makes wasi-libc forget the environment and the preopened directories it read during `preinit`,
//! so `std::env` and paths see the run's own.
//!
//! [`MAIN_HANDLER`] is there for hosts too; the rest, what a guest links, comes with the `abi` feature.

#[cfg(feature = "abi")]
use std::io::Write;

/// The name of the handler a program exports: the host calls `stasis_handle_main`.
pub const MAIN_HANDLER: &str = "main";

/// The name of the optional handler that makes a program's image (see [Starting from an
/// image](crate::program#starting-from-an-image)): the host calls `stasis_handle_preinit` once per module.
pub const PREINIT_HANDLER: &str = "preinit";

#[cfg(feature = "abi")]
/// Set by [`run_preinit`]: in an instance started from the image, it is already set when `main` runs.
static PREINITIALIZED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cfg(feature = "abi")]
/// Whether this instance started from the program's image: its `preinit` handler ran (in the neutral world
/// the image was made in) before `main`.
pub fn preinitialized() -> bool {
    PREINITIALIZED.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(all(feature = "abi", target_os = "wasi"))]
unsafe extern "C" {
    /// wasi-libc: frees the environment it read (the neutral world's).
    fn __wasilibc_deinitialize_environ();
    /// wasi-libc: reads the environment again, from `environ_get`.
    fn __wasilibc_initialize_environ();
    /// wasi-libc: forgets the preopened directories it found, so the next path lookup finds them again.
    fn __wasilibc_reset_preopens();
}

#[cfg(feature = "abi")]
/// Makes wasi-libc drop what it cached of the world the image was made in: the environment and the
/// preopened directories, which the run's world has its own of.
fn forget_image_world() {
    #[cfg(target_os = "wasi")]
    // SAFETY: wasi-libc's own entry points for this (they exist for pre-initialisers such as Wizer); no
    // other thread exists, and nothing holds a pointer into the old environment across this call: `main`
    // has not started.
    unsafe {
        __wasilibc_deinitialize_environ();
        __wasilibc_initialize_environ();
        __wasilibc_reset_preopens();
    }
}

#[cfg(feature = "abi")]
/// Runs a program's `preinit` function under the convention: checks that the request is empty, runs it,
/// and marks the instance pre-initialised. Used by [`export_preinit!`](crate::export_preinit); not meant
/// to be called directly.
#[doc(hidden)]
pub fn run_preinit(request: &[u8], preinit: fn() -> Result<(), String>) -> Result<Vec<u8>, String> {
    if !request.is_empty() {
        return Err(format!(
            "handler {PREINIT_HANDLER} takes an empty request, got {} bytes",
            request.len()
        ));
    }
    preinit()?;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    PREINITIALIZED.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(Vec::new())
}

#[cfg(feature = "abi")]
/// What a program function returns: its exit status, or a host-level failure.
pub trait ExitStatus {
    /// The exit status, or the message of a failure to start the program at all.
    fn into_status(self) -> Result<i32, String>;
}

#[cfg(feature = "abi")]
impl ExitStatus for i32 {
    fn into_status(self) -> Result<i32, String> {
        Ok(self)
    }
}

#[cfg(feature = "abi")]
impl ExitStatus for Result<i32, String> {
    fn into_status(self) -> Result<i32, String> {
        self
    }
}

#[cfg(feature = "abi")]
/// Changes into the directory named by `PWD`, when it is set (see the module documentation).
///
/// # Errors
/// When `PWD` names no directory the program can enter; the program should then report it and fail
/// rather than resolve its relative paths against another directory.
pub fn enter_working_directory() -> std::io::Result<()> {
    match std::env::var_os("PWD") {
        Some(dir) if !dir.is_empty() => std::env::set_current_dir(dir),
        _ => Ok(()),
    }
}

#[cfg(feature = "abi")]
/// The program's name as typed (argv\[0\]), or `fallback` when argv is empty or argv\[0\] is not text: for
/// the program's own messages (`python3: can't open file …`).
pub fn program_name(fallback: &str) -> String {
    std::env::args_os()
        .next()
        .and_then(|name| name.into_string().ok())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| fallback.to_owned())
}

#[cfg(feature = "abi")]
/// The program's arguments after argv\[0\], as text; the first one that is not valid UTF-8 is the
/// error, shown lossily, for the program to report (`NAME: the argument … is not valid UTF-8`).
pub fn arguments() -> Result<Vec<String>, String> {
    std::env::args_os()
        .skip(1)
        .map(|arg| {
            arg.into_string()
                .map_err(|bad| bad.to_string_lossy().into_owned())
        })
        .collect()
}

#[cfg(feature = "abi")]
/// Runs `program` under the convention: checks that the request is empty, enters `PWD`, runs it, flushes
/// stdout and stderr, and encodes its status. Used by [`export_main!`](crate::export_main); not meant to be
/// called directly.
#[doc(hidden)]
pub fn run<S: ExitStatus>(request: &[u8], program: fn() -> S) -> Result<Vec<u8>, String> {
    if !request.is_empty() {
        return Err(format!(
            "handler {MAIN_HANDLER} takes an empty request (the program's input is its argv, \
             environment and stdin), got {} bytes",
            request.len()
        ));
    }
    if preinitialized() {
        forget_image_world();
    }
    let status = match enter_working_directory() {
        Ok(()) => program().into_status(),
        Err(error) => {
            let dir = std::env::var("PWD").unwrap_or_default();
            let name = program_name("program");
            let _ = writeln!(
                std::io::stderr(),
                "{name}: cannot enter the working directory {dir}: {error}"
            );
            Ok(1)
        }
    };
    // The host reads the streams once the handler returns: nothing may stay in a buffer.
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    Ok((status? & 0xff).to_string().into_bytes())
}

#[cfg(feature = "abi")]
/// Exports `program`, a `fn() -> S` where `S` is an [`ExitStatus`], as the [`MAIN_HANDLER`] handler of the
/// program convention (see [the module documentation](crate::program)).
///
/// `export_main!(python)` exports `stasis_handle_main`, which runs `python` and answers its exit status.
#[macro_export]
macro_rules! export_main {
    ($program:path) => {
        const _: () = {
            fn main_handler(request: &[u8]) -> Result<Vec<u8>, String> {
                $crate::program::run(request, $program)
            }
            #[unsafe(export_name = "stasis_handle_main")]
            extern "C" fn handle(ptr: i32, len: i32) -> i64 {
                // SAFETY: the host follows the ABI: `ptr`/`len` come from `stasis_alloc`.
                unsafe { $crate::dispatch(ptr, len, main_handler) }
            }
        };
    };
}

#[cfg(feature = "abi")]
/// Exports `preinit`, a `fn() -> Result<(), String>`, as the [`PREINIT_HANDLER`] handler: the host runs it
/// once per module to make the program's image (see [Starting from an
/// image](crate::program#starting-from-an-image)). An error makes the program start fresh every time.
#[macro_export]
macro_rules! export_preinit {
    ($preinit:path) => {
        const _: () = {
            fn preinit_handler(request: &[u8]) -> Result<Vec<u8>, String> {
                $crate::program::run_preinit(request, $preinit)
            }
            #[unsafe(export_name = "stasis_handle_preinit")]
            extern "C" fn handle(ptr: i32, len: i32) -> i64 {
                // SAFETY: the host follows the ABI: `ptr`/`len` come from `stasis_alloc`.
                unsafe { $crate::dispatch(ptr, len, preinit_handler) }
            }
        };
    };
}
