//! Shared helpers for the test guest programs (one program per file under `src/bin`).

/// Creates a symlink `link` (relative to the root preopen, fd 3) pointing at `target`, through the raw
/// preview1 call because `std::os::wasi::fs::symlink_path` is unstable.
pub fn symlink(target: &str, link: &str) -> std::io::Result<()> {
    let link = link.trim_start_matches('/');
    // SAFETY: both strings are valid for the duration of the call.
    unsafe { wasi::path_symlink(target, 3, link) }
        .map_err(|e| std::io::Error::from_raw_os_error(i32::from(e.raw())))
}

/// Prints `what: ok <value>` or `what: errno <n>`, the line format every guest uses so hosts can be compared.
pub fn show<T: std::fmt::Debug>(what: &str, r: std::io::Result<T>) {
    match r {
        Ok(v) => println!("{what}: ok {v:?}"),
        Err(e) => println!("{what}: errno {:?}", e.raw_os_error()),
    }
}
