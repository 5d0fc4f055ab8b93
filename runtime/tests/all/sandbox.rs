//! Creating sandboxes, calling reactors, running commands, and the errors of each (limits a hostile guest
//! runs into are the containment suite's).

use anyhow::Result;
use stasis::{CallError, ModuleKind, SandboxOptions, TemplateError};

use crate::common::{assert_contains, call, runtime, stateful};

#[test]
fn reactor_handlers_keep_state_between_calls() -> Result<()> {
    let (_tmp, runtime) = runtime()?;
    let template = stateful(&runtime)?;
    assert_eq!(template.kind(), ModuleKind::Reactor);
    let mut sandbox = runtime.create_sandbox(&template, SandboxOptions::default())?;
    assert_eq!(call(&mut sandbox, "bump", "")?, "1 1");
    assert_eq!(call(&mut sandbox, "bump", "")?, "2 2");
    call(&mut sandbox, "remember", "first")?;
    call(&mut sandbox, "remember", "second")?;
    assert_eq!(call(&mut sandbox, "recall", "")?, "first,second");
    Ok(())
}

#[test]
fn guest_files_land_in_the_sandbox_directory() -> Result<()> {
    let (_tmp, runtime) = runtime()?;
    let mut sandbox = runtime.create_sandbox(&stateful(&runtime)?, SandboxOptions::default())?;
    call(&mut sandbox, "put_file", "/tmp/message.txt\nhello")?;
    assert_eq!(
        std::fs::read_to_string(sandbox.dir().join("tmp/message.txt"))?,
        "hello"
    );
    assert_eq!(call(&mut sandbox, "get_file", "/tmp/message.txt")?, "hello");
    Ok(())
}

#[test]
fn guest_errors_are_reported_and_the_process_stays_usable() -> Result<()> {
    let (_tmp, runtime) = runtime()?;
    let mut sandbox = runtime.create_sandbox(&stateful(&runtime)?, SandboxOptions::default())?;
    let error = sandbox.call("get_file", b"/no/such/file").unwrap_err();
    assert!(
        matches!(error, CallError::Guest(ref m) if m.contains("/no/such/file")),
        "{error:?}"
    );
    assert_eq!(call(&mut sandbox, "bump", "")?, "1 1");
    Ok(())
}

#[test]
fn unknown_handler_is_a_missing_export() -> Result<()> {
    let (_tmp, runtime) = runtime()?;
    let mut sandbox = runtime.create_sandbox(&stateful(&runtime)?, SandboxOptions::default())?;
    let error = sandbox.call("no_such_handler", b"").unwrap_err();
    assert!(
        matches!(error, CallError::MissingExport(ref name) if name == "stasis_handle_no_such_handler")
    );
    Ok(())
}

#[test]
fn command_modules_run_to_completion() -> Result<()> {
    let (_tmp, runtime) = runtime()?;
    let hello = runtime.load_template("hello", &stasis_guests::bytes(stasis_guests::HELLO))?;
    assert_eq!(hello.kind(), ModuleKind::Command);
    let mut sandbox = runtime.create_sandbox(&hello, SandboxOptions::default())?;
    assert!(sandbox.pids().is_empty());
    let output = sandbox.run(&hello, &["big".into(), "world".into()], b"")?;
    assert_eq!(output.exit_code, 0);
    assert_eq!(String::from_utf8(output.stdout)?, "hello big world\n");
    assert!(matches!(
        sandbox.call("bump", b"").unwrap_err(),
        CallError::NoMainProcess
    ));
    Ok(())
}

#[test]
fn a_command_sees_its_own_env_over_the_sandboxes() -> Result<()> {
    let (_tmp, runtime) = runtime()?;
    let guest = runtime.load_template("wasi_fs", &stasis_guests::bytes(stasis_guests::WASI_FS))?;
    let options = SandboxOptions {
        env: vec![("KEPT".into(), "1".into()), ("PWD".into(), "/".into())],
        ..SandboxOptions::default()
    };
    let mut sandbox = runtime.create_sandbox(&guest, options)?;
    let env = [("PWD".to_owned(), "/tmp".to_owned())];
    let output = sandbox.run_with_env(&guest, &["0".into()], &env, b"")?;
    let stdout = String::from_utf8(output.stdout)?;
    assert!(stdout.contains(r#"("KEPT", "1")"#), "{stdout}");
    assert!(stdout.contains(r#"("PWD", "/tmp")"#), "{stdout}");
    assert!(!stdout.contains(r#"("PWD", "/")"#), "{stdout}");
    Ok(())
}

#[test]
fn invalid_wasm_is_refused() -> Result<()> {
    let (_tmp, runtime) = runtime()?;
    let error = runtime
        .load_template("junk", b"\0asm\x01\0\0\0junk")
        .unwrap_err();
    assert!(matches!(error, TemplateError::Instrument(_)), "{error:?}");
    Ok(())
}

#[test]
fn imports_other_than_wasi_are_refused() -> Result<()> {
    let (_tmp, runtime) = runtime()?;
    let wasm =
        wat::parse_str(r#"(module (import "env" "sneaky" (func)) (memory (export "memory") 1))"#)?;
    let error = runtime.load_template("sneaky", &wasm).unwrap_err();
    assert!(
        matches!(error, TemplateError::UnsupportedImport { ref module, .. } if module == "env"),
        "{error:?}"
    );
    assert_contains(&error, "env::sneaky");
    Ok(())
}

#[test]
fn loading_the_same_module_twice_returns_the_same_template() -> Result<()> {
    let (_tmp, runtime) = runtime()?;
    let a = stateful(&runtime)?;
    let b = stateful(&runtime)?;
    assert_eq!(a.sha256(), b.sha256());
    assert!(runtime.template_by_hash(&a.sha256()).is_some());
    Ok(())
}
