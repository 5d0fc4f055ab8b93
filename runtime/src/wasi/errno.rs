//! The preview1 `errno` values a guest sees, and the mapping from host I/O errors to them.
//!
//! Errno values are answers to the guest, never host failures: an import returns `Ok(errno)` to the guest
//! and only uses `Err` (a trap) for [`super::ProcExit`] and for a guest without an exported memory.

use std::io;

/// A preview1 error number (`wasi_snapshot_preview1` `errno`), with the numeric values of the witx spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
#[allow(missing_docs)] // the names are the spec's, one per POSIX error
pub enum Errno {
    Success = 0,
    TooBig = 1,
    Acces = 2,
    Addrinuse = 3,
    Addrnotavail = 4,
    Afnosupport = 5,
    Again = 6,
    Already = 7,
    Badf = 8,
    Badmsg = 9,
    Busy = 10,
    Canceled = 11,
    Child = 12,
    Connaborted = 13,
    Connrefused = 14,
    Connreset = 15,
    Deadlk = 16,
    Destaddrreq = 17,
    Dom = 18,
    Dquot = 19,
    Exist = 20,
    Fault = 21,
    Fbig = 22,
    Hostunreach = 23,
    Idrm = 24,
    Ilseq = 25,
    Inprogress = 26,
    Intr = 27,
    Inval = 28,
    Io = 29,
    Isconn = 30,
    Isdir = 31,
    Loop = 32,
    Mfile = 33,
    Mlink = 34,
    Msgsize = 35,
    Multihop = 36,
    Nametoolong = 37,
    Netdown = 38,
    Netreset = 39,
    Netunreach = 40,
    Nfile = 41,
    Nobufs = 42,
    Nodev = 43,
    Noent = 44,
    Noexec = 45,
    Nolck = 46,
    Nolink = 47,
    Nomem = 48,
    Nomsg = 49,
    Noprotoopt = 50,
    Nospc = 51,
    Nosys = 52,
    Notconn = 53,
    Notdir = 54,
    Notempty = 55,
    Notrecoverable = 56,
    Notsock = 57,
    Notsup = 58,
    Notty = 59,
    Nxio = 60,
    Overflow = 61,
    Ownerdead = 62,
    Perm = 63,
    Pipe = 64,
    Proto = 65,
    Protonosupport = 66,
    Prototype = 67,
    Range = 68,
    Rofs = 69,
    Spipe = 70,
    Srch = 71,
    Stale = 72,
    Timedout = 73,
    Txtbsy = 74,
    Xdev = 75,
    Notcapable = 76,
}

impl Errno {
    /// The value returned to the guest.
    pub fn raw(self) -> i32 {
        i32::from(self as u16)
    }
}

/// Result of one import's work: `Err` is an errno for the guest, not a host failure.
pub type GuestResult<T> = Result<T, Errno>;

impl From<io::Error> for Errno {
    fn from(e: io::Error) -> Self {
        from_io_error(&e)
    }
}

/// Maps a host I/O error to the errno a guest sees: the OS error number when there is one (that is what
/// wasmtime-wasi forwards too), else the error kind. cap-std reports a path that would escape its directory
/// as `PermissionDenied` without an OS number, which becomes `EPERM` as in wasmtime-wasi.
pub fn from_io_error(e: &io::Error) -> Errno {
    if let Some(code) = e.raw_os_error() {
        return from_raw_os(code);
    }
    match e.kind() {
        io::ErrorKind::NotFound => Errno::Noent,
        io::ErrorKind::PermissionDenied => Errno::Perm,
        io::ErrorKind::AlreadyExists => Errno::Exist,
        io::ErrorKind::InvalidInput => Errno::Inval,
        io::ErrorKind::NotADirectory => Errno::Notdir,
        io::ErrorKind::IsADirectory => Errno::Isdir,
        io::ErrorKind::DirectoryNotEmpty => Errno::Notempty,
        io::ErrorKind::StorageFull => Errno::Nospc,
        io::ErrorKind::ReadOnlyFilesystem => Errno::Rofs,
        io::ErrorKind::FileTooLarge => Errno::Fbig,
        io::ErrorKind::InvalidFilename => Errno::Nametoolong,
        io::ErrorKind::Unsupported => Errno::Notsup,
        io::ErrorKind::Interrupted => Errno::Intr,
        io::ErrorKind::WouldBlock => Errno::Again,
        io::ErrorKind::CrossesDevices => Errno::Xdev,
        io::ErrorKind::OutOfMemory => Errno::Nomem,
        _ => Errno::Io,
    }
}

