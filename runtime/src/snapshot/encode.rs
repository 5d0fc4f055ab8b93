//! Writing a blob: the zero-page scan, layout planning, streaming with
//! checksums, and the atomic write-to-path.
//!
//! All section sizes are known before the first byte is written (the zero
//! scan yields the page runs; manifest and archive index are small and
//! serialized up front; a compressed section is compressed into memory first),
//! so the header can carry the total length and the table offset. The section
//! table itself goes after the sections because each entry's crc32 is only
//! known once its section has streamed through. Guest memory is never copied:
//! uncompressed runs are written straight from the caller's slices.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde::Serialize;

use super::checksum::ChecksumWriter;
use super::error::EncodeError;
use super::format::{
    BlobHeader, COMPRESSION_NONE, COMPRESSION_ZSTD, Compression, FORMAT_MAJOR, FORMAT_MINOR,
    HEADER_LEN, MEMORY_DATA_ALIGN, MEMORY_DESCRIPTOR_LEN, PAGE_RUN_LEN, SECTION_ENTRY_LEN,
    SectionEntry, SectionKind, TRAILER_LEN, align_up,
};
use super::fs_archive::FsArchive;
use super::page_map::{self, PAGE_SIZE, PageRun};

/// Output buffer size. Large writes of page runs bypass it; it only batches
/// the small pieces (header, descriptors, padding, table) and keeps syscalls
/// few.
const WRITE_BUFFER: usize = 1 << 20;

/// Zero bytes for alignment padding, written by reference rather than
/// allocated per blob.
static ZEROS: [u8; MEMORY_DATA_ALIGN as usize] = [0; MEMORY_DATA_ALIGN as usize];

/// One linear memory to store, borrowed from the live instance.
#[derive(Debug, Clone, Copy)]
pub struct MemorySection<'a> {
    /// Index of the process (instance) in the sandbox.
    pub process: u32,
    /// Index of the memory within the process.
    pub memory: u32,
    /// The memory's bytes; its length is the memory's byte length.
    pub data: &'a [u8],
}

/// How to encode a blob.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Compression applied to every section. Off by default: a local pause
    /// should run at disk speed, and uncompressed memory stays mmap-able.
    /// With zstd every section is compressed into memory before the first
    /// byte is written (lengths must be known for the header), so peak memory
    /// grows by the compressed size of the blob.
    pub compression: Compression,
}

/// What [`encode`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobSummary {
    /// Bytes written, trailer included.
    pub total_bytes: u64,
    /// Number of sections.
    pub section_count: u32,
    /// Pages (64 KiB) stored across all memories.
    pub present_pages: u64,
    /// All-zero pages skipped across all memories.
    pub zero_pages: u64,
    /// crc32 of the whole blob before the trailer (the trailer's value).
    pub crc32: u32,
}

/// The bytes of one section, as borrowed pieces or a compressed buffer.
enum Body<'a> {
    Pieces(Vec<&'a [u8]>),
    Compressed(Vec<u8>),
}

struct Planned<'a> {
    kind: SectionKind,
    compression: u8,
    offset: u64,
    stored_len: u64,
    raw_len: u64,
    body: Body<'a>,
}

/// Serializes a memory descriptor: `process:u32 memory:u32 byte_len:u64
/// run_count:u64 data_offset:u64` then `run_count × (start_page:u64
/// page_count:u64)`. `data_offset` is relative to the section start.
fn memory_descriptor(m: &MemorySection<'_>, runs: &[PageRun], data_offset: u64) -> Vec<u8> {
    let mut d = Vec::with_capacity(MEMORY_DESCRIPTOR_LEN + runs.len() * PAGE_RUN_LEN);
    d.extend_from_slice(&m.process.to_le_bytes());
    d.extend_from_slice(&m.memory.to_le_bytes());
    d.extend_from_slice(&(m.data.len() as u64).to_le_bytes());
    d.extend_from_slice(&(runs.len() as u64).to_le_bytes());
    d.extend_from_slice(&data_offset.to_le_bytes());
    for r in runs {
        d.extend_from_slice(&r.start_page.to_le_bytes());
        d.extend_from_slice(&r.page_count.to_le_bytes());
    }
    d
}

