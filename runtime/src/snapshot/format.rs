//! On-disk constants, the fixed-size header and the section table entry.
//!
//! Everything here is little-endian and fixed-size so that a reader can check
//! bounds with plain arithmetic before it trusts or allocates anything. The
//! layout is drawn in the [module documentation](super).

use std::fmt;

/// First eight bytes of every blob. The high-bit first byte and the trailing
/// newline catch 7-bit and line-ending mangling in transit (as PNG does).
pub const MAGIC: [u8; 8] = *b"\x89STASIS\n";

/// Format major version this build writes and reads. A reader refuses any
/// other major: a major bump means an incompatible layout. Format 2 added a label to every process in the
/// manifest.
pub const FORMAT_MAJOR: u16 = 2;

/// Format minor version this build writes. A reader accepts minors up to its
/// own; minors only add things an older reader could not interpret (new
/// section kinds, flags, manifest fields), so a newer minor is refused rather
/// than half-read. Minor 1 added suspended calls (a process's kind, its
/// instrumentation and the call it was suspended in, and the host call it
/// waited in) to the manifest; the runtime reads 2.0 manifests with their own
/// schema (`stasis::state::v2_0`). Minor 2 added the sandbox's kernel (its table of child processes and
/// the bytes in its pipes) to the manifest, and fds that are pipe ends or streams shared with another
/// process; 2.1 manifests are read with `stasis::state::v2_1`. Minor 3 added the sandbox's network (its
/// listening ports and egress policy) to the manifest, and fds that are sockets; 2.2 manifests are read
/// with `stasis::state::v2_2`.
pub const FORMAT_MINOR: u16 = 3;

/// Header flag bits this build understands; a blob with any other bit set is
/// refused. Version 1.0 defines none.
pub const KNOWN_FLAGS: u32 = 0;

/// Size of the fixed header at offset 0.
pub const HEADER_LEN: usize = 80;

/// Size of one section table entry.
pub const SECTION_ENTRY_LEN: usize = 32;

/// Size of the trailer: the crc32 of every byte before it.
pub const TRAILER_LEN: usize = 4;

/// Alignment, in the file, of the data of an uncompressed memory section: one
/// wasm page, so a later reader can mmap the runs copy-on-write.
pub const MEMORY_DATA_ALIGN: u64 = crate::snapshot::page_map::PAGE_SIZE;

/// Size of the fixed part of a memory section descriptor (before the runs).
pub const MEMORY_DESCRIPTOR_LEN: usize = 32;

/// Size of one page run in a memory section descriptor.
pub const PAGE_RUN_LEN: usize = 16;

/// The fixed header of a blob.
#[derive(Clone, PartialEq, Eq)]
pub struct BlobHeader {
    /// Format major version.
    pub format_major: u16,
    /// Format minor version.
    pub format_minor: u16,
    /// Feature flags; see [`KNOWN_FLAGS`].
    pub flags: u32,
    /// Number of entries in the section table.
    pub section_count: u32,
    /// Length of the whole blob in bytes, trailer included; lets a reader tell
    /// a truncated file from a corrupt one.
    pub total_len: u64,
    /// File offset of the section table (it follows the last section).
    pub table_offset: u64,
    /// SHA-256 of the wasm module the sandbox was instantiated from; the
    /// runtime refuses a blob whose module is not the template's.
    pub module_sha256: [u8; 32],
}

impl fmt::Debug for BlobHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobHeader")
            .field(
                "format",
                &format_args!("{}.{}", self.format_major, self.format_minor),
            )
            .field("flags", &format_args!("{:#x}", self.flags))
            .field("section_count", &self.section_count)
            .field("total_len", &self.total_len)
            .field("table_offset", &self.table_offset)
            .field("module_sha256", &hex::encode(self.module_sha256))
            .finish()
    }
}

