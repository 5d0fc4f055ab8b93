//! Blob format v1 and filesystem archive: round trips, one negative test per
//! decode failure, fuzzing of the decoder, atomic writes, hostile archives.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use stasis::snapshot::format::{HEADER_LEN, SECTION_ENTRY_LEN, TRAILER_LEN};
use stasis::snapshot::{
    ArchiveError, ArchiveLimits, BlobHeader, Compression, DecodeError, DecodeLimits, DecodedBlob,
    EncodeError, EncodeOptions, FsArchive, FsTime, MemorySection, PAGE_SIZE, SectionEntry,
    SectionKind, decode, encode, peek_header, read_blob, write_blob_atomic,
};

const PAGE: usize = PAGE_SIZE as usize;
const SHA: [u8; 32] = [0xab; 32];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Manifest {
    name: String,
    globals: Vec<i64>,
    processes: BTreeMap<u32, Vec<String>>,
    fuel: Option<u64>,
}

fn manifest() -> Manifest {
    Manifest {
        name: "sandbox-1".into(),
        globals: vec![0, -1, i64::MAX, 42],
        processes: BTreeMap::from([
            (0, vec!["main".into()]),
            (7, vec!["worker".into(), "x".into()]),
        ]),
        fuel: Some(1_000_000),
    }
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

struct Memories {
    zero: Vec<u8>,
    sparse: Vec<u8>,
    dense: Vec<u8>,
    empty: Vec<u8>,
    partial: Vec<u8>,
}

fn memories() -> Memories {
    let mut sparse = vec![0u8; 16 * PAGE];
    sparse[3] = 1;
    sparse[5 * PAGE + 17] = 0xff;
    sparse[6 * PAGE] = 2;
    sparse[16 * PAGE - 1] = 3;
    let mut partial = noise(2 * PAGE + 100, 9);
    partial[..PAGE].fill(0);
    Memories {
        zero: vec![0u8; 4 * PAGE],
        sparse,
        dense: noise(8 * PAGE, 0x1234_5678),
        empty: Vec::new(),
        partial,
    }
}

fn sections(m: &Memories) -> Vec<MemorySection<'_>> {
    vec![
        MemorySection {
            process: 0,
            memory: 0,
            data: &m.zero,
        },
        MemorySection {
            process: 0,
            memory: 1,
            data: &m.sparse,
        },
        MemorySection {
            process: 1,
            memory: 0,
            data: &m.dense,
        },
        MemorySection {
            process: 2,
            memory: 0,
            data: &m.empty,
        },
        MemorySection {
            process: 2,
            memory: 1,
            data: &m.partial,
        },
    ]
}

fn t(secs: i64, nanos: u32) -> FsTime {
    FsTime { secs, nanos }
}

fn archive() -> FsArchive {
    let mut a = FsArchive::new();
    a.push_dir("etc", 0o755, t(1_700_000_000, 5));
    a.push_file(
        "etc/config.toml",
        0o644,
        t(1_700_000_001, 123_456_789),
        b"answer = 42\n",
    );
    a.push_dir("etc/empty", 0o700, t(1_600_000_000, 0));
    a.push_file("data.bin", 0o600, t(-5, 1), &noise(10_000, 3));
    a.push_symlink("link", "etc/config.toml", t(1_650_000_000, 999_999_999));
    a
}

fn encode_vec(opts: &EncodeOptions) -> Result<Vec<u8>> {
    let m = memories();
    let mut out = Vec::new();
    encode(&mut out, SHA, &manifest(), &sections(&m), &archive(), opts)?;
    Ok(out)
}

fn header(bytes: &[u8]) -> BlobHeader {
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(&bytes[..HEADER_LEN]);
    BlobHeader::from_bytes(&h)
}

fn entry_pos(bytes: &[u8], i: usize) -> usize {
    header(bytes).table_offset as usize + i * SECTION_ENTRY_LEN
}

fn entry(bytes: &[u8], i: usize) -> SectionEntry {
    let p = entry_pos(bytes, i);
    let mut e = [0u8; SECTION_ENTRY_LEN];
    e.copy_from_slice(&bytes[p..p + SECTION_ENTRY_LEN]);
    SectionEntry::from_bytes(&e)
}

fn set_entry(bytes: &mut [u8], i: usize, f: impl FnOnce(&mut SectionEntry)) {
    let mut e = entry(bytes, i);
    f(&mut e);
    let p = entry_pos(bytes, i);
    bytes[p..p + SECTION_ENTRY_LEN].copy_from_slice(&e.to_bytes());
}

/// Recomputes the trailing whole-file crc32 so a crafted change reaches the
/// checks behind it.
fn reseal(bytes: &mut [u8]) {
    let end = bytes.len() - TRAILER_LEN;
    let crc = crc32fast::hash(&bytes[..end]);
    bytes[end..].copy_from_slice(&crc.to_le_bytes());
}

/// Recomputes section `i`'s crc32 (if its bounds are sane), then reseals.
fn reseal_section(bytes: &mut [u8], i: usize) {
    let e = entry(bytes, i);
    if let Some(s) = bytes.get(e.offset as usize..(e.offset.saturating_add(e.stored_len)) as usize)
    {
        let crc = crc32fast::hash(s);
        set_entry(bytes, i, |e| e.crc32 = crc);
    }
    reseal(bytes);
}

fn dec(bytes: Vec<u8>) -> Result<DecodedBlob<Manifest>, DecodeError> {
    decode(bytes, &DecodeLimits::default())
}

