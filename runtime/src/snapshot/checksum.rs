//! CRC32 that is computed as bytes stream through a writer or reader.
//!
//! The blob carries a crc32 per section and one over the whole file. Computing
//! them while the bytes pass (in the style of firecracker's `CRC64Writer`) means
//! the encoder never makes a second pass over guest memory and never copies it.

use std::io::{self, Read, Write};

/// A [`Write`] adapter that forwards every byte to `inner` and folds it into a
/// running crc32 and byte count.
#[derive(Debug)]
pub struct ChecksumWriter<W> {
    inner: W,
    hasher: crc32fast::Hasher,
    written: u64,
}

impl<W: Write> ChecksumWriter<W> {
    /// Wraps `inner`; the checksum starts empty.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: crc32fast::Hasher::new(),
            written: 0,
        }
    }

    /// The crc32 of every byte written so far.
    pub fn crc32(&self) -> u32 {
        self.hasher.clone().finalize()
    }

    /// How many bytes have been written so far (the position in the output
    /// when the writer wraps the whole file).
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Gives back the wrapped writer.
    pub fn into_inner(self) -> W {
        self.inner
    }

    /// Starts a nested checksum (a blob section): bytes written through the
    /// returned writer are hashed once, into the section's crc, and that crc
    /// is folded into this writer's when the section writer is dropped
    /// (crc32 combination), so guest memory is not hashed twice.
    pub fn section(&mut self) -> SectionWriter<'_, W> {
        SectionWriter {
            parent: self,
            hasher: crc32fast::Hasher::new(),
        }
    }
}

/// A section inside a [`ChecksumWriter`]; see [`ChecksumWriter::section`].
#[derive(Debug)]
pub struct SectionWriter<'a, W: Write> {
    parent: &'a mut ChecksumWriter<W>,
    hasher: crc32fast::Hasher,
}

impl<W: Write> SectionWriter<'_, W> {
    /// The crc32 of the bytes written in this section so far.
    pub fn crc32(&self) -> u32 {
        self.hasher.clone().finalize()
    }
}

impl<W: Write> Write for SectionWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.parent.inner.write(buf)?;
        let accepted = buf.get(..n).unwrap_or(buf);
        self.hasher.update(accepted);
        self.parent.written += accepted.len() as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.parent.inner.flush()
    }
}

impl<W: Write> Drop for SectionWriter<'_, W> {
    fn drop(&mut self) {
        // Every byte counted in `parent.written` must be in the parent's crc,
        // including when the section is abandoned halfway by an error.
        self.parent.hasher.combine(&self.hasher);
    }
}

impl<W: Write> Write for ChecksumWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        // Only the bytes the inner writer accepted count: a short write must
        // not make the checksum disagree with what actually reached the file.
        let accepted = buf.get(..n).unwrap_or(buf);
        self.hasher.update(accepted);
        self.written += accepted.len() as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A [`Read`] adapter that folds every byte read from `inner` into a running
/// crc32 and byte count.
#[derive(Debug)]
pub struct ChecksumReader<R> {
    inner: R,
    hasher: crc32fast::Hasher,
    read: u64,
}

impl<R: Read> ChecksumReader<R> {
    /// Wraps `inner`; the checksum starts empty.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: crc32fast::Hasher::new(),
            read: 0,
        }
    }

    /// The crc32 of every byte read so far.
    pub fn crc32(&self) -> u32 {
        self.hasher.clone().finalize()
    }

    /// How many bytes have been read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Gives back the wrapped reader.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for ChecksumReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let got = buf.get(..n).unwrap_or(&[]);
        self.hasher.update(got);
        self.read += got.len() as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_and_reader_agree_with_one_shot_crc() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let mut w = ChecksumWriter::new(Vec::new());
        for chunk in data.chunks(777) {
            w.write_all(chunk).expect("vec write");
        }
        assert_eq!(w.crc32(), crc32fast::hash(&data));
        assert_eq!(w.bytes_written(), data.len() as u64);
        assert_eq!(w.into_inner(), data);

        // Sections fold into the outer checksum as if written directly.
        let mut w = ChecksumWriter::new(Vec::new());
        w.write_all(&data[..10]).expect("vec write");
        {
            let mut s = w.section();
            s.write_all(&data[10..50_000]).expect("vec write");
            assert_eq!(s.crc32(), crc32fast::hash(&data[10..50_000]));
        }
        w.write_all(&data[50_000..]).expect("vec write");
        assert_eq!(w.crc32(), crc32fast::hash(&data));
        assert_eq!(w.bytes_written(), data.len() as u64);

        let mut r = ChecksumReader::new(&data[..]);
        let mut back = Vec::new();
        r.read_to_end(&mut back).expect("slice read");
        assert_eq!(r.crc32(), crc32fast::hash(&data));
        assert_eq!(r.bytes_read(), data.len() as u64);
        assert_eq!(back, data);
    }
}
