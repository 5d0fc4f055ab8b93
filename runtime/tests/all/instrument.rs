//! Tests of `stasis::instrument`: what it exports, what it removes, and one test per refusal.

use anyhow::{Context as _, Result};
use stasis::instrument::{
    DataRange, GlobalType, InstrumentError, RESERVED_PREFIX, START_EXPORT, instrument,
};
use wasmtime::{Engine, Instance, Module, Store, Val};

fn refusal(wat: &str) -> Result<InstrumentError> {
    let wasm = wat::parse_str(wat)?;
    match instrument(&wasm) {
        Ok(_) => anyhow::bail!("instrument accepted a module it must refuse"),
        Err(e) => {
            // Every refusal must explain itself.
            assert!(!e.to_string().is_empty());
            Ok(e)
        }
    }
}

/// A module with hidden mutable globals, two memories, a table filled by an elem segment, data segments
/// and a start function that records that it ran.
const RICH: &str = r#"
(module
  (global $g0 (mut i32) (i32.const 7))
  (global $imm i32 (i32.const 100))
  (global $g2 (mut i64) (i64.const -3))
  (global $g3 (mut f64) (f64.const 1.5))
  (memory $m0 1 4)
  (memory $m1 2)
  (table $t 3 funcref)
  (elem (table $t) (i32.const 1) func $answer $start)
  (data (memory $m0) (i32.const 16) "hello")
  (data (memory $m1) (i32.const 0x100) "xyz")
  (data (memory $m0) (global.get $imm) "ab")
  (data "passive")
  (func $answer (export "answer") (result i32) i32.const 42)
  (func $start global.get $g0 i32.const 1 i32.add global.set $g0)
  (func (export "call1") (result i32) i32.const 1 call_indirect (result i32))
  (export "mem" (memory $m0))
  (export "counter" (global $g0))
  (start $start)
)
"#;