fn check_round_trip(blob: &DecodedBlob<Manifest>, compressed: bool) -> Result<()> {
    let m = memories();
    let originals = sections(&m);
    ensure!(blob.manifest == manifest());
    ensure!(blob.header.module_sha256 == SHA);
    ensure!(blob.filesystem == archive(), "archive differs");
    ensure!(blob.memories.len() == originals.len());
    for (img, orig) in blob.memories.iter().zip(&originals) {
        ensure!(img.process() == orig.process && img.memory() == orig.memory);
        ensure!(img.byte_len() == orig.data.len() as u64);
        let mut restored = vec![0u8; orig.data.len()];
        img.copy_into(&mut restored)?;
        ensure!(
            restored == orig.data,
            "memory {}/{} differs",
            orig.process,
            orig.memory
        );
        ensure!(img.borrows_blob() != compressed);
        // Present and absent runs tile the memory exactly, and absent runs are
        // really zero.
        let mut tiles: Vec<(u64, u64)> = img
            .present_runs()
            .map(|(o, b)| (o, b.len() as u64))
            .collect();
        for (o, l) in img.absent_runs() {
            ensure!(
                orig.data[o as usize..(o + l) as usize]
                    .iter()
                    .all(|&b| b == 0)
            );
            tiles.push((o, l));
        }
        tiles.sort_unstable();
        let mut cursor = 0;
        for (o, l) in tiles {
            ensure!(o == cursor, "gap or overlap at {o}");
            cursor = o + l;
        }
        ensure!(cursor == img.byte_len());
        if !compressed && let Some(off) = img.data_file_offset() {
            ensure!(
                off % PAGE_SIZE == 0,
                "memory data at unaligned file offset {off}"
            );
        }
    }
    Ok(())
}

#[test]
fn round_trip_uncompressed() -> Result<()> {
    let bytes = encode_vec(&EncodeOptions::default())?;
    let blob = dec(bytes)?;
    check_round_trip(&blob, false)?;
    // Memories with present pages have an aligned data offset; zero and empty
    // ones have none.
    let offsets: Vec<_> = blob.memories.iter().map(|m| m.data_file_offset()).collect();
    ensure!(offsets[0].is_none() && offsets[3].is_none(), "{offsets:?}");
    ensure!(
        offsets[1].is_some() && offsets[2].is_some() && offsets[4].is_some(),
        "{offsets:?}"
    );
    Ok(())
}

#[test]
fn round_trip_zstd() -> Result<()> {
    let plain = encode_vec(&EncodeOptions::default())?;
    let bytes = encode_vec(&EncodeOptions {
        compression: Compression::Zstd { level: 3 },
    })?;
    ensure!(
        bytes.len() < plain.len(),
        "zstd blob {} not smaller than {}",
        bytes.len(),
        plain.len()
    );
    let blob = dec(bytes)?;
    check_round_trip(&blob, true)
}

#[test]
fn mostly_zero_64mib_memory_is_tiny() -> Result<()> {
    let mut mem = vec![0u8; 64 << 20];
    mem[100] = 1;
    mem[(40 << 20) + 5] = 2;
    let mut out = Vec::new();
    let summary = encode(
        &mut out,
        SHA,
        &manifest(),
        &[MemorySection {
            process: 0,
            memory: 0,
            data: &mem,
        }],
        &FsArchive::new(),
        &EncodeOptions::default(),
    )?;
    ensure!(
        summary.present_pages == 2 && summary.zero_pages == 1022,
        "{summary:?}"
    );
    ensure!(summary.total_bytes == out.len() as u64);
    // Two pages of data plus at most one page of alignment padding and a few
    // hundred bytes of header, manifest and table.
    ensure!(out.len() < 3 * PAGE + 4096, "blob is {} bytes", out.len());
    let blob = dec(out)?;
    let mut back = vec![0u8; mem.len()];
    blob.memories[0].copy_into(&mut back)?;
    ensure!(back == mem);
    Ok(())
}

#[test]
fn write_atomic_then_read_blob() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("sandbox.blob");
    let m = memories();
    let summary = write_blob_atomic(
        &path,
        SHA,
        &manifest(),
        &sections(&m),
        &archive(),
        &EncodeOptions::default(),
    )?;
    let names: Vec<_> = fs::read_dir(dir.path())?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    ensure!(
        names == vec![std::ffi::OsString::from("sandbox.blob")],
        "leftovers: {names:?}"
    );
    ensure!(fs::metadata(&path)?.len() == summary.total_bytes);
    let blob: DecodedBlob<Manifest> = read_blob(&path, &DecodeLimits::default())?;
    check_round_trip(&blob, false)?;
    blob.header.ensure_module(&SHA)?;
    ensure!(matches!(
        blob.header.ensure_module(&[0; 32]),
        Err(DecodeError::ModuleMismatch { .. })
    ));
    Ok(())
}

/// A manifest whose serialization fails, to make the encoder fail.
struct Unserializable;
impl Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("refused"))
    }
}

