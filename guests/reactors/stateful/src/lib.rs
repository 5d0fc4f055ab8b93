//! A reactor guest that keeps state in every place a pause must preserve — a `static mut`, an atomic, heap
//! collections, memory grown after start, bulk memory of chosen entropy, and an open file with its offset —
//! and exposes handlers to change and read each of them back.
//!
//! Requests and responses are UTF-8 text so that tests read naturally.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use stasis_guest::export_handler;

static CALLS: AtomicU64 = AtomicU64::new(0);
static mut COUNTER: u64 = 0;
static NOTES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static BLOCKS: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
static OPEN_FILE: Mutex<Option<File>> = Mutex::new(None);

fn text(request: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(request).map_err(|e| format!("request is not UTF-8: {e}"))
}

fn number(request: &[u8]) -> Result<u64, String> {
    text(request)?
        .trim()
        .parse()
        .map_err(|e| format!("expected a number: {e}"))
}

/// Increments a `static mut` counter and an atomic call count; returns `counter calls`.
fn bump(_: &[u8]) -> Result<Vec<u8>, String> {
    // SAFETY: the guest is single-threaded; no reference to COUNTER outlives this statement.
    let counter = unsafe {
        COUNTER += 1;
        COUNTER
    };
    let calls = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
    Ok(format!("{counter} {calls}").into_bytes())
}
export_handler!(bump);

/// Appends the request to a heap-allocated list of notes.
fn remember(request: &[u8]) -> Result<Vec<u8>, String> {
    let note = text(request)?.to_owned();
    let mut notes = NOTES.lock().map_err(|_| "notes poisoned")?;
    notes.push(note);
    Ok(notes.len().to_string().into_bytes())
}
export_handler!(remember);

/// Returns every note, comma-separated.
fn recall(_: &[u8]) -> Result<Vec<u8>, String> {
    Ok(NOTES
        .lock()
        .map_err(|_| "notes poisoned")?
        .join(",")
        .into_bytes())
}
export_handler!(recall);

/// `MIB SEED random|typical`: allocates MIB mebibytes and fills them: `random` with incompressible
/// xorshift output, `typical` mostly zeros with a small pattern every 4 KiB. Returns the block count.
fn fill(request: &[u8]) -> Result<Vec<u8>, String> {
    let words: Vec<&str> = text(request)?.split_whitespace().collect();
    let [mib, seed, kind] = words[..] else {
        return Err("usage: MIB SEED random|typical".into());
    };
    let mib: usize = mib.parse().map_err(|e| format!("MIB: {e}"))?;
    let mut state: u64 = seed.parse::<u64>().map_err(|e| format!("SEED: {e}"))? | 1;
    let mut block = vec![0u8; mib << 20];
    match kind {
        "random" => {
            for chunk in block.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
            }
        }
        "typical" => {
            for (i, page) in block.chunks_mut(4096).enumerate() {
                if i % 4 == 0 {
                    page[..16]
                        .copy_from_slice(&(state.wrapping_add(i as u64) as u128).to_le_bytes());
                }
            }
        }
        other => return Err(format!("unknown fill kind {other}")),
    }
    let mut blocks = BLOCKS.lock().map_err(|_| "blocks poisoned")?;
    blocks.push(block);
    Ok(blocks.len().to_string().into_bytes())
}
export_handler!(fill);

/// `MIB SEED`: overwrites the first MIB mebibytes of the most recent block with new incompressible bytes
/// (a small, contiguous change to a large memory, for incremental pauses).
fn dirty(request: &[u8]) -> Result<Vec<u8>, String> {
    let words: Vec<&str> = text(request)?.split_whitespace().collect();
    let [mib, seed] = words[..] else {
        return Err("usage: MIB SEED".into());
    };
    let mib: usize = mib.parse().map_err(|e| format!("MIB: {e}"))?;
    let mut state: u64 = seed.parse::<u64>().map_err(|e| format!("SEED: {e}"))? | 1;
    let mut blocks = BLOCKS.lock().map_err(|_| "blocks poisoned")?;
    let block = blocks.last_mut().ok_or("no block to dirty")?;
    let end = (mib << 20).min(block.len());
    for chunk in block[..end].chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    Ok(Vec::new())
}
export_handler!(dirty);

