//! Reading a blob defensively.
//!
//! The order of checks is the point of this file: magic, version, header and
//! table bounds, whole-file crc32 (before any content is trusted), every
//! section's offset and length against the file and the limits (before
//! anything is allocated), per-section crc32, and only then the content.
//! Nothing here indexes unchecked or allocates more than a limit allows,
//! whatever the input.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::error::DecodeError;
use super::format::{
    BlobHeader, COMPRESSION_NONE, COMPRESSION_ZSTD, FORMAT_MAJOR, FORMAT_MINOR, HEADER_LEN,
    KNOWN_FLAGS, MAGIC, MEMORY_DATA_ALIGN, MEMORY_DESCRIPTOR_LEN, PAGE_RUN_LEN, SECTION_ENTRY_LEN,
    SectionEntry, SectionKind, TRAILER_LEN, le_u32, le_u64,
};
use super::fs_archive::FsArchive;
use super::page_map::{self, PAGE_SIZE, PageRun};

/// Upper bounds the decoder enforces before allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest blob accepted, in bytes.
    pub max_blob_bytes: u64,
    /// Largest manifest section (decompressed), in bytes.
    pub max_manifest_bytes: u64,
    /// Largest byte length of one memory.
    pub max_memory_bytes: u64,
    /// Largest sum of all memory sections (decompressed, descriptors
    /// included). Bounds what a blob of many tiny zstd frames can expand to.
    pub max_total_memory_bytes: u64,
    /// Most sections accepted.
    pub max_sections: u32,
    /// Largest filesystem section (decompressed), in bytes.
    pub max_fs_bytes: u64,
    /// Most filesystem archive entries accepted.
    pub max_fs_entries: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_blob_bytes: 8 << 30,
            max_manifest_bytes: 64 << 20,
            max_memory_bytes: 4 << 30,
            max_total_memory_bytes: 16 << 30,
            max_sections: 4096,
            max_fs_bytes: 4 << 30,
            max_fs_entries: 1 << 20,
        }
    }
}

/// The bytes of a whole blob: read into memory ([`decode`]) or a read-only mapping of its file
/// ([`read_blob`]), so that resuming from a file copies nothing and can map memory pages copy-on-write.
pub(crate) enum BlobBytes {
    /// A blob handed over in memory.
    Owned(Vec<u8>),
    /// A blob file, mapped read-only; the file is kept to map memory runs from it.
    Mapped {
        /// The mapping of the whole file.
        map: memmap2::Mmap,
        /// The file itself.
        file: File,
    },
}

impl std::ops::Deref for BlobBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Owned(bytes) => bytes,
            Self::Mapped { map, .. } => map,
        }
    }
}

/// Where a memory image's bytes live.
#[derive(Clone)]
enum Backing {
    /// Inside the blob buffer (uncompressed section): no copy.
    Blob(Arc<BlobBytes>),
    /// A decompressed section.
    Owned(Vec<u8>),
}

/// One decoded linear memory: its length and its present page runs.
#[derive(Clone)]
pub struct MemoryImage {
    process: u32,
    memory: u32,
    byte_len: u64,
    runs: Vec<PageRun>,
    backing: Backing,
    /// Range of the concatenated run data within the backing buffer.
    data_start: usize,
    data_len: usize,
    /// File offset of the run data when stored uncompressed.
    file_offset: Option<u64>,
}

impl std::fmt::Debug for MemoryImage {
    // Not derived: the backing is the whole blob, which must not be dumped
    // into logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryImage")
            .field("process", &self.process)
            .field("memory", &self.memory)
            .field("byte_len", &self.byte_len)
            .field("runs", &self.runs)
            .field("present_bytes", &self.data_len)
            .field("borrows_blob", &self.borrows_blob())
            .field("data_file_offset", &self.file_offset)
            .finish()
    }
}

impl MemoryImage {
    /// Index of the process the memory belongs to.
    pub fn process(&self) -> u32 {
        self.process
    }

    /// Index of the memory within its process.
    pub fn memory(&self) -> u32 {
        self.memory
    }

    /// The memory's length in bytes.
    pub fn byte_len(&self) -> u64 {
        self.byte_len
    }

    /// The page map: runs of present 64 KiB pages.
    pub fn runs(&self) -> &[PageRun] {
        &self.runs
    }

    /// File offset of the first present byte when the section is stored
    /// uncompressed (always a multiple of 64 KiB), `None` when compressed or
    /// when no page is present.
    pub fn data_file_offset(&self) -> Option<u64> {
        self.file_offset
    }