#[test]
fn failed_atomic_write_leaves_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // Missing directory: nothing may appear anywhere.
    let missing = dir.path().join("no-such-dir").join("x.blob");
    let err = write_blob_atomic(
        &missing,
        SHA,
        &manifest(),
        &[],
        &FsArchive::new(),
        &EncodeOptions::default(),
    );
    ensure!(matches!(err, Err(EncodeError::TempFile { .. })), "{err:?}");
    ensure!(!missing.exists());

    // A failing encode must neither leave a temp file nor touch an existing
    // blob at the target.
    let path = dir.path().join("x.blob");
    write_blob_atomic(
        &path,
        SHA,
        &manifest(),
        &[],
        &FsArchive::new(),
        &EncodeOptions::default(),
    )?;
    let before = fs::read(&path)?;
    let err = write_blob_atomic(
        &path,
        SHA,
        &Unserializable,
        &[],
        &FsArchive::new(),
        &EncodeOptions::default(),
    );
    ensure!(matches!(err, Err(EncodeError::Manifest(_))), "{err:?}");
    ensure!(fs::read(&path)? == before);
    ensure!(
        fs::read_dir(dir.path())?.count() == 1,
        "temp file left behind"
    );

    // A read-only directory (only meaningful when not running as root).
    let ro = dir.path().join("ro");
    fs::create_dir(&ro)?;
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o555))?;
    let probe = fs::File::create(ro.join("probe"));
    if probe.is_err() {
        let target = ro.join("y.blob");
        let err = write_blob_atomic(
            &target,
            SHA,
            &manifest(),
            &[],
            &FsArchive::new(),
            &EncodeOptions::default(),
        );
        ensure!(matches!(err, Err(EncodeError::TempFile { .. })), "{err:?}");
        ensure!(fs::read_dir(&ro)?.count() == 0);
    }
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o755))?;

    ensure!(matches!(
        write_blob_atomic(
            Path::new("/"),
            SHA,
            &manifest(),
            &[],
            &FsArchive::new(),
            &EncodeOptions::default()
        ),
        Err(EncodeError::NoParentDir(_))
    ));
    Ok(())
}

