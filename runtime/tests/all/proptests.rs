//! Bounded property tests of the untrusted-input surfaces, beyond what `blob.rs` and `instrument.rs`
//! already fuzz (random and byte-mutated blobs, random module bytes):
//!
//! - the blob decoder, with tight limits, never allocates beyond them when a checksum-valid blob claims huge
//!   lengths in its header, section table or bincode manifest (measured by a per-thread counting allocator);
//! - `instrument` never panics on *valid* modules built from random parts, and what it returns validates and
//!   exports every memory and mutable global;
//! - `FsArchive::restore_into` never writes outside its target, whatever paths and symlinks an archive holds.
//!
//! 256 cases each, so CI runs them on every change; `fuzz/` has the unbounded versions.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use stasis::snapshot::format::{HEADER_LEN, SECTION_ENTRY_LEN, TRAILER_LEN};
use stasis::snapshot::{
    BlobHeader, Compression, DecodeLimits, EncodeOptions, FsArchive, FsTime, MemorySection,
    SectionEntry, decode, encode,
};

/// Counts the bytes live on the current thread while armed, and their peak. Per thread because the test
/// harness runs other tests in parallel; the decoder allocates on the caller's thread only.
struct Counting;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    // `try_with`: thread-locals may already be gone while a thread exits.
    let _ = ARMED.try_with(|armed| {
        if armed.get() {
            let live = LIVE.get() + delta;
            LIVE.set(live);
            PEAK.set(PEAK.get().max(live));
        }
    });
}

// SAFETY: every call is forwarded unchanged to `System`; the counters are plain thread-local cells.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        track(-(layout.size() as isize));
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        track(new_size as isize - layout.size() as isize);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns the peak of bytes it had allocated at once on this thread.
fn peak_allocation(f: impl FnOnce()) -> usize {
    LIVE.set(0);
    PEAK.set(0);
    ARMED.set(true);
    f();
    ARMED.set(false);
    PEAK.get().max(0) as usize
}

/// Limits far below anything the inputs claim, so any allocation sized by a claim shows.
const TIGHT: DecodeLimits = DecodeLimits {
    max_blob_bytes: 1 << 20,
    max_manifest_bytes: 4 << 10,
    max_memory_bytes: 256 << 10,
    max_total_memory_bytes: 512 << 10,
    max_sections: 16,
    max_fs_bytes: 16 << 10,
    max_fs_entries: 64,
};

/// What the decoder may hold at once under [`TIGHT`]: every section at its limit plus bookkeeping slack.
/// Anything above means an allocation was sized by a length read from the input.
const TIGHT_BUDGET: usize =
    (TIGHT.max_manifest_bytes + TIGHT.max_total_memory_bytes + 2 * TIGHT.max_fs_bytes + (1 << 20))
        as usize;

/// A manifest with variable-length fields, so bincode length prefixes can claim huge sizes.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Manifest {
    name: String,
    words: Vec<u64>,
    pad: Vec<u8>,
}

/// A small valid blob: one memory of 3 pages (one non-zero), a file, a directory.
fn blob(compression: Compression) -> Vec<u8> {
    let mut memory = vec![0u8; 3 << 16];
    memory[(1 << 16) + 7] = 42;
    let mut fs = FsArchive::new();
    let t = FsTime { secs: 1, nanos: 0 };
    fs.push_dir("d", 0o755, t);
    fs.push_file("d/f", 0o644, t, b"contents");
    let manifest = Manifest {
        name: "m".into(),
        words: vec![1, 2, 3],
        pad: vec![0; 64],
    };
    let mut out = Vec::new();
    encode(
        &mut out,
        [7; 32],
        &manifest,
        &[MemorySection {
            process: 0,
            memory: 0,
            data: &memory,
        }],
        &fs,
        &EncodeOptions { compression },
    )
    .expect("encode");
    out
}

fn header(b: &[u8]) -> BlobHeader {
    BlobHeader::from_bytes(b[..HEADER_LEN].try_into().expect("header"))
}