/// Grows linear memory by the requested number of 64 KiB pages directly; returns the previous size.
fn grow(request: &[u8]) -> Result<Vec<u8>, String> {
    let pages = number(request)? as usize;
    let previous = core::arch::wasm32::memory_grow(0, pages);
    if previous == usize::MAX {
        return Err("memory.grow failed".into());
    }
    // Leave a mark in the first byte of the new region so a test can see grown memory was restored.
    // SAFETY: the region `previous * 64 KiB ..` was just added to linear memory and nothing else uses it.
    unsafe { *((previous * 65536) as *mut u8) = 0xA5 };
    Ok(previous.to_string().into_bytes())
}
export_handler!(grow);

/// Reads the mark byte `grow` left at the start of page `N`.
fn peek_page(request: &[u8]) -> Result<Vec<u8>, String> {
    let page = number(request)? as usize;
    if page >= core::arch::wasm32::memory_size(0) {
        return Err("page beyond memory".into());
    }
    // SAFETY: the page is within linear memory (checked above); reading a byte of it is always defined.
    let byte = unsafe { *((page * 65536) as *const u8) };
    Ok(byte.to_string().into_bytes())
}
export_handler!(peek_page);

/// Opens (creating if needed) the file at the requested path and keeps it open across calls.
fn open(request: &[u8]) -> Result<Vec<u8>, String> {
    let path = text(request)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| format!("open {path}: {e}"))?;
    *OPEN_FILE.lock().map_err(|_| "file poisoned")? = Some(file);
    Ok(Vec::new())
}
export_handler!(open);

/// Writes the request at the open file's current offset; returns the new offset.
fn write(request: &[u8]) -> Result<Vec<u8>, String> {
    let mut slot = OPEN_FILE.lock().map_err(|_| "file poisoned")?;
    let file = slot.as_mut().ok_or("no open file")?;
    file.write_all(request).map_err(|e| e.to_string())?;
    Ok(file
        .stream_position()
        .map_err(|e| e.to_string())?
        .to_string()
        .into_bytes())
}
export_handler!(write);

/// Reads up to N bytes from the open file's current offset.
fn read(request: &[u8]) -> Result<Vec<u8>, String> {
    let wanted = number(request)?.min(1 << 20) as usize;
    let mut slot = OPEN_FILE.lock().map_err(|_| "file poisoned")?;
    let file = slot.as_mut().ok_or("no open file")?;
    let mut buf = vec![0u8; wanted];
    let n = file.read(&mut buf).map_err(|e| e.to_string())?;
    buf.truncate(n);
    Ok(buf)
}
export_handler!(read);

/// Moves the open file's offset to N bytes from its start.
fn seek(request: &[u8]) -> Result<Vec<u8>, String> {
    let offset = number(request)?;
    let mut slot = OPEN_FILE.lock().map_err(|_| "file poisoned")?;
    let file = slot.as_mut().ok_or("no open file")?;
    Ok(file
        .seek(SeekFrom::Start(offset))
        .map_err(|e| e.to_string())?
        .to_string()
        .into_bytes())
}
export_handler!(seek);

/// `PATH\nCONTENT`: writes a whole file.
fn put_file(request: &[u8]) -> Result<Vec<u8>, String> {
    let (path, content) = text(request)?
        .split_once('\n')
        .ok_or("usage: PATH\\nCONTENT")?;
    if let Some(parent) = std::path::Path::new(path).parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("mkdir {}: {e}", parent.display()))?;
    }
    std::fs::write(path, content).map_err(|e| format!("write {path}: {e}"))?;
    Ok(Vec::new())
}
export_handler!(put_file);

/// Returns a whole file's content.
fn get_file(request: &[u8]) -> Result<Vec<u8>, String> {
    let path = text(request)?;
    std::fs::read(path).map_err(|e| format!("read {path}: {e}"))
}
export_handler!(get_file);

/// Removes a file.
fn remove_file(request: &[u8]) -> Result<Vec<u8>, String> {
    let path = text(request)?;
    std::fs::remove_file(path).map_err(|e| format!("remove {path}: {e}"))?;
    Ok(Vec::new())
}
export_handler!(remove_file);

/// Loops forever: the host's CPU deadline must stop it.
fn spin(_: &[u8]) -> Result<Vec<u8>, String> {
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}
export_handler!(spin);