#[test]
fn encode_refuses_duplicate_memory() -> Result<()> {
    let page = vec![1u8; PAGE];
    let s = MemorySection {
        process: 3,
        memory: 1,
        data: &page,
    };
    let err = encode(
        Vec::new(),
        SHA,
        &manifest(),
        &[s, s],
        &FsArchive::new(),
        &EncodeOptions::default(),
    );
    ensure!(
        matches!(
            err,
            Err(EncodeError::DuplicateMemory {
                process: 3,
                memory: 1
            })
        ),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn peek_header_reads_module_hash() -> Result<()> {
    let bytes = encode_vec(&EncodeOptions::default())?;
    let h = peek_header(&bytes)?;
    ensure!(
        h.module_sha256 == SHA
            && h.format_major == stasis::snapshot::FORMAT_MAJOR
            && h.format_minor == stasis::snapshot::FORMAT_MINOR
    );
    ensure!(h.total_len == bytes.len() as u64 && h.section_count == 7);
    Ok(())
}

// ---------------------------------------------------------------------------
// One negative test per DecodeError variant.

#[test]
fn bad_magic() -> Result<()> {
    let mut bytes = encode_vec(&EncodeOptions::default())?;
    bytes[1] = b's';
    ensure!(matches!(dec(bytes), Err(DecodeError::BadMagic)));
    ensure!(matches!(
        dec(b"PK\x03\x04".to_vec()),
        Err(DecodeError::BadMagic)
    ));
    Ok(())
}

#[test]
fn unsupported_major_and_newer_minor_and_flags() -> Result<()> {
    let good = encode_vec(&EncodeOptions::default())?;
    let mut b = good.clone();
    let other_major = stasis::snapshot::FORMAT_MAJOR + 1;
    b[8..10].copy_from_slice(&other_major.to_le_bytes());
    ensure!(matches!(
        dec(b),
        Err(DecodeError::UnsupportedMajor { found, supported })
            if found == other_major && supported == stasis::snapshot::FORMAT_MAJOR
    ));
    let mut b = good.clone();
    let newer = stasis::snapshot::FORMAT_MINOR + 1;
    b[10..12].copy_from_slice(&newer.to_le_bytes());
    ensure!(matches!(
        dec(b),
        Err(DecodeError::NewerMinor { found, supported })
            if found == newer && supported == stasis::snapshot::FORMAT_MINOR
    ));
    let mut b = good;
    b[12] = 0x04;
    ensure!(matches!(dec(b), Err(DecodeError::UnknownFlags(0x04))));
    Ok(())
}

#[test]
fn truncated_at_every_header_byte_and_section_boundary() -> Result<()> {
    for compression in [Compression::None, Compression::Zstd { level: 1 }] {
        let good = encode_vec(&EncodeOptions { compression })?;
        let total = good.len() as u64;
        for cut in 0..HEADER_LEN {
            let r = dec(good[..cut].to_vec());
            ensure!(
                matches!(r, Err(DecodeError::Truncated { expected, found }) if expected == HEADER_LEN as u64 && found == cut as u64),
                "cut {cut}: {r:?}"
            );
        }
        let h = header(&good);
        let mut cuts = vec![h.table_offset, total - 1, total - TRAILER_LEN as u64];
        for i in 0..h.section_count as usize {
            let e = entry(&good, i);
            cuts.extend([
                e.offset,
                e.offset + e.stored_len,
                e.offset + e.stored_len / 2,
            ]);
        }
        for cut in cuts {
            let r = dec(good[..cut as usize].to_vec());
            ensure!(
                matches!(r, Err(DecodeError::Truncated { expected, found }) if expected == total && found == cut),
                "cut {cut}: {r:?}"
            );
        }
        let mut longer = good.clone();
        longer.push(0);
        ensure!(matches!(dec(longer), Err(DecodeError::TrailingData { .. })));
    }
    Ok(())
}

#[test]
fn flipped_bytes_fail_the_checksum() -> Result<()> {
    let good = encode_vec(&EncodeOptions::default())?;
    // Every byte of the module hash, then a sample across all sections, the
    // table and the trailer.
    let positions = (40..72)
        .chain((HEADER_LEN..good.len()).step_by(97))
        .chain(good.len() - 4..good.len());
    let mut n = 0;
    for pos in positions {
        let mut b = good.clone();
        b[pos] ^= 0x20;
        let r = dec(b);
        ensure!(
            matches!(r, Err(DecodeError::ChecksumMismatch { .. })),
            "pos {pos}: {r:?}"
        );
        n += 1;
    }
    ensure!(n > 100);
    // No single flip anywhere decodes successfully.
    for pos in 0..HEADER_LEN {
        let mut b = good.clone();
        b[pos] ^= 0x01;
        ensure!(dec(b).is_err(), "flip at {pos} accepted");
    }
    Ok(())
}

#[test]
fn section_checksum_mismatch() -> Result<()> {
    let mut b = encode_vec(&EncodeOptions::default())?;
    let e = entry(&b, 2);
    b[e.offset as usize] ^= 1;
    reseal(&mut b);
    let r = dec(b);
    ensure!(
        matches!(r, Err(DecodeError::SectionChecksumMismatch { index: 2 })),
        "{r:?}"
    );
    Ok(())
}

#[test]
fn bad_section_table() -> Result<()> {
    let mut b = encode_vec(&EncodeOptions::default())?;
    let off = header(&b).table_offset + 1;
    b[32..40].copy_from_slice(&off.to_le_bytes());
    ensure!(matches!(dec(b), Err(DecodeError::BadSectionTable { .. })));
    let mut b = encode_vec(&EncodeOptions::default())?;
    b[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
    ensure!(matches!(dec(b), Err(DecodeError::BadSectionTable { .. })));
    Ok(())
}

#[test]
fn sections_out_of_bounds_and_huge_claims() -> Result<()> {
    let good = encode_vec(&EncodeOptions::default())?;
    let tib = 1u64 << 40;
    let started = Instant::now();

    // An uncompressed section claiming 1 TiB cannot lie inside the file.
    let mut b = good.clone();
    set_entry(&mut b, 2, |e| {
        e.stored_len = tib;
        e.raw_len = tib;
    });
    reseal(&mut b);
    let r = dec(b);
    ensure!(
        matches!(r, Err(DecodeError::SectionOutOfBounds { index: 2, .. })),
        "{r:?}"
    );

    // Offset wrapping around u64.
    let mut b = good.clone();
    set_entry(&mut b, 1, |e| e.offset = u64::MAX - 2);
    reseal(&mut b);
    ensure!(matches!(
        dec(b),
        Err(DecodeError::SectionOutOfBounds { index: 1, .. })
    ));

    // Offset inside the header.
    let mut b = good.clone();
    set_entry(&mut b, 0, |e| e.offset = 3);
    reseal(&mut b);
    ensure!(matches!(
        dec(b),
        Err(DecodeError::SectionOutOfBounds { index: 0, .. })
    ));

    // A compressed section claiming to decompress to 1 TiB is refused by the
    // limits before any allocation.
    let mut b = good.clone();
    set_entry(&mut b, 2, |e| {
        e.compression = 1;
        e.raw_len = tib;
    });
    reseal(&mut b);
    let r = dec(b);
    ensure!(
        matches!(r, Err(DecodeError::LimitExceeded { what: "memory section", value, .. }) if value == tib),
        "{r:?}"
    );

    let mut b = good.clone();
    set_entry(&mut b, 0, |e| {
        e.compression = 1;
        e.raw_len = tib;
    });
    reseal(&mut b);
    ensure!(matches!(
        dec(b),
        Err(DecodeError::LimitExceeded {
            what: "manifest section",
            ..
        })
    ));

    // A header declaring a 1 TiB file is just truncated.
    let mut b = good.clone();
    b[24..32].copy_from_slice(&tib.to_le_bytes());
    ensure!(matches!(dec(b), Err(DecodeError::Truncated { expected, .. }) if expected == tib));
    ensure!(
        started.elapsed() < Duration::from_secs(2),
        "huge claims took {:?}",
        started.elapsed()
    );
    Ok(())
}

/// A change to the default limits.
type LimitEdit = fn(&mut DecodeLimits);

#[test]
fn limits_are_enforced() -> Result<()> {
    let good = encode_vec(&EncodeOptions::default())?;
    let lim = |f: fn(&mut DecodeLimits)| {
        let mut l = DecodeLimits::default();
        f(&mut l);
        decode::<Manifest>(good.clone(), &l)
    };
    let cases: [(LimitEdit, &str); 7] = [
        (|l| l.max_blob_bytes = 1000, "blob size"),
        (|l| l.max_sections = 3, "section count"),
        (|l| l.max_manifest_bytes = 8, "manifest section"),
        (|l| l.max_fs_bytes = 100, "filesystem section"),
        (
            |l| l.max_memory_bytes = 15 * PAGE_SIZE,
            "memory byte length",
        ),
        (|l| l.max_memory_bytes = 0, "memory section"),
        (|l| l.max_total_memory_bytes = 4 * PAGE_SIZE, "total memory"),
    ];
    for (f, expected) in cases {
        let r = lim(f);
        ensure!(
            matches!(r, Err(DecodeError::LimitExceeded { what, .. }) if what == expected),
            "{expected}: {r:?}"
        );
    }
    let r = lim(|l| l.max_fs_entries = 2);
    ensure!(
        matches!(
            r,
            Err(DecodeError::Filesystem(ArchiveError::TooManyEntries {
                limit: 2
            }))
        ),
        "{r:?}"
    );
    // read_blob refuses a file over the limit before reading it.
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("b");
    fs::write(&path, &good)?;
    let l = DecodeLimits {
        max_blob_bytes: 10,
        ..DecodeLimits::default()
    };
    ensure!(matches!(
        read_blob::<Manifest>(&path, &l),
        Err(DecodeError::LimitExceeded {
            what: "blob size",
            ..
        })
    ));
    ensure!(matches!(
        read_blob::<Manifest>(&dir.path().join("none"), &l),
        Err(DecodeError::Io(_))
    ));
    Ok(())
}

#[test]
fn table_entry_corruptions() -> Result<()> {
    let good = encode_vec(&EncodeOptions::default())?;
    let run = |f: &dyn Fn(&mut SectionEntry), i: usize| {
        let mut b = good.clone();
        set_entry(&mut b, i, f);
        reseal(&mut b);
        dec(b)
    };
    let r = run(&|e| e.kind = 99, 2);
    ensure!(
        matches!(
            r,
            Err(DecodeError::UnknownSectionKind { index: 2, kind: 99 })
        ),
        "{r:?}"
    );
    let r = run(&|e| e.compression = 7, 1);
    ensure!(
        matches!(
            r,
            Err(DecodeError::UnknownCompression {
                index: 1,
                compression: 7
            })
        ),
        "{r:?}"
    );
    let r = run(&|e| e.raw_len += 1, 0);
    ensure!(
        matches!(r, Err(DecodeError::SectionLengthMismatch { index: 0 })),
        "{r:?}"
    );
    let first = entry(&good, 0);
    let r = run(&|e| e.offset = first.offset, 1);
    ensure!(
        matches!(r, Err(DecodeError::SectionOverlap { index: 1 })),
        "{r:?}"
    );
    let r = run(&|e| e.kind = SectionKind::Manifest as u16, 1);
    ensure!(
        matches!(
            r,
            Err(DecodeError::DuplicateSection {
                kind: SectionKind::Manifest,
                index: 1
            })
        ),
        "{r:?}"
    );
    let r = run(&|e| e.kind = SectionKind::Memory as u16, 0);
    ensure!(
        matches!(r, Err(DecodeError::MissingSection(SectionKind::Manifest))),
        "{r:?}"
    );
    let r = run(&|e| e.kind = SectionKind::Memory as u16, 1);
    ensure!(
        matches!(r, Err(DecodeError::MissingSection(SectionKind::Filesystem))),
        "{r:?}"
    );
    Ok(())
}

/// Rewrites bytes inside section `i`, then fixes both checksums.
fn patch_section(good: &[u8], i: usize, at: usize, new: &[u8]) -> Vec<u8> {
    let mut b = good.to_vec();
    let off = entry(&b, i).offset as usize + at;
    b[off..off + new.len()].copy_from_slice(new);
    reseal_section(&mut b, i);
    b
}

#[test]
fn bad_page_maps() -> Result<()> {
    let good = encode_vec(&EncodeOptions::default())?;
    // Section 3 is the sparse memory: 16 pages, runs [0,1) [5,7) [15,16).
    let cases: Vec<(usize, Vec<u8>)> = vec![
        (8, (PAGE_SIZE).to_le_bytes().to_vec()), // byte_len shrinks under the runs
        (16, u64::MAX.to_le_bytes().to_vec()),   // run_count overflow
        (16, 1000u64.to_le_bytes().to_vec()),    // runs beyond data_offset
        (24, u64::MAX.to_le_bytes().to_vec()),   // data_offset beyond section
        (32, 5u64.to_le_bytes().to_vec()),       // first run now overlaps the second
        (40, 0u64.to_le_bytes().to_vec()),       // empty run
        (48, 1u64.to_le_bytes().to_vec()),       // second run starts at 1, adjacent to first
        (56, 1u64.to_le_bytes().to_vec()),       // data length no longer matches
    ];
    for (at, new) in cases {
        let r = dec(patch_section(&good, 3, at, &new));
        ensure!(
            matches!(r, Err(DecodeError::BadPageMap { index: 3, .. })),
            "at {at}: {r:?}"
        );
    }
    // Descriptor shorter than its fixed part.
    let mut b = good.clone();
    set_entry(&mut b, 2, |e| {
        e.stored_len = 16;
        e.raw_len = 16;
    });
    reseal_section(&mut b, 2);
    let r = dec(b);
    ensure!(
        matches!(r, Err(DecodeError::BadPageMap { index: 2, .. })),
        "{r:?}"
    );
    Ok(())
}

#[test]
fn duplicate_memory_in_blob() -> Result<()> {
    let good = encode_vec(&EncodeOptions::default())?;
    // Make section 3 (process 0, memory 1) claim to be memory 0 of process 0.
    let r = dec(patch_section(&good, 3, 4, &0u32.to_le_bytes()));
    ensure!(
        matches!(
            r,
            Err(DecodeError::DuplicateMemory {
                process: 0,
                memory: 0
            })
        ),
        "{r:?}"
    );
    Ok(())
}

fn blob_with<M: Serialize>(manifest: &M, fs: &FsArchive, opts: &EncodeOptions) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode(&mut out, SHA, manifest, &[], fs, opts)?;
    Ok(out)
}

#[test]
fn manifest_errors() -> Result<()> {
    let b = blob_with(&7u32, &FsArchive::new(), &EncodeOptions::default())?;
    let r = decode::<bool>(b, &DecodeLimits::default());
    ensure!(matches!(r, Err(DecodeError::Manifest(_))), "{r:?}");
    let b = blob_with(&(1u8, 2u8), &FsArchive::new(), &EncodeOptions::default())?;
    let r = decode::<u8>(b, &DecodeLimits::default());
    ensure!(
        matches!(r, Err(DecodeError::ManifestTrailingBytes(1))),
        "{r:?}"
    );
    // A string whose length prefix claims 2^60 bytes must fail without
    // allocating them: the manifest `[0xff; 9]` (a tuple, so bincode writes
    // the bytes raw) reads as varint tag 0xff followed by a huge u64.
    let b = blob_with(&[0xffu8; 9], &FsArchive::new(), &EncodeOptions::default())?;
    ensure!(entry(&b, 0).raw_len == 9);
    let started = Instant::now();
    let r = decode::<String>(b, &DecodeLimits::default());
    ensure!(matches!(r, Err(DecodeError::Manifest(_))), "{r:?}");
    ensure!(started.elapsed() < Duration::from_secs(1));
    Ok(())
}

/// A writer that fails after `left` bytes, like a full disk.
struct FailingWriter {
    left: usize,
}
impl std::io::Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("disk full"));
        }
        let n = buf.len().min(self.left);
        self.left -= n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn write_errors_are_reported() -> Result<()> {
    let m = memories();
    for left in [0, 100, 200_000, 1 << 20] {
        let r = encode(
            FailingWriter { left },
            SHA,
            &manifest(),
            &sections(&m),
            &archive(),
            &EncodeOptions::default(),
        );
        ensure!(matches!(r, Err(EncodeError::Io(_))), "{left}: {r:?}");
    }
    Ok(())
}

