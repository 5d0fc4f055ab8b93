//! The interpreter guests run as programs (the convention of `stasis_guest::program`): `python3 …` and `node
//! …` as the shell will start them. Until the host's process table spawns them, each run is driven by hand
//! as the convention describes: a fresh process of the template with the run's argv and environment, its
//! handler `main` called once with an empty request, the exit status read from the response and the output
//! from the process's stdout and stderr.
//!
//! A spawned reactor's stdin is empty (`Sandbox::spawn` gives it no other), so the programs that read stdin
//! are checked at its end of file.

use std::path::Path;

use anyhow::{Context as _, Result, ensure};
use stasis::{CallError, Runtime, SandboxLimits, SandboxOptions, Template};
use stasis_guest::interpreter::{EXECUTE_HANDLER, ExecuteRequest};
use stasis_guest::program::MAIN_HANDLER;
use tempfile::TempDir;

use crate::common::{python_named, python_runtime, stateful};

/// The directory the programs run in (their `PWD`), inside the sandbox.
const WORK: &str = "/work";

/// A runtime with one interpreter loaded under the name a shell runs it by.
struct Programs {
    _tmp: TempDir,
    runtime: Runtime,
    template: Template,
}

/// How a program run ended.
#[derive(Debug)]
struct Exit {
    status: i32,
    stdout: String,
    stderr: String,
}

impl Programs {
    /// `python3`.
    fn python() -> Result<Self> {
        let (tmp, runtime) = python_runtime(SandboxLimits::default())?;
        let template = python_named(&runtime, "python3")?;
        Ok(Self {
            _tmp: tmp,
            runtime,
            template,
        })
    }

    /// `node`, whose compiled module is cached beside Python's (see [`python_runtime`]).
    fn node() -> Result<Self> {
        let (tmp, runtime) = python_runtime(SandboxLimits::default())?;
        let template =
            runtime.load_template("node", &stasis_guests::bytes(stasis_guests::JAVASCRIPT))?;
        Ok(Self {
            _tmp: tmp,
            runtime,
            template,
        })
    }

    /// Runs the interpreter with `args` after its name in a new sandbox holding `files` (paths relative to
    /// [`WORK`]), with `env`, and `PWD` set to [`WORK`] unless `env` sets it.
    fn run_with_env(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        files: &[(&str, &[u8])],
    ) -> Result<Exit> {
        self.run_prepared(args, env, |work| {
            for (path, bytes) in files {
                write(&work.join(path), bytes)?;
            }
            Ok(())
        })
    }

    /// Like [`Programs::run_with_env`], with `prepare` filling the [`WORK`] directory (its host path).
    fn run_prepared(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        prepare: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<Exit> {
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        if !env.iter().any(|(key, _)| key == "PWD") {
            env.push(("PWD".to_owned(), WORK.to_owned()));
        }
        let options = SandboxOptions {
            args: args.iter().map(|&arg| arg.to_owned()).collect(),
            env,
            ..SandboxOptions::default()
        };
        let mut sandbox = self
            .runtime
            .create_sandbox(&stateful(&self.runtime)?, options)?;
        let work = sandbox.dir().join(WORK.trim_start_matches('/'));
        std::fs::create_dir_all(&work)?;
        prepare(&work)?;
        let pid = sandbox.spawn(&self.template)?;
        let response = sandbox
            .call_process(pid, MAIN_HANDLER, b"")
            .with_context(|| format!("running {} {args:?}", self.template.name()))?;
        let status = std::str::from_utf8(&response)?
            .parse()
            .with_context(|| format!("the status {response:?} is not a decimal number"))?;
        Ok(Exit {
            status,
            stdout: String::from_utf8(sandbox.take_stdout(pid))?,
            stderr: String::from_utf8(sandbox.take_stderr(pid))?,
        })
    }

    /// Runs the interpreter with `args` after its name, in a sandbox holding `files`.
    fn run(&self, args: &[&str], files: &[(&str, &[u8])]) -> Result<Exit> {
        self.run_with_env(args, &[], files)
    }
}

/// A file of `len` bytes at `path` that takes no room (sparse): a script too large to run.
fn huge(path: &Path, len: u64) -> Result<()> {
    std::fs::File::create(path)?.set_len(len)?;
    Ok(())
}

/// The most a program's source may be (64 MiB), in both interpreters.
const MAX_SOURCE_BYTES: u64 = 64 << 20;

/// Writes `bytes` to `path`, creating its directory.
fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    Ok(std::fs::write(path, bytes)?)
}

