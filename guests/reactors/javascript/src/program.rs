//! `node` as a program: the `main` handler of the program convention (`stasis_guest::program`), so the same
//! module that serves code-interpreter cells also runs `node script.js` for the sandbox's shell.
//!
//! The command line follows Node's: `node FILE [ARG]…`, `node -e CODE` (`--eval`), `node -p CODE`
//! (`--print`, which prints the completion value), `node -` or `node` alone (the program read from stdin),
//! `-v`/`--version`, `-h`/`--help`; any other option is refused as Node refuses it (`node: bad option: -z`,
//! status 9). What the program finds:
//!
//! - `process.argv` (`['node', '/abs/FILE', ARG…]`; no file entry for `-e` and `-p`, `'-'` for `node -`),
//!   `process.env`, `process.cwd()`, `process.exit(code)` (which ends the program at once: a
//!   `try`/`finally` does not catch it), `process.exitCode`, `process.platform` (`'wasi'`),
//!   `process.version`, `process.stdout.write` and `process.stderr.write`;
//! - `console.log`/`info`/`debug` on stdout, `console.warn`/`error` on stderr;
//! - in a file, `__filename` and `__dirname`.
//!
//! The script runs as a classic script (not a CommonJS or ES module: there is no `require` and no
//! `import`), then the promise job queue is run to completion. An uncaught error — thrown, or a promise
//! rejected with no handler once the queue is empty — prints the error and its stack on stderr (`Error:
//! boom` and `    at f (/abs/file.js:2:9)` lines) and is status 1; a file that does not exist is Node's
//! `Error: Cannot find module '/abs/missing.js'`, status 1.

use std::cell::{Cell, RefCell};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use boa_engine::builtins::promise::{OperationType, Promise, PromiseState};
use boa_engine::context::HostHooks;
use boa_engine::error::{EngineError, PanicError};
use boa_engine::object::ObjectInitializer;
use boa_engine::property::Attribute;
use boa_engine::{
    Context, JsError, JsObject, JsResult, JsString, JsValue, NativeFunction, Source, js_string,
};
use boa_runtime::console::Console;

use crate::StdioLogger;

/// What `process.version` and `node --version` answer: Node's shape, so that scripts parsing it find a
/// version, with `-boa` saying that this is the boa engine, not Node.
const VERSION: &str = "v20.0.0-boa";

/// boa's version, in `process.versions.boa`.
const BOA_VERSION: &str = "0.22.0";

/// The largest program read from a file or stdin (64 MiB): far above any real script, so a huge file is
/// refused with a message instead of exhausting the instance's memory.
const MAX_SOURCE_BYTES: u64 = 64 << 20;

/// Node's status for an option it does not know.
const BAD_OPTION_STATUS: i32 = 9;

thread_local! {
    /// Set by `process.exit()`: the engine error it throws to stop the script is the program's end, not
    /// an uncaught exception.
    static EXITING: Cell<bool> = const { Cell::new(false) };
    /// Set once a program has started in this process (see [`started`]).
    static STARTED: Cell<bool> = const { Cell::new(false) };
}

/// Whether this process has run (or is running) a program, so it must not serve cells: a process is either
/// a code-interpreter context or a program.
pub(crate) fn started() -> bool {
    STARTED.get()
}

/// Where the program comes from.
enum Origin {
    /// `node FILE`.
    File(String),
    /// `node -e CODE`, or `node -p CODE` (`print`).
    Eval {
        /// The code.
        code: String,
        /// Whether the completion value is printed.
        print: bool,
    },
    /// `node -` (`dash`) or `node` alone.
    Stdin {
        /// Whether `-` was given (it is then `process.argv[1]`).
        dash: bool,
    },
}

/// What the command line asks for.
enum Invocation {
    /// Run a program, with `args` after it.
    Run(Origin, Vec<String>),
    /// `-v`/`--version`.
    Version,
    /// `-h`/`--help`.
    Help,
}

