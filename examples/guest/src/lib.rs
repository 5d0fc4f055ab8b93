//! # An example Stasis guest: a notebook of named notes
//!
//! This crate is a complete guest, written the way you would write your own. Copy it, rename it, replace
//! the handlers.
//!
//! ## What a guest is
//!
//! A Stasis guest is a WebAssembly module built for `wasm32-wasip1`. This one is a *reactor*: a Rust
//! `cdylib` (see `Cargo.toml`). The host starts it once when it creates a sandbox and then calls its
//! handlers as many times as it likes on that same live instance. Everything the guest keeps in memory
//! between calls — statics, the heap, open files — is its state, and that is exactly what Stasis saves
//! when it pauses a sandbox to a blob and gives back when it resumes it, possibly in another process or
//! on another machine. The notebook below keeps its notes in a `BTreeMap` on the heap and nothing else:
//! no database, no file, no serialization code. A paused notebook still has its notes after a resume.
//!
//! ## Handlers
//!
//! A handler is a plain function `fn(&[u8]) -> Result<Vec<u8>, String>`: it gets the request's bytes and
//! answers with bytes, or with an error message. `stasis_guest::export_handler!(set)` exports the function
//! `set` under the name `stasis_handle_set`, and the host calls it by its short name:
//! `sandbox.call("set", b"greeting\nhello")` in Rust. Requests and responses are opaque bytes to Stasis;
//! this guest uses text and raw bytes, yours could use JSON or anything else.
//!
//! Linking `stasis-guest` also exports the three functions the host uses to move those bytes in and out
//! of the guest's memory (`stasis_alloc`, `stasis_free`, `stasis_abi_version`); you never call them
//! yourself. The exact wire format is in the `stasis-guest` crate documentation.
//!
//! An `Err` reaches the host as an error (`CallError::Guest` with your message) and the guest stays
//! usable. A panic, on the other hand, is a *trap*: the host poisons the process and refuses further
//! calls until it is restarted, because its memory may be half-updated. Return errors; do not panic on
//! bad requests.
//!
//! ## Output
//!
//! What a guest prints goes to the sandbox's stdout and stderr (WASI fds 1 and 2); the host collects it
//! (`Sandbox::take_stdout` in Rust). The standard library only flushes stdout by line on a terminal, so
//! use `stasis_guest::output::stdout` / `stderr`, which flush every write: a host that streams output
//! sees each line when it is written, not when the handler returns.
//!
//! ## Building
//!
//! ```sh
//! rustup target add wasm32-wasip1            # once
//! cd examples/guest
//! cargo build --target wasm32-wasip1 --release
//! # -> target/wasm32-wasip1/release/notebook.wasm
//! ```
//!
//! Then load the `.wasm` as a template and use it — `examples/custom_guest.rs` does every step:
//!
//! ```ignore
//! let runtime = stasis::Runtime::new(stasis::RuntimeConfig::new("./stasis-data"))?;
//! let template = runtime.load_template("notebook", &std::fs::read("notebook.wasm")?)?;
//! let mut sandbox = runtime.create_sandbox(&template, stasis::SandboxOptions::default())?;
//! sandbox.call("set", b"greeting\nhello")?;
//! assert_eq!(sandbox.call("get", b"greeting")?, b"hello");
//! ```
//!
//! `cargo run --release -p stasis-examples --example custom_guest` (from the repository root) builds this
//! guest and runs that example.
//!
//! ## This guest's handlers
//!
//! | handler | request | response |
//! |---|---|---|
//! | `set` | `NAME\nCONTENT` (the content may be any bytes) | the number of notes, as text |
//! | `get` | `NAME` | the note's content; an error when there is no such note |
//! | `count` | ignored | the number of notes, as text |
//! | `summarize` | ignored | the total size of all notes in bytes, as text; prints one progress line per note |

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use stasis_guest::{export_handler, output};

/// The notebook: note name → content. A `static` lives in the guest's linear memory and the map's entries
/// on its heap, so both survive between calls and across a pause. (A wasm32-wasip1 guest has one thread;
/// the `Mutex` only makes the `static` safe to reach without `unsafe`.)
static NOTES: Mutex<BTreeMap<String, Vec<u8>>> = Mutex::new(BTreeMap::new());

/// The notebook, or an error if an earlier handler panicked while holding it (it trapped, so the host
/// would not have called us again; still, never panic on a request).
fn notes() -> Result<MutexGuard<'static, BTreeMap<String, Vec<u8>>>, String> {
    NOTES
        .lock()
        .map_err(|_| "the notebook is in an inconsistent state".to_owned())
}

/// A note's name from request bytes: non-empty UTF-8 without a newline.
fn name(bytes: &[u8]) -> Result<&str, String> {
    let name = std::str::from_utf8(bytes).map_err(|e| format!("a note name must be UTF-8: {e}"))?;
    if name.is_empty() {
        return Err("a note name must not be empty".to_owned());
    }
    Ok(name)
}

/// `set`: stores `CONTENT` under `NAME` (request `NAME\nCONTENT`), replacing an older note of that name.
/// Answers the number of notes.
fn set(request: &[u8]) -> Result<Vec<u8>, String> {
    let newline = request
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("usage: NAME\\nCONTENT")?;
    let (key, content) = (name(&request[..newline])?, &request[newline + 1..]);
    let mut notes = notes()?;
    notes.insert(key.to_owned(), content.to_vec());
    Ok(notes.len().to_string().into_bytes())
}
export_handler!(set);

/// `get`: answers the content of note `NAME`, or an error when there is none — the host sees it as
/// `CallError::Guest("no note named ...")`, and the guest carries on.
fn get(request: &[u8]) -> Result<Vec<u8>, String> {
    let key = name(request)?;
    notes()?
        .get(key)
        .cloned()
        .ok_or_else(|| format!("no note named {key:?}"))
}
export_handler!(get);

/// `count`: answers how many notes the notebook holds.
fn count(_request: &[u8]) -> Result<Vec<u8>, String> {
    Ok(notes()?.len().to_string().into_bytes())
}
export_handler!(count);

/// `summarize`: walks the notebook printing one progress line per note to stdout, and answers the total
/// size of the notes in bytes. Each line is flushed as it is written, so a host streaming the guest's
/// output sees the progress while the handler still runs.
fn summarize(_request: &[u8]) -> Result<Vec<u8>, String> {
    let notes = notes()?;
    let mut total = 0;
    for (i, (key, content)) in notes.iter().enumerate() {
        total += content.len();
        output::stdout(&format!(
            "[{}/{}] {key}: {} bytes\n",
            i + 1,
            notes.len(),
            content.len()
        ));
    }
    output::stdout(&format!(
        "summarized {} notes, {total} bytes in all\n",
        notes.len()
    ));
    Ok(total.to_string().into_bytes())
}
export_handler!(summarize);