#[test]
fn exports_hidden_state_and_removes_start() -> Result<()> {
    let wasm = wat::parse_str(RICH)?;
    let out = instrument(&wasm)?;
    wasmparser::Validator::new()
        .validate_all(&out.wasm)
        .context("instrumented output must validate")?;

    assert_eq!(
        out.globals
            .iter()
            .map(|g| (g.index, g.ty, g.export_name.as_str()))
            .collect::<Vec<_>>(),
        [
            (0, GlobalType::I32, "__stasis_global_0"),
            (2, GlobalType::I64, "__stasis_global_2"),
            (3, GlobalType::F64, "__stasis_global_3"),
        ],
        "only mutable globals, indexed in the global index space"
    );
    assert_eq!(out.memories.len(), 2);
    assert_eq!(
        (out.memories[0].initial_pages, out.memories[0].maximum_pages),
        (1, Some(4))
    );
    assert_eq!(
        (out.memories[1].initial_pages, out.memories[1].maximum_pages),
        (2, None)
    );
    assert!(!out.memories[0].memory64);
    assert_eq!(out.tables.len(), 1);
    assert_eq!((out.tables[0].initial, out.tables[0].maximum), (3, None));
    assert_eq!(out.start_export.as_deref(), Some(START_EXPORT));
    assert_eq!(
        out.data_segments,
        [
            DataRange {
                memory: 0,
                offset: 16,
                len: 5
            },
            DataRange {
                memory: 1,
                offset: 0x100,
                len: 3
            },
            DataRange {
                memory: 0,
                offset: 100,
                len: 2
            },
        ],
        "active segments only, offsets evaluated, including global.get of an immutable global"
    );

    let engine = Engine::default();
    let module = Module::new(&engine, &out.wasm)?;
    let mut store = Store::new(&engine, ());
    let instance = Instance::new(&mut store, &module, &[])?;

    let g0 = instance
        .get_global(&mut store, "__stasis_global_0")
        .context("global 0 exported")?;
    assert_eq!(
        g0.get(&mut store).i32(),
        Some(7),
        "the start function must not run at instantiation"
    );
    instance
        .get_typed_func::<(), ()>(&mut store, START_EXPORT)?
        .call(&mut store, ())?;
    assert_eq!(
        g0.get(&mut store).i32(),
        Some(8),
        "calling __stasis_start runs the start function"
    );
    g0.set(&mut store, Val::I32(-1))?;
    assert_eq!(
        g0.get(&mut store).i32(),
        Some(-1),
        "exported globals stay mutable"
    );

    let counter = instance
        .get_global(&mut store, "counter")
        .context("original global export kept")?;
    assert_eq!(
        counter.get(&mut store).i32(),
        Some(-1),
        "both names refer to the same global"
    );

    let g2 = instance
        .get_global(&mut store, "__stasis_global_2")
        .context("global 2 exported")?;
    assert_eq!(g2.get(&mut store).i64(), Some(-3));
    assert!(
        instance
            .get_global(&mut store, "__stasis_global_1")
            .is_none(),
        "immutable globals are not exported"
    );

    let m0 = instance
        .get_memory(&mut store, "__stasis_memory_0")
        .context("memory 0 exported")?;
    let m1 = instance
        .get_memory(&mut store, "__stasis_memory_1")
        .context("memory 1 exported")?;
    assert_eq!(&m0.data(&store)[16..21], b"hello");
    assert_eq!(&m1.data(&store)[0x100..0x103], b"xyz");
    let original = instance
        .get_memory(&mut store, "mem")
        .context("original memory export kept")?;
    assert_eq!(
        original.data_ptr(&store),
        m0.data_ptr(&store),
        "both names refer to the same memory"
    );

    let table = instance
        .get_table(&mut store, "__stasis_table_0")
        .context("table exported")?;
    assert_eq!(table.size(&store), 3);
    assert!(
        table
            .get(&mut store, 1)
            .context("in bounds")?
            .unwrap_func()
            .is_some()
    );

    assert_eq!(
        instance
            .get_typed_func::<(), i32>(&mut store, "answer")?
            .call(&mut store, ())?,
        42
    );
    assert_eq!(
        instance
            .get_typed_func::<(), i32>(&mut store, "call1")?
            .call(&mut store, ())?,
        42
    );
    Ok(())
}

#[test]
fn module_without_exports_or_start_gets_an_export_section() -> Result<()> {
    let wasm = wat::parse_str(
        "(module (global (mut i32) (i32.const 1)) (memory 1) (func) (data (i32.const 0) \"x\"))",
    )?;
    let out = instrument(&wasm)?;
    assert_eq!(out.start_export, None);
    let module = Module::new(&Engine::default(), &out.wasm)?;
    let names: Vec<_> = module.exports().map(|e| e.name().to_owned()).collect();
    assert_eq!(names, ["__stasis_global_0", "__stasis_memory_0"]);
    Ok(())
}

#[test]
fn custom_sections_survive() -> Result<()> {
    let wasm =
        wat::parse_str("(module $named (func $some_function unreachable) (start $some_function))")?;
    let out = instrument(&wasm)?;
    let has_names = wasmparser::Parser::new(0)
        .parse_all(&out.wasm)
        .filter_map(Result::ok)
        .any(|p| matches!(p, wasmparser::Payload::CustomSection(c) if c.name() == "name"));
    assert!(has_names, "the name section must be kept");

    let engine = Engine::default();
    let module = Module::new(&engine, &out.wasm)?;
    let mut store = Store::new(&engine, ());
    let instance = Instance::new(&mut store, &module, &[])
        .map_err(anyhow::Error::from)
        .context("start must not trap at instantiation")?;
    let trap = instance
        .get_typed_func::<(), ()>(&mut store, START_EXPORT)?
        .call(&mut store, ())
        .expect_err("the start function traps");
    assert!(
        format!("{trap:?}").contains("some_function"),
        "trap symbolized with the original name: {trap:?}"
    );
    Ok(())
}