#[test]
fn filesystem_errors_in_blob() -> Result<()> {
    let mut hostile = FsArchive::new();
    hostile.push_file("/etc/passwd", 0o644, t(0, 0), b"x");
    let b = blob_with(&manifest(), &hostile, &EncodeOptions::default())?;
    let r = dec(b);
    ensure!(
        matches!(
            r,
            Err(DecodeError::Filesystem(ArchiveError::InvalidPath { .. }))
        ),
        "{r:?}"
    );
    let good = blob_with(&manifest(), &archive(), &EncodeOptions::default())?;
    // An index that does not parse (the root's Option tag is garbage).
    let r = dec(patch_section(&good, 1, 8, &[0xfe; 4]));
    ensure!(
        matches!(
            r,
            Err(DecodeError::Filesystem(ArchiveError::IndexDecode(_)))
        ),
        "{r:?}"
    );
    // Index length pointing past the section.
    let r = dec(patch_section(&good, 1, 0, &u64::MAX.to_le_bytes()));
    ensure!(
        matches!(r, Err(DecodeError::Filesystem(ArchiveError::Corrupt(_)))),
        "{r:?}"
    );
    Ok(())
}

#[test]
fn decompression_errors() -> Result<()> {
    let good = encode_vec(&EncodeOptions {
        compression: Compression::Zstd { level: 1 },
    })?;
    // Garbage in place of the zstd frame.
    let e = entry(&good, 2);
    let r = dec(patch_section(
        &good,
        2,
        0,
        &vec![0x55; e.stored_len as usize],
    ));
    ensure!(
        matches!(r, Err(DecodeError::Decompress { index: 2, .. })),
        "{r:?}"
    );
    // A declared raw length larger than the frame really holds.
    let mut b = good.clone();
    set_entry(&mut b, 0, |e| e.raw_len += 10);
    reseal(&mut b);
    let r = dec(b);
    ensure!(
        matches!(r, Err(DecodeError::DecompressedLength { index: 0, .. })),
        "{r:?}"
    );
    // Smaller: the frame does not fit the bound, so it fails to decompress.
    let mut b = good;
    set_entry(&mut b, 3, |e| e.raw_len = 10);
    reseal(&mut b);
    let r = dec(b);
    ensure!(
        matches!(r, Err(DecodeError::Decompress { index: 3, .. })),
        "{r:?}"
    );
    Ok(())
}

