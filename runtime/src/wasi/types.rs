//! Preview1 constants and in-memory layouts (sizes and field offsets of the witx structs) used by the imports.

/// `filetype` values.
pub mod filetype {
    /// Unknown type (also used for stdio that is not a terminal, as wasmtime-wasi does for pipes).
    pub const UNKNOWN: u8 = 0;
    /// A block device.
    pub const BLOCK_DEVICE: u8 = 1;
    /// A character device (stdio).
    pub const CHARACTER_DEVICE: u8 = 2;
    /// A directory.
    pub const DIRECTORY: u8 = 3;
    /// A regular file.
    pub const REGULAR_FILE: u8 = 4;
    /// A stream socket (a host socket file seen in a directory).
    pub const SOCKET_STREAM: u8 = 6;
    /// A symbolic link.
    pub const SYMBOLIC_LINK: u8 = 7;
}

/// `fdflags` bits.
pub mod fdflags {
    /// Writes always go to the end of the file.
    pub const APPEND: u16 = 1 << 0;
    /// Data integrity sync on write.
    pub const DSYNC: u16 = 1 << 1;
    /// Non-blocking mode.
    pub const NONBLOCK: u16 = 1 << 2;
    /// Read integrity sync.
    pub const RSYNC: u16 = 1 << 3;
    /// File integrity sync on write.
    pub const SYNC: u16 = 1 << 4;
}

/// `oflags` bits of `path_open`.
pub mod oflags {
    /// Create the file when it does not exist.
    pub const CREAT: u16 = 1 << 0;
    /// Fail unless the path is a directory.
    pub const DIRECTORY: u16 = 1 << 1;
    /// Fail when the file exists (with `CREAT`).
    pub const EXCL: u16 = 1 << 2;
    /// Truncate to length 0.
    pub const TRUNC: u16 = 1 << 3;
}

/// `lookupflags` bits.
pub const LOOKUP_SYMLINK_FOLLOW: u32 = 1;

/// `fstflags` bits of the `*_set_times` calls.
pub mod fstflags {
    /// Set the access time to the given value.
    pub const ATIM: u16 = 1 << 0;
    /// Set the access time to now.
    pub const ATIM_NOW: u16 = 1 << 1;
    /// Set the modification time to the given value.
    pub const MTIM: u16 = 1 << 2;
    /// Set the modification time to now.
    pub const MTIM_NOW: u16 = 1 << 3;
}

/// `rights` bits (only the ones the host reasons about by name; the rest are reported through [`rights::ALL`]).
pub mod rights {
    /// `fd_datasync`.
    pub const FD_DATASYNC: u64 = 1 << 0;
    /// `fd_read`.
    pub const FD_READ: u64 = 1 << 1;
    /// `fd_seek`.
    pub const FD_SEEK: u64 = 1 << 2;
    /// `fd_fdstat_set_flags`.
    pub const FD_FDSTAT_SET_FLAGS: u64 = 1 << 3;
    /// `fd_sync`.
    pub const FD_SYNC: u64 = 1 << 4;
    /// `fd_tell`.
    pub const FD_TELL: u64 = 1 << 5;
    /// `fd_write`.
    pub const FD_WRITE: u64 = 1 << 6;
    /// `fd_advise`.
    pub const FD_ADVISE: u64 = 1 << 7;
    /// `fd_allocate`.
    pub const FD_ALLOCATE: u64 = 1 << 8;
    /// `path_create_directory`.
    pub const PATH_CREATE_DIRECTORY: u64 = 1 << 9;
    /// `path_open` with `CREAT`.
    pub const PATH_CREATE_FILE: u64 = 1 << 10;
    /// Source of `path_link`.
    pub const PATH_LINK_SOURCE: u64 = 1 << 11;
    /// Target of `path_link`.
    pub const PATH_LINK_TARGET: u64 = 1 << 12;
    /// `path_open`.
    pub const PATH_OPEN: u64 = 1 << 13;
    /// `fd_readdir`.
    pub const FD_READDIR: u64 = 1 << 14;
    /// `path_readlink`.
    pub const PATH_READLINK: u64 = 1 << 15;
    /// Source of `path_rename`.
    pub const PATH_RENAME_SOURCE: u64 = 1 << 16;
    /// Target of `path_rename`.
    pub const PATH_RENAME_TARGET: u64 = 1 << 17;
    /// `path_filestat_get`.
    pub const PATH_FILESTAT_GET: u64 = 1 << 18;
    /// `path_filestat_set_size`.
    pub const PATH_FILESTAT_SET_SIZE: u64 = 1 << 19;
    /// `path_filestat_set_times`.
    pub const PATH_FILESTAT_SET_TIMES: u64 = 1 << 20;
    /// `fd_filestat_get`.
    pub const FD_FILESTAT_GET: u64 = 1 << 21;
    /// `fd_filestat_set_size`.
    pub const FD_FILESTAT_SET_SIZE: u64 = 1 << 22;
    /// `fd_filestat_set_times`.
    pub const FD_FILESTAT_SET_TIMES: u64 = 1 << 23;
    /// `path_symlink`.
    pub const PATH_SYMLINK: u64 = 1 << 24;
    /// `path_remove_directory`.
    pub const PATH_REMOVE_DIRECTORY: u64 = 1 << 25;
    /// `path_unlink_file`.
    pub const PATH_UNLINK_FILE: u64 = 1 << 26;
    /// `poll_oneoff` on fd readiness.
    pub const POLL_FD_READWRITE: u64 = 1 << 27;
    /// `sock_shutdown`.
    pub const SOCK_SHUTDOWN: u64 = 1 << 28;
    /// `sock_accept`.
    pub const SOCK_ACCEPT: u64 = 1 << 29;
    /// Every right preview1 defines.
    pub const ALL: u64 = (1 << 30) - 1;

