//! The on-disk format of the sandbox index (see [`super::catalog`]): a snapshot of every sandbox's record,
//! and an append-only journal of the changes made since, both built of checksummed frames.
//!
//! ```text
//! file      := MAGIC frame*                                   MAGIC = "STSINDEX" (8 bytes)
//! frame     := len: u32 LE | payload crc32: u32 LE | header crc32: u32 LE | payload (len bytes)
//!              (the header crc covers the 8 bytes before it, so a damaged length is never trusted)
//! payload   := the JSON of one Frame, at most MAX_FRAME bytes
//! snapshot  := MAGIC Header{kind: snapshot, generation: g} Put* End{count}
//! journal   := MAGIC Header{kind: journal, generation: g} (Put | Remove)*
//! ```
//!
//! Files are named `snapshot` and `journal-<generation, 16 hex digits>`. The snapshot of generation `g`
//! holds everything written to the journals before `journal-g`; the journals `g`, `g+1`, … hold what
//! came after, in order (more than one only when a compaction was interrupted).
//!
//! Reading is defensive: the magic, the format version (a reader takes its own major and a minor up to
//! its own), every frame's header checksum before its length is believed, the length against
//! [`MAX_FRAME`] and the file's size before anything is allocated, the payload's checksum before it is
//! decoded. A snapshot is written atomically, so any damage in it is an error. A journal is appended to,
//! so a crash can cut its *last* frame short (a partial write, or a tail of zeros on some file systems):
//! that frame's append never returned, so no one was told it happened, and it is dropped
//! ([`JournalRead::torn`]). Damage anywhere else in a journal is an error. Every error makes the index
//! be rebuilt from the sandboxes' own records, never trusted.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::id::is_valid;
use super::record::SandboxRecord;

/// The first bytes of every index file.
pub const MAGIC: [u8; 8] = *b"STSINDEX";
/// Major version of the index format: a reader refuses any other.
pub const FORMAT_MAJOR: u16 = 1;
/// Minor version of the index format: a reader accepts files up to its own.
pub const FORMAT_MINOR: u16 = 0;
/// The largest frame payload in bytes. A record larger than this is refused when written, and a frame
/// claiming more is damage; nothing larger is ever allocated on a length read from a file.
pub const MAX_FRAME: usize = 64 << 20;
/// Bytes of a frame's header.
const FRAME_HEADER: usize = 12;
/// Name of the snapshot file.
pub const SNAPSHOT_FILE: &str = "snapshot";
/// Prefix of the journal files' names.
const JOURNAL_PREFIX: &str = "journal-";

/// Which kind of index file a header opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// Every record at one point in time.
    Snapshot,
    /// Changes after a snapshot.
    Journal,
}

/// One frame's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Frame {
    /// The first frame of every file.
    Header {
        /// Format major version.
        major: u16,
        /// Format minor version.
        minor: u16,
        /// What the file is.
        kind: FileKind,
        /// Its generation.
        generation: u64,
    },
    /// A sandbox's record as of this frame.
    /// (Boxed: a record is large, a removal small.)
    Put(Box<SandboxRecord>),
    /// The sandbox with this id is gone.
    Remove {
        /// The sandbox's id.
        id: String,
    },
    /// The last frame of a snapshot.
    End {
        /// How many records the snapshot holds.
        count: u64,
    },
}

/// A change read back from a journal.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The record of a sandbox, new or replacing its previous one.
    /// (Boxed: a record is large, a removal small.)
    Put(Box<SandboxRecord>),
    /// A sandbox was killed.
    Remove(String),
}