#[test]
fn copy_into_short_destination() -> Result<()> {
    let blob = dec(encode_vec(&EncodeOptions::default())?)?;
    let mut small = vec![0u8; PAGE];
    let r = blob.memories[1].copy_into(&mut small);
    ensure!(
        matches!(r, Err(DecodeError::DestinationTooShort { .. })),
        "{r:?}"
    );
    Ok(())
}

/// Small limits so fuzzed inputs can never ask for much memory.
fn fuzz_limits() -> DecodeLimits {
    DecodeLimits {
        max_blob_bytes: 64 << 20,
        max_manifest_bytes: 1 << 20,
        max_memory_bytes: 64 << 20,
        max_total_memory_bytes: 128 << 20,
        max_sections: 64,
        max_fs_bytes: 1 << 20,
        max_fs_entries: 1000,
    }
}

/// Recomputes every in-bounds section crc and the trailer, so mutations get
/// past the checksums and exercise the parsers behind them.
fn reseal_all(b: &mut [u8]) {
    if b.len() < HEADER_LEN + TRAILER_LEN {
        return;
    }
    let h = header(b);
    let table_end =
        (h.table_offset as usize).saturating_add(h.section_count as usize * SECTION_ENTRY_LEN);
    if h.section_count <= 64 && table_end <= b.len() - TRAILER_LEN {
        for i in 0..h.section_count as usize {
            reseal_section(b, i);
        }
    }
    reseal(b);
}

fn small_blob(compression: Compression) -> Vec<u8> {
    let mut mem = vec![0u8; 3 * PAGE];
    mem[PAGE + 1] = 9;
    let mut out = Vec::new();
    let r = encode(
        &mut out,
        SHA,
        &manifest(),
        &[MemorySection {
            process: 0,
            memory: 0,
            data: &mem,
        }],
        &archive(),
        &EncodeOptions { compression },
    );
    assert!(r.is_ok());
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096), magic in any::<bool>()) {
        let mut bytes = bytes;
        if magic && bytes.len() >= 8 {
            bytes[..8].copy_from_slice(b"\x89STASIS\n");
        }
        let _ = decode::<Manifest>(bytes, &fuzz_limits());
    }

    #[test]
    fn mutated_blobs_never_panic(
        zstd in any::<bool>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in proptest::option::of(any::<prop::sample::Index>()),
        seal in any::<bool>(),
    ) {
        let compression = if zstd { Compression::Zstd { level: 1 } } else { Compression::None };
        let mut b = small_blob(compression);
        for (i, v) in &edits {
            let n = b.len();
            b[i.index(n)] = *v;
        }
        if seal {
            reseal_all(&mut b);
        }
        if let Some(c) = cut {
            let n = b.len();
            b.truncate(c.index(n));
        }
        let _ = decode::<Manifest>(b, &fuzz_limits());
    }
}