#[test]
fn memory64_is_supported() -> Result<()> {
    let out = instrument(&wat::parse_str(
        "(module (memory i64 1 2) (data (i64.const 8) \"z\"))",
    )?)?;
    assert!(out.memories[0].memory64);
    assert_eq!(
        out.data_segments,
        [DataRange {
            memory: 0,
            offset: 8,
            len: 1
        }]
    );
    Ok(())
}

#[test]
fn rust_guest_instruments() -> Result<()> {
    let wasm = stasis_guests::bytes(stasis_guests::HELLO);
    let out = instrument(&wasm)?;
    assert_eq!(
        out.globals.first().map(|g| (g.index, g.ty)),
        Some((0, GlobalType::I32)),
        "__stack_pointer"
    );
    let module = Module::new(&Engine::default(), &out.wasm)?;
    let exports: Vec<_> = module.exports().map(|e| e.name().to_owned()).collect();
    for name in ["__stasis_global_0", "__stasis_memory_0", "_start", "memory"] {
        assert!(
            exports.iter().any(|e| e == name),
            "{name} missing from {exports:?}"
        );
    }
    Ok(())
}

#[test]
fn instrumented_rust_guest_still_runs() -> Result<()> {
    use wasmtime_wasi::WasiCtxBuilder;
    use wasmtime_wasi::p1::{self, WasiP1Ctx};
    use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

    let out = instrument(&stasis_guests::bytes(stasis_guests::HELLO))?;
    assert_eq!(
        out.start_export, None,
        "a command has `_start`, not a start section"
    );
    let engine = Engine::default();
    let module = Module::new(&engine, &out.wasm)?;
    let stdout = MemoryOutputPipe::new(4096);
    let wasi = WasiCtxBuilder::new()
        .args(&["hello", "stasis"])
        .stdout(stdout.clone())
        .build_p1();
    let mut store = Store::new(&engine, wasi);
    let mut linker = wasmtime::Linker::<WasiP1Ctx>::new(&engine);
    p1::add_to_linker_sync(&mut linker, |cx| cx)?;
    let instance = linker.instantiate(&mut store, &module)?;
    instance
        .get_typed_func::<(), ()>(&mut store, "_start")?
        .call(&mut store, ())?;
    assert_eq!(
        String::from_utf8(stdout.contents().to_vec())?,
        "hello stasis\n"
    );
    Ok(())
}

#[test]
fn refuses_invalid_wasm() -> Result<()> {
    let err = instrument(b"\0asm\x01\0\0\0\x01\x05garbage").expect_err("garbage must be refused");
    assert!(matches!(err, InstrumentError::Invalid { .. }), "{err:?}");
    let err = instrument(b"not wasm at all").expect_err("garbage must be refused");
    assert!(matches!(err, InstrumentError::Invalid { .. }), "{err:?}");
    // Well-formed but ill-typed.
    let err = instrument(&wat::parse_str("(module (func (result i32) i64.const 1))")?)
        .expect_err("ill-typed");
    assert!(
        matches!(&err, InstrumentError::Invalid { message } if message.contains("type mismatch")),
        "{err}"
    );
    Ok(())
}

#[test]
fn refuses_component() -> Result<()> {
    let err = instrument(&wat::parse_str("(component)")?).expect_err("components are refused");
    assert_eq!(err, InstrumentError::Component);
    Ok(())
}

