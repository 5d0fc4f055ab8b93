//! Pre-initialised program images: what a program's module looks like once it has started, made once per
//! module and mapped into every child that runs it, so that starting `python3` costs a few page mappings
//! instead of building an interpreter.
//!
//! A program that exports the `preinit` handler (`stasis_handle_preinit`, see `stasis_guest::program`)
//! does its expensive start there. The runtime runs `_initialize` and then `preinit` once, in a neutral
//! world — argv is the bare program name, the environment is empty, the root an empty directory, output is
//! discarded, the CPU budget of a call applies — and captures the instance's memories and mutable globals
//! with the same code a pause uses. They are written as a blob without files,
//! `cache/image-<instrumented sha256>-v1.blob`, so the next runtime on this cache (a restarted server)
//! finds the image made, and read back from that file, so each child maps its pages copy-on-write (the
//! resume path's [`crate::restore::put_back`]) and skips `_initialize`.
//!
//! The image holds nothing of the world it was made in but what the guest kept in memory: the program is
//! told it starts from an image (its memory says so) and must drop what it cached of that world — the
//! guest SDK resets wasi-libc's environment and preopens before `main`.
//!
//! A program whose `preinit` traps, runs out of time or leaves files open starts fresh every time, and
//! that is logged once. An image file that is damaged (every section is checksummed) or was made from
//! another module is made again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use wasmtime::{Instance, Store, Val};

use crate::process::{CallError, ProcessData};
use crate::restore::{InstanceParts, PutBackError, put_back};
use crate::runtime::Runtime;
use crate::snapshot::{
    DecodeError, DecodedBlob, EncodeError, EncodeOptions, FsArchive, MemorySection, read_blob,
    write_blob_atomic,
};
use crate::state::{GlobalState, MemoryState, ProcessKind, TableState};
use crate::template::Template;
use crate::wasi::{OutputSink, SaveLinks, Stdin, WasiConfig, WasiCtx, WasiLimits};

/// The export of the `preinit` handler.
pub(crate) const PREINIT_EXPORT: &str = "stasis_handle_preinit";

/// The version of the image layout in the file name and manifest: a change to what an image holds gets a
/// new one, and old files are simply not looked at.
const IMAGE_VERSION: u32 = 1;

/// The fds a program may leave open after `preinit`: stdin, stdout, stderr and the root preopen. Anything
/// else would be a file of the neutral world that the image's memory still names.
const IMAGE_FDS: [u32; 4] = [0, 1, 2, 3];

/// The manifest of an image blob: the instance's state once `preinit` returned, without the WASI state
/// (every child has its own world).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ImageManifest {
    /// [`IMAGE_VERSION`].
    pub(crate) version: u32,
    /// Hex sha256 of the instrumented module the image was made with.
    pub(crate) instrumented_sha256: String,
    /// Every mutable global.
    pub(crate) globals: Vec<GlobalState>,
    /// Every memory's size; the bytes are the blob's memory sections (process 0).
    pub(crate) memories: Vec<MemoryState>,
    /// Every table's size.
    pub(crate) tables: Vec<TableState>,
}

