//! Running a guest you wrote yourself: the notebook of `examples/guest` (read its `src/lib.rs` first).
//!
//! The build script compiles the guest for `wasm32-wasip1`; this example loads it as a template, creates
//! a sandbox, calls its handlers, shows what it printed and the error one of them returns, pauses the
//! sandbox to a blob file, drops everything, resumes the blob with a brand new runtime and shows that the
//! notes the guest kept in its heap are still there.
//!
//! Run with `cargo run --release -p stasis-examples --example custom_guest`. It prints each step and exits
//! non-zero if anything differs from what the guest and a paused-and-resumed sandbox must give back.

use anyhow::{Context, Result, bail, ensure};
use stasis::{CallError, ResumeOptions, Runtime, RuntimeConfig, Sandbox, SandboxOptions};

/// The notes the example writes, as `(name, content)`.
const NOTES: &[(&str, &str)] = &[
    ("greeting", "hello from the host"),
    ("todo", "pause the sandbox, resume it elsewhere"),
    ("pi", "3.14159"),
];

fn main() -> Result<()> {
    let work = tempfile::tempdir()?;
    let data_dir = work.path().join("data");
    let blob = work.path().join("notebook.blob");
    let wasm = std::fs::read(stasis_examples::NOTEBOOK_GUEST)
        .with_context(|| format!("reading the guest {}", stasis_examples::NOTEBOOK_GUEST))?;
    println!(
        "1. the guest: {} ({} bytes)",
        stasis_examples::NOTEBOOK_GUEST,
        wasm.len()
    );

    {
        // A template is the validated, instrumented and compiled module; a sandbox is one running copy.
        let runtime = Runtime::new(RuntimeConfig::new(&data_dir))?;
        let template = runtime.load_template("notebook", &wasm)?;
        let mut sandbox = runtime.create_sandbox(&template, SandboxOptions::default())?;
        println!(
            "2. created a sandbox from template {} ({})",
            template.name(),
            template.sha256_hex()
        );

        // `set` answers the number of notes: the guest's heap grows with every call.
        for (i, (name, content)) in NOTES.iter().enumerate() {
            let count = text(sandbox.call("set", format!("{name}\n{content}").as_bytes())?)?;
            println!("3. set {name:?} -> the notebook holds {count} note(s)");
            ensure!(
                count == (i + 1).to_string(),
                "set answered {count:?} after {} notes",
                i + 1
            );
        }
        let greeting = text(sandbox.call("get", b"greeting")?)?;
        println!("4. get \"greeting\" -> {greeting:?}");
        ensure!(
            greeting == NOTES[0].1,
            "get answered {greeting:?} for \"greeting\""
        );

        summarize(&mut sandbox, "5.")?;

        // A handler's `Err` is a `CallError::Guest` with its message; the guest stays usable.
        match sandbox.call("get", b"shopping list") {
            Err(CallError::Guest(message)) => {
                println!("6. get \"shopping list\" -> the guest's error: {message}");
                ensure!(
                    message == "no note named \"shopping list\"",
                    "unexpected error message {message:?}"
                );
            }
            Ok(content) => bail!("get of a missing note answered {content:?} instead of an error"),
            Err(other) => return Err(other).context("get of a missing note failed in the host"),
        }
        let count = text(sandbox.call("count", b"")?)?;
        println!("   after the error the guest still answers: count -> {count}");
        ensure!(count == NOTES.len().to_string(), "count answered {count:?}");

        let report = sandbox.pause(&blob)?;
        println!(
            "7. paused: {} bytes of guest memory in a {} byte blob, in {:?}",
            report.memory_bytes, report.blob_bytes, report.elapsed
        );
        ensure!(
            matches!(sandbox.call("count", b""), Err(CallError::Paused)),
            "a paused sandbox must refuse calls"
        );
        // The sandbox and the runtime are dropped here: nothing but the blob (and the module cache) remains.
    }

    // A new runtime, as another process (or machine) would have; it needs the template the blob was made
    // from, which it finds by the module's hash.
    let runtime = Runtime::new(RuntimeConfig::new(&data_dir))?;
    runtime.load_template("notebook", &wasm)?;
    let mut sandbox = runtime.resume(&blob, ResumeOptions::default())?;
    println!("8. resumed the blob with a new runtime");

    let count = text(sandbox.call("count", b"")?)?;
    println!("9. count -> {count}");
    ensure!(
        count == NOTES.len().to_string(),
        "the notes were lost: count answered {count:?}"
    );
    for (name, content) in NOTES {
        let got = text(sandbox.call("get", name.as_bytes())?)?;
        println!("   get {name:?} -> {got:?}");
        ensure!(got == *content, "note {name:?} came back as {got:?}");
    }
    let count = text(sandbox.call("set", b"resumed\nyes")?)?;
    println!("   set \"resumed\" -> the notebook holds {count} note(s)");
    ensure!(
        count == (NOTES.len() + 1).to_string(),
        "set after the resume answered {count:?}"
    );
    summarize(&mut sandbox, "10.")?;

    println!("the notebook's heap survived the pause");
    Ok(())
}

/// Calls `summarize`, then shows and checks what the guest printed while it ran: one line per note and a
/// total. `step` numbers the printed step.
fn summarize(sandbox: &mut Sandbox, step: &str) -> Result<()> {
    // The template's reactor is the sandbox's main process, the one `call` talks to.
    let pid = *sandbox
        .pids()
        .first()
        .context("the sandbox has no process")?;
    let count: usize = text(sandbox.call("count", b"")?)?.parse()?;
    let total = text(sandbox.call("summarize", b"")?)?;
    let printed = String::from_utf8(sandbox.take_stdout(pid))?;
    println!("{step} summarize -> {total} bytes; the guest printed:");
    for line in printed.lines() {
        println!("     | {line}");
    }
    let lines: Vec<&str> = printed.lines().collect();
    ensure!(
        lines.len() == count + 1,
        "expected {} lines of output, got {printed:?}",
        count + 1
    );
    ensure!(
        lines[count] == format!("summarized {count} notes, {total} bytes in all"),
        "unexpected last line {:?}",
        lines[count]
    );
    Ok(())
}

/// A response as text: this guest answers UTF-8 (it is the host's choice how to read the bytes).
fn text(response: Vec<u8>) -> Result<String> {
    String::from_utf8(response).context("the guest answered bytes that are not UTF-8")
}
