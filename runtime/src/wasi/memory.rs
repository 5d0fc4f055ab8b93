//! Bounds-checked access to a guest's linear memory: every pointer and length a guest hands us goes through
//! here, and anything out of bounds becomes `EFAULT` instead of a host panic.

use super::errno::{Errno, GuestResult};

/// Most iovecs a single `fd_read`/`fd_write` call may pass (Linux's `IOV_MAX`); more is `EINVAL`.
pub const MAX_IOVECS: u32 = 1024;

/// A guest's linear memory, borrowed for the duration of one import call.
pub struct GuestMemory<'a> {
    bytes: &'a mut [u8],
}

/// One `iovec`: a guest pointer and length, already checked to lie inside memory.
#[derive(Clone, Copy, Debug)]
pub struct IoVec {
    /// Guest address of the buffer.
    pub ptr: u32,
    /// Length of the buffer in bytes.
    pub len: u32,
}

impl<'a> GuestMemory<'a> {
    /// Wraps the bytes of a linear memory.
    pub fn new(bytes: &'a mut [u8]) -> Self {
        Self { bytes }
    }

    fn range(&self, ptr: u32, len: usize) -> GuestResult<std::ops::Range<usize>> {
        let start = ptr as usize;
        let end = start.checked_add(len).ok_or(Errno::Fault)?;
        if end > self.bytes.len() {
            return Err(Errno::Fault);
        }
        Ok(start..end)
    }

    /// The `len` bytes at `ptr`.
    pub fn slice(&self, ptr: u32, len: u32) -> GuestResult<&[u8]> {
        let r = self.range(ptr, len as usize)?;
        Ok(&self.bytes[r])
    }

    /// The `len` bytes at `ptr`, writable.
    pub fn slice_mut(&mut self, ptr: u32, len: u32) -> GuestResult<&mut [u8]> {
        let r = self.range(ptr, len as usize)?;
        Ok(&mut self.bytes[r])
    }

    /// Copies `data` to `ptr`.
    pub fn write(&mut self, ptr: u32, data: &[u8]) -> GuestResult<()> {
        let r = self.range(ptr, data.len())?;
        self.bytes[r].copy_from_slice(data);
        Ok(())
    }

    /// Reads a little-endian `u8`.
    pub fn read_u8(&self, ptr: u32) -> GuestResult<u8> {
        Ok(self.slice(ptr, 1)?[0])
    }

    /// Reads a little-endian `u16`.
    pub fn read_u16(&self, ptr: u32) -> GuestResult<u16> {
        let b = self.slice(ptr, 2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    /// Reads a little-endian `u32`.
    pub fn read_u32(&self, ptr: u32) -> GuestResult<u32> {
        let b = self.slice(ptr, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads a little-endian `u64`.
    pub fn read_u64(&self, ptr: u32) -> GuestResult<u64> {
        let b = self.slice(ptr, 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// Writes a little-endian `u32`.
    pub fn write_u32(&mut self, ptr: u32, v: u32) -> GuestResult<()> {
        self.write(ptr, &v.to_le_bytes())
    }

    /// Writes a little-endian `u64`.
    pub fn write_u64(&mut self, ptr: u32, v: u64) -> GuestResult<()> {
        self.write(ptr, &v.to_le_bytes())
    }

    /// Reads a UTF-8 path of `len` bytes at `ptr`, refusing lengths over `max_len` with `ENAMETOOLONG` before
    /// touching memory, and invalid UTF-8 with `EILSEQ` (as wasmtime-wasi does).
    pub fn read_path(&self, ptr: u32, len: u32, max_len: usize) -> GuestResult<String> {
        if len as usize > max_len {
            return Err(Errno::Nametoolong);
        }
        let b = self.slice(ptr, len)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| Errno::Ilseq)
    }

    /// Reads an array of `count` iovecs at `ptr`, each checked to lie inside memory.
    pub fn read_iovecs(&self, ptr: u32, count: u32) -> GuestResult<Vec<IoVec>> {
        if count > MAX_IOVECS {
            return Err(Errno::Inval);
        }
        // Check the whole array first, so `count` never sizes an allocation for an out-of-bounds array.
        self.slice(ptr, count.checked_mul(8).ok_or(Errno::Fault)?)?;
        let mut out = Vec::with_capacity(count as usize);
        for i in 0..count {
            let at = ptr + i * 8;
            let iov = IoVec {
                ptr: self.read_u32(at)?,
                len: self.read_u32(at + 4)?,
            };
            self.slice(iov.ptr, iov.len)?;
            out.push(iov);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_bounds_is_efault() {
        let mut mem = vec![0u8; 16];
        let mut m = GuestMemory::new(&mut mem);
        assert_eq!(m.read_u32(13), Err(Errno::Fault));
        assert_eq!(m.write_u64(u32::MAX, 1), Err(Errno::Fault));
        assert_eq!(m.slice(8, 8).map(<[u8]>::len), Ok(8));
        assert_eq!(m.slice(9, 8).map(<[u8]>::len), Err(Errno::Fault));
    }

    #[test]
    fn paths_are_bounded_before_read() {
        let mut mem = b"hello\xff".to_vec();
        let m = GuestMemory::new(&mut mem);
        assert_eq!(m.read_path(0, 5, 4), Err(Errno::Nametoolong));
        assert_eq!(m.read_path(0, 5, 10).as_deref(), Ok("hello"));
        assert_eq!(m.read_path(0, 6, 10), Err(Errno::Ilseq));
        assert_eq!(m.read_path(0, 600, 1000), Err(Errno::Fault));
    }

    #[test]
    fn iovec_count_is_capped() {
        let mut mem = vec![0u8; 64];
        let m = GuestMemory::new(&mut mem);
        assert_eq!(
            m.read_iovecs(0, MAX_IOVECS + 1).map(|v| v.len()),
            Err(Errno::Inval)
        );
        assert_eq!(m.read_iovecs(0, 1000).map(|v| v.len()), Err(Errno::Fault));
        assert_eq!(m.read_iovecs(0, 8).map(|v| v.len()), Ok(8));
    }
}