/// Why a program has no image: it starts fresh, and this is logged.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ImageError {
    /// The scratch directory of the neutral world could not be made.
    #[error("could not make the image's empty root directory")]
    Root(#[source] std::io::Error),
    /// The neutral world's WASI context could not be set up.
    #[error("could not set up the image's WASI context")]
    Wasi(#[source] crate::wasi::WasiSetupError),
    /// The instance could not be made.
    #[error("could not instantiate the program")]
    Spawn(#[source] crate::instantiate::SpawnError),
    /// `_initialize` trapped or ran out of time.
    #[error("the program's initialisation failed")]
    Initialize(#[source] wasmtime::Error),
    /// `preinit` trapped, failed or ran out of time.
    #[error("the program's preinit handler failed")]
    Preinit(#[source] CallError),
    /// `preinit` left files open.
    #[error("the program's preinit handler left fds {0:?} open")]
    OpenFds(Vec<u32>),
    /// The instance's state could not be captured.
    #[error("the program's state could not be captured")]
    Capture(#[source] crate::capture::PauseError),
    /// The image file could not be written.
    #[error("the image could not be written")]
    Write(#[source] EncodeError),
    /// The image file could not be read back.
    #[error("the image could not be read")]
    Read(#[source] DecodeError),
    /// The image file belongs to another module or layout.
    #[error("the image file was made from another module or by another image version")]
    Foreign,
}

/// A program's image, read from its file (its memory pages are mapped from it).
pub(crate) struct ProgramImage {
    blob: DecodedBlob<ImageManifest>,
}

impl ProgramImage {
    /// Writes the image into `instance`, a fresh instance of `template` none of whose code has run.
    pub(crate) fn apply(
        &self,
        template: &Template,
        store: &mut Store<ProcessData>,
        instance: &Instance,
    ) -> Result<(), PutBackError> {
        let manifest = &self.blob.manifest;
        let parts = InstanceParts {
            globals: &manifest.globals,
            memories: &manifest.memories,
            tables: &manifest.tables,
            suspended: false,
        };
        put_back(template, store, instance, &parts, |index| {
            self.blob.memories.iter().find(|m| m.memory() == index)
        })
    }
}

/// One module's image, made once: `None` when it cannot be.
type ImageCell = OnceLock<Option<Arc<ProgramImage>>>;

/// The images of a runtime's programs, by instrumented module: made at most once each, also when several
/// children of the same program start at the same moment.
#[derive(Default)]
pub(crate) struct ImageCache {
    images: std::sync::Mutex<std::collections::HashMap<[u8; 32], Arc<ImageCell>>>,
}

impl ImageCache {
    /// The image of `template`, made (or read from the cache directory) on first use; `None` when the
    /// module has no `preinit` handler or its image cannot be made (logged once).
    pub(crate) fn get(&self, runtime: &Runtime, template: &Template) -> Option<Arc<ProgramImage>> {
        if !template.exports_function(PREINIT_EXPORT) {
            return None;
        }
        let cell = self
            .images
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(template.inner.instrumented_sha256)
            .or_default()
            .clone();
        cell.get_or_init(|| match load_or_make(runtime, template) {
            Ok(image) => Some(Arc::new(image)),
            Err(error) => {
                tracing::warn!(
                    program = template.name(),
                    error = %crate::lifecycle::catalog::chain(&error),
                    "the program has no pre-initialised image and starts fresh each time"
                );
                None
            }
        })
        .clone()
    }
}

/// Where the image of `template` is kept.
pub(crate) fn image_path(runtime: &Runtime, template: &Template) -> PathBuf {
    runtime.config().cache_dir().join(format!(
        "image-{}-v{IMAGE_VERSION}.blob",
        template.instrumented_sha256_hex()
    ))
}

/// The image file of `template` read back, or made when it is missing, damaged or foreign.
fn load_or_make(runtime: &Runtime, template: &Template) -> Result<ProgramImage, ImageError> {
    let path = image_path(runtime, template);
    if path.exists() {
        match read_image(runtime, template, &path) {
            Ok(image) => return Ok(image),
            Err(error) => tracing::info!(
                path = %path.display(),
                error = %crate::lifecycle::catalog::chain(&error),
                "the program image is unusable and is made again"
            ),
        }
    }
    make_image(runtime, template, &path)?;
    read_image(runtime, template, &path)
}

/// Reads and checks the image at `path`.
fn read_image(
    runtime: &Runtime,
    template: &Template,
    path: &Path,
) -> Result<ProgramImage, ImageError> {
    let blob: DecodedBlob<ImageManifest> =
        read_blob(path, &runtime.config().decode_limits).map_err(ImageError::Read)?;
    blob.header
        .ensure_module(&template.sha256())
        .map_err(|_| ImageError::Foreign)?;
    let manifest = &blob.manifest;
    let memories_match = manifest.memories.len() == blob.memories.len()
        && manifest
            .memories
            .iter()
            .all(|m| blob.memories.iter().any(|image| image.memory() == m.index));
    if manifest.version != IMAGE_VERSION
        || manifest.instrumented_sha256 != template.instrumented_sha256_hex()
        || !memories_match
    {
        return Err(ImageError::Foreign);
    }
    Ok(ProgramImage { blob })
}

/// Runs `template`'s initialisation and `preinit` in the neutral world and writes the result to `path`.
fn make_image(runtime: &Runtime, template: &Template, path: &Path) -> Result<(), ImageError> {
    let scratch = runtime.config().data_dir.join("scratch");
    let root = tempfile::Builder::new()
        .prefix("image-")
        .tempdir_in(&scratch)
        .map_err(ImageError::Root)?;
    let limits = &runtime.config().limits;
    let config = WasiConfig {
        args: vec![template.name().to_owned()],
        env: Vec::new(),
        root: Some(root.path().to_owned()),
        mounts: Vec::new(),
        stdin: Stdin::Empty,
        stdout: OutputSink::discard(),
        stderr: OutputSink::discard(),
        limits: WasiLimits {
            max_open_fds: limits.max_open_fds as usize,
            max_path_len: limits.max_path_len as usize,
            disk_quota: None,
        },
    };
    let wasi = WasiCtx::new(config).map_err(ImageError::Wasi)?;
    let usage = crate::usage::SandboxUsage::new();
    let mut process = crate::instantiate::new_process(
        runtime.engine(),
        limits,
        &usage,
        template,
        1,
        "preinit",
        ProcessKind::Command,
        wasi,
    )
    .map_err(ImageError::Spawn)?;
    // `new_process` armed one call's CPU budget; `_initialize` and `preinit` share it.
    crate::instantiate::initialize(template, &mut process.store, &process.instance)
        .map_err(ImageError::Initialize)?;
    let ticks = runtime.engine().ticks_for(limits.cpu_time_per_call);
    let (ptr, len) = process.write_request(&[]).map_err(ImageError::Preinit)?;
    let results = process
        .invoke(
            PREINIT_EXPORT,
            &[Val::I32(ptr), Val::I32(len)],
            ticks,
            limits.cpu_time_per_call,
        )
        .map_err(ImageError::Preinit)?;
    let packed = results
        .first()
        .and_then(Val::i64)
        .ok_or_else(|| ImageError::Preinit(CallError::BadResponse("no response".into())))?;
    process
        .read_response(packed, limits.max_response_bytes, limits.cpu_time_per_call)
        .map_err(ImageError::Preinit)?;
    let open: Vec<u32> = process
        .store
        .data()
        .wasi
        .open_fds()
        .into_iter()
        .filter(|fd| !IMAGE_FDS.contains(fd))
        .collect();
    if !open.is_empty() {
        return Err(ImageError::OpenFds(open));
    }
    let (state, handles) = crate::capture::capture_process(&mut process, &SaveLinks::default())
        .map_err(ImageError::Capture)?;
    let manifest = ImageManifest {
        version: IMAGE_VERSION,
        instrumented_sha256: template.instrumented_sha256_hex(),
        globals: state.globals,
        memories: state.memories,
        tables: state.tables,
    };
    let sections: Vec<MemorySection<'_>> = handles
        .iter()
        .map(|(index, memory)| MemorySection {
            process: 0,
            memory: *index,
            data: memory.data(&process.store),
        })
        .collect();
    write_blob_atomic(
        path,
        template.sha256(),
        &manifest,
        &sections,
        &FsArchive::new(),
        // Uncompressed, so that children map the pages from the file.
        &EncodeOptions::default(),
    )
    .map_err(ImageError::Write)?;
    Ok(())
}