/// A command line Node refuses: its message.
enum UsageError {
    /// `node: bad option: -z`.
    BadOption(String),
    /// `node: -e requires an argument`.
    MissingArgument(String),
}

/// Parses the arguments after the program name as Node does: options up to the first word that is not
/// one, which is the script (or, after `-e`/`-p`, the first of the program's arguments).
fn parse(args: &[String]) -> Result<Invocation, UsageError> {
    let mut eval: Option<(String, bool)> = None;
    let mut index = 0;
    while index < args.len() {
        let word = &args[index];
        index += 1;
        let (option, inline) = match word.split_once('=') {
            Some((option, value)) if option.starts_with("--") => (option, Some(value.to_owned())),
            _ => (word.as_str(), None),
        };
        match option {
            "-v" | "--version" => return Ok(Invocation::Version),
            "-h" | "--help" => return Ok(Invocation::Help),
            "-e" | "--eval" | "-p" | "--print" => {
                let code = match inline {
                    Some(code) => code,
                    None => {
                        let Some(code) = args.get(index) else {
                            return Err(UsageError::MissingArgument(option.to_owned()));
                        };
                        index += 1;
                        code.clone()
                    }
                };
                eval = Some((code, matches!(option, "-p" | "--print")));
            }
            "--" => break,
            "-" => {
                if let Some((code, print)) = eval {
                    return Ok(Invocation::Run(
                        Origin::Eval { code, print },
                        args[index - 1..].to_vec(),
                    ));
                }
                return Ok(Invocation::Run(
                    Origin::Stdin { dash: true },
                    args[index..].to_vec(),
                ));
            }
            _ if option.starts_with('-') => return Err(UsageError::BadOption(word.clone())),
            _ => {
                index -= 1;
                break;
            }
        }
    }
    let rest = &args[index..];
    Ok(match eval {
        Some((code, print)) => Invocation::Run(Origin::Eval { code, print }, rest.to_vec()),
        None => match rest.split_first() {
            Some((file, args)) => Invocation::Run(Origin::File(file.clone()), args.to_vec()),
            None => Invocation::Run(Origin::Stdin { dash: false }, Vec::new()),
        },
    })
}

/// The `main` handler's program: `node` with the process's argv.
pub(crate) fn main() -> Result<i32, String> {
    let name = stasis_guest::program::program_name("node");
    if crate::has_context() {
        return Err(
            "this process is a code-interpreter context; a program needs a process of its own"
                .into(),
        );
    }
    if STARTED.replace(true) {
        return Err("this process has already run its program".into());
    }
    let args = match stasis_guest::program::arguments() {
        Ok(args) => args,
        Err(bad) => {
            eprintln!("{name}: the argument {bad} is not valid UTF-8");
            return Ok(BAD_OPTION_STATUS);
        }
    };
    let (source, args) = match parse(&args) {
        Ok(Invocation::Run(source, args)) => (source, args),
        Ok(Invocation::Version) => {
            println!("{VERSION}");
            return Ok(0);
        }
        Ok(Invocation::Help) => {
            println!("{}", help_text(&name));
            return Ok(0);
        }
        Err(UsageError::BadOption(option)) => {
            eprintln!("{name}: bad option: {option}");
            return Ok(BAD_OPTION_STATUS);
        }
        Err(UsageError::MissingArgument(option)) => {
            eprintln!("{name}: {option} requires an argument");
            return Ok(BAD_OPTION_STATUS);
        }
    };
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let mut argv = vec![name.clone()];
    let (code, path, print) = match source {
        Origin::File(file) => {
            let Some(found) = resolve(&cwd.join(&file)) else {
                eprintln!(
                    "Error: Cannot find module '{}' {{\n  code: 'MODULE_NOT_FOUND',\n  requireStack: []\n}}",
                    cwd.join(&file).display()
                );
                return Ok(1);
            };
            let code = match read_source(&found) {
                Ok(code) => code,
                Err(message) => {
                    eprintln!("Error: {message}");
                    return Ok(1);
                }
            };
            argv.push(found.to_string_lossy().into_owned());
            (code, found, false)
        }
        Origin::Eval { code, print } => (code, PathBuf::from("[eval]"), print),
        Origin::Stdin { dash } => {
            if dash {
                argv.push("-".to_owned());
            }
            let mut bytes = Vec::new();
            if let Err(error) = std::io::stdin()
                .lock()
                .take(MAX_SOURCE_BYTES + 1)
                .read_to_end(&mut bytes)
            {
                eprintln!("Error: reading the program from stdin: {error}");
                return Ok(1);
            }
            if bytes.len() as u64 > MAX_SOURCE_BYTES {
                eprintln!(
                    "Error: the program on stdin is more than the {} MiB a program may be",
                    MAX_SOURCE_BYTES >> 20
                );
                return Ok(1);
            }
            (decode(&bytes), PathBuf::from("[stdin]"), false)
        }
    };
    argv.extend(args);
    let rejections = Rc::new(RejectionTracker::default());
    let mut context = Context::builder()
        .host_hooks(rejections.clone())
        .build()
        .map_err(|e| format!("building the JavaScript context: {e}"))?;
    let process = setup(&mut context, &argv, &cwd, &path).map_err(|e| e.to_string())?;
    Ok(run(
        &mut context,
        &process,
        &rejections,
        &code,
        &path,
        print,
    ))
}