/// The slices of `data` the runs cover.
fn run_slices<'a>(data: &'a [u8], runs: &[PageRun]) -> Vec<&'a [u8]> {
    runs.iter()
        .filter_map(|r| {
            let (start, end) = r.byte_range(data.len() as u64)?;
            data.get(start as usize..end as usize)
        })
        .collect()
}

fn compress(index: u32, level: i32, pieces: &[&[u8]]) -> Result<Vec<u8>, EncodeError> {
    let err = |source| EncodeError::Compress { index, source };
    let mut enc = zstd::stream::Encoder::new(Vec::new(), level).map_err(err)?;
    for p in pieces {
        enc.write_all(p).map_err(err)?;
    }
    enc.finish().map_err(err)
}

/// Appends the plan of one section at `*offset` and advances the offset;
/// compresses the section now when asked to, so its stored length is known.
fn plan_section<'a>(
    plans: &mut Vec<Planned<'a>>,
    offset: &mut u64,
    opts: &EncodeOptions,
    kind: SectionKind,
    pieces: Vec<&'a [u8]>,
) -> Result<(), EncodeError> {
    let raw_len: u64 = pieces.iter().map(|p| p.len() as u64).sum();
    let index = plans.len() as u32;
    let (compression, stored_len, body) = match opts.compression {
        Compression::None => (COMPRESSION_NONE, raw_len, Body::Pieces(pieces)),
        Compression::Zstd { level } => {
            let c = compress(index, level, &pieces)?;
            (COMPRESSION_ZSTD, c.len() as u64, Body::Compressed(c))
        }
    };
    plans.push(Planned {
        kind,
        compression,
        offset: *offset,
        stored_len,
        raw_len,
        body,
    });
    *offset += stored_len;
    Ok(())
}