/// Why an index file could not be read. Each of them makes the index be rebuilt from the records.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// There is no index (a new data directory, or one written before the index existed).
    #[error("there is no index")]
    Missing,
    /// The file could not be read.
    #[error("{path} could not be read")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with [`MAGIC`].
    #[error("{0} is not an index file")]
    Magic(PathBuf),
    /// The file is of a format version this reader does not know.
    #[error(
        "index format {major}.{minor} is not supported (this version reads {FORMAT_MAJOR}.0 to {FORMAT_MAJOR}.{FORMAT_MINOR})"
    )]
    Version {
        /// The file's major version.
        major: u16,
        /// The file's minor version.
        minor: u16,
    },
    /// A frame's header checksum does not match, so its length cannot be believed.
    #[error("the frame at byte {offset} has a damaged header")]
    HeaderChecksum {
        /// Where the frame starts.
        offset: u64,
    },
    /// A frame claims more than [`MAX_FRAME`] bytes.
    #[error("the frame at byte {offset} claims {len} bytes, more than {MAX_FRAME}")]
    TooLarge {
        /// Where the frame starts.
        offset: u64,
        /// What it claims.
        len: u64,
    },
    /// A frame ends past the end of the file.
    #[error("the frame at byte {offset} is cut short")]
    Truncated {
        /// Where the frame starts.
        offset: u64,
    },
    /// A frame's payload does not match its checksum.
    #[error("the frame at byte {offset} does not match its checksum")]
    Checksum {
        /// Where the frame starts.
        offset: u64,
    },
    /// A frame's payload passed its checksum but is not a frame this version understands.
    #[error("the frame at byte {offset} does not decode")]
    Decode {
        /// Where the frame starts.
        offset: u64,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A frame is not what its position in the file calls for (e.g. a `Remove` in a snapshot).
    #[error("the frame at byte {offset} is not a {expected} frame")]
    Unexpected {
        /// Where the frame starts.
        offset: u64,
        /// What was expected there.
        expected: &'static str,
    },
    /// The header names another generation or kind of file than its name says.
    #[error("{path} is not the {kind:?} of generation {generation}")]
    Header {
        /// The file.
        path: PathBuf,
        /// The kind its name says.
        kind: FileKind,
        /// The generation its name says.
        generation: u64,
    },
    /// The snapshot's end frame gives another count than the records before it.
    #[error("the snapshot holds {found} records but its end says {expected}")]
    Count {
        /// The count in the end frame.
        expected: u64,
        /// The records read.
        found: u64,
    },
    /// The snapshot has bytes after its end frame.
    #[error("the snapshot has bytes after its end, at byte {offset}")]
    Trailing {
        /// Where they start.
        offset: u64,
    },
    /// The snapshot has no end frame.
    #[error("the snapshot has no end")]
    NoEnd,
    /// A journal the snapshot needs is not there (deleted, or lost with a half-restored backup).
    #[error("journal {0} is missing")]
    MissingJournal(u64),
    /// A record's id is not one Stasis makes: it names the sandbox's files, so it is never used.
    #[error("the frame at byte {offset} holds a record whose id {id:?} is not a sandbox id")]
    InvalidId {
        /// Where the frame starts.
        offset: u64,
        /// The id.
        id: String,
    },
}

/// The record of a `Put` frame, refused if its id could name a path outside its directory.
fn checked(record: Box<SandboxRecord>, offset: u64) -> Result<SandboxRecord, IndexError> {
    if is_valid(&record.id, "") {
        Ok(*record)
    } else {
        Err(IndexError::InvalidId {
            offset,
            id: record.id,
        })
    }
}

/// The path of journal `generation` in `dir`.
pub fn journal_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("{JOURNAL_PREFIX}{generation:016x}"))
}