    /// Whether the present runs borrow the blob buffer (uncompressed) rather
    /// than a decompressed copy.
    pub fn borrows_blob(&self) -> bool {
        matches!(self.backing, Backing::Blob(_))
    }

    fn data(&self) -> &[u8] {
        let buf: &[u8] = match &self.backing {
            Backing::Blob(b) => b,
            Backing::Owned(v) => v,
        };
        // The range was validated when the image was built.
        buf.get(self.data_start..self.data_start + self.data_len)
            .unwrap_or(&[])
    }

    /// The present runs as (byte offset in the memory, bytes), ascending.
    pub fn present_runs(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        let data = self.data();
        let byte_len = self.byte_len;
        let mut consumed = 0usize;
        self.runs.iter().filter_map(move |r| {
            let (start, end) = r.byte_range(byte_len)?;
            let len = (end - start) as usize;
            let slice = data.get(consumed..consumed + len)?;
            consumed += len;
            Some((start, slice))
        })
    }

    /// The absent (all-zero) runs as (byte offset, length), ascending.
    pub fn absent_runs(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let byte_len = self.byte_len;
        let mut cursor = 0u64;
        let mut runs = self.runs.iter();
        let mut done = false;
        std::iter::from_fn(move || {
            while !done {
                match runs.next() {
                    Some(r) => {
                        let (start, end) = r.byte_range(byte_len)?;
                        let gap = (cursor, start - cursor);
                        cursor = end;
                        if gap.1 > 0 {
                            return Some(gap);
                        }
                    }
                    None => {
                        done = true;
                        if cursor < byte_len {
                            return Some((cursor, byte_len - cursor));
                        }
                    }
                }
            }
            None
        })
    }

    /// Writes the present runs into `dst` at their offsets. Absent runs are
    /// left as they are: `dst` is expected to be zeroed, as fresh wasm memory
    /// is. Fails if `dst` is shorter than [`MemoryImage::byte_len`].
    pub fn copy_into(&self, dst: &mut [u8]) -> Result<(), DecodeError> {
        if (dst.len() as u64) < self.byte_len {
            return Err(DecodeError::DestinationTooShort {
                needed: self.byte_len,
                found: dst.len() as u64,
            });
        }
        for (offset, bytes) in self.present_runs() {
            let start = offset as usize;
            if let Some(d) = dst.get_mut(start..start + bytes.len()) {
                d.copy_from_slice(bytes);
            }
        }
        Ok(())
    }

    /// For an uncompressed image of a blob read from a file ([`read_blob`]): the file, and where each
    /// present run lies in it, so that a restore can map the runs copy-on-write instead of copying them.
    /// `None` for images decoded from memory or decompressed.
    pub fn file_runs(&self) -> Option<(&File, Vec<FileRun>)> {
        let Backing::Blob(blob) = &self.backing else {
            return None;
        };
        let BlobBytes::Mapped { map, file } = &**blob else {
            return None;
        };
        let base = map.as_ptr() as usize;
        let runs = self
            .present_runs()
            .map(|(offset, bytes)| FileRun {
                memory_offset: offset,
                file_offset: (bytes.as_ptr() as usize - base) as u64,
                len: bytes.len() as u64,
            })
            .collect();
        Some((file, runs))
    }
}

/// Where a present run of a memory image lies in its blob file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileRun {
    /// Byte offset of the run in the linear memory.
    pub memory_offset: u64,
    /// Byte offset of the run's data in the blob file.
    pub file_offset: u64,
    /// Length of the run in bytes.
    pub len: u64,
}

/// A fully decoded and verified blob.
#[derive(Debug)]
pub struct DecodedBlob<M> {
    /// The header (format version, module hash, ...).
    pub header: BlobHeader,
    /// The section table, for diagnostics.
    pub sections: Vec<SectionEntry>,
    /// The runtime's manifest.
    pub manifest: M,
    /// The memories, in section order.
    pub memories: Vec<MemoryImage>,
    /// The sandbox directory archive.
    pub filesystem: FsArchive,
}

impl<M> DecodedBlob<M> {
    /// The same blob with its manifest converted (an older manifest schema read into the current one).
    pub fn map_manifest<N>(self, f: impl FnOnce(M) -> N) -> DecodedBlob<N> {
        DecodedBlob {
            header: self.header,
            sections: self.sections,
            manifest: f(self.manifest),
            memories: self.memories,
            filesystem: self.filesystem,
        }
    }
}