/// Writes a blob to `out`: header, manifest, filesystem archive, memories,
/// section table, trailer. See the [module docs](super) for the layout.
///
/// `out` is wrapped in a 1 MiB buffer; pass an unbuffered file.
pub fn encode<M: Serialize, W: Write>(
    out: W,
    module_sha256: [u8; 32],
    manifest: &M,
    memories: &[MemorySection<'_>],
    fs: &FsArchive,
    opts: &EncodeOptions,
) -> Result<BlobSummary, EncodeError> {
    let manifest_bytes = bincode::serde::encode_to_vec(manifest, bincode::config::standard())
        .map_err(EncodeError::Manifest)?;
    let (fs_prefix, fs_data) = fs.section_parts().map_err(EncodeError::Filesystem)?;

    let mut seen = HashSet::with_capacity(memories.len());
    for m in memories {
        if !seen.insert((m.process, m.memory)) {
            return Err(EncodeError::DuplicateMemory {
                process: m.process,
                memory: m.memory,
            });
        }
    }
    let section_count = u32::try_from(memories.len() + 2)
        .map_err(|_| EncodeError::TooManySections(memories.len() + 2))?;

    // Plan every section: pieces, lengths, offsets.
    let mut plans: Vec<Planned<'_>> = Vec::with_capacity(section_count as usize);
    let mut descriptors: Vec<(Vec<u8>, usize)> = Vec::with_capacity(memories.len());
    let mut memory_runs: Vec<Vec<PageRun>> = Vec::with_capacity(memories.len());
    let mut present_pages = 0u64;
    let mut total_pages = 0u64;
    for m in memories {
        let runs = page_map::present_runs(m.data);
        present_pages += runs.iter().map(|r| r.page_count).sum::<u64>();
        total_pages += (m.data.len() as u64).div_ceil(PAGE_SIZE);
        memory_runs.push(runs);
    }

    let mut offset = HEADER_LEN as u64;
    // Small sections first so that the memory data that follows is what the
    // alignment padding is spent on.
    plan_section(
        &mut plans,
        &mut offset,
        opts,
        SectionKind::Manifest,
        vec![&manifest_bytes[..]],
    )?;
    plan_section(
        &mut plans,
        &mut offset,
        opts,
        SectionKind::Filesystem,
        vec![&fs_prefix[..], fs_data],
    )?;

    // Descriptors must be built (they hold the data offset, which depends on
    // where the section lands) before their slices can be borrowed.
    let mut memory_offset = offset;
    for (m, runs) in memories.iter().zip(&memory_runs) {
        let desc_len = (MEMORY_DESCRIPTOR_LEN + runs.len() * PAGE_RUN_LEN) as u64;
        let data_len: u64 = run_slices(m.data, runs)
            .iter()
            .map(|s| s.len() as u64)
            .sum();
        let data_offset = match opts.compression {
            // Page-align the data in the file; a memory with no present page
            // needs no padding.
            Compression::None if !runs.is_empty() => {
                align_up(memory_offset + desc_len, MEMORY_DATA_ALIGN) - memory_offset
            }
            _ => desc_len,
        };
        descriptors.push((
            memory_descriptor(m, runs, data_offset),
            (data_offset - desc_len) as usize,
        ));
        if matches!(opts.compression, Compression::None) {
            memory_offset += data_offset + data_len;
        }
    }
    for ((m, runs), (desc, pad)) in memories.iter().zip(&memory_runs).zip(&descriptors) {
        let pad = *pad;
        let mut pieces: Vec<&[u8]> = Vec::with_capacity(runs.len() + 2);
        pieces.push(desc);
        if pad > 0 {
            pieces.push(&ZEROS[..pad]);
        }
        pieces.extend(run_slices(m.data, runs));
        plan_section(&mut plans, &mut offset, opts, SectionKind::Memory, pieces)?;
    }

    let table_offset = offset;
    let total_len =
        table_offset + u64::from(section_count) * SECTION_ENTRY_LEN as u64 + TRAILER_LEN as u64;
    let header = BlobHeader {
        format_major: FORMAT_MAJOR,
        format_minor: FORMAT_MINOR,
        flags: 0,
        section_count,
        total_len,
        table_offset,
        module_sha256,
    };

    let mut w = ChecksumWriter::new(BufWriter::with_capacity(WRITE_BUFFER, out));
    w.write_all(&header.to_bytes()).map_err(EncodeError::Io)?;
    let mut entries = Vec::with_capacity(plans.len());
    for plan in &plans {
        debug_assert_eq!(w.bytes_written(), plan.offset);
        let mut sw = w.section();
        match &plan.body {
            Body::Pieces(pieces) => {
                for p in pieces {
                    sw.write_all(p).map_err(EncodeError::Io)?;
                }
            }
            Body::Compressed(c) => sw.write_all(c).map_err(EncodeError::Io)?,
        }
        let crc32 = sw.crc32();
        // Dropping the section writer folds its crc into the file's.
        drop(sw);
        entries.push(SectionEntry {
            kind: plan.kind as u16,
            compression: plan.compression,
            crc32,
            offset: plan.offset,
            stored_len: plan.stored_len,
            raw_len: plan.raw_len,
        });
    }
    for e in &entries {
        w.write_all(&e.to_bytes()).map_err(EncodeError::Io)?;
    }
    let crc32 = w.crc32();
    w.write_all(&crc32.to_le_bytes()).map_err(EncodeError::Io)?;
    debug_assert_eq!(w.bytes_written(), total_len);
    w.into_inner()
        .into_inner()
        .map_err(|e| EncodeError::Io(e.into_error()))?
        .flush()
        .map_err(EncodeError::Io)?;
    Ok(BlobSummary {
        total_bytes: total_len,
        section_count,
        present_pages,
        zero_pages: total_pages - present_pages,
        crc32,
    })
}

/// Encodes a blob to `path` atomically: a temp file in the same directory is
/// written, `sync_all`ed and renamed over `path`, then the directory is
/// synced so the rename survives a crash. On any error the temp file is
/// removed and `path` is untouched.
pub fn write_blob_atomic<M: Serialize>(
    path: &Path,
    module_sha256: [u8; 32],
    manifest: &M,
    memories: &[MemorySection<'_>],
    fs: &FsArchive,
    opts: &EncodeOptions,
) -> Result<BlobSummary, EncodeError> {
    let dir = match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) if path.file_name().is_some() => p,
        _ => return Err(EncodeError::NoParentDir(path.to_path_buf())),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".stasis-blob-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|source| EncodeError::TempFile {
            dir: dir.to_path_buf(),
            source,
        })?;
    // On error the NamedTempFile is dropped, which deletes it.
    let summary = encode(
        tmp.as_file_mut(),
        module_sha256,
        manifest,
        memories,
        fs,
        opts,
    )?;
    tmp.as_file().sync_all().map_err(EncodeError::Sync)?;
    tmp.persist(path).map_err(|e| EncodeError::Rename {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| EncodeError::SyncDir {
            dir: dir.to_path_buf(),
            source,
        })?;
    Ok(summary)
}