impl BlobHeader {
    /// Serializes the header into its fixed 80-byte form:
    ///
    /// `magic[8] major:u16 minor:u16 flags:u32 section_count:u32 reserved:u32
    ///  total_len:u64 table_offset:u64 module_sha256[32] reserved[8]`
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.format_major.to_le_bytes());
        b[10..12].copy_from_slice(&self.format_minor.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..20].copy_from_slice(&self.section_count.to_le_bytes());
        // 20..24 reserved, zero.
        b[24..32].copy_from_slice(&self.total_len.to_le_bytes());
        b[32..40].copy_from_slice(&self.table_offset.to_le_bytes());
        b[40..72].copy_from_slice(&self.module_sha256);
        // 72..80 reserved, zero.
        b
    }

    /// Parses the fields of a header without validating them (the magic is
    /// not checked here either); the decoder does the checks in order.
    pub fn from_bytes(b: &[u8; HEADER_LEN]) -> Self {
        let mut module_sha256 = [0u8; 32];
        module_sha256.copy_from_slice(&b[40..72]);
        Self {
            format_major: u16::from_le_bytes([b[8], b[9]]),
            format_minor: u16::from_le_bytes([b[10], b[11]]),
            flags: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
            section_count: u32::from_le_bytes([b[16], b[17], b[18], b[19]]),
            total_len: le_u64(&b[24..32]),
            table_offset: le_u64(&b[32..40]),
            module_sha256,
        }
    }
}

/// Reads a little-endian u64 from an 8-byte slice (callers pass exact ranges
/// of fixed-size arrays, so the length always matches).
pub(crate) fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Reads a little-endian u32 from a 4-byte slice.
pub(crate) fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

/// What a section holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum SectionKind {
    /// The runtime's manifest, bincode-encoded. Exactly one per blob.
    Manifest = 1,
    /// One linear memory of one process: descriptor, page map, present pages.
    Memory = 2,
    /// The sandbox directory archive. Exactly one per blob.
    Filesystem = 3,
}

impl SectionKind {
    /// The kind for an on-disk code, if this build knows it.
    pub fn from_u16(v: u16) -> Option<Self> {
        match v {
            1 => Some(Self::Manifest),
            2 => Some(Self::Memory),
            3 => Some(Self::Filesystem),
            _ => None,
        }
    }
}

/// How a section's bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Stored as is; memory data is page-aligned in the file. The default,
    /// because a local pause is bound by write speed, not size.
    #[default]
    None,
    /// One zstd frame; for blobs that travel over a network.
    Zstd {
        /// zstd level (1..=22; negative levels are the fast modes).
        level: i32,
    },
}

/// On-disk code of [`Compression::None`].
pub const COMPRESSION_NONE: u8 = 0;
/// On-disk code of [`Compression::Zstd`] (the level is not stored: a reader
/// does not need it).
pub const COMPRESSION_ZSTD: u8 = 1;

/// One entry of the section table:
///
/// `kind:u16 compression:u8 reserved:u8 crc32:u32 offset:u64 stored_len:u64 raw_len:u64`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionEntry {
    /// Raw kind code (see [`SectionKind`]); kept raw so that an unknown code
    /// can be reported.
    pub kind: u16,
    /// Raw compression code ([`COMPRESSION_NONE`] or [`COMPRESSION_ZSTD`]).
    pub compression: u8,
    /// crc32 of the section's stored bytes.
    pub crc32: u32,
    /// File offset of the section's first byte.
    pub offset: u64,
    /// Number of bytes the section occupies in the file.
    pub stored_len: u64,
    /// Number of bytes once decompressed (equal to `stored_len` when stored
    /// uncompressed). Checked against the limits before decompressing.
    pub raw_len: u64,
}

impl SectionEntry {
    /// Serializes the entry into its fixed 32-byte form.
    pub fn to_bytes(&self) -> [u8; SECTION_ENTRY_LEN] {
        let mut b = [0u8; SECTION_ENTRY_LEN];
        b[0..2].copy_from_slice(&self.kind.to_le_bytes());
        b[2] = self.compression;
        // b[3] reserved, zero.
        b[4..8].copy_from_slice(&self.crc32.to_le_bytes());
        b[8..16].copy_from_slice(&self.offset.to_le_bytes());
        b[16..24].copy_from_slice(&self.stored_len.to_le_bytes());
        b[24..32].copy_from_slice(&self.raw_len.to_le_bytes());
        b
    }

    /// Parses an entry without validating it.
    pub fn from_bytes(b: &[u8; SECTION_ENTRY_LEN]) -> Self {
        Self {
            kind: u16::from_le_bytes([b[0], b[1]]),
            compression: b[2],
            crc32: le_u32(&b[4..8]),
            offset: le_u64(&b[8..16]),
            stored_len: le_u64(&b[16..24]),
            raw_len: le_u64(&b[24..32]),
        }
    }
}

/// Rounds `v` up to a multiple of `align` (a power of two).
pub(crate) fn align_up(v: u64, align: u64) -> u64 {
    (v + align - 1) & !(align - 1)
}