/// The promises rejected with no handler attached, in the order they were rejected: once the job queue
/// is empty, the first one still unhandled ends the program as an uncaught error, as in Node (an `async`
/// function's exception nobody awaits is not lost).
#[derive(Default)]
struct RejectionTracker {
    unhandled: RefCell<Vec<JsObject>>,
}

impl HostHooks for RejectionTracker {
    fn promise_rejection_tracker(
        &self,
        promise: &JsObject<Promise>,
        operation: OperationType,
        _: &mut Context,
    ) {
        let promise = promise.clone().upcast();
        let mut unhandled = self.unhandled.borrow_mut();
        match operation {
            OperationType::Reject => unhandled.push(promise),
            OperationType::Handle => unhandled.retain(|p| !JsObject::equals(p, &promise)),
        }
    }
}

impl RejectionTracker {
    /// The reason of the first rejection no handler has been attached to.
    fn first_unhandled(&self) -> Option<JsValue> {
        self.unhandled.borrow().iter().find_map(|promise| {
            match JsValue::from(promise.clone()).as_promise()?.state() {
                PromiseState::Rejected(reason) => Some(reason),
                PromiseState::Pending | PromiseState::Fulfilled(_) => None,
            }
        })
    }
}

/// `node -h`: what this `node` understands.
fn help_text(name: &str) -> String {
    format!(
        "Usage: {name} [options] [ script.js | -e \"script\" | - ] [arguments]

Options:
  -                    script read from stdin (default)
  --                   indicate the end of node options
  -e, --eval script    evaluate script
  -h, --help           print node command line options
  -p, --print script   evaluate script and print result
  -v, --version        print Node.js version

This is the boa JavaScript engine {BOA_VERSION} with a Node-like command line: scripts run as classic
scripts, without require() or import."
    )
}

/// The file Node would load for `path`: the file itself, `path.js`, or `path/index.js`.
fn resolve(path: &Path) -> Option<PathBuf> {
    if path.is_file() {
        return Some(path.to_owned());
    }
    let mut with_js = path.as_os_str().to_owned();
    with_js.push(".js");
    [PathBuf::from(with_js), path.join("index.js")]
        .into_iter()
        .find(|candidate| candidate.is_file())
}