impl BlobHeader {
    /// Refuses a blob made from another module than `expected`.
    pub fn ensure_module(&self, expected: &[u8; 32]) -> Result<(), DecodeError> {
        if &self.module_sha256 == expected {
            Ok(())
        } else {
            Err(DecodeError::ModuleMismatch {
                expected: hex::encode(expected),
                found: hex::encode(self.module_sha256),
            })
        }
    }
}

/// Decodes `bytes` with serde through bincode, bounding the decoder's
/// allocations by roughly `budget` bytes.
///
/// bincode trusts length prefixes (`Vec::with_capacity(len)`) unless a limit
/// is configured, and its limit is a const generic, so the smallest of a few
/// tiers that covers `budget` is chosen at run time.
pub(crate) fn bincode_decode_bounded<T: DeserializeOwned>(
    bytes: &[u8],
    budget: u64,
) -> Result<(T, usize), bincode::error::DecodeError> {
    macro_rules! tier {
        ($n:expr) => {
            bincode::serde::decode_from_slice(
                bytes,
                bincode::config::standard().with_limit::<{ $n }>(),
            )
        };
    }
    if budget <= 0x10_0000 {
        tier!(0x10_0000)
    } else if budget <= 0x100_0000 {
        tier!(0x100_0000)
    } else if budget <= 0x1000_0000 {
        tier!(0x1000_0000)
    } else if budget <= 0x4000_0000 {
        tier!(0x4000_0000)
    } else {
        tier!(usize::MAX)
    }
}

/// Checks magic, length, version and flags, and returns the header. Does not
/// verify checksums: use it to look at a blob's module hash or version before
/// deciding to read the rest.
pub fn peek_header(bytes: &[u8]) -> Result<BlobHeader, DecodeError> {
    // A short file whose bytes so far match the magic is truncated; one that
    // does not is simply not a blob.
    let prefix = bytes.len().min(MAGIC.len());
    if bytes[..prefix] != MAGIC[..prefix] {
        return Err(DecodeError::BadMagic);
    }
    let raw: &[u8; HEADER_LEN] =
        bytes
            .first_chunk::<HEADER_LEN>()
            .ok_or(DecodeError::Truncated {
                expected: HEADER_LEN as u64,
                found: bytes.len() as u64,
            })?;
    let header = BlobHeader::from_bytes(raw);
    if header.format_major != FORMAT_MAJOR {
        return Err(DecodeError::UnsupportedMajor {
            found: header.format_major,
            supported: FORMAT_MAJOR,
        });
    }
    if header.format_minor > FORMAT_MINOR {
        return Err(DecodeError::NewerMinor {
            found: header.format_minor,
            supported: FORMAT_MINOR,
        });
    }
    if header.flags & !KNOWN_FLAGS != 0 {
        return Err(DecodeError::UnknownFlags(header.flags & !KNOWN_FLAGS));
    }
    Ok(header)
}

/// Decodes and verifies a blob held in memory. Uncompressed memory runs
/// borrow `bytes` (kept alive by the returned images), so nothing is copied.
pub fn decode<M: DeserializeOwned>(
    bytes: Vec<u8>,
    limits: &DecodeLimits,
) -> Result<DecodedBlob<M>, DecodeError> {
    decode_inner(Arc::new(BlobBytes::Owned(bytes)), limits)
}

/// Maps and decodes the blob at `path`. The file length is checked against
/// [`DecodeLimits::max_blob_bytes`] before anything is mapped; nothing is copied
/// (memory runs borrow the mapping, see [`MemoryImage::file_runs`]).
///
/// The file must not be modified while the blob is in use: Stasis writes blobs
/// only by atomic rename, so a mapped blob file is never changed in place (a
/// file truncated under a mapping would fault on access).
pub fn read_blob<M: DeserializeOwned>(
    path: &Path,
    limits: &DecodeLimits,
) -> Result<DecodedBlob<M>, DecodeError> {
    let file = File::open(path).map_err(DecodeError::Io)?;
    let len = file.metadata().map_err(DecodeError::Io)?.len();
    if len > limits.max_blob_bytes {
        return Err(DecodeError::LimitExceeded {
            what: "blob size",
            value: len,
            limit: limits.max_blob_bytes,
        });
    }
    if len == 0 {
        // Nothing to map (a zero-length mapping is an error); decoding reports the truncation.
        return decode_inner(Arc::new(BlobBytes::Owned(Vec::new())), limits);
    }
    // SAFETY: the mapping is read-only and private to this process; blob files are
    // only ever replaced by rename, never written in place (see above), so the
    // bytes cannot change under the slices borrowed from it. Every length and
    // offset is still checked against the mapping's length before use.
    let map =
        unsafe { memmap2::MmapOptions::new().populate().map(&file) }.map_err(DecodeError::Io)?;
    decode_inner(Arc::new(BlobBytes::Mapped { map, file }), limits)
}

