//! The guest side of the Stasis reactor ABI.
//!
//! A *reactor* guest is a `wasm32-wasip1` module (a Rust `cdylib`) that stays alive between calls: its heap,
//! statics and open files are the "running process and variables" that Stasis pauses and resumes. The host
//! calls it through a tiny, stable ABI of plain wasm exports:
//!
//! | export | signature | meaning |
//! |---|---|---|
//! | `stasis_abi_version` | `() -> i32` | the ABI version the guest speaks ([`ABI_VERSION`]) |
//! | `stasis_alloc` | `(len: i32) -> i32` | allocate `len` bytes for a request; returns the pointer (0 on failure) |
//! | `stasis_free` | `(ptr: i32, len: i32)` | free a buffer returned by `stasis_alloc` or by a handler |
//! | `stasis_handle_<name>` | `(ptr: i32, len: i32) -> i64` | handle a request; returns a packed response |
//!
//! A handler's return value packs the response buffer as `(ptr << 32) | len`. The buffer starts with one
//! status byte ([`STATUS_OK`] or [`STATUS_ERROR`]) followed by the payload (the response bytes, or a UTF-8
//! error message). The handler takes ownership of the request buffer; the host frees the response buffer
//! with `stasis_free` once it has copied it out.
//!
//! Write a handler as `fn(&[u8]) -> Result<Vec<u8>, String>` and export it with [`export_handler!`]:
//!
//! ```ignore
//! fn greet(request: &[u8]) -> Result<Vec<u8>, String> {
//!     let name = std::str::from_utf8(request).map_err(|e| e.to_string())?;
//!     Ok(format!("hello {name}").into_bytes())
//! }
//! stasis_guest::export_handler!(greet);
//! ```
//!
//! A reactor that exports the handler `main` can also be run as a command-line program: see [`program`] for
//! that convention and [`export_main!`].
//!
//! Output written to stdout and stderr travels through WASI like any program's; [`output`] has helpers that
//! flush as they go, so a host streaming a guest's output sees it as it is produced.

#[cfg(feature = "abi")]
use std::alloc::{Layout, alloc, dealloc};

#[cfg(feature = "interpreter")]
pub mod interpreter;
pub mod process;
pub mod program;

/// Version of the ABI described in this crate's documentation.
pub const ABI_VERSION: i32 = 1;
/// First byte of a response that carries the handler's result.
pub const STATUS_OK: u8 = 0;
/// First byte of a response that carries an error message.
pub const STATUS_ERROR: u8 = 1;

#[cfg(feature = "abi")]
/// Exported so the host can check which ABI the guest speaks before calling it.
#[unsafe(no_mangle)]
pub extern "C" fn stasis_abi_version() -> i32 {
    ABI_VERSION
}

#[cfg(feature = "abi")]
/// Allocates a buffer of `len` bytes for the host to write a request into; 0 when it cannot.
#[unsafe(no_mangle)]
pub extern "C" fn stasis_alloc(len: i32) -> i32 {
    let Ok(len) = usize::try_from(len) else {
        return 0;
    };
    match layout(len) {
        // SAFETY: the layout has a non-zero size (see `layout`).
        Some(layout) => unsafe { alloc(layout) as usize as i32 },
        None => 0,
    }
}

#[cfg(feature = "abi")]
/// Frees a buffer obtained from [`stasis_alloc`] or returned by a handler.
///
/// # Safety
/// `ptr` and `len` must describe a buffer allocated by this module's `stasis_alloc` (or a handler response)
/// that has not been freed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn stasis_free(ptr: i32, len: i32) {
    let (Ok(len), Some(ptr)) = (
        usize::try_from(len),
        std::ptr::NonNull::new(ptr as usize as *mut u8),
    ) else {
        return;
    };
    if let Some(layout) = layout(len) {
        // SAFETY: the caller guarantees the buffer came from `alloc` with this same layout.
        unsafe { dealloc(ptr.as_ptr(), layout) }
    }
}

#[cfg(feature = "abi")]
/// The layout of an ABI buffer: byte-aligned, at least one byte so that the allocation is never zero-sized.
fn layout(len: usize) -> Option<Layout> {
    Layout::from_size_align(len.max(1), 1).ok()
}

#[cfg(feature = "abi")]
/// Runs `handler` on the request at `ptr..ptr+len` and returns the packed response. Used by
/// [`export_handler!`]; not meant to be called directly.
///
/// # Safety
/// `ptr` and `len` must describe a live buffer from [`stasis_alloc`]; this function takes ownership of it.
#[doc(hidden)]
pub unsafe fn dispatch(ptr: i32, len: i32, handler: fn(&[u8]) -> Result<Vec<u8>, String>) -> i64 {
    let request: &[u8] = match usize::try_from(len) {
        // SAFETY: the host wrote `len` bytes at `ptr`, a buffer it obtained from `stasis_alloc`.
        Ok(n) if n > 0 && ptr != 0 => unsafe {
            std::slice::from_raw_parts(ptr as usize as *const u8, n)
        },
        _ => &[],
    };
    let outcome = handler(request);
    // SAFETY: the request buffer is owned by us from here on and no longer borrowed.
    unsafe { stasis_free(ptr, len) };
    let mut response = Vec::new();
    match outcome {
        Ok(payload) => {
            response.push(STATUS_OK);
            response.extend_from_slice(&payload);
        }
        Err(message) => {
            response.push(STATUS_ERROR);
            response.extend_from_slice(message.as_bytes());
        }
    }
    pack(response)
}

#[cfg(feature = "abi")]
/// Moves `response` into a buffer with the layout `stasis_free` expects and packs its address and length.
fn pack(response: Vec<u8>) -> i64 {
    let len = response.len();
    let ptr = stasis_alloc(len as i32);
    if ptr == 0 {
        return 0;
    }
    // SAFETY: `ptr` is a fresh allocation of `len` bytes (see `stasis_alloc`).
    unsafe { std::ptr::copy_nonoverlapping(response.as_ptr(), ptr as usize as *mut u8, len) };
    ((ptr as u32 as i64) << 32) | len as u32 as i64
}

#[cfg(feature = "abi")]
/// Exports a handler `fn(&[u8]) -> Result<Vec<u8>, String>` as `stasis_handle_<name>`.
///
/// `export_handler!(greet)` exports the function `greet` under the name `stasis_handle_greet`.
#[macro_export]
macro_rules! export_handler {
    ($name:ident) => {
        const _: () = {
            #[unsafe(export_name = concat!("stasis_handle_", stringify!($name)))]
            extern "C" fn handle(ptr: i32, len: i32) -> i64 {
                // SAFETY: the host follows the ABI: `ptr`/`len` come from `stasis_alloc`.
                unsafe { $crate::dispatch(ptr, len, $name) }
            }
        };
    };
}

#[cfg(feature = "abi")]
pub mod output {
    //! Writing to stdout and stderr so that a host streaming a guest's output sees every line as it is
    //! produced (the standard library buffers stdout by line only when it is a terminal).

    use std::io::Write;

    /// Writes `text` to stdout and flushes, so the host's callback receives it now.
    pub fn stdout(text: &str) {
        let mut out = std::io::stdout().lock();
        // A guest has nowhere to report a failed write to its own stdout; the host sees the errno.
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }

    /// Writes `text` to stderr (never buffered).
    pub fn stderr(text: &str) {
        let _ = std::io::stderr().write_all(text.as_bytes());
    }
}
