//! Tests of `stasis::engine`: the module caches and the epoch ticker.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use stasis::engine::{EngineConfig, ModuleSource, StasisEngine};
use wasmtime::{Instance, OptLevel, Store, Trap};

const SMALL: &str = r#"(module (func (export "add") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add))"#;

/// A store with a generous deadline: with epoch interruption on, a store's default deadline is already
/// past, so any call would trap at once.
fn store(engine: &StasisEngine) -> Store<()> {
    let mut store = Store::new(engine.engine(), ());
    store.set_epoch_deadline(engine.ticks_for(Duration::from_secs(60)));
    store
}

fn engine_with_cache(dir: &std::path::Path) -> Result<StasisEngine> {
    Ok(StasisEngine::new(EngineConfig {
        cache_dir: Some(dir.to_path_buf()),
        ..EngineConfig::default()
    })?)
}

#[test]
fn second_load_is_served_from_memory() -> Result<()> {
    let engine = StasisEngine::new(EngineConfig::default())?;
    let wasm = wat::parse_str(SMALL)?;
    let first = engine.load_module(&wasm)?;
    assert_eq!(
        (first.source, first.from_cache),
        (ModuleSource::Compiled, false)
    );
    let second = engine.load_module(&wasm)?;
    assert_eq!(
        (second.source, second.from_cache),
        (ModuleSource::Memory, true)
    );
    assert_eq!(first.sha256, second.sha256);

    assert!(engine.evict(&first.sha256));
    assert!(!engine.evict(&first.sha256), "already evicted");
    assert_eq!(
        engine.load_module(&wasm)?.source,
        ModuleSource::Compiled,
        "no disk cache, so evicted means recompiled"
    );
    let second = engine.load_module(&wasm)?;

    let mut store = store(&engine);
    let instance = Instance::new(&mut store, &second.module, &[])?;
    assert_eq!(
        instance
            .get_typed_func::<(i32, i32), i32>(&mut store, "add")?
            .call(&mut store, (2, 3))?,
        5
    );
    Ok(())
}

#[test]
fn concurrent_loads_compile_once() -> Result<()> {
    let engine = StasisEngine::new(EngineConfig::default())?;
    let wasm = wat::parse_str(SMALL)?;
    let sources = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| engine.load_module(&wasm).map(|m| m.source)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("loader thread panicked"))
            .collect::<Result<Vec<_>, _>>()
    })?;
    assert_eq!(
        sources
            .iter()
            .filter(|s| **s == ModuleSource::Compiled)
            .count(),
        1,
        "{sources:?}"
    );
    Ok(())
}

#[test]
fn new_engine_loads_from_disk() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let wasm = wat::parse_str(SMALL)?;
    let first = engine_with_cache(dir.path())?.load_module(&wasm)?;
    assert_eq!(first.source, ModuleSource::Compiled);

    let engine = engine_with_cache(dir.path())?;
    let path = engine
        .cache_path(&first.sha256)
        .context("disk cache enabled")?;
    assert!(path.is_file(), "cache file {} written", path.display());
    let again = engine.load_module(&wasm)?;
    assert_eq!((again.source, again.from_cache), (ModuleSource::Disk, true));
    let files: Vec<_> = std::fs::read_dir(dir.path())?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    assert_eq!(
        files,
        [path],
        "the atomic write leaves no temporary file behind"
    );

    let mut store = store(&engine);
    let instance = Instance::new(&mut store, &again.module, &[])?;
    assert_eq!(
        instance
            .get_typed_func::<(i32, i32), i32>(&mut store, "add")?
            .call(&mut store, (40, 2))?,
        42
    );
    Ok(())
}