fn limit(what: &'static str, value: u64, limit: u64) -> Result<(), DecodeError> {
    if value > limit {
        Err(DecodeError::LimitExceeded { what, value, limit })
    } else {
        Ok(())
    }
}

/// Largest raw length a memory section may declare: the memory limit plus
/// descriptor, a worst-case page map and the alignment padding.
fn memory_section_bound(max_memory_bytes: u64) -> u64 {
    let pages = max_memory_bytes.div_ceil(PAGE_SIZE);
    max_memory_bytes
        .saturating_add((MEMORY_DESCRIPTOR_LEN as u64) + MEMORY_DATA_ALIGN)
        .saturating_add(pages.saturating_mul(PAGE_RUN_LEN as u64))
}

fn decode_inner<M: DeserializeOwned>(
    blob: Arc<BlobBytes>,
    limits: &DecodeLimits,
) -> Result<DecodedBlob<M>, DecodeError> {
    let bytes: &[u8] = &blob;
    let len = bytes.len() as u64;
    limit("blob size", len, limits.max_blob_bytes)?;
    let header = peek_header(bytes)?;
    if len < header.total_len {
        return Err(DecodeError::Truncated {
            expected: header.total_len,
            found: len,
        });
    }
    if len > header.total_len {
        return Err(DecodeError::TrailingData {
            expected: header.total_len,
            found: len,
        });
    }
    limit(
        "section count",
        u64::from(header.section_count),
        u64::from(limits.max_sections),
    )?;
    let table_len = u64::from(header.section_count) * SECTION_ENTRY_LEN as u64;
    let table_fits = header.table_offset >= HEADER_LEN as u64
        && header
            .table_offset
            .checked_add(table_len)
            .and_then(|end| end.checked_add(TRAILER_LEN as u64))
            == Some(header.total_len);
    if !table_fits {
        return Err(DecodeError::BadSectionTable {
            table_offset: header.table_offset,
            section_count: header.section_count,
            total_len: header.total_len,
        });
    }

    // Whole-file checksum before any table entry or content is believed.
    // `len >= HEADER_LEN + TRAILER_LEN` holds because the table fits.
    let body_end = bytes.len() - TRAILER_LEN;
    let stored = le_u32(&bytes[body_end..]);
    let table_start = header.table_offset as usize;
    let (computed, section_crcs) = body_checksums(
        bytes,
        body_end,
        &bytes[table_start..table_start + table_len as usize],
    );
    if stored != computed {
        return Err(DecodeError::ChecksumMismatch { stored, computed });
    }

    // Every entry's bounds and limits, before any allocation for content.
    let table = &bytes[table_start..table_start + table_len as usize];
    let mut entries = Vec::with_capacity(header.section_count as usize);
    let mut prev_end = HEADER_LEN as u64;
    let mut manifest_index = None;
    let mut fs_index = None;
    let mut total_memory = 0u64;
    for (i, raw) in table.chunks_exact(SECTION_ENTRY_LEN).enumerate() {
        let index = i as u32;
        let mut arr = [0u8; SECTION_ENTRY_LEN];
        arr.copy_from_slice(raw);
        let e = SectionEntry::from_bytes(&arr);
        let kind = SectionKind::from_u16(e.kind).ok_or(DecodeError::UnknownSectionKind {
            index,
            kind: e.kind,
        })?;
        if e.compression != COMPRESSION_NONE && e.compression != COMPRESSION_ZSTD {
            return Err(DecodeError::UnknownCompression {
                index,
                compression: e.compression,
            });
        }
        let end = e.offset.checked_add(e.stored_len);
        if e.offset < HEADER_LEN as u64 || end.is_none_or(|end| end > header.table_offset) {
            return Err(DecodeError::SectionOutOfBounds {
                index,
                offset: e.offset,
                length: e.stored_len,
            });
        }
        if e.offset < prev_end {
            return Err(DecodeError::SectionOverlap { index });
        }
        prev_end = e.offset + e.stored_len;
        if e.compression == COMPRESSION_NONE && e.stored_len != e.raw_len {
            return Err(DecodeError::SectionLengthMismatch { index });
        }
        match kind {
            SectionKind::Manifest => {
                limit("manifest section", e.raw_len, limits.max_manifest_bytes)?;
                if manifest_index.replace(i).is_some() {
                    return Err(DecodeError::DuplicateSection { kind, index });
                }
            }
            SectionKind::Filesystem => {
                limit("filesystem section", e.raw_len, limits.max_fs_bytes)?;
                if fs_index.replace(i).is_some() {
                    return Err(DecodeError::DuplicateSection { kind, index });
                }
            }
            SectionKind::Memory => {
                limit(
                    "memory section",
                    e.raw_len,
                    memory_section_bound(limits.max_memory_bytes),
                )?;
                total_memory = total_memory.saturating_add(e.raw_len);
                limit("total memory", total_memory, limits.max_total_memory_bytes)?;
            }
        }
        entries.push((kind, e));
    }
    let manifest_index =
        manifest_index.ok_or(DecodeError::MissingSection(SectionKind::Manifest))?;
    let fs_index = fs_index.ok_or(DecodeError::MissingSection(SectionKind::Filesystem))?;

    // Per-section checksums: all of them before any content is parsed.
    for (i, (_, e)) in entries.iter().enumerate() {
        let crc = match &section_crcs {
            Some(crcs) => crcs[i],
            None => crc32fast::hash(stored_bytes(bytes, e)),
        };
        if crc != e.crc32 {
            return Err(DecodeError::SectionChecksumMismatch { index: i as u32 });
        }
    }

    let (_, manifest_entry) = &entries[manifest_index];
    let manifest_raw = raw_bytes(bytes, manifest_entry, manifest_index as u32)?;
    let budget = limits.max_manifest_bytes.saturating_mul(4);
    let (manifest, used): (M, usize) =
        bincode_decode_bounded(&manifest_raw, budget).map_err(DecodeError::Manifest)?;
    if used != manifest_raw.len() {
        return Err(DecodeError::ManifestTrailingBytes(
            (manifest_raw.len() - used) as u64,
        ));
    }

    let (_, fs_entry) = &entries[fs_index];
    let fs_raw = raw_bytes(bytes, fs_entry, fs_index as u32)?;
    let filesystem =
        FsArchive::from_section(&fs_raw, limits.max_fs_entries).map_err(DecodeError::Filesystem)?;

    let mut memories = Vec::new();
    let mut seen = HashSet::new();
    for (i, (kind, e)) in entries.iter().enumerate() {
        if *kind != SectionKind::Memory {
            continue;
        }
        let image = memory_image(&blob, e, i as u32, limits)?;
        if !seen.insert((image.process, image.memory)) {
            return Err(DecodeError::DuplicateMemory {
                process: image.process,
                memory: image.memory,
            });
        }
        memories.push(image);
    }

    Ok(DecodedBlob {
        header,
        sections: entries.into_iter().map(|(_, e)| e).collect(),
        manifest,
        memories,
        filesystem,
    })
}