// ---------------------------------------------------------------------------
// Filesystem archive on disk.

fn set_mtime(path: &Path, secs: u64, nanos: u32) -> Result<()> {
    let t = UNIX_EPOCH + Duration::new(secs, nanos);
    fs::File::open(path)?
        .set_modified(t)
        .with_context(|| format!("mtime of {}", path.display()))
}

/// Builds a tree with every supported kind, odd modes and nanosecond mtimes.
fn build_tree(root: &Path) -> Result<()> {
    fs::create_dir_all(root.join("a/b/c"))?;
    fs::create_dir(root.join("empty"))?;
    fs::create_dir(root.join("locked"))?;
    fs::write(root.join("a/b/c/deep.txt"), b"deep")?;
    fs::write(root.join("a/hello.txt"), b"hello world")?;
    fs::write(root.join("zero-len"), b"")?;
    fs::write(root.join("big.bin"), noise(300_000, 77))?;
    fs::write(root.join("locked/inside"), b"ro dir content")?;
    symlink("a/hello.txt", root.join("rel-link"))?;
    symlink("/etc/passwd", root.join("abs-link"))?;
    symlink("does/not/exist", root.join("a/dangling"))?;
    for (p, mode) in [
        ("a/hello.txt", 0o640),
        ("big.bin", 0o755),
        ("zero-len", 0o400),
        ("locked/inside", 0o444),
    ] {
        fs::set_permissions(root.join(p), fs::Permissions::from_mode(mode))?;
        set_mtime(&root.join(p), 1_600_000_000, 123_456_789)?;
    }
    set_mtime(&root.join("a/b/c/deep.txt"), 1_500_000_000, 1)?;
    fs::set_permissions(root.join("empty"), fs::Permissions::from_mode(0o711))?;
    // Directories last, children first, as their mtimes change with content.
    for (d, secs) in [
        ("a/b/c", 1_400_000_000),
        ("a/b", 1_400_000_001),
        ("a", 1_400_000_002),
        ("empty", 1_400_000_003),
        ("locked", 1_400_000_004),
    ] {
        set_mtime(&root.join(d), secs, 999)?;
    }
    fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o555))?;
    set_mtime(root, 1_400_000_005, 42)?;
    Ok(())
}

/// Makes a tree deletable again (read-only directories block cleanup).
fn unlock(root: &Path) {
    let _ = fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o755));
}

fn mtime_of(p: &Path) -> Result<(i64, i64)> {
    let md = fs::symlink_metadata(p)?;
    Ok((md.mtime(), md.mtime_nsec()))
}

#[test]
fn archive_round_trip_is_byte_identical() -> Result<()> {
    let src = tempfile::tempdir()?;
    let dst = tempfile::tempdir()?;
    build_tree(src.path())?;
    let result = (|| -> Result<()> {
        let captured = FsArchive::capture(src.path(), &ArchiveLimits::default())?;
        // Through a blob, to cover the section encoding too.
        let bytes = blob_with(&manifest(), &captured, &EncodeOptions::default())?;
        let archive = dec(bytes)?.filesystem;
        ensure!(archive == captured);
        archive.restore_into(dst.path())?;
        let again = FsArchive::capture(dst.path(), &ArchiveLimits::default())?;
        ensure!(
            again == captured,
            "restored tree captures differently:\n{again:#?}\nvs\n{captured:#?}"
        );
        // Spot checks straight from the filesystem.
        ensure!(fs::read(dst.path().join("big.bin"))? == noise(300_000, 77));
        ensure!(fs::read_link(dst.path().join("abs-link"))? == Path::new("/etc/passwd"));
        ensure!(fs::symlink_metadata(dst.path().join("zero-len"))?.mode() & 0o777 == 0o400);
        ensure!(mtime_of(&dst.path().join("a/hello.txt"))? == (1_600_000_000, 123_456_789));
        ensure!(mtime_of(&dst.path().join("a/b"))? == (1_400_000_001, 999));
        ensure!(mtime_of(&dst.path().join("locked"))? == (1_400_000_004, 999));
        ensure!(mtime_of(dst.path())? == (1_400_000_005, 42));
        ensure!(mtime_of(&dst.path().join("rel-link"))? == mtime_of(&src.path().join("rel-link"))?);
        ensure!(fs::read_dir(dst.path().join("empty"))?.count() == 0);
        Ok(())
    })();
    unlock(src.path());
    unlock(dst.path());
    result
}