    /// Rights of a preopened directory, the hard-coded set wasmtime-wasi reports (many userlands expect it).
    pub const PREOPEN_BASE: u64 = PATH_CREATE_DIRECTORY
        | PATH_CREATE_FILE
        | PATH_LINK_SOURCE
        | PATH_LINK_TARGET
        | PATH_OPEN
        | FD_READDIR
        | PATH_READLINK
        | PATH_RENAME_SOURCE
        | PATH_RENAME_TARGET
        | PATH_SYMLINK
        | PATH_REMOVE_DIRECTORY
        | PATH_UNLINK_FILE
        | PATH_FILESTAT_GET
        | PATH_FILESTAT_SET_TIMES
        | FD_FILESTAT_GET
        | FD_FILESTAT_SET_TIMES;

    /// Inheriting rights of a preopened directory, as in wasmtime-wasi.
    pub const PREOPEN_INHERITING: u64 = PREOPEN_BASE
        | FD_DATASYNC
        | FD_READ
        | FD_SEEK
        | FD_FDSTAT_SET_FLAGS
        | FD_SYNC
        | FD_TELL
        | FD_WRITE
        | FD_ADVISE
        | FD_ALLOCATE
        | FD_FILESTAT_GET
        | FD_FILESTAT_SET_SIZE
        | FD_FILESTAT_SET_TIMES
        | POLL_FD_READWRITE;
}

/// `clockid` values.
pub mod clockid {
    /// Wall clock.
    pub const REALTIME: u32 = 0;
    /// Monotonic clock (virtual in Stasis: it continues across a pause).
    pub const MONOTONIC: u32 = 1;
    /// Process CPU time (answered with `EBADF`, as wasmtime-wasi does).
    pub const PROCESS_CPUTIME: u32 = 2;
    /// Thread CPU time (answered with `EBADF`, as wasmtime-wasi does).
    pub const THREAD_CPUTIME: u32 = 3;
}

/// `whence` values of `fd_seek`.
pub mod whence {
    /// From the start.
    pub const SET: u8 = 0;
    /// From the current offset.
    pub const CUR: u8 = 1;
    /// From the end.
    pub const END: u8 = 2;
}

/// Size of a `filestat` struct.
pub const FILESTAT_SIZE: usize = 64;
/// Size of a `fdstat` struct.
pub const FDSTAT_SIZE: usize = 24;
/// Size of a `dirent` header (the name follows it).
pub const DIRENT_SIZE: usize = 24;
/// Size of a `prestat` struct.
pub const PRESTAT_SIZE: usize = 8;
/// Size of a `subscription` struct of `poll_oneoff`.
pub const SUBSCRIPTION_SIZE: usize = 48;
/// Size of an `event` struct of `poll_oneoff`.
pub const EVENT_SIZE: usize = 32;
/// Size of an `iovec`/`ciovec`.
pub const IOVEC_SIZE: usize = 8;

/// `eventtype` of a subscription.
pub mod eventtype {
    /// A clock timeout.
    pub const CLOCK: u8 = 0;
    /// The fd is readable.
    pub const FD_READ: u8 = 1;
    /// The fd is writable.
    pub const FD_WRITE: u8 = 2;
}

/// `subclockflags`: the timeout is an absolute time.
pub const SUBSCRIPTION_CLOCK_ABSTIME: u16 = 1;