/// The stored bytes of a section whose bounds were checked.
/// The crc32 of the blob body (everything before the trailer) and, when the section table describes
/// ascending, disjoint sections inside the body, each section's crc32 — all from one pass over the bytes,
/// folding the sections' crcs into the body's, so that resuming a large blob reads its memory once, not
/// twice. The table is not trusted here: it only says where to cut; a table that does not describe such
/// sections gives the plain body crc and `None` (the section crcs are then computed after validation).
fn body_checksums(bytes: &[u8], body_end: usize, table: &[u8]) -> (u32, Option<Vec<u32>>) {
    let mut body = crc32fast::Hasher::new();
    let mut crcs = Vec::with_capacity(table.len() / SECTION_ENTRY_LEN);
    let mut position = 0usize;
    for raw in table.chunks_exact(SECTION_ENTRY_LEN) {
        let mut arr = [0u8; SECTION_ENTRY_LEN];
        arr.copy_from_slice(raw);
        let e = SectionEntry::from_bytes(&arr);
        let range = usize::try_from(e.offset).ok().and_then(|start| {
            let end = start.checked_add(usize::try_from(e.stored_len).ok()?)?;
            (start >= position && end <= body_end).then_some(start..end)
        });
        let Some(range) = range else {
            return (crc32fast::hash(&bytes[..body_end]), None);
        };
        body.update(&bytes[position..range.start]);
        let mut section = crc32fast::Hasher::new();
        section.update(&bytes[range.clone()]);
        let section_crc = section.clone().finalize();
        body.combine(&section);
        crcs.push(section_crc);
        position = range.end;
    }
    body.update(&bytes[position..body_end]);
    (body.finalize(), Some(crcs))
}