#[test]
fn capture_limits_and_unsupported_types() -> Result<()> {
    let src = tempfile::tempdir()?;
    fs::create_dir_all(src.path().join("a/b"))?;
    fs::write(src.path().join("a/b/f"), b"0123456789x")?;
    let lim = |f: fn(&mut ArchiveLimits)| {
        let mut l = ArchiveLimits::default();
        f(&mut l);
        FsArchive::capture(src.path(), &l)
    };
    let r = lim(|l| l.max_entries = 2);
    ensure!(
        matches!(r, Err(ArchiveError::TooManyEntries { limit: 2 })),
        "{r:?}"
    );
    let r = lim(|l| l.max_total_bytes = 10);
    ensure!(
        matches!(r, Err(ArchiveError::TooManyBytes { limit: 10 })),
        "{r:?}"
    );
    let r = lim(|l| l.max_depth = 1);
    ensure!(
        matches!(r, Err(ArchiveError::TooDeep { limit: 1, .. })),
        "{r:?}"
    );
    ensure!(lim(|l| l.max_total_bytes = 11).is_ok());

    let odd = src
        .path()
        .join(std::ffi::OsStr::from_bytes(b"bad-\xff-name"));
    fs::write(&odd, b"")?;
    let r = FsArchive::capture(src.path(), &ArchiveLimits::default());
    ensure!(matches!(r, Err(ArchiveError::NonUtf8 { .. })), "{r:?}");
    fs::remove_file(&odd)?;

    let _sock = std::os::unix::net::UnixListener::bind(src.path().join("a/sock"))?;
    let r = FsArchive::capture(src.path(), &ArchiveLimits::default());
    ensure!(
        matches!(r, Err(ArchiveError::UnsupportedFileType { .. })),
        "{r:?}"
    );
    Ok(())
}

/// Restores `archive` into a fresh directory inside a scratch area and
/// checks that it fails and that nothing at all appeared in the scratch area
/// outside the target, nor in `outside`.
fn assert_refused(archive: &FsArchive, outside: &Path) -> Result<ArchiveError> {
    let scratch = tempfile::tempdir()?;
    let target = scratch.path().join("target");
    fs::create_dir(&target)?;
    let before_outside: Vec<_> = fs::read_dir(outside)?.collect::<Result<_, _>>()?;
    let err = match archive.restore_into(&target) {
        Ok(()) => bail!("hostile archive restored: {archive:?}"),
        Err(e) => e,
    };
    let scratch_entries: Vec<_> = fs::read_dir(scratch.path())?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    ensure!(
        scratch_entries == vec![std::ffi::OsString::from("target")],
        "{scratch_entries:?}"
    );
    ensure!(
        fs::read_dir(&target)?.count() == 0,
        "partial restore left files"
    );
    ensure!(
        fs::read_dir(outside)?.count() == before_outside.len(),
        "wrote outside"
    );
    Ok(err)
}

#[test]
fn hostile_archives_are_refused() -> Result<()> {
    let outside = tempfile::tempdir()?;
    let outside_str = outside
        .path()
        .to_str()
        .context("utf-8 temp path")?
        .to_owned();
    let z = t(0, 0);

    let mut a = FsArchive::new();
    a.push_file(format!("{outside_str}/pwned"), 0o644, z, b"x");
    ensure!(matches!(
        assert_refused(&a, outside.path())?,
        ArchiveError::InvalidPath {
            reason: "absolute path",
            ..
        }
    ));

    for bad in ["../pwned", "a/../../pwned", "", "a//b", "./x", "nul\0name"] {
        let mut a = FsArchive::new();
        a.push_dir("a", 0o755, z);
        a.push_file(bad, 0o644, z, b"x");
        let e = assert_refused(&a, outside.path())?;
        ensure!(
            matches!(e, ArchiveError::InvalidPath { .. }),
            "{bad:?}: {e:?}"
        );
    }

    // The classic escape: a symlink to a directory outside, then a file
    // "through" it.
    let mut a = FsArchive::new();
    a.push_symlink("a", outside_str.clone(), z);
    a.push_file("a/x", 0o644, z, b"escaped");
    ensure!(
        matches!(assert_refused(&a, outside.path())?, ArchiveError::ParentNotDirectory(p) if p == "a/x")
    );
    ensure!(!outside.path().join("x").exists());

    let mut a = FsArchive::new();
    a.push_symlink("a", "../..", z);
    a.push_dir("a/sub", 0o755, z);
    ensure!(matches!(
        assert_refused(&a, outside.path())?,
        ArchiveError::ParentNotDirectory(_)
    ));

    let mut a = FsArchive::new();
    a.push_file("f", 0o644, z, b"1");
    a.push_file("f", 0o644, z, b"2");
    ensure!(matches!(
        assert_refused(&a, outside.path())?,
        ArchiveError::DuplicatePath(_)
    ));

    let mut a = FsArchive::new();
    a.push_file("late/child", 0o644, z, b"1");
    a.push_dir("late", 0o755, z);
    ensure!(matches!(
        assert_refused(&a, outside.path())?,
        ArchiveError::ParentNotDirectory(_)
    ));

    let mut a = FsArchive::new();
    a.push_symlink("s", "", z);
    ensure!(matches!(
        assert_refused(&a, outside.path())?,
        ArchiveError::InvalidSymlinkTarget(_)
    ));

    let mut a = FsArchive::new();
    a.push_file("f", 0o644, t(0, 2_000_000_000), b"");
    ensure!(matches!(
        assert_refused(&a, outside.path())?,
        ArchiveError::InvalidTime(_)
    ));

    // A non-empty target is refused (restore never merges).
    let target = tempfile::tempdir()?;
    fs::write(target.path().join("existing"), b"")?;
    let r = archive().restore_into(target.path());
    ensure!(matches!(r, Err(ArchiveError::TargetNotEmpty(_))), "{r:?}");

    // A symlink pointing outside is itself fine (it is data); restore must
    // not follow it.
    let mut a = FsArchive::new();
    a.push_symlink("out", outside_str, z);
    let target = tempfile::tempdir()?;
    a.restore_into(target.path())?;
    ensure!(
        fs::symlink_metadata(target.path().join("out"))?
            .file_type()
            .is_symlink()
    );
    ensure!(fs::read_dir(outside.path())?.count() == 0);
    Ok(())
}