#[test]
fn corrupted_cache_file_is_recompiled() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let wasm = wat::parse_str(SMALL)?;
    let sha = engine_with_cache(dir.path())?.load_module(&wasm)?.sha256;
    let path = engine_with_cache(dir.path())?
        .cache_path(&sha)
        .context("disk cache enabled")?;
    let good = std::fs::read(&path)?;

    // A flipped bit in the payload, a truncated file, and an empty file must all be caught before
    // wasmtime sees them.
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    for (what, bytes) in [
        ("flipped", flipped),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("empty", vec![]),
    ] {
        std::fs::write(&path, &bytes)?;
        let loaded = engine_with_cache(dir.path())?.load_module(&wasm)?;
        assert_eq!(
            loaded.source,
            ModuleSource::Compiled,
            "{what} cache file must be recompiled"
        );
        assert_eq!(
            std::fs::read(&path)?.len(),
            good.len(),
            "{what} cache file must be overwritten"
        );
        let reloaded = engine_with_cache(dir.path())?.load_module(&wasm)?;
        assert_eq!(
            reloaded.source,
            ModuleSource::Disk,
            "after {what}, the rewritten file is used"
        );
    }
    Ok(())
}

#[test]
fn different_config_uses_a_different_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let speed = engine_with_cache(dir.path())?;
    let none = StasisEngine::new(EngineConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        opt_level: OptLevel::None,
        ..EngineConfig::default()
    })?;
    assert_ne!(speed.config_hash(), none.config_hash());
    assert_eq!(
        speed.config_hash(),
        engine_with_cache(dir.path())?.config_hash(),
        "the hash is deterministic"
    );

    let wasm = wat::parse_str(SMALL)?;
    let a = speed.load_module(&wasm)?;
    let b = none.load_module(&wasm)?;
    assert_eq!(
        b.source,
        ModuleSource::Compiled,
        "an artifact of another configuration is never reused"
    );
    assert_ne!(speed.cache_path(&a.sha256), none.cache_path(&b.sha256));
    Ok(())
}

#[test]
fn cache_dir_that_is_a_file_is_refused() -> Result<()> {
    let file = tempfile::NamedTempFile::new()?;
    let err = StasisEngine::new(EngineConfig {
        cache_dir: Some(file.path().to_path_buf()),
        ..EngineConfig::default()
    })
    .expect_err("a file cannot be the cache directory");
    assert!(
        matches!(err, stasis::engine::EngineError::CacheDir { .. }),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn ticks_for_rounds_up() -> Result<()> {
    let engine = StasisEngine::new(EngineConfig {
        epoch_tick: Duration::from_millis(10),
        ..EngineConfig::default()
    })?;
    assert_eq!(engine.ticks_for(Duration::ZERO), 1);
    assert_eq!(engine.ticks_for(Duration::from_millis(10)), 1);
    assert_eq!(engine.ticks_for(Duration::from_millis(11)), 2);
    assert_eq!(engine.ticks_for(Duration::from_secs(1)), 100);
    assert_eq!(engine.ticks_for(Duration::MAX), u64::MAX);
    assert!(
        StasisEngine::new(EngineConfig {
            epoch_tick: Duration::ZERO,
            ..EngineConfig::default()
        })
        .is_err()
    );
    Ok(())
}

#[test]
fn epoch_deadline_interrupts_infinite_loop() -> Result<()> {
    let engine = StasisEngine::new(EngineConfig {
        epoch_tick: Duration::from_millis(5),
        ..EngineConfig::default()
    })?;
    let module = engine
        .load_module(&wat::parse_str(
            r#"(module (func (export "spin") (loop br 0)))"#,
        )?)?
        .module;
    let mut store = Store::new(engine.engine(), ());
    store.set_epoch_deadline(engine.ticks_for(Duration::from_millis(50)));
    store.epoch_deadline_trap();
    let instance = Instance::new(&mut store, &module, &[])?;
    let started = Instant::now();
    let err = instance
        .get_typed_func::<(), ()>(&mut store, "spin")?
        .call(&mut store, ())
        .expect_err("must trap");
    assert_eq!(
        err.downcast_ref::<Trap>(),
        Some(&Trap::Interrupt),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "interrupted promptly: {:?}",
        started.elapsed()
    );
    Ok(())
}

#[test]
fn ticker_stops_when_last_handle_drops() -> Result<()> {
    let engine = StasisEngine::new(EngineConfig::default())?;
    let clone = engine.clone();
    let status = engine.ticker();
    assert!(status.is_running());
    drop(engine);
    assert!(status.is_running(), "a clone still holds the engine");
    drop(clone);
    // Drop joins the thread, so it is gone as soon as drop returns.
    assert!(!status.is_running());
    Ok(())
}
