//! The blob format, version 1: what a paused sandbox becomes on disk.
//!
//! A blob holds the runtime's manifest (any `serde` type, bincode-encoded),
//! the linear memories of the sandbox's processes (only the 64 KiB pages that
//! are not all zero), and an archive of the sandbox directory. It is written
//! in one sequential pass straight from live memory and read back with every
//! offset, length and checksum verified before anything is trusted.
//!
//! # Layout
//!
//! All integers are little-endian. Offsets are absolute file offsets.
//!
//! ```text
//! offset  size  field
//! ------  ----  --------------------------------------------------------------
//!      0     8  magic            89 'S' 'T' 'A' 'S' 'I' 'S' 0A
//!      8     2  format major     1  (reader: must equal its own)
//!     10     2  format minor     0  (reader: must be <= its own)
//!     12     4  flags            0  (unknown bits are refused)
//!     16     4  section_count    N
//!     20     4  reserved         0
//!     24     8  total_len        whole file, trailer included
//!     32     8  table_offset     where the section table starts
//!     40    32  module_sha256    SHA-256 of the template's wasm module
//!     72     8  reserved         0
//! ------  ----  --------------------------------------------------------------
//!     80        section 0: Manifest     bincode(M)
//!               section 1: Filesystem   index_len:u64 | bincode(index) | file data
//!               section 2..N: Memory    (one per (process, memory)):
//!                 +0   4  process index
//!                 +4   4  memory index
//!                 +8   8  byte_len of the linear memory
//!                 +16  8  run_count R
//!                 +24  8  data_offset (from the section start)
//!                 +32 16R runs: start_page:u64 page_count:u64 (64 KiB pages,
//!                         ascending, disjoint, not adjacent)
//!                     ..  zero padding so that, uncompressed, the data
//!                         starts at a file offset that is a multiple of 64 KiB
//!                 +data_offset  present pages, concatenated in run order
//!                         (the last page of a memory may be partial)
//! ------  ----  --------------------------------------------------------------
//! table_offset  section table, N entries of 32 bytes:
//!                 +0  2  kind          1 Manifest, 2 Memory, 3 Filesystem
//!                 +2  1  compression   0 none, 1 zstd (one frame)
//!                 +3  1  reserved      0
//!                 +4  4  crc32 of the section's stored bytes
//!                 +8  8  offset
//!                 +16 8  stored_len    bytes in the file
//!                 +24 8  raw_len       bytes once decompressed
//! ------  ----  --------------------------------------------------------------
//! total_len-4   4  crc32 of every byte before it
//! ```
//!
//! Sections are written in the order shown, but readers find them through
//! the table by kind: exactly one Manifest and one Filesystem section, any
//! number of Memory sections with distinct (process, memory) pairs.
//!
//! The table sits after the sections because a section's crc32 is known only
//! once it has streamed out; the header still knows where the table is and how
//! long the file is, because every size is computed before writing starts.
//! That lets a reader tell a truncated file ([`DecodeError::Truncated`]) from a
//! corrupt one ([`DecodeError::ChecksumMismatch`]).
//!
//! The format version is independent of the crate version. A new minor may
//! add section kinds or flags; an older reader refuses it
//! ([`DecodeError::NewerMinor`]) rather than silently dropping state.

pub mod checksum;
pub mod decode;
pub mod encode;
pub mod error;
pub mod format;
pub mod fs_archive;
pub mod page_map;

pub use decode::{DecodeLimits, DecodedBlob, FileRun, MemoryImage, decode, peek_header, read_blob};
pub use encode::{BlobSummary, EncodeOptions, MemorySection, encode, write_blob_atomic};
pub use error::{ArchiveError, DecodeError, EncodeError};
pub use format::{BlobHeader, Compression, FORMAT_MAJOR, FORMAT_MINOR, SectionEntry, SectionKind};
pub use fs_archive::{ArchiveLimits, FsArchive, FsEntry, FsEntryKind, FsRootMeta, FsTime};
pub use page_map::{PAGE_SIZE, PageRun};