fn entry_at(b: &[u8], i: usize) -> (usize, SectionEntry) {
    let pos = header(b).table_offset as usize + i * SECTION_ENTRY_LEN;
    let bytes: &[u8; SECTION_ENTRY_LEN] =
        b[pos..pos + SECTION_ENTRY_LEN].try_into().expect("entry");
    (pos, SectionEntry::from_bytes(bytes))
}

/// Recomputes the trailer, so only the decoder's structural checks stand between the input and the parsers.
fn reseal(b: &mut [u8]) {
    let n = b.len() - TRAILER_LEN;
    let crc = crc32fast::hash(&b[..n]);
    b[n..].copy_from_slice(&crc.to_le_bytes());
}

/// Lengths chosen to overflow, wrap, or sit just past a limit.
fn huge() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(u64::MAX),
        Just(u64::MAX - 7),
        Just(1u64 << 63),
        Just(1u64 << 40),
        Just(u32::MAX as u64 + 1),
        (1u64 << 20)..(1u64 << 36),
        any::<u64>(),
    ]
}

/// bincode's varint for a length of `n` (its `standard()` config): how a manifest claims a size.
fn varint(n: u64) -> Vec<u8> {
    match n {
        0..=250 => vec![n as u8],
        251..=0xFFFF => [&[251u8][..], &(n as u16).to_le_bytes()].concat(),
        0x1_0000..=0xFFFF_FFFF => [&[252u8][..], &(n as u32).to_le_bytes()].concat(),
        _ => [&[253u8][..], &n.to_le_bytes()].concat(),
    }
}

