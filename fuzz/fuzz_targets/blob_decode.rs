//! Fuzzes `stasis::snapshot::decode` under tight limits. The first byte picks the input's shape: raw bytes
//! with the trailer checksum recomputed (so libFuzzer gets past it without seeds), or a valid blob with
//! (offset, value) edits and every checksum recomputed, which reaches the section parsers behind them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};
use stasis::snapshot::format::{HEADER_LEN, SECTION_ENTRY_LEN, TRAILER_LEN};
use stasis::snapshot::{
    BlobHeader, Compression, DecodeLimits, EncodeOptions, FsArchive, FsTime, MemorySection,
    SectionEntry, decode, encode,
};

/// A manifest with variable-length fields, so length prefixes are fuzzed too.
#[derive(Serialize, Deserialize)]
struct Manifest {
    name: String,
    words: Vec<u64>,
}

/// Small limits: a decoder that allocates by a claimed length shows up as an out-of-memory crash.
const LIMITS: DecodeLimits = DecodeLimits {
    max_blob_bytes: 1 << 20,
    max_manifest_bytes: 4 << 10,
    max_memory_bytes: 256 << 10,
    max_total_memory_bytes: 512 << 10,
    max_sections: 16,
    max_fs_bytes: 16 << 10,
    max_fs_entries: 64,
};

fn valid_blob(zstd: bool) -> Vec<u8> {
    let mut memory = vec![0u8; 3 << 16];
    memory[(1 << 16) + 7] = 42;
    let mut fs = FsArchive::new();
    let t = FsTime { secs: 1, nanos: 0 };
    fs.push_dir("d", 0o755, t);
    fs.push_file("d/f", 0o644, t, b"contents");
    fs.push_symlink("d/l", "f", t);
    let manifest = Manifest {
        name: "m".into(),
        words: vec![1, 2, 3],
    };
    let compression = if zstd {
        Compression::Zstd { level: 1 }
    } else {
        Compression::None
    };
    let mut out = Vec::new();
    let memories = [MemorySection {
        process: 0,
        memory: 0,
        data: &memory,
    }];
    encode(
        &mut out,
        [7; 32],
        &manifest,
        &memories,
        &fs,
        &EncodeOptions { compression },
    )
    .expect("encoding a fixed blob");
    out
}

/// Recomputes each in-bounds section crc (when `sections`) and the trailer.
fn reseal(b: &mut [u8], sections: bool) {
    if b.len() < HEADER_LEN + TRAILER_LEN {
        return;
    }
    let header = BlobHeader::from_bytes(b[..HEADER_LEN].try_into().expect("header length"));
    let end = b.len() - TRAILER_LEN;
    for i in 0..(header.section_count as usize).min(16) {
        if !sections {
            break;
        }
        let pos = (header.table_offset as usize).saturating_add(i * SECTION_ENTRY_LEN);
        let Some(raw) = b
            .get(pos..pos.saturating_add(SECTION_ENTRY_LEN))
            .filter(|_| pos + SECTION_ENTRY_LEN <= end)
        else {
            break;
        };
        let mut entry = SectionEntry::from_bytes(raw.try_into().expect("entry length"));
        let (start, len) = (entry.offset as usize, entry.stored_len as usize);
        if start.checked_add(len).is_some_and(|e| e <= end) {
            entry.crc32 = crc32fast::hash(&b[start..start + len]);
            b[pos..pos + SECTION_ENTRY_LEN].copy_from_slice(&entry.to_bytes());
        }
    }
    let crc = crc32fast::hash(&b[..end]);
    b[end..].copy_from_slice(&crc.to_le_bytes());
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let mut b = valid_blob(mode & 2 != 0);
        for edit in rest.chunks_exact(4) {
            let at = u32::from_le_bytes([edit[0], edit[1], edit[2], 0]) as usize % b.len();
            b[at] = edit[3];
        }
        b
    };
    reseal(&mut bytes, mode & 4 == 0);
    if let Ok(blob) = decode::<Manifest>(bytes, &LIMITS) {
        // What the decoder accepted must be usable without panicking.
        for image in &blob.memories {
            let mut dst = vec![0u8; image.byte_len() as usize];
            let _ = image.copy_into(&mut dst);
        }
        let _ = blob.filesystem.validate();
    }
});