#[test]
fn refuses_imported_memory() -> Result<()> {
    let err = refusal(r#"(module (import "env" "mem" (memory 1)))"#)?;
    assert_eq!(
        err,
        InstrumentError::ImportedMemory {
            module: "env".into(),
            field: "mem".into()
        }
    );
    assert!(err.to_string().contains("`env`.`mem`"));
    Ok(())
}

#[test]
fn refuses_imported_global() -> Result<()> {
    let err = refusal(r#"(module (import "env" "g" (global (mut i32))))"#)?;
    assert_eq!(
        err,
        InstrumentError::ImportedGlobal {
            module: "env".into(),
            field: "g".into()
        }
    );
    Ok(())
}

#[test]
fn refuses_imported_table() -> Result<()> {
    let err = refusal(r#"(module (import "env" "t" (table 1 funcref)))"#)?;
    assert_eq!(
        err,
        InstrumentError::ImportedTable {
            module: "env".into(),
            field: "t".into()
        }
    );
    Ok(())
}

#[test]
fn refuses_each_table_mutation() -> Result<()> {
    let cases = [
        ("table.set", "i32.const 0 ref.null func table.set $t"),
        ("table.grow", "ref.null func i32.const 1 table.grow $t drop"),
        (
            "table.fill",
            "i32.const 0 ref.null func i32.const 1 table.fill $t",
        ),
        (
            "table.copy",
            "i32.const 0 i32.const 0 i32.const 0 table.copy $t $t",
        ),
        (
            "table.init",
            "i32.const 0 i32.const 0 i32.const 0 table.init $t $e",
        ),
        ("elem.drop", "elem.drop $e"),
    ];
    for (instruction, body) in cases {
        let wat = format!(
            r#"(module (import "env" "f" (func)) (table $t 1 funcref) (elem $e func $ok) (func $ok) (func {body}))"#
        );
        let err = refusal(&wat)?;
        // One import and one harmless function come first, so the culprit is function 2.
        assert_eq!(
            err,
            InstrumentError::TableMutation {
                function: 2,
                instruction
            },
            "{instruction}"
        );
        assert!(err.to_string().contains(instruction));
    }
    Ok(())
}

#[test]
fn refuses_reserved_export_name() -> Result<()> {
    let err = refusal(&format!(
        r#"(module (func (export "{RESERVED_PREFIX}start")))"#
    ))?;
    assert_eq!(
        err,
        InstrumentError::ReservedExportName {
            name: "__stasis_start".into()
        }
    );
    Ok(())
}

#[test]
fn refuses_mutable_reference_global() -> Result<()> {
    let err = refusal(
        "(module (global $keep i32 (i32.const 0)) (global (mut externref) (ref.null extern)))",
    )?;
    assert!(
        matches!(err, InstrumentError::ReferenceGlobal { index: 1, .. }),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn accepts_immutable_reference_global() -> Result<()> {
    let out = instrument(&wat::parse_str(
        "(module (global funcref (ref.null func)))",
    )?)?;
    assert!(out.globals.is_empty());
    Ok(())
}

#[test]
fn refuses_data_offset_from_mutable_global() -> Result<()> {
    // Reading a mutable global in a constant expression is invalid; it must never be accepted with a guessed
    // offset. (The inspect stage's own refusal of such offsets is unit-tested next to it.)
    let err = refusal(
        "(module (global $g (mut i32) (i32.const 4)) (memory 1) (data (global.get $g) \"x\"))",
    )?;
    assert!(matches!(err, InstrumentError::Invalid { .. }), "{err:?}");
    Ok(())
}

mod never_panics {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = stasis::instrument::instrument(&bytes);
        }

        #[test]
        fn bytes_after_a_valid_header(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut bytes = b"\0asm\x01\0\0\0".to_vec();
            bytes.extend(tail);
            let _ = stasis::instrument::instrument(&bytes);
        }

        #[test]
        fn mutated_valid_module(index in 0usize..4096, byte in any::<u8>()) {
            let mut bytes = wat::parse_str(super::RICH).expect("RICH is valid");
            let i = index % bytes.len();
            bytes[i] = byte;
            if let Ok(out) = stasis::instrument::instrument(&bytes) {
                // Whatever is accepted must come out valid.
                prop_assert!(wasmparser::Validator::new().validate_all(&out.wasm).is_ok());
            }
        }
    }
}