/// Checks that `exit` has `status`, failing with its output otherwise.
fn expect_status(exit: &Exit, status: i32) -> Result<()> {
    ensure!(
        exit.status == status,
        "expected status {status}, got {exit:?}"
    );
    Ok(())
}

#[test]
fn python_cli_runs_a_file_with_its_arguments_in_pwd() -> Result<()> {
    let python = Programs::python()?;
    let script = "\
import os, sys
import helper
print(sys.argv)
print(__name__, __file__)
print(sys.path[0], os.getcwd())
print(open('data.txt').read(), helper.VALUE, os.environ['GREETING'])
";
    let exit = python.run_with_env(
        &["main.py", "a", "b c"],
        &[("GREETING", "hi")],
        &[
            ("main.py", script.as_bytes()),
            ("helper.py", b"VALUE = 42\n"),
            ("data.txt", b"from the file"),
        ],
    )?;
    expect_status(&exit, 0)?;
    assert_eq!(
        exit.stdout,
        "['main.py', 'a', 'b c']\n__main__ /work/main.py\n/work /work\nfrom the file 42 hi\n"
    );
    assert_eq!(exit.stderr, "");
    Ok(())
}

#[test]
fn python_cli_runs_code_and_modules() -> Result<()> {
    let python = Programs::python()?;
    let exit = python.run(
        &["-c", "import sys; print(sys.argv, repr(sys.path[0]))", "x"],
        &[],
    )?;
    expect_status(&exit, 0)?;
    assert_eq!(exit.stdout, "['-c', 'x'] ''\n");

    // Flags CPython accepts before the code change nothing here.
    let exit = python.run(&["-u", "-B", "-E", "-s", "-q", "-c", "print('flags')"], &[])?;
    expect_status(&exit, 0)?;
    assert_eq!(exit.stdout, "flags\n");

    // A module of the frozen standard library.
    let exit = python.run(
        &["-m", "json.tool", "in.json"],
        &[("in.json", br#"{"a": [1, 2]}"#)],
    )?;
    expect_status(&exit, 0)?;
    assert_eq!(
        exit.stdout,
        "{\n    \"a\": [\n        1,\n        2\n    ]\n}\n"
    );

    // A module found in the working directory, run as `__main__` with its file as `sys.argv[0]`.
    let exit = python.run(
        &["-m", "tool", "arg"],
        &[("tool.py", b"import sys\nprint(__name__, sys.argv)\n")],
    )?;
    expect_status(&exit, 0)?;
    assert_eq!(exit.stdout, "__main__ ['/work/tool.py', 'arg']\n");

    let exit = python.run(&["-m", "nope"], &[])?;
    expect_status(&exit, 1)?;
    assert_eq!(exit.stderr, "python3: No module named nope\n");

    let exit = python.run(&["-V"], &[])?;
    expect_status(&exit, 0)?;
    assert!(exit.stdout.starts_with("Python 3."), "{exit:?}");
    Ok(())
}

#[test]
fn python_cli_honours_pythonpath_and_the_flags_that_change_something() -> Result<()> {
    let python = Programs::python()?;
    let files: &[(&str, &[u8])] = &[("lib/found.py", b"WHERE = 'lib'\n")];
    let import = "import found; print(found.WHERE)";
    let exit = python.run_with_env(&["-c", import], &[("PYTHONPATH", "lib")], files)?;
    expect_status(&exit, 0)?;
    assert_eq!(exit.stdout, "lib\n");
    // `-E` and `-I` ignore PYTHONPATH.
    for flag in ["-E", "-I"] {
        let exit = python.run_with_env(&[flag, "-c", import], &[("PYTHONPATH", "lib")], files)?;
        expect_status(&exit, 1)?;
        assert!(
            exit.stderr
                .ends_with("ModuleNotFoundError: No module named 'found'\n"),
            "{flag}: {exit:?}"
        );
    }
    // `-O` drops assertions; `-S` leaves `site` out.
    let exit = python.run(&["-O", "-c", "assert False; print('optimized')"], &[])?;
    expect_status(&exit, 0)?;
    assert_eq!(exit.stdout, "optimized\n");
    let site = "import sys; print('site' in sys.modules)";
    let exit = python.run(&["-c", site], &[])?;
    assert_eq!(
        (exit.status, exit.stdout.as_str()),
        (0, "True\n"),
        "{exit:?}"
    );
    let exit = python.run(&["-S", "-c", site], &[])?;
    assert_eq!(
        (exit.status, exit.stdout.as_str()),
        (0, "False\n"),
        "{exit:?}"
    );
    Ok(())
}

#[test]
fn python_cli_exit_statuses() -> Result<()> {
    let python = Programs::python()?;
    let code = |source: &str| python.run(&["-c", source], &[]);

    expect_status(&code("import sys; sys.exit(3)")?, 3)?;
    expect_status(&code("import sys; sys.exit()")?, 0)?;
    expect_status(&code("import sys; sys.exit(None)")?, 0)?;
    // The `exit` builtin, as scripts use it.
    expect_status(&code("exit(4)")?, 4)?;

    let exit = code("import sys; print('out'); sys.exit('bye')")?;
    expect_status(&exit, 1)?;
    assert_eq!(
        (exit.stdout.as_str(), exit.stderr.as_str()),
        ("out\n", "bye\n")
    );

    let exit = code("raise KeyboardInterrupt")?;
    expect_status(&exit, 130)?;
    assert!(exit.stderr.contains("KeyboardInterrupt"), "{exit:?}");

    let script = "def divide(a, b):\n    return a / b\nprint(divide(1, 0))\n";
    let exit = python.run(&["main.py"], &[("main.py", script.as_bytes())])?;
    expect_status(&exit, 1)?;
    let stderr = &exit.stderr;
    assert!(
        stderr.starts_with("Traceback (most recent call last):\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("  File \"/work/main.py\", line 3, in <module>\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("  File \"/work/main.py\", line 2, in divide\n"),
        "{stderr}"
    );
    assert!(
        stderr.ends_with("ZeroDivisionError: division by zero\n"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn python_cli_refuses_what_cpython_refuses() -> Result<()> {
    let python = Programs::python()?;
    let exit = python.run(&["missing.py"], &[])?;
    expect_status(&exit, 2)?;
    assert_eq!(
        exit.stderr,
        "python3: can't open file '/work/missing.py': [Errno 2] No such file or directory\n"
    );

    let exit = python.run(&["-z"], &[])?;
    expect_status(&exit, 2)?;
    assert!(
        exit.stderr
            .starts_with("unknown option -z\nusage: python3 "),
        "{exit:?}"
    );

    let exit = python.run(&["-c"], &[])?;
    expect_status(&exit, 2)?;
    assert!(
        exit.stderr
            .starts_with("Argument expected for the -c option\n"),
        "{exit:?}"
    );

    let exit = python.run_prepared(&["huge.py"], &[], |work| {
        huge(&work.join("huge.py"), MAX_SOURCE_BYTES + 1)
    })?;
    expect_status(&exit, 2)?;
    assert!(
        exit.stderr
            .starts_with("python3: can't open file '/work/huge.py': it is 67108865 bytes"),
        "{exit:?}"
    );

    // Source that is not UTF-8 is CPython's SyntaxError, not a failure of the interpreter.
    let exit = python.run(&["bad.py"], &[("bad.py", b"x = 1\ny = '\xff'\n")])?;
    expect_status(&exit, 1)?;
    assert!(
        exit.stderr.contains(
            "SyntaxError: Non-UTF-8 code starting with '\\xff' in file /work/bad.py on line 2"
        ),
        "{exit:?}"
    );
    Ok(())
}

#[test]
fn python_cli_reads_its_program_and_input_from_stdin() -> Result<()> {
    let python = Programs::python()?;
    // The spawned process's stdin is empty: `python3 -` runs an empty program.
    let exit = python.run(&["-"], &[])?;
    expect_status(&exit, 0)?;
    assert_eq!((exit.stdout.as_str(), exit.stderr.as_str()), ("", ""));

    // `input()` reads fd 0 and meets its end.
    let exit = python.run(
        &["-c", "import sys; print(repr(sys.stdin.read())); input()"],
        &[],
    )?;
    expect_status(&exit, 1)?;
    assert_eq!(exit.stdout, "''\n");
    assert!(
        exit.stderr.ends_with("EOFError: EOF when reading a line\n"),
        "{exit:?}"
    );
    Ok(())
}

#[test]
fn python_process_is_a_program_or_a_context_not_both() -> Result<()> {
    let python = Programs::python()?;
    let mut sandbox = python
        .runtime
        .create_sandbox(&stateful(&python.runtime)?, SandboxOptions::default())?;
    let cell = serde_json::to_vec(&ExecuteRequest {
        code: "1 + 1".to_owned(),
        env_vars: Default::default(),
    })?;

    let program = sandbox.spawn(&python.template)?;
    assert_eq!(sandbox.call_process(program, MAIN_HANDLER, b"")?, b"0");
    let error = sandbox
        .call_process(program, EXECUTE_HANDLER, &cell)
        .expect_err("a program's process ran a cell");
    assert!(
        matches!(error, CallError::Guest(ref m) if m.contains("runs a program")),
        "{error}"
    );
    let error = sandbox
        .call_process(program, MAIN_HANDLER, b"")
        .expect_err("a program ran twice");
    assert!(
        matches!(error, CallError::Guest(ref m) if m.contains("already run")),
        "{error}"
    );

    let context = sandbox.spawn(&python.template)?;
    sandbox.call_process(context, EXECUTE_HANDLER, &cell)?;
    let error = sandbox
        .call_process(context, MAIN_HANDLER, b"")
        .expect_err("a context ran a program");
    assert!(
        matches!(error, CallError::Guest(ref m) if m.contains("context")),
        "{error}"
    );
    Ok(())
}

#[test]
fn node_cli_evaluates_and_prints_code() -> Result<()> {
    let node = Programs::node()?;
    let exit = node.run_with_env(
        &[
            "-e",
            "console.log(JSON.stringify(process.argv.slice(1)), process.cwd(), process.env.GREETING)",
            "a",
        ],
        &[("GREETING", "hi")],
        &[],
    )?;
    expect_status(&exit, 0)?;
    assert_eq!(exit.stdout, "[\"a\"] /work hi\n");

    let exit = node.run(&["-p", "[1, 2].map(x => x * 3).join('+')"], &[])?;
    expect_status(&exit, 0)?;
    assert_eq!(exit.stdout, "3+6\n");

    let exit = node.run(&["--version"], &[])?;
    expect_status(&exit, 0)?;
    assert_eq!(exit.stdout, "v20.0.0-boa\n");

    let exit = node.run(&["--nope"], &[])?;
    expect_status(&exit, 9)?;
    assert_eq!(exit.stderr, "node: bad option: --nope\n");

    // A working directory that does not exist is reported, not replaced by another.
    let exit = node.run_with_env(&["-e", "console.log('ran')"], &[("PWD", "/nowhere")], &[])?;
    expect_status(&exit, 1)?;
    assert_eq!(exit.stdout, "");
    assert!(
        exit.stderr
            .starts_with("node: cannot enter the working directory /nowhere: "),
        "{exit:?}"
    );
    Ok(())
}

#[test]
fn node_cli_runs_a_file_with_its_arguments() -> Result<()> {
    let node = Programs::node()?;
    let script = "\
console.log(JSON.stringify(process.argv), __filename, __dirname);
console.error('to stderr');
Promise.resolve(7).then(v => process.stdout.write(`job ${v}\\n`));
";
    let exit = node.run(&["app.js", "x", "y z"], &[("app.js", script.as_bytes())])?;
    expect_status(&exit, 0)?;
    assert_eq!(
        exit.stdout,
        "[\"node\",\"/work/app.js\",\"x\",\"y z\"] /work/app.js /work\njob 7\n"
    );
    assert_eq!(exit.stderr, "to stderr\n");
    Ok(())
}

#[test]
fn node_cli_exit_statuses() -> Result<()> {
    let node = Programs::node()?;
    // `process.exit` ends the program at once: neither `finally` nor the code after it runs.
    let exit = node.run(
        &[
            "-e",
            "try { console.log('before'); process.exit(3) } finally { console.log('finally') }",
        ],
        &[],
    )?;
    expect_status(&exit, 3)?;
    assert_eq!(exit.stdout, "before\n");

    expect_status(&node.run(&["-e", "process.exitCode = 4"], &[])?, 4)?;
    expect_status(&node.run(&["-e", "process.exit()"], &[])?, 0)?;

    let script = "function explode() {\n  throw new Error('boom');\n}\nexplode();\n";
    let exit = node.run(&["app.js"], &[("app.js", script.as_bytes())])?;
    expect_status(&exit, 1)?;
    assert!(exit.stderr.starts_with("Error: boom\n    at "), "{exit:?}");
    assert!(exit.stderr.contains("/work/app.js:2:"), "{exit:?}");

    // An `async` function's exception that nobody handles ends the program as in Node; a handled one does
    // not.
    let exit = node.run(&["-e", "(async () => { throw new Error('late') })()"], &[])?;
    expect_status(&exit, 1)?;
    assert!(exit.stderr.starts_with("Error: late\n"), "{exit:?}");
    let exit = node.run(
        &[
            "-e",
            "Promise.reject(new Error('x')).catch(e => console.log('caught', e.message))",
        ],
        &[],
    )?;
    expect_status(&exit, 0)?;
    assert_eq!(exit.stdout, "caught x\n");

    let exit = node.run(&["missing.js"], &[])?;
    expect_status(&exit, 1)?;
    assert!(
        exit.stderr
            .starts_with("Error: Cannot find module '/work/missing.js'"),
        "{exit:?}"
    );
    Ok(())
}