/// A script's text, or why it cannot be read.
fn read_source(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let too_large = || {
        format!(
            "{shown} is more than the {} MiB a program may be",
            MAX_SOURCE_BYTES >> 20
        )
    };
    let cannot_read = |error: std::io::Error| format!("cannot read {shown}: {error}");
    // Refused before reading when its size says so; the bounded read catches a file that grows meanwhile.
    if std::fs::metadata(path).map_err(cannot_read)?.len() > MAX_SOURCE_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_SOURCE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(cannot_read)?;
    if bytes.len() as u64 > MAX_SOURCE_BYTES {
        return Err(too_large());
    }
    Ok(decode(&bytes))
}

/// Source text as Node reads it: UTF-8, invalid sequences replaced by U+FFFD, a byte order mark dropped.
fn decode(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.strip_prefix('\u{feff}').unwrap_or(&text).to_owned()
}

/// Registers `console`, `process` and, for a file, `__filename` and `__dirname`; returns `process`.
fn setup(context: &mut Context, argv: &[String], cwd: &Path, path: &Path) -> JsResult<JsObject> {
    Console::register_with_logger(StdioLogger, context)?;
    let env = ObjectInitializer::new(context).build();
    for (key, value) in std::env::vars_os() {
        env.set(
            JsString::from(key.to_string_lossy().as_ref()),
            JsString::from(value.to_string_lossy().as_ref()),
            false,
            context,
        )?;
    }
    let argv_array = boa_engine::object::builtins::JsArray::from_iter(
        argv.iter()
            .map(|arg| JsValue::from(JsString::from(arg.as_str()))),
        context,
    );
    let versions = ObjectInitializer::new(context)
        .property(
            js_string!("node"),
            JsString::from(VERSION.trim_start_matches('v')),
            Attribute::all(),
        )
        .property(js_string!("boa"), js_string!(BOA_VERSION), Attribute::all())
        .build();
    let stdout = stream(context, write_stdout);
    let stderr = stream(context, write_stderr);
    let cwd_text = JsString::from(cwd.to_string_lossy().as_ref());
    let process = ObjectInitializer::new(context)
        .property(js_string!("argv"), argv_array, Attribute::all())
        .property(js_string!("env"), env, Attribute::all())
        .property(
            js_string!("exitCode"),
            JsValue::undefined(),
            Attribute::all(),
        )
        .property(js_string!("platform"), js_string!("wasi"), Attribute::all())
        .property(js_string!("version"), js_string!(VERSION), Attribute::all())
        .property(js_string!("versions"), versions, Attribute::all())
        .property(js_string!("stdout"), stdout, Attribute::all())
        .property(js_string!("stderr"), stderr, Attribute::all())
        .function(NativeFunction::from_fn_ptr(exit), js_string!("exit"), 1)
        .function(
            NativeFunction::from_copy_closure_with_captures(
                |_, _, cwd, _| Ok(cwd.clone().into()),
                cwd_text,
            ),
            js_string!("cwd"),
            0,
        )
        .build();
    context.register_global_property(
        js_string!("process"),
        process.clone(),
        Attribute::WRITABLE | Attribute::CONFIGURABLE,
    )?;
    if path.is_absolute() {
        let dir = path.parent().unwrap_or(Path::new("/"));
        for (name, value) in [("__filename", path), ("__dirname", dir)] {
            context.register_global_property(
                JsString::from(name),
                JsString::from(value.to_string_lossy().as_ref()),
                Attribute::WRITABLE | Attribute::CONFIGURABLE,
            )?;
        }
    }
    Ok(process)
}

/// `process.stdout` or `process.stderr`: an object whose `write(text)` writes to the stream.
fn stream(
    context: &mut Context,
    write: fn(&JsValue, &[JsValue], &mut Context) -> JsResult<JsValue>,
) -> JsObject {
    ObjectInitializer::new(context)
        .function(NativeFunction::from_fn_ptr(write), js_string!("write"), 1)
        .build()
}

