//! The typed errors of encoding, decoding and the filesystem archive: one
//! variant per failure so callers (and the negative tests) can tell them apart.

use std::io;
use std::path::PathBuf;

use super::format::SectionKind;

/// Why a blob could not be written.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The manifest could not be serialized.
    #[error("cannot serialize the manifest: {0}")]
    Manifest(#[source] bincode::error::EncodeError),
    /// The filesystem archive could not be serialized.
    #[error("cannot serialize the filesystem archive: {0}")]
    Filesystem(#[source] ArchiveError),
    /// Two memory sections name the same (process, memory) pair.
    #[error("memory {memory} of process {process} is given twice")]
    DuplicateMemory {
        /// Process index.
        process: u32,
        /// Memory index within the process.
        memory: u32,
    },
    /// More sections than the 32-bit section count can describe.
    #[error("too many sections: {0}")]
    TooManySections(usize),
    /// zstd failed while compressing a section.
    #[error("zstd compression of section {index} failed: {source}")]
    Compress {
        /// Index of the section in the table.
        index: u32,
        /// The zstd error.
        #[source]
        source: io::Error,
    },
    /// Writing to the output failed.
    #[error("writing the blob failed: {0}")]
    Io(#[source] io::Error),
    /// The target path has no parent directory to create the temp file in.
    #[error("blob path {0} has no parent directory")]
    NoParentDir(PathBuf),
    /// The temporary file next to the target could not be created.
    #[error("cannot create a temporary file in {dir}: {source}")]
    TempFile {
        /// Directory the temp file was to be created in.
        dir: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `sync_all` on the finished temp file failed.
    #[error("cannot sync the blob to disk: {0}")]
    Sync(#[source] io::Error),
    /// Renaming the temp file over the target failed.
    #[error("cannot rename the blob into place at {path}: {source}")]
    Rename {
        /// Target path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Syncing the directory after the rename failed (the blob may not
    /// survive a crash).
    #[error("cannot sync directory {dir}: {source}")]
    SyncDir {
        /// The directory.
        dir: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Why a blob was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The first bytes are not the blob magic.
    #[error("not a stasis blob (bad magic)")]
    BadMagic,
    /// The blob's major format version is not the one this build reads.
    #[error("unsupported blob format major version {found} (this build reads {supported})")]
    UnsupportedMajor {
        /// Major version in the blob.
        found: u16,
        /// Major version this build reads.
        supported: u16,
    },
    /// The blob was written by a newer minor version than this build knows.
    #[error("blob format minor version {found} is newer than this build's {supported}")]
    NewerMinor {
        /// Minor version in the blob.
        found: u16,
        /// Newest minor version this build reads.
        supported: u16,
    },
    /// The header sets flag bits this build does not know.
    #[error("unknown header flags {0:#x}")]
    UnknownFlags(u32),
    /// The file is shorter than its structure requires.
    #[error("blob truncated: {expected} bytes expected, {found} present")]
    Truncated {
        /// Bytes the structure requires.
        expected: u64,
        /// Bytes present.
        found: u64,
    },
    /// The file is longer than the header says.
    #[error("blob has trailing data: {expected} bytes expected, {found} present")]
    TrailingData {
        /// Length the header declares.
        expected: u64,
        /// Bytes present.
        found: u64,
    },
    /// The section table does not sit exactly between the last section and
    /// the trailer.
    #[error(
        "section table at {table_offset} with {section_count} entries does not fit a {total_len}-byte blob"
    )]
    BadSectionTable {
        /// Declared table offset.
        table_offset: u64,
        /// Declared section count.
        section_count: u32,
        /// Declared total length.
        total_len: u64,
    },
    /// The crc32 over the whole file does not match the trailer.
    #[error("blob checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// crc32 in the trailer.
        stored: u32,
        /// crc32 of the bytes.
        computed: u32,
    },
    /// A section's crc32 does not match its table entry.
    #[error("checksum mismatch in section {index}")]
    SectionChecksumMismatch {
        /// Index of the section in the table.
        index: u32,
    },
    /// A section reaches outside the area between the header and the table.
    #[error("section {index} ({offset}+{length}) lies outside the section area")]
    SectionOutOfBounds {
        /// Index of the section in the table.
        index: u32,
        /// Declared offset.
        offset: u64,
        /// Declared stored length.
        length: u64,
    },
    /// Sections are not in ascending file order or overlap.
    #[error("section {index} overlaps or precedes the previous section")]
    SectionOverlap {
        /// Index of the section in the table.
        index: u32,
    },
    /// An uncompressed section's stored and raw lengths disagree.
    #[error("section {index} is uncompressed but its stored and raw lengths differ")]
    SectionLengthMismatch {
        /// Index of the section in the table.
        index: u32,
    },
    /// The section table names a kind this build does not know (a newer
    /// minor would be refused earlier, so this is corruption).
    #[error("section {index} has unknown kind {kind}")]
    UnknownSectionKind {
        /// Index of the section in the table.
        index: u32,
        /// Raw kind code.
        kind: u16,
    },
    /// The section table names an unknown compression.
    #[error("section {index} has unknown compression {compression}")]
    UnknownCompression {
        /// Index of the section in the table.
        index: u32,
        /// Raw compression code.
        compression: u8,
    },
    /// A size in the blob exceeds a configured limit.
    #[error("{what} is {value} bytes/items, over the limit of {limit}")]
    LimitExceeded {
        /// What was measured.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The limit.
        limit: u64,
    },
    /// A section kind that must appear once appears more than once.
    #[error("duplicate {kind:?} section at index {index}")]
    DuplicateSection {
        /// The kind.
        kind: SectionKind,
        /// Index of the second occurrence.
        index: u32,
    },
    /// Two memory sections name the same (process, memory) pair.
    #[error("memory {memory} of process {process} appears twice")]
    DuplicateMemory {
        /// Process index.
        process: u32,
        /// Memory index.
        memory: u32,
    },
    /// A required section is missing.
    #[error("missing {0:?} section")]
    MissingSection(SectionKind),
    /// A memory section's descriptor or page map is malformed.
    #[error("bad page map in section {index}: {reason}")]
    BadPageMap {
        /// Index of the section in the table.
        index: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// The manifest could not be deserialized.
    #[error("cannot deserialize the manifest: {0}")]
    Manifest(#[source] bincode::error::DecodeError),
    /// The manifest section holds bytes after the manifest.
    #[error("manifest section has {0} unread trailing bytes")]
    ManifestTrailingBytes(u64),
    /// The filesystem archive is malformed or over its limits.
    #[error("bad filesystem archive: {0}")]
    Filesystem(#[source] ArchiveError),
    /// A compressed section could not be decompressed.
    #[error("cannot decompress section {index}: {source}")]
    Decompress {
        /// Index of the section in the table.
        index: u32,
        /// The zstd error.
        #[source]
        source: io::Error,
    },
    /// A section decompressed to another length than its table entry says.
    #[error("section {index} decompressed to {found} bytes, {expected} declared")]
    DecompressedLength {
        /// Index of the section in the table.
        index: u32,
        /// Declared raw length.
        expected: u64,
        /// Actual length.
        found: u64,
    },
    /// The blob was made from another module than the one expected.
    #[error("blob is for module {found}, expected {expected}")]
    ModuleMismatch {
        /// Hex sha256 expected.
        expected: String,
        /// Hex sha256 in the blob.
        found: String,
    },
    /// `copy_into` was given a buffer shorter than the memory.
    #[error("destination of {found} bytes is shorter than the memory's {needed}")]
    DestinationTooShort {
        /// The memory's byte length.
        needed: u64,
        /// The destination's length.
        found: u64,
    },
    /// Reading the blob file failed.
    #[error("cannot read the blob: {0}")]
    Io(#[source] io::Error),
}

/// Why a filesystem archive could not be captured, parsed or restored.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The sandbox directory holds a fifo, socket or device, which a blob
    /// cannot carry.
    #[error(
        "{path}: unsupported file type (only regular files, directories and symlinks are archived)"
    )]
    UnsupportedFileType {
        /// The offending path.
        path: PathBuf,
    },
    /// A name or symlink target is not UTF-8.
    #[error("{path}: name or symlink target is not valid UTF-8")]
    NonUtf8 {
        /// The offending path.
        path: PathBuf,
    },
    /// More entries than the limit allows.
    #[error("archive has more than {limit} entries")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// More file bytes than the limit allows.
    #[error("archive file data exceeds {limit} bytes")]
    TooManyBytes {
        /// The limit.
        limit: u64,
    },
    /// Directories nest deeper than the limit.
    #[error("{path}: nested deeper than {limit} levels")]
    TooDeep {
        /// The offending path.
        path: PathBuf,
        /// The limit.
        limit: u32,
    },
    /// A file changed size while it was being captured.
    #[error("{path}: changed while being captured")]
    FileChanged {
        /// The offending path.
        path: PathBuf,
    },
    /// An entry path is absolute, empty, has `.`/`..`/empty components or a NUL.
    #[error("invalid archive path {path:?}: {reason}")]
    InvalidPath {
        /// The offending path.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// An mtime's nanosecond field is out of range or the time is not
    /// representable.
    #[error("archive entry {0:?} has an invalid mtime")]
    InvalidTime(String),
    /// Two entries have the same path.
    #[error("duplicate archive path {0:?}")]
    DuplicatePath(String),
    /// An entry's parent is not a directory entry listed before it (e.g. it is
    /// a symlink, which restore must never traverse).
    #[error("archive path {0:?} has no directory parent before it")]
    ParentNotDirectory(String),
    /// A symlink target is empty or holds a NUL.
    #[error("archive symlink {0:?} has an empty or NUL-containing target")]
    InvalidSymlinkTarget(String),
    /// The restore target directory is not empty.
    #[error("restore target {0} is not empty")]
    TargetNotEmpty(PathBuf),
    /// The archive's serialized form is malformed.
    #[error("corrupt archive: {0}")]
    Corrupt(&'static str),
    /// The archive index could not be deserialized.
    #[error("cannot deserialize the archive index: {0}")]
    IndexDecode(#[source] bincode::error::DecodeError),
    /// The archive index could not be serialized.
    #[error("cannot serialize the archive index: {0}")]
    IndexEncode(#[source] bincode::error::EncodeError),
}