/// Maps a host (Linux/POSIX) `errno` to the preview1 one with the same meaning.
pub fn from_raw_os(code: i32) -> Errno {
    match code {
        libc::EPERM => Errno::Perm,
        libc::ENOENT => Errno::Noent,
        libc::EIO => Errno::Io,
        libc::ENXIO => Errno::Nxio,
        libc::E2BIG => Errno::TooBig,
        libc::EBADF => Errno::Badf,
        libc::EAGAIN => Errno::Again,
        libc::ENOMEM => Errno::Nomem,
        libc::EACCES => Errno::Acces,
        libc::EFAULT => Errno::Fault,
        libc::EBUSY => Errno::Busy,
        libc::EEXIST => Errno::Exist,
        libc::EXDEV => Errno::Xdev,
        libc::ENODEV => Errno::Nodev,
        libc::ENOTDIR => Errno::Notdir,
        libc::EISDIR => Errno::Isdir,
        libc::EINVAL => Errno::Inval,
        libc::ENFILE => Errno::Nfile,
        libc::EMFILE => Errno::Mfile,
        libc::ENOTTY => Errno::Notty,
        libc::ETXTBSY => Errno::Txtbsy,
        libc::EFBIG => Errno::Fbig,
        libc::ENOSPC => Errno::Nospc,
        libc::ESPIPE => Errno::Spipe,
        libc::EROFS => Errno::Rofs,
        libc::EMLINK => Errno::Mlink,
        libc::EPIPE => Errno::Pipe,
        libc::ERANGE => Errno::Range,
        libc::ENAMETOOLONG => Errno::Nametoolong,
        libc::ENOTEMPTY => Errno::Notempty,
        libc::ELOOP => Errno::Loop,
        libc::EOVERFLOW => Errno::Overflow,
        libc::EILSEQ => Errno::Ilseq,
        libc::ENOTSUP => Errno::Notsup,
        libc::EDQUOT => Errno::Dquot,
        libc::EINTR => Errno::Intr,
        libc::ENOSYS => Errno::Nosys,
        libc::ETIMEDOUT => Errno::Timedout,
        libc::ENOTSOCK => Errno::Notsock,
        libc::ECONNREFUSED => Errno::Connrefused,
        libc::ECONNRESET => Errno::Connreset,
        libc::ECONNABORTED => Errno::Connaborted,
        libc::ENETUNREACH => Errno::Netunreach,
        libc::ENETDOWN => Errno::Netdown,
        libc::ENETRESET => Errno::Netreset,
        libc::EHOSTUNREACH => Errno::Hostunreach,
        libc::EADDRINUSE => Errno::Addrinuse,
        libc::EADDRNOTAVAIL => Errno::Addrnotavail,
        libc::EAFNOSUPPORT => Errno::Afnosupport,
        libc::EISCONN => Errno::Isconn,
        libc::ENOTCONN => Errno::Notconn,
        libc::EINPROGRESS => Errno::Inprogress,
        libc::EALREADY => Errno::Already,
        libc::EMSGSIZE => Errno::Msgsize,
        libc::ENOPROTOOPT => Errno::Noprotoopt,
        libc::EPROTONOSUPPORT => Errno::Protonosupport,
        _ => Errno::Io,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_keep_their_meaning() {
        assert_eq!(
            from_io_error(&io::Error::from_raw_os_error(libc::ELOOP)),
            Errno::Loop
        );
        assert_eq!(
            from_io_error(&io::Error::from_raw_os_error(libc::ENOTEMPTY)),
            Errno::Notempty
        );
        assert_eq!(
            from_io_error(&io::Error::from_raw_os_error(libc::EDQUOT)),
            Errno::Dquot
        );
        assert_eq!(
            from_io_error(&io::Error::from_raw_os_error(libc::ECONNREFUSED)),
            Errno::Connrefused
        );
        assert_eq!(
            from_io_error(&io::Error::from_raw_os_error(libc::EHOSTUNREACH)),
            Errno::Hostunreach
        );
    }

    #[test]
    fn kinds_without_os_number_are_mapped() {
        // cap-std's "a path led outside of the filesystem" error.
        let escape = io::Error::new(io::ErrorKind::PermissionDenied, "escape");
        assert_eq!(from_io_error(&escape), Errno::Perm);
        assert_eq!(from_io_error(&io::Error::other("x")), Errno::Io);
    }

    #[test]
    fn raw_values_match_the_spec() {
        assert_eq!(Errno::Fault.raw(), 21);
        assert_eq!(Errno::Notcapable.raw(), 76);
        assert_eq!(Errno::Nospc.raw(), 51);
    }
}