fn stored_bytes<'a>(bytes: &'a [u8], e: &SectionEntry) -> &'a [u8] {
    bytes
        .get(e.offset as usize..(e.offset + e.stored_len) as usize)
        .unwrap_or(&[])
}

/// The section's bytes after decompression; the output is bounded by the
/// declared raw length, which was checked against the limits.
fn raw_bytes<'a>(
    bytes: &'a [u8],
    e: &SectionEntry,
    index: u32,
) -> Result<Cow<'a, [u8]>, DecodeError> {
    let stored = stored_bytes(bytes, e);
    if e.compression == COMPRESSION_NONE {
        return Ok(Cow::Borrowed(stored));
    }
    let capacity = usize::try_from(e.raw_len).map_err(|_| DecodeError::LimitExceeded {
        what: "decompressed section",
        value: e.raw_len,
        limit: usize::MAX as u64,
    })?;
    let out = zstd::bulk::decompress(stored, capacity)
        .map_err(|source| DecodeError::Decompress { index, source })?;
    if out.len() as u64 != e.raw_len {
        return Err(DecodeError::DecompressedLength {
            index,
            expected: e.raw_len,
            found: out.len() as u64,
        });
    }
    Ok(Cow::Owned(out))
}

/// Parses a memory section: `process:u32 memory:u32 byte_len:u64
/// run_count:u64 data_offset:u64 runs[run_count] (padding) data`.
fn memory_image(
    blob: &Arc<BlobBytes>,
    e: &SectionEntry,
    index: u32,
    limits: &DecodeLimits,
) -> Result<MemoryImage, DecodeError> {
    let bad = |reason| DecodeError::BadPageMap { index, reason };
    let (backing, section_start, file_offset_base) = match raw_bytes(blob, e, index)? {
        Cow::Borrowed(_) => (
            Backing::Blob(Arc::clone(blob)),
            e.offset as usize,
            Some(e.offset),
        ),
        Cow::Owned(v) => (Backing::Owned(v), 0, None),
    };
    let buf: &[u8] = match &backing {
        Backing::Blob(b) => b,
        Backing::Owned(v) => v,
    };
    let section = buf
        .get(section_start..section_start + e.raw_len as usize)
        .ok_or(bad("section outside its buffer"))?;
    let desc = section
        .first_chunk::<MEMORY_DESCRIPTOR_LEN>()
        .ok_or(bad("descriptor truncated"))?;
    let process = le_u32(&desc[0..4]);
    let memory = le_u32(&desc[4..8]);
    let byte_len = le_u64(&desc[8..16]);
    let run_count = le_u64(&desc[16..24]);
    let data_offset = le_u64(&desc[24..32]);
    limit("memory byte length", byte_len, limits.max_memory_bytes)?;
    let runs_end = run_count
        .checked_mul(PAGE_RUN_LEN as u64)
        .and_then(|l| l.checked_add(MEMORY_DESCRIPTOR_LEN as u64))
        .filter(|&end| end <= data_offset && data_offset <= section.len() as u64)
        .ok_or(bad("page map or data offset beyond the section"))?;
    let runs: Vec<PageRun> = section[MEMORY_DESCRIPTOR_LEN..runs_end as usize]
        .chunks_exact(PAGE_RUN_LEN)
        .map(|r| PageRun {
            start_page: le_u64(&r[0..8]),
            page_count: le_u64(&r[8..16]),
        })
        .collect();
    let covered = page_map::validate(&runs, byte_len).map_err(|v| bad(v.as_str()))?;
    if data_offset.checked_add(covered) != Some(section.len() as u64) {
        return Err(bad("data length does not match the page map"));
    }
    let data_start = section_start + data_offset as usize;
    Ok(MemoryImage {
        process,
        memory,
        byte_len,
        runs,
        backing,
        data_start,
        data_len: covered as usize,
        file_offset: file_offset_base
            .filter(|_| covered > 0)
            .map(|base| base + data_offset),
    })
}