/// `process.stdout.write(text)`.
fn write_stdout(_: &JsValue, args: &[JsValue], context: &mut Context) -> JsResult<JsValue> {
    write_to(std::io::stdout().lock(), args, context)
}

/// `process.stderr.write(text)`.
fn write_stderr(_: &JsValue, args: &[JsValue], context: &mut Context) -> JsResult<JsValue> {
    write_to(std::io::stderr().lock(), args, context)
}

/// Writes the first argument, as a string, to `out`; answers `true` as Node's streams do.
fn write_to(
    mut out: impl std::io::Write,
    args: &[JsValue],
    context: &mut Context,
) -> JsResult<JsValue> {
    let text = args
        .first()
        .cloned()
        .unwrap_or_default()
        .to_string(context)?
        .to_std_string_escaped();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(JsError::from_rust)?;
    Ok(true.into())
}

/// `process.exit(code)`: records the status in `process.exitCode` and stops the script with an engine
/// error, which JavaScript cannot catch.
fn exit(_: &JsValue, args: &[JsValue], context: &mut Context) -> JsResult<JsValue> {
    if let Some(code) = args.first().filter(|code| !code.is_undefined()) {
        let code = code.to_i32(context)?;
        let process = context
            .global_object()
            .get(js_string!("process"), context)?;
        if let Some(process) = process.as_object() {
            process.set(js_string!("exitCode"), code, false, context)?;
        }
    }
    EXITING.set(true);
    Err(EngineError::from(PanicError::new("process.exit() called")).into())
}

/// Evaluates the program, runs the job queue, and returns the exit status.
fn run(
    context: &mut Context,
    process: &JsObject,
    rejections: &RejectionTracker,
    code: &str,
    path: &Path,
    print: bool,
) -> i32 {
    let source = Source::from_bytes(code).with_path(path);
    let evaluated = context.eval(source);
    if EXITING.get() {
        return exit_code(context, process);
    }
    match evaluated {
        Ok(value) if print => {
            // `node -p` prints strings as they are and everything else as Node's inspector would.
            let text = match value.as_string() {
                Some(text) => text.to_std_string_escaped(),
                None => value.display().to_string(),
            };
            println!("{text}");
        }
        Ok(_) => {}
        Err(error) => return uncaught(context, &error),
    }
    let jobs = context.run_jobs();
    if EXITING.get() {
        return exit_code(context, process);
    }
    if let Err(error) = jobs {
        return uncaught(context, &error);
    }
    match rejections.first_unhandled() {
        Some(reason) => uncaught(context, &JsError::from_opaque(reason)),
        None => exit_code(context, process),
    }
}

/// `process.exitCode` as the status, 0 when it is unset or not a number.
fn exit_code(context: &mut Context, process: &JsObject) -> i32 {
    process
        .get(js_string!("exitCode"), context)
        .ok()
        .filter(|code| !code.is_undefined() && !code.is_null())
        .and_then(|code| code.to_i32(context).ok())
        .unwrap_or(0)
}

/// Prints an uncaught error as Node does — `Error: message` and the stack's `    at …` lines — and returns
/// status 1.
fn uncaught(context: &mut Context, error: &JsError) -> i32 {
    let text = match error.clone().into_opaque(context) {
        Ok(thrown) => match thrown.as_object() {
            Some(object) => {
                let headline = thrown
                    .to_string(context)
                    .map(|text| text.to_std_string_escaped())
                    .unwrap_or_else(|_| error.to_string());
                let stack = object
                    .get(js_string!("stack"), context)
                    .ok()
                    .and_then(|stack| stack.as_string().map(|s| s.to_std_string_escaped()))
                    .unwrap_or_default();
                format!("{headline}\n{stack}")
            }
            None => format!("Uncaught {}\n", thrown.display()),
        },
        // An engine error (a runtime limit such as too deep a recursion) has no JavaScript value.
        Err(engine) => format!("Uncaught {engine}\n"),
    };
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = err.write_all(b"\n");
    }
    1
}