/// The generation a journal file's name says, if it is a journal's name.
pub fn journal_generation(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(JOURNAL_PREFIX)?;
    if digits.len() != 16 {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// Encodes one frame, header included. A payload over [`MAX_FRAME`] is refused with `InvalidInput`.
pub fn encode(frame: &Frame) -> std::io::Result<Vec<u8>> {
    let payload = serde_json::to_vec(frame).map_err(std::io::Error::other)?;
    if payload.len() > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "a sandbox record of {} bytes is larger than the index takes ({MAX_FRAME})",
                payload.len()
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(FRAME_HEADER + payload.len());
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    let header_crc = crc32fast::hash(&bytes[..8]);
    bytes.extend_from_slice(&header_crc.to_le_bytes());
    bytes.extend_from_slice(&payload);
    Ok(bytes)
}

fn header(kind: FileKind, generation: u64) -> Frame {
    Frame::Header {
        major: FORMAT_MAJOR,
        minor: FORMAT_MINOR,
        kind,
        generation,
    }
}

/// A bad frame, and whether it may be the torn tail of an append (see the module doc).
struct BadFrame {
    error: IndexError,
    may_be_torn: bool,
}

impl BadFrame {
    fn damaged(error: IndexError) -> Self {
        Self {
            error,
            may_be_torn: false,
        }
    }

    fn torn(error: IndexError) -> Self {
        Self {
            error,
            may_be_torn: true,
        }
    }
}

/// Reads frames from a file, checking each as the module doc says.
struct Reader {
    input: BufReader<File>,
    path: PathBuf,
    /// Where the next frame starts.
    offset: u64,
    /// The file's size.
    len: u64,
    /// The payload buffer, reused from frame to frame.
    payload: Vec<u8>,
}

impl Reader {
    fn open(path: &Path) -> Result<Self, IndexError> {
        let io = |source| IndexError::Io {
            path: path.to_owned(),
            source,
        };
        let file = match File::open(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(IndexError::Missing),
            other => other.map_err(io)?,
        };
        let len = file.metadata().map_err(io)?.len();
        let mut input = BufReader::with_capacity(1 << 16, file);
        let mut magic = [0u8; 8];
        if len < MAGIC.len() as u64 {
            return Err(IndexError::Magic(path.to_owned()));
        }
        input.read_exact(&mut magic).map_err(io)?;
        if magic != MAGIC {
            return Err(IndexError::Magic(path.to_owned()));
        }
        Ok(Self {
            input,
            path: path.to_owned(),
            offset: MAGIC.len() as u64,
            len,
            payload: Vec::new(),
        })
    }

    fn io(&self, source: std::io::Error) -> BadFrame {
        BadFrame::damaged(IndexError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// The next frame, `None` at the end of the file.
    fn next(&mut self) -> Result<Option<Frame>, BadFrame> {
        let offset = self.offset;
        let remaining = self.len - offset;
        if remaining == 0 {
            return Ok(None);
        }
        if remaining < FRAME_HEADER as u64 {
            return Err(BadFrame::torn(IndexError::Truncated { offset }));
        }
        let mut head = [0u8; FRAME_HEADER];
        self.input.read_exact(&mut head).map_err(|e| self.io(e))?;
        let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let (len, payload_crc, header_crc) = (word(0), word(4), word(8));
        if crc32fast::hash(&head[..8]) != header_crc {
            // Zeros where a frame should be: space the file system allocated for an append that never
            // reached the disk. Anything else is damage.
            let torn = head.iter().all(|&b| b == 0) && self.rest_is_zero()?;
            let error = IndexError::HeaderChecksum { offset };
            return Err(if torn {
                BadFrame::torn(error)
            } else {
                BadFrame::damaged(error)
            });
        }
        let len = u64::from(len);
        if len > MAX_FRAME as u64 {
            return Err(BadFrame::damaged(IndexError::TooLarge { offset, len }));
        }
        let end = offset + FRAME_HEADER as u64 + len;
        if end > self.len {
            return Err(BadFrame::torn(IndexError::Truncated { offset }));
        }
        // Bounded by MAX_FRAME and by the file's size, both checked above.
        self.payload.resize(len as usize, 0);
        self.input
            .read_exact(&mut self.payload)
            .map_err(|e| self.io(e))?;
        self.offset = end;
        if crc32fast::hash(&self.payload) != payload_crc {
            let error = IndexError::Checksum { offset };
            // A last frame whose blocks only partly reached the disk.
            return Err(if end == self.len {
                BadFrame::torn(error)
            } else {
                BadFrame::damaged(error)
            });
        }
        serde_json::from_slice(&self.payload)
            .map(Some)
            .map_err(|source| BadFrame::damaged(IndexError::Decode { offset, source }))
    }

    /// Whether everything after the current frame header is zero (read at most one frame's worth: a
    /// longer run of zeros is not the tail of one append).
    fn rest_is_zero(&mut self) -> Result<bool, BadFrame> {
        let remaining = self.len - self.offset - FRAME_HEADER as u64;
        if remaining > (MAX_FRAME + FRAME_HEADER) as u64 {
            return Ok(false);
        }
        let mut rest = Vec::new();
        (&mut self.input)
            .take(remaining)
            .read_to_end(&mut rest)
            .map_err(|e| self.io(e))?;
        Ok(rest.iter().all(|&b| b == 0))
    }

    /// Reads and checks the header frame of a file of `kind`, and returns its generation.
    fn header(&mut self, kind: FileKind) -> Result<u64, IndexError> {
        let offset = self.offset;
        match self.next().map_err(|bad| bad.error)? {
            Some(Frame::Header {
                major,
                minor,
                kind: found,
                generation,
            }) => {
                if major != FORMAT_MAJOR || minor > FORMAT_MINOR {
                    return Err(IndexError::Version { major, minor });
                }
                if found != kind {
                    return Err(IndexError::Header {
                        path: self.path.clone(),
                        kind,
                        generation,
                    });
                }
                Ok(generation)
            }
            _ => Err(IndexError::Unexpected {
                offset,
                expected: "header",
            }),
        }
    }
}

/// Reads a whole snapshot, calling `each` on every record, and returns its generation.
pub fn read_snapshot(path: &Path, mut each: impl FnMut(SandboxRecord)) -> Result<u64, IndexError> {
    let mut reader = Reader::open(path)?;
    let generation = reader.header(FileKind::Snapshot)?;
    let mut found = 0u64;
    loop {
        let offset = reader.offset;
        match reader.next().map_err(|bad| bad.error)? {
            Some(Frame::Put(record)) => {
                found += 1;
                each(checked(record, offset)?);
            }
            Some(Frame::End { count }) => {
                if count != found {
                    return Err(IndexError::Count {
                        expected: count,
                        found,
                    });
                }
                if reader.offset != reader.len {
                    return Err(IndexError::Trailing {
                        offset: reader.offset,
                    });
                }
                return Ok(generation);
            }
            Some(_) => {
                return Err(IndexError::Unexpected {
                    offset,
                    expected: "record",
                });
            }
            None => return Err(IndexError::NoEnd),
        }
    }
}

/// What a journal held.
#[derive(Debug)]
pub struct JournalRead {
    /// How many changes it holds.
    pub changes: usize,
    /// Bytes of the file up to the end of its last good frame: where the next append goes.
    pub good_len: u64,
    /// The frame dropped from its end, when an append was cut short by a crash.
    pub torn: Option<IndexError>,
}

/// Reads journal `generation` at `path`, calling `each` on every change in order. Only the journal
/// appended to last (`last`) may end in a torn frame; in any other, that is damage.
pub fn read_journal(
    path: &Path,
    generation: u64,
    last: bool,
    mut each: impl FnMut(Change),
) -> Result<JournalRead, IndexError> {
    let mut reader = match Reader::open(path) {
        Err(IndexError::Missing) => return Err(IndexError::MissingJournal(generation)),
        other => other?,
    };
    if reader.header(FileKind::Journal)? != generation {
        return Err(IndexError::Header {
            path: path.to_owned(),
            kind: FileKind::Journal,
            generation,
        });
    }
    let mut changes = 0;
    loop {
        let offset = reader.offset;
        match reader.next() {
            Ok(Some(Frame::Put(record))) => each(Change::Put(Box::new(checked(record, offset)?))),
            Ok(Some(Frame::Remove { id })) => each(Change::Remove(id)),
            Ok(Some(_)) => {
                return Err(IndexError::Unexpected {
                    offset,
                    expected: "change",
                });
            }
            Ok(None) => {
                return Ok(JournalRead {
                    changes,
                    good_len: reader.offset,
                    torn: None,
                });
            }
            Err(bad) if bad.may_be_torn && last => {
                return Ok(JournalRead {
                    changes,
                    good_len: offset,
                    torn: Some(bad.error),
                });
            }
            Err(bad) => return Err(bad.error),
        }
        changes += 1;
    }
}

/// Writes the snapshot of `generation` holding `records` atomically in `dir`: a temp file synced, renamed
/// over the previous one, the directory synced. Returns how many records it holds.
pub fn write_snapshot(
    dir: &Path,
    generation: u64,
    records: impl Iterator<Item = SandboxRecord>,
) -> std::io::Result<u64> {
    let temp = tempfile::NamedTempFile::new_in(dir)?;
    let mut out = BufWriter::with_capacity(1 << 20, temp);
    out.write_all(&MAGIC)?;
    out.write_all(&encode(&header(FileKind::Snapshot, generation))?)?;
    let mut count = 0u64;
    for record in records {
        out.write_all(&encode(&Frame::Put(Box::new(record)))?)?;
        count += 1;
    }
    out.write_all(&encode(&Frame::End { count })?)?;
    let temp = out.into_inner().map_err(|e| e.into_error())?;
    temp.as_file().sync_all()?;
    temp.persist(dir.join(SNAPSHOT_FILE)).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()?;
    Ok(count)
}

/// The journal being appended to.
#[derive(Debug)]
pub struct JournalWriter {
    file: File,
    generation: u64,
    /// Bytes in the file: where the next frame goes, and where to cut back to after a failed append.
    len: u64,
    /// Changes in this journal and the earlier ones still replayed at the next start.
    changes: usize,
    /// Set when a failed append could not be undone: the file's end is unknown, so nothing more may
    /// be appended after it.
    broken: bool,
}

impl JournalWriter {
    /// Creates journal `generation` in `dir`, durably (the file and the directory synced). A file of
    /// that name, left by an attempt that failed half-way, is replaced.
    pub fn create(dir: &Path, generation: u64) -> std::io::Result<Self> {
        let path = journal_path(dir, generation);
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&encode(&header(FileKind::Journal, generation))?);
        file.write_all(&bytes)?;
        file.sync_all()?;
        File::open(dir)?.sync_all()?;
        Ok(Self {
            file,
            generation,
            len: bytes.len() as u64,
            changes: 0,
            broken: false,
        })
    }

    /// Opens journal `generation` at `path` to append after its first `good_len` bytes (cutting off a
    /// torn tail, durably); `changes` is how many changes the start replayed.
    pub fn reopen(
        path: &Path,
        generation: u64,
        good_len: u64,
        changes: usize,
    ) -> std::io::Result<Self> {
        let mut file = File::options().read(true).write(true).open(path)?;
        if file.metadata()?.len() != good_len {
            file.set_len(good_len)?;
            file.sync_all()?;
        }
        file.seek(SeekFrom::Start(good_len))?;
        Ok(Self {
            file,
            generation,
            len: good_len,
            changes,
            broken: false,
        })
    }

    /// This journal's generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Changes a start would replay.
    pub fn changes(&self) -> usize {
        self.changes
    }

    /// Appends one encoded frame and syncs it: once this returns `Ok`, the change survives a crash. On
    /// failure the file is cut back to where it was, so a failed append leaves no partial frame that
    /// later appends would follow.
    pub fn append(&mut self, frame: &[u8]) -> std::io::Result<()> {
        if self.broken {
            return Err(std::io::Error::other(
                "the index journal could not be repaired after a failed write; restart the server",
            ));
        }
        let written = self
            .file
            .write_all(frame)
            .and_then(|()| self.file.sync_data());
        if let Err(error) = written {
            let undone = self
                .file
                .set_len(self.len)
                .and_then(|()| self.file.seek(SeekFrom::Start(self.len)).map(drop))
                .and_then(|()| self.file.sync_data());
            if undone.is_err() {
                self.broken = true;
            }
            return Err(error);
        }
        self.len += frame.len() as u64;
        self.changes += 1;
        Ok(())
    }

    /// Adds the changes of journals replayed before this one (a compaction that did not finish).
    pub fn add_replayed(&mut self, changes: usize) {
        self.changes += changes;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::lifecycle::record::{LifecyclePolicy, SandboxState};

    /// A record with a valid id made from `name` (padded to an id's length).
    fn record(name: &str) -> SandboxRecord {
        SandboxRecord {
            id: format!("{name:0>25}"),
            template: "base".into(),
            template_sha256: "00".repeat(32),
            metadata: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
            envs: BTreeMap::new(),
            created_at_ms: 1,
            started_at_ms: 1,
            end_at_ms: 2,
            timeout_ms: 1,
            state: SandboxState::Paused,
            lifecycle: LifecyclePolicy::default(),
            sequence: 7,
            owner: Some("o".into()),
            mounts: Vec::new(),
            pause_mode: Default::default(),
            network: None,
        }
    }

    fn snapshot(dir: &Path, ids: &[&str]) -> PathBuf {
        write_snapshot(dir, 3, ids.iter().map(|id| record(id))).expect("write");
        dir.join(SNAPSHOT_FILE)
    }

    fn read_all(path: &Path) -> Result<Vec<SandboxRecord>, IndexError> {
        let mut out = Vec::new();
        read_snapshot(path, |r| out.push(r))?;
        Ok(out)
    }

    fn journal(dir: &Path, changes: &[Frame]) -> PathBuf {
        let mut writer = JournalWriter::create(dir, 5).expect("create");
        for change in changes {
            writer
                .append(&encode(change).expect("encode"))
                .expect("append");
        }
        journal_path(dir, 5)
    }

    fn replay(path: &Path, last: bool) -> Result<(Vec<Change>, JournalRead), IndexError> {
        let mut out = Vec::new();
        let read = read_journal(path, 5, last, |c| out.push(c))?;
        Ok((out, read))
    }

    fn put(id: &str) -> Frame {
        Frame::Put(Box::new(record(id)))
    }

    /// Overwrites the byte at `at` (from the end when negative) with its complement.
    fn flip(path: &Path, at: i64) {
        let mut bytes = std::fs::read(path).expect("read");
        let at = if at < 0 {
            (bytes.len() as i64 + at) as usize
        } else {
            at as usize
        };
        bytes[at] = !bytes[at];
        std::fs::write(path, bytes).expect("write");
    }

    /// Byte offset of the `n`th frame (0 = header) of a file.
    fn frame_offset(path: &Path, n: usize) -> usize {
        let bytes = std::fs::read(path).expect("read");
        let mut at = MAGIC.len();
        for _ in 0..n {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4")) as usize;
            at += FRAME_HEADER + len;
        }
        at
    }

    #[test]
    fn a_snapshot_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = snapshot(dir.path(), &["a", "b"]);
        let mut ids = Vec::new();
        assert_eq!(read_snapshot(&path, |r| ids.push(r.id)).expect("read"), 3);
        assert_eq!(ids, [record("a").id, record("b").id]);
        let ids: Vec<String> = read_all(&path)
            .expect("read")
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, [record("a").id, record("b").id]);
        assert_eq!(read_all(&path).expect("read")[0], record("a"));
    }

    #[test]
    fn a_journal_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = journal(dir.path(), &[put("a"), Frame::Remove { id: "a".into() }]);
        let (changes, read) = replay(&path, true).expect("replay");
        assert_eq!(
            changes,
            [
                Change::Put(Box::new(record("a"))),
                Change::Remove("a".into())
            ]
        );
        assert!(read.torn.is_none());
        assert_eq!(read.good_len, std::fs::metadata(&path).expect("meta").len());
    }

    #[test]
    fn test_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            read_all(&dir.path().join(SNAPSHOT_FILE)),
            Err(IndexError::Missing)
        ));
        assert!(matches!(
            replay(&journal_path(dir.path(), 5), true),
            Err(IndexError::MissingJournal(5))
        ));
    }

    #[test]
    fn test_bad_magic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = snapshot(dir.path(), &["a"]);
        flip(&path, 0);
        assert!(matches!(read_all(&path), Err(IndexError::Magic(_))));
        std::fs::write(&path, b"STS").expect("write");
        assert!(matches!(read_all(&path), Err(IndexError::Magic(_))));
    }

    #[test]
    fn test_bad_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(SNAPSHOT_FILE);
        let mut bytes = MAGIC.to_vec();
        let newer = Frame::Header {
            major: FORMAT_MAJOR + 1,
            minor: 0,
            kind: FileKind::Snapshot,
            generation: 1,
        };
        bytes.extend(encode(&newer).expect("encode"));
        std::fs::write(&path, bytes).expect("write");
        assert!(matches!(
            read_all(&path),
            Err(IndexError::Version { major, .. }) if major == FORMAT_MAJOR + 1
        ));
    }

    #[test]
    fn test_bad_header_crc() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = snapshot(dir.path(), &["a", "b"]);
        // The length of the first record: a damaged length must never be followed.
        flip(&path, frame_offset(&path, 1) as i64);
        assert!(matches!(
            read_all(&path),
            Err(IndexError::HeaderChecksum { .. })
        ));
    }

    #[test]
    fn test_bad_crc() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = snapshot(dir.path(), &["a", "b"]);
        flip(&path, (frame_offset(&path, 1) + FRAME_HEADER + 3) as i64);
        assert!(matches!(read_all(&path), Err(IndexError::Checksum { .. })));
    }

    /// A frame header (with a valid header checksum) claiming `len` bytes.
    fn frame_head(len: u32) -> Vec<u8> {
        let mut head = len.to_le_bytes().to_vec();
        head.extend_from_slice(&[0; 4]);
        let crc = crc32fast::hash(&head);
        head.extend_from_slice(&crc.to_le_bytes());
        head
    }

    #[test]
    fn test_too_large() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(SNAPSHOT_FILE);
        let mut bytes = MAGIC.to_vec();
        bytes.extend(encode(&header(FileKind::Snapshot, 1)).expect("encode"));
        bytes.extend(frame_head(MAX_FRAME as u32 + 1));
        std::fs::write(&path, bytes).expect("write");
        assert!(matches!(
            read_all(&path),
            Err(IndexError::TooLarge { len, .. }) if len == MAX_FRAME as u64 + 1
        ));
        // In a journal too: a frame this large is never the torn tail of an append.
        let journal = journal(dir.path(), &[]);
        File::options()
            .append(true)
            .open(&journal)
            .expect("open")
            .write_all(&frame_head(MAX_FRAME as u32 + 1))
            .expect("write");
        assert!(matches!(
            replay(&journal, true),
            Err(IndexError::TooLarge { .. })
        ));
    }

    #[test]
    fn test_truncated_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = snapshot(dir.path(), &["a", "b"]);
        let len = std::fs::metadata(&path).expect("meta").len();
        File::options()
            .write(true)
            .open(&path)
            .expect("open")
            .set_len(len - 5)
            .expect("truncate");
        assert!(matches!(read_all(&path), Err(IndexError::Truncated { .. })));
        // Cut exactly at a frame boundary: the end frame is missing.
        let end = frame_offset(&path, 3) as u64;
        File::options()
            .write(true)
            .open(&path)
            .expect("open")
            .set_len(end)
            .expect("truncate");
        assert!(matches!(read_all(&path), Err(IndexError::NoEnd)));
    }

    #[test]
    fn test_bad_decode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = journal(dir.path(), &[]);
        let payload = br#"{"no_such_frame":1}"#;
        let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        let header_crc = crc32fast::hash(&frame);
        frame.extend_from_slice(&header_crc.to_le_bytes());
        frame.extend_from_slice(payload);
        File::options()
            .append(true)
            .open(&path)
            .expect("open")
            .write_all(&frame)
            .expect("write");
        assert!(matches!(
            replay(&path, true),
            Err(IndexError::Decode { .. })
        ));
    }

    #[test]
    fn test_unexpected_frame() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = journal(dir.path(), &[Frame::End { count: 0 }]);
        assert!(matches!(
            replay(&path, true),
            Err(IndexError::Unexpected { .. })
        ));
        let snapshot = dir.path().join(SNAPSHOT_FILE);
        let mut bytes = MAGIC.to_vec();
        bytes.extend(encode(&header(FileKind::Snapshot, 1)).expect("encode"));
        bytes.extend(encode(&Frame::Remove { id: "a".into() }).expect("encode"));
        std::fs::write(&snapshot, bytes).expect("write");
        assert!(matches!(
            read_all(&snapshot),
            Err(IndexError::Unexpected { .. })
        ));
    }

    #[test]
    fn test_wrong_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        journal(dir.path(), &[]);
        // Journal 5 under the name of journal 6.
        std::fs::rename(journal_path(dir.path(), 5), journal_path(dir.path(), 6)).expect("mv");
        let path = journal_path(dir.path(), 6);
        assert!(matches!(
            read_journal(&path, 6, true, |_| {}),
            Err(IndexError::Header { .. })
        ));
    }

    #[test]
    fn test_bad_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(SNAPSHOT_FILE);
        let mut bytes = MAGIC.to_vec();
        bytes.extend(encode(&header(FileKind::Snapshot, 1)).expect("encode"));
        bytes.extend(encode(&put("a")).expect("encode"));
        bytes.extend(encode(&Frame::End { count: 2 }).expect("encode"));
        std::fs::write(&path, bytes).expect("write");
        assert!(matches!(
            read_all(&path),
            Err(IndexError::Count {
                expected: 2,
                found: 1
            })
        ));
    }

    #[test]
    fn test_trailing_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = snapshot(dir.path(), &["a"]);
        File::options()
            .append(true)
            .open(&path)
            .expect("open")
            .write_all(b"x")
            .expect("write");
        assert!(matches!(read_all(&path), Err(IndexError::Trailing { .. })));
    }

    #[test]
    fn a_torn_last_frame_is_dropped_only_at_the_end_of_the_last_journal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = journal(dir.path(), &[put("a"), put("b")]);
        let full = std::fs::metadata(&path).expect("meta").len();
        let second = frame_offset(&path, 2) as u64;
        // Every cut inside the last frame is a torn append: dropped, everything before it kept.
        for cut in [second + 1, second + 11, second + 13, full - 1] {
            let copy = dir.path().join("cut");
            std::fs::copy(&path, &copy).expect("copy");
            File::options()
                .write(true)
                .open(&copy)
                .expect("open")
                .set_len(cut)
                .expect("truncate");
            let mut changes = Vec::new();
            let read = read_journal(&copy, 5, true, |c| changes.push(c)).expect("replay");
            assert_eq!(
                changes,
                [Change::Put(Box::new(record("a")))],
                "cut at {cut}"
            );
            assert_eq!(read.good_len, second);
            assert!(read.torn.is_some());
            // In a journal that is not the last one, the same cut is damage.
            assert!(read_journal(&copy, 5, false, |_| {}).is_err());
        }
        // The last frame's payload damaged in place (its blocks partly written).
        flip(&path, -2);
        let (changes, read) = replay(&path, true).expect("replay");
        assert_eq!(changes, [Change::Put(Box::new(record("a")))]);
        assert!(matches!(read.torn, Some(IndexError::Checksum { .. })));
        // Zeros after the last frame: space allocated for an append that never reached the disk.
        let path = journal(dir.path(), &[put("a")]);
        File::options()
            .append(true)
            .open(&path)
            .expect("open")
            .write_all(&[0; 40])
            .expect("write");
        let (changes, read) = replay(&path, true).expect("replay");
        assert_eq!(changes.len(), 1);
        assert!(matches!(read.torn, Some(IndexError::HeaderChecksum { .. })));
    }

    #[test]
    fn damage_before_the_last_frame_of_a_journal_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = journal(dir.path(), &[put("a"), put("b")]);
        flip(&path, (frame_offset(&path, 1) + FRAME_HEADER + 2) as i64);
        assert!(matches!(
            replay(&path, true),
            Err(IndexError::Checksum { .. })
        ));
        let path = journal(dir.path(), &[put("a"), put("b")]);
        flip(&path, frame_offset(&path, 1) as i64);
        assert!(matches!(
            replay(&path, true),
            Err(IndexError::HeaderChecksum { .. })
        ));
    }

    #[test]
    fn a_reopened_journal_appends_after_its_good_frames() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = journal(dir.path(), &[put("a")]);
        File::options()
            .append(true)
            .open(&path)
            .expect("open")
            .write_all(b"torn")
            .expect("write");
        let read = read_journal(&path, 5, true, |_| {}).expect("replay");
        let mut writer =
            JournalWriter::reopen(&path, 5, read.good_len, read.changes).expect("reopen");
        writer
            .append(&encode(&put("b")).expect("encode"))
            .expect("append");
        assert_eq!(writer.changes(), 2);
        let (changes, read) = replay(&path, true).expect("replay");
        assert_eq!(
            changes,
            [
                Change::Put(Box::new(record("a"))),
                Change::Put(Box::new(record("b")))
            ]
        );
        assert!(read.torn.is_none());
    }

    #[test]
    fn test_invalid_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut escape = record("a");
        escape.id = "../../etc".into();
        let path = journal(
            dir.path(),
            &[put("a"), Frame::Put(Box::new(escape.clone()))],
        );
        assert!(matches!(
            replay(&path, true),
            Err(IndexError::InvalidId { id, .. }) if id == "../../etc"
        ));
        write_snapshot(dir.path(), 1, [escape].into_iter()).expect("write");
        assert!(matches!(
            read_all(&dir.path().join(SNAPSHOT_FILE)),
            Err(IndexError::InvalidId { .. })
        ));
    }

    #[test]
    fn records_too_large_are_refused_when_written() {
        let mut big = record("a");
        big.metadata.insert("k".into(), "x".repeat(MAX_FRAME + 1));
        let error = encode(&Frame::Put(Box::new(big))).expect_err("too large");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    }

    #[test]
    fn journal_names_round_trip() {
        let dir = Path::new("/x");
        let path = journal_path(dir, 0xab);
        let name = path.file_name().and_then(|n| n.to_str()).expect("name");
        assert_eq!(journal_generation(name), Some(0xab));
        for bad in [
            "journal-",
            "journal-zz",
            "journal-00000000000000001",
            "snapshot",
        ] {
            assert_eq!(journal_generation(bad), None, "{bad}");
        }
    }
}