/// The allocation bounds below mean something only if the counter sees the decoder's allocations.
#[test]
fn the_counting_allocator_sees_the_decoder() {
    let b = blob(Compression::Zstd { level: 1 });
    let mut ok = false;
    let peak = peak_allocation(|| ok = decode::<Manifest>(b, &TIGHT).is_ok());
    assert!(ok, "the valid blob decodes under the tight limits");
    // Decompressing the memory section alone needs its one non-zero page.
    assert!(peak >= 1 << 16, "peak {peak}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A header or section-table field replaced by a huge value, the trailer resealed: an error, never a
    /// panic or an allocation sized by the claim.
    #[test]
    fn huge_claims_in_header_and_table_stay_within_limits(
        zstd in any::<bool>(),
        field in 0usize..6,
        section in 0usize..3,
        value in huge(),
    ) {
        let compression = if zstd { Compression::Zstd { level: 1 } } else { Compression::None };
        let mut b = blob(compression);
        let (pos, mut e) = entry_at(&b, section);
        match field {
            0 => b[24..32].copy_from_slice(&value.to_le_bytes()),
            1 => b[32..40].copy_from_slice(&value.to_le_bytes()),
            2 => b[16..20].copy_from_slice(&(value as u32).to_le_bytes()),
            3 => e.offset = value,
            4 => e.stored_len = value,
            _ => e.raw_len = value,
        }
        if field >= 3 {
            b[pos..pos + SECTION_ENTRY_LEN].copy_from_slice(&e.to_bytes());
        }
        reseal(&mut b);
        let mut result = None;
        let peak = peak_allocation(|| result = Some(decode::<Manifest>(b, &TIGHT).map(|_| ())));
        prop_assert!(peak <= TIGHT_BUDGET, "peak {peak} bytes for field {field} = {value}");
        prop_assert!(result.expect("ran").is_err(), "field {field} = {value} accepted");
    }

    /// A manifest section whose bincode claims a string or vector of huge length (section crc and trailer
    /// resealed, so the claim reaches bincode): an error within the manifest limit.
    #[test]
    fn huge_bincode_lengths_in_the_manifest_stay_within_limits(
        claim in huge(),
        which in 0usize..3,
        tail in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut b = blob(Compression::None);
        let (pos, mut e) = entry_at(&b, 0);
        let start = e.offset as usize;
        let len = e.stored_len as usize;
        // The manifest's fields in order: name, words, pad; the claim replaces one length prefix.
        let mut crafted = match which {
            0 => varint(claim),
            1 => [&[1u8, b'm'][..], &varint(claim)].concat(),
            _ => [&[1u8, b'm', 0][..], &varint(claim)].concat(),
        };
        crafted.extend_from_slice(&tail);
        crafted.resize(len, 0);
        b[start..start + len].copy_from_slice(&crafted);
        e.crc32 = crc32fast::hash(&b[start..start + len]);
        b[pos..pos + SECTION_ENTRY_LEN].copy_from_slice(&e.to_bytes());
        reseal(&mut b);
        let mut result = None;
        let peak = peak_allocation(|| result = Some(decode::<Manifest>(b, &TIGHT).map(|d| d.manifest)));
        prop_assert!(peak <= TIGHT_BUDGET, "peak {peak} bytes for a claim of {claim} in field {which}");
        if let Ok(m) = result.expect("ran") {
            // Only a claim that fits the section can decode, and then it decoded what is there.
            prop_assert!(m.name.len() + m.words.len() * 8 + m.pad.len() <= len, "{m:?}");
        }
    }
}

/// One random part of a module, as WAT text.
fn module_part() -> impl Strategy<Value = String> {
    let ty = prop_oneof![Just("i32"), Just("i64"), Just("f32"), Just("f64")];
    prop_oneof![
        (ty.clone(), any::<bool>(), any::<i8>()).prop_map(|(t, mutable, v)| {
            let init = if t.starts_with('f') {
                format!("{t}.const {v}.5")
            } else {
                format!("{t}.const {v}")
            };
            if mutable {
                format!("(global (mut {t}) ({init}))")
            } else {
                format!("(global {t} ({init}))")
            }
        }),
        (0u32..3, proptest::option::of(0u32..4)).prop_map(|(min, extra)| match extra {
            Some(e) => format!("(memory {min} {})", min + e),
            None => format!("(memory {min})"),
        }),
        (0u32..4).prop_map(|n| format!("(table {n} funcref)")),
        (0u32..4, any::<bool>()).prop_map(|(n, export)| {
            let export = if export {
                format!("(export \"f{n}\")")
            } else {
                String::new()
            };
            format!("(func {export} (result i32) i32.const {n})")
        }),
        any::<bool>().prop_map(|start| if start {
            "(func $s) (start $s)".to_owned()
        } else {
            "(@custom \"note\" \"x\")".to_owned()
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Valid modules assembled from random parts (multi-memory, many globals, tables, start functions):
    /// `instrument` never panics, and when it accepts, the result validates and exports each memory and
    /// mutable global it reports.
    #[test]
    fn instrument_valid_random_modules(parts in proptest::collection::vec(module_part(), 0..10)) {
        let text = format!("(module {})", parts.join(" "));
        let Ok(wasm) = wat::parse_str(&text) else {
            // Some combinations are not valid text (two starts); those are the byte fuzzers' business.
            return Ok(());
        };
        prop_assume!(wasmparser::Validator::new().validate_all(&wasm).is_ok());
        if let Ok(out) = stasis::instrument::instrument(&wasm) {
            let mut validator = wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all());
            prop_assert!(validator.validate_all(&out.wasm).is_ok(), "{text}");
            let exported: Vec<String> = wasmparser::Parser::new(0)
                .parse_all(&out.wasm)
                .filter_map(|p| match p {
                    Ok(wasmparser::Payload::ExportSection(s)) => Some(s),
                    _ => None,
                })
                .flat_map(|s| s.into_iter().filter_map(Result::ok).map(|e| e.name.to_owned()))
                .collect();
            for name in out.memories.iter().map(|m| &m.export_name).chain(out.globals.iter().map(|g| &g.export_name)) {
                prop_assert!(exported.contains(name), "{name} not exported by the output of {text}");
            }
            prop_assert_eq!(out.memories.len(), parts.iter().filter(|p| p.starts_with("(memory")).count());
        }
    }

    /// A valid module with a few bytes flipped past its header: never a panic.
    #[test]
    fn instrument_mutated_valid_modules(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut wasm = wat::parse_str(
            r#"(module (memory 1 2) (global $g (mut i32) (i32.const 1)) (table 2 funcref)
                 (func $f (result i32) global.get $g) (elem (i32.const 0) $f)
                 (data (i32.const 8) "hello") (start $f2) (func $f2) (export "f" (func $f)))"#,
        ).expect("wat");
        for (i, v) in &edits {
            let n = wasm.len() - 8;
            wasm[8 + i.index(n)] = *v;
        }
        let _ = stasis::instrument::instrument(&wasm);
    }
}

/// One archive entry: a path drawn from names that matter for escapes, and what it is.
fn archive_entry() -> impl Strategy<Value = (String, u8, String)> {
    let component = prop_oneof![
        Just("a"),
        Just("b"),
        Just(".."),
        Just("."),
        Just(""),
        Just("link"),
        Just("out"),
        Just("a\0b"),
        Just("/"),
    ];
    let path = proptest::collection::vec(component, 1..4).prop_map(|c| c.join("/"));
    let target = prop_oneof![
        Just("../outside".to_owned()),
        Just("/".to_owned()),
        Just("..".to_owned()),
        Just("a".to_owned()),
        Just("link/..".to_owned()),
        Just("../../".to_owned()),
        "[a-z./]{1,12}".prop_map(|s| s),
    ];
    (path, 0u8..3, target)
}

/// Every path under `dir`, not following symlinks, with a fingerprint of what it is.
fn tree(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let meta = std::fs::symlink_metadata(&p).expect("metadata");
            let what = if meta.is_dir() {
                stack.push(p.clone());
                "dir".to_owned()
            } else if meta.file_type().is_symlink() {
                format!("-> {:?}", std::fs::read_link(&p).expect("readlink"))
            } else {
                format!("{:?}", std::fs::read(&p).expect("read"))
            };
            out.push((
                p.strip_prefix(dir).expect("under").display().to_string(),
                what,
            ));
        }
    }
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Archives of random dirs, files and symlinks with `..`, absolute, empty and NUL-bearing paths, and
    /// symlinks pointing out, restored into `parent/target`: whether it succeeds or not, `parent` outside
    /// `target` is exactly as before.
    #[test]
    fn restore_into_never_writes_outside_its_target(
        entries in proptest::collection::vec(archive_entry(), 0..8),
    ) {
        let parent = tempfile::tempdir().expect("tempdir");
        let target = parent.path().join("target");
        std::fs::create_dir(&target).expect("target");
        std::fs::create_dir(parent.path().join("outside")).expect("outside");
        std::fs::write(parent.path().join("outside/keep"), b"keep").expect("keep");
        let before: Vec<_> = tree(parent.path()).into_iter().filter(|(p, _)| !p.starts_with("target")).collect();

        let t = FsTime { secs: 1_000, nanos: 0 };
        let mut archive = FsArchive::new();
        for (path, kind, target) in &entries {
            match kind {
                0 => archive.push_dir(path.clone(), 0o755, t),
                1 => archive.push_file(path.clone(), 0o644, t, b"pwned"),
                _ => archive.push_symlink(path.clone(), target.clone(), t),
            }
        }
        let restored = archive.restore_into(&target);
        let after: Vec<_> = tree(parent.path()).into_iter().filter(|(p, _)| !p.starts_with("target")).collect();
        prop_assert_eq!(&before, &after, "archive {:?} ({:?}) wrote outside its target", entries, restored);
        if restored.is_ok() {
            // What was restored is what was archived: every entry, nothing else.
            prop_assert_eq!(tree(&target).len(), archive.entries().len(), "{:?}", entries);
        }
    }
}
