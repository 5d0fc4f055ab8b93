//! `python3` as a program: the `main` handler of the program convention (`stasis_guest::program`), so the
//! same module that serves code-interpreter cells also runs `python3 script.py` for the sandbox's shell.
//!
//! The command line follows CPython's as far as RustPython allows: `python3 FILE [ARG]…`, `-c CODE`, `-m
//! MODULE`, `-` or nothing (the program read from stdin), `-V`/`--version`, `-h`/`--help`. `-W ARG`, `-O`,
//! `-P`, `-S`, `-u` and `-E`/`-I` (which turn off `PYTHONPATH`) act as in CPython; `-B`, `-q`, `-s` and `-X
//! ARG` are accepted and change nothing here (no `.pyc` is ever written, there is no interactive prompt and
//! no user site directory). The outcome is CPython's too: `sys.exit(n)` is status n, an uncaught exception
//! prints its traceback and is status 1, `KeyboardInterrupt` 130, a usage error or a file that cannot be
//! opened status 2, with CPython's messages.
//!
//! A process is either a context (cells) or a program: the interpreter is built here for the one run of the
//! program, with its argv in `sys.argv`, and a process that has run cells does not run a program, nor the
//! other way round.
//!
//! # Starting from an image
//!
//! Building the interpreter and importing what CPython imports at start (`encodings`, `io`, `warnings`,
//! `site`…) is most of a short program's time, so [`preinit`] does it once, for the program's image (see
//! `stasis_guest::program`): an interpreter for the default options, kept in memory. A run with the default
//! options takes it and brings its own world into it ([`adopt`]):
//!
//! - `sys.argv`, `sys.orig_argv`, `sys.executable` and `sys._base_executable`;
//! - `PYTHONPATH`, in front of `sys.path` as at a fresh start;
//! - the environment: `posix.environ`, which `os.environ` and `os.environb` read, refilled in place;
//! - new standard streams over its fds 0, 1 and 2, line-buffered where a fresh start's would be;
//! - `site`'s site-packages directories (and their `.pth` files) and `sitecustomize` in its own files;
//! - the import system's caches, emptied.
//!
//! The objects of the image are frozen (`gc.freeze()`, as a server does before it forks): the collector
//! does not look at them again, at any collection or at the end of a run, and `gc.get_freeze_count()` counts
//! them. `sys._stasis_image` is `True` in a run that started from the image (and missing otherwise): how tests
//! and the curious tell the two apart.
//!
//! When the run's path configuration (prefix, stdlib, search path) would differ from the image's, or a
//! run gives `-E`, `-I`, `-P`, `-S`, `-u`, `-O` or `-W`, it builds its own interpreter as before. One thing
//! stays from the image: the secret `str` hashes are salted with, the same for every run of the image, as
//! with a fixed `PYTHONHASHSEED` (a new image, one per machine and module, has a new one).

use std::cell::RefCell;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustpython::InterpreterBuilderExt;
use rustpython::vm::builtins::PyBaseExceptionRef;
use rustpython::vm::compiler::Mode;
use rustpython::vm::scope::Scope;
use rustpython::vm::{
    AsObject as _, Interpreter, InterpreterBuilder, PyObjectRef, PyResult, Settings, VirtualMachine,
};

/// The largest program source read from a file or stdin (64 MiB): a bound far above any real script, so
/// a huge file is refused with a message instead of exhausting the instance's memory.
const MAX_SOURCE_BYTES: u64 = 64 << 20;

/// The recursion limit, as the cells' driver sets it (see `driver.py`): deeper Python recursion would
/// overflow wasmtime's native stack and trap, where under it a `RecursionError` can be caught.
const RECURSION_LIMIT: usize = 200;

/// CPython's one-line usage, printed with a usage error.
const USAGE: &str = "usage: {PROG} [option] ... [-c cmd | -m mod | file | -] [arg] ...";

/// Set once a program has started in this process (see the module documentation).
static STARTED: AtomicBool = AtomicBool::new(false);

/// Whether this process has run (or is running) a program, so it must not serve cells.
pub(crate) fn started() -> bool {
    STARTED.load(Ordering::Relaxed)
}

thread_local! {
    /// The interpreter [`preinit`] built for a run with the default options, until a run takes it.
    static PREBUILT: RefCell<Option<Interpreter>> = const { RefCell::new(None) };
}

/// The `preinit` handler: builds the interpreter a run with the default options starts from, and runs the
/// start CPython makes before any program (see the module documentation).
pub(crate) fn preinit() -> Result<(), String> {
    if crate::has_context() || started() {
        return Err("preinit runs before anything else in its process".into());
    }
    let flags = Flags::default();
    let interpreter = build(settings(&flags));
    let python_part = interpreter
        .enter(|vm| start(vm, &flags).and_then(|_| define_adopt(vm)))
        .map_err(|_| "the interpreter's start failed".to_owned())?;
    ADOPT_FN.with(|adopt| *adopt.borrow_mut() = Some(python_part));
    // What the start made lives as long as any run: the collector need not look at it again, at every
    // collection and at the end of every run (`gc.freeze()`, as a server does before it forks).
    rustpython::vm::gc_state::gc_state().freeze();
    PREBUILT.with(|prebuilt| *prebuilt.borrow_mut() = Some(interpreter));
    Ok(())
}

/// Where the program's code comes from.
#[derive(Debug)]
enum Source {
    /// `python3 FILE`: a script file, or a directory or zip file with a `__main__` module.
    File(String),
    /// `python3 -c CODE`.
    Command(String),
    /// `python3 -m MODULE`.
    Module(String),
    /// `python3 -` (`dash`) or `python3` alone: the whole program read from stdin.
    Stdin {
        /// Whether `-` was given, which makes `sys.argv[0]` `'-'` rather than `''`.
        dash: bool,
    },
}

/// The options that change how the program runs.
#[derive(Debug, Default, PartialEq, Eq)]
struct Flags {
    /// `-E` or `-I`: `PYTHONPATH` is ignored.
    ignore_environment: bool,
    /// `-I`.
    isolated: bool,
    /// `-P` (or `-I`): no directory is put in front of `sys.path`.
    safe_path: bool,
    /// `-S`: `site` is not imported.
    no_site: bool,
    /// `-u`: stdout and stderr are written through.
    unbuffered: bool,
    /// `-O`, once per letter.
    optimize: u8,
    /// `-W ARG`, in order.
    warnoptions: Vec<String>,
}

/// What the command line asks for.
#[derive(Debug)]
enum Invocation {
    /// Run a program with `args` after it (`sys.argv[1:]`).
    Run {
        /// The program's source.
        source: Source,
        /// The arguments after the source.
        args: Vec<String>,
        /// The options given before the source.
        flags: Flags,
    },
    /// `-V`/`--version`.
    Version,
    /// `-h`/`--help`.
    Help,
}

/// A command line CPython would refuse, with CPython's message (followed by the usage line).
#[derive(Debug)]
enum UsageError {
    /// An option that does not exist.
    Unknown(String),
    /// An option that takes an argument was the last word.
    MissingArgument(char),
}

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unknown(option) => write!(f, "unknown option {option}"),
            Self::MissingArgument(option) => {
                write!(f, "Argument expected for the -{option} option")
            }
        }
    }
}

/// Parses the arguments after the program name, as CPython does: options (several letters may share one
/// word, `-c`, `-m`, `-W` and `-X` take the rest of the word or the next one) up to the first word that is
/// not one, which is the script; everything after it belongs to the program.
fn parse(args: &[String]) -> Result<Invocation, UsageError> {
    let mut flags = Flags::default();
    let mut version = false;
    let mut help = false;
    let mut index = 0;
    let mut source = None;
    'words: while index < args.len() {
        let word = &args[index];
        index += 1;
        if word == "--" {
            // After `--` the next word is the script even when it looks like an option.
            if let Some(file) = args.get(index) {
                index += 1;
                source = Some(Source::File(file.clone()));
            }
            break;
        }
        if word == "-" {
            source = Some(Source::Stdin { dash: true });
            break;
        }
        if let Some(long) = word.strip_prefix("--") {
            match long {
                "version" => version = true,
                "help" => help = true,
                _ => return Err(UsageError::Unknown(word.clone())),
            }
            continue;
        }
        let Some(letters) = word.strip_prefix('-') else {
            source = Some(Source::File(word.clone()));
            break;
        };
        for (at, letter) in letters.char_indices() {
            match letter {
                'c' | 'm' | 'W' | 'X' => {
                    let rest = &letters[at + letter.len_utf8()..];
                    let value = if !rest.is_empty() {
                        rest.to_owned()
                    } else if let Some(next) = args.get(index) {
                        index += 1;
                        next.clone()
                    } else {
                        return Err(UsageError::MissingArgument(letter));
                    };
                    match letter {
                        'c' => {
                            source = Some(Source::Command(value));
                            break 'words;
                        }
                        'm' => {
                            source = Some(Source::Module(value));
                            break 'words;
                        }
                        'W' => flags.warnoptions.push(value),
                        // `-X` options tune CPython's internals (`-X importtime`, `-X dev`…): none of them
                        // has a meaning here, and refusing them would refuse working command lines.
                        _ => {}
                    }
                    continue 'words;
                }
                'E' => flags.ignore_environment = true,
                'I' => {
                    flags.isolated = true;
                    flags.ignore_environment = true;
                    flags.safe_path = true;
                }
                'P' => flags.safe_path = true,
                'S' => flags.no_site = true,
                'u' => flags.unbuffered = true,
                'O' => flags.optimize = flags.optimize.saturating_add(1),
                // No `.pyc` is ever written, there is no interactive banner, and no user site directory.
                'B' | 'q' | 's' => {}
                'V' => version = true,
                'h' | '?' => help = true,
                other => return Err(UsageError::Unknown(format!("-{other}"))),
            }
        }
    }
    if help {
        return Ok(Invocation::Help);
    }
    if version {
        return Ok(Invocation::Version);
    }
    let source = source.unwrap_or(Source::Stdin { dash: false });
    Ok(Invocation::Run {
        source,
        args: args[index..].to_vec(),
        flags,
    })
}

/// The `main` handler's program: `python3` with the process's argv.
pub(crate) fn main() -> Result<i32, String> {
    let name = stasis_guest::program::program_name("python3");
    if crate::has_context() {
        return Err(
            "this process is a code-interpreter context; a program needs a process of its own"
                .into(),
        );
    }
    if STARTED.swap(true, Ordering::Relaxed) {
        return Err("this process has already run its program".into());
    }
    let args = match stasis_guest::program::arguments() {
        Ok(args) => args,
        Err(bad) => {
            eprintln!("{name}: the argument {bad} is not valid UTF-8");
            return Ok(2);
        }
    };
    let (source, args, flags) = match parse(&args) {
        Ok(Invocation::Run {
            source,
            args,
            flags,
        }) => (source, args, flags),
        Ok(Invocation::Version) => {
            let version = rustpython::vm::version::get_version_number();
            println!("Python {version}");
            return Ok(0);
        }
        Ok(Invocation::Help) => {
            println!("{}", help_text(&name));
            return Ok(0);
        }
        Err(error) => {
            eprintln!("{error}");
            eprintln!("{}", USAGE.replace("{PROG}", &name));
            eprintln!("Try `python -h' for more information.");
            return Ok(2);
        }
    };
    Ok(run(&name, source, args, &flags))
}

/// `python3 -h`: the options this `python3` understands.
fn help_text(name: &str) -> String {
    format!(
        "{}
Options:
-c cmd : program passed in as string (terminates option list)
-E     : ignore PYTHON* environment variables (such as PYTHONPATH)
-h     : print this help message and exit (also -? or --help)
-I     : isolate Python from the user's environment (implies -E, -P and -s)
-m mod : run library module as a script (terminates option list)
-O     : remove assert and __debug__-dependent statements
-P     : don't prepend a potentially unsafe path to sys.path
-S     : don't imply 'import site' on initialization
-u     : force the stdout and stderr streams to be unbuffered
-V     : print the Python version number and exit (also --version)
-W arg : warning control; arg is action:message:category:module:lineno
-B, -q, -s, -X opt : accepted; they change nothing here
Arguments:
file   : program read from script file
-      : program read from stdin (default)
arg ...: arguments passed to program in sys.argv[1:]",
        USAGE.replace("{PROG}", name)
    )
}

/// Builds the interpreter for `source` and runs it to its exit status.
fn run(name: &str, source: Source, args: Vec<String>, flags: &Flags) -> i32 {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    // A script is found (and named in messages and tracebacks) by its absolute path, as CPython 3.9+ does.
    let script = match &source {
        Source::File(path) => Some(cwd.join(path)),
        _ => None,
    };
    let argv0 = match &source {
        Source::File(path) => path.clone(),
        Source::Command(_) => "-c".to_owned(),
        // runpy replaces it with the module's file once it is found.
        Source::Module(_) => "-m".to_owned(),
        Source::Stdin { dash: true } => "-".to_owned(),
        Source::Stdin { dash: false } => String::new(),
    };
    // CPython checks that it can read the script before it starts the interpreter.
    let file = match &script {
        Some(path) => match read_script(name, path) {
            Ok(file) => Some(file),
            Err(status) => return status,
        },
        None => None,
    };

    let mut settings = settings(flags);
    settings.argv = std::iter::once(argv0).chain(args).collect();
    if !flags.ignore_environment
        && let Ok(path) = std::env::var("PYTHONPATH")
    {
        settings.path_list = path
            .split(':')
            .filter(|entry| !entry.is_empty())
            .map(|entry| cwd.join(entry).to_string_lossy().into_owned())
            .collect();
    }
    let prebuilt = if *flags == Flags::default() {
        PREBUILT.with(|prebuilt| prebuilt.borrow_mut().take())
    } else {
        None
    };
    // An interpreter that cannot take this run's world (an error on the way is one) is dropped for a new one.
    let adopted = prebuilt.filter(|interpreter| {
        interpreter
            .enter(|vm| adopt(vm, &settings))
            .unwrap_or(false)
    });
    let from_image = adopted.is_some();
    let interpreter = match adopted {
        Some(interpreter) => interpreter,
        None => build(settings),
    };
    let status = interpreter.enter(|vm| {
        let scope = if from_image {
            // The image ran the start; the program gets a `__main__` of its own.
            vm.new_scope_with_main()
        } else {
            start(vm, flags)
        };
        let outcome = scope.and_then(|scope| match &source {
            Source::File(_) => match (&script, file) {
                (Some(path), Some(file)) => run_file(vm, scope, path, file, flags),
                _ => Ok(()),
            },
            Source::Command(code) => {
                prepend_path(vm, flags, "")?;
                run_source(vm, scope, code, "<string>")
            }
            Source::Module(module) => {
                prepend_path(vm, flags, &cwd.to_string_lossy())?;
                run_module(vm, module)
            }
            Source::Stdin { .. } => {
                prepend_path(vm, flags, "")?;
                let code = read_stdin(vm)?;
                run_source(vm, scope, &code, "<stdin>")
            }
        });
        match outcome {
            Ok(()) => 0,
            Err(error) => exit_status(vm, error),
        }
    });
    finalize(interpreter);
    status
}

/// The end of the run, as CPython's: flushes the standard streams, waits for the threads `threading`
/// started, runs the `atexit` functions, then tears the modules down (which runs the `__del__` methods and
/// closes the files the program left open) and flushes again.
///
/// RustPython's own `Interpreter::finalize` does the same, but imports `threading` to wait for its threads
/// when the program never imported it — most of the time of a short program. CPython only looks for it
/// among the modules already imported, and so does this.
fn finalize(interpreter: Interpreter) {
    interpreter.enter(|vm| {
        let flush = || {
            for name in ["stdout", "stderr"] {
                if let Ok(stream) = vm.sys_module.get_attr(name, vm)
                    && !vm.is_none(&stream)
                {
                    let closed = stream
                        .get_attr("closed", vm)
                        .and_then(|closed| closed.try_to_bool(vm))
                        .unwrap_or(true);
                    if !closed && let Err(error) = vm.call_method(&stream, "flush", ()) {
                        if name == "stdout" {
                            vm.run_unraisable(error, None, stream);
                        }
                    }
                }
            }
        };
        flush();
        let threading = vm
            .sys_module
            .get_attr("modules", vm)
            .and_then(|modules| modules.get_item("threading", vm))
            .ok()
            .filter(|module| !vm.is_none(module));
        if let Some(threading) = threading
            && let Ok(shutdown) = threading.get_attr("_shutdown", vm)
            && let Err(error) = shutdown.call((), vm)
        {
            vm.run_unraisable(
                error,
                Some("Exception ignored in threading shutdown".to_owned()),
                threading,
            );
        }
        rustpython::vm::stdlib::atexit::_run_exitfuncs(vm);
        vm.state
            .finalizing
            .store(true, std::sync::atomic::Ordering::Release);
        rustpython::vm::gc_state::gc_state().collect_force(2);
        vm.finalize_modules();
        flush();
    });
}

/// The interpreter's settings for a run with `flags`, before its argv and `PYTHONPATH`.
fn settings(flags: &Flags) -> Settings {
    let mut settings = Settings::default();
    // A program of the sandbox: no signal handlers (WASI has none), no `.pyc` files written into it.
    settings.install_signal_handlers = false;
    settings.write_bytecode = false;
    settings.ignore_environment = flags.ignore_environment;
    settings.isolated = flags.isolated;
    settings.safe_path = flags.safe_path;
    settings.import_site = !flags.no_site;
    settings.buffered_stdio = !flags.unbuffered;
    settings.optimize = flags.optimize;
    settings.user_site_directory = false;
    settings.warnoptions = flags.warnoptions.clone();
    settings
}

/// An interpreter with `settings` and the standard library.
fn build(settings: Settings) -> Interpreter {
    InterpreterBuilder::new()
        .settings(settings)
        .init_stdlib()
        .interpreter()
}

/// The part of [`adopt`] written in Python, compiled into the image by [`preinit`] (compiling it on every
/// run would cost as much as running it). `_adopt()`:
///
/// - makes the standard streams again over this run's fds, as a fresh start's are (`make_stdio` in
///   RustPython's start, for buffered stdio and the default encoding);
/// - empties what the import system cached of the image's file system: the finder of each `sys.path`
///   entry, with its directory listing or the note that the directory was missing
///   (`importlib.invalidate_caches` would also import `importlib.metadata`, which a fresh start has not);
/// - has `site` look for site-packages directories (and their `.pth` files) and `sitecustomize` in this
///   run's files: in the neutral root it found none.
const ADOPT: &str = r#"
def _adopt():
    import sys, _io, site
    def stdio(name, fd, write):
        buf = _io.open(fd, "wb" if write else "rb", buffering=-1, closefd=False)
        raw = buf.raw
        raw.name = "<%s>" % name
        line = raw.isatty() or fd == 2
        errors = "backslashreplace" if fd == 2 else "surrogateescape"
        stream = _io.TextIOWrapper(buf, None, errors, "\n", line, False)
        stream.mode = "w" if write else "r"
        return stream
    for name, fd, write in (("stdin", 0, False), ("stdout", 1, True), ("stderr", 2, True)):
        stream = stdio(name, fd, write)
        setattr(sys, "__%s__" % name, stream)
        setattr(sys, name, stream)
    sys.path_importer_cache.clear()
    site.addsitepackages(site.removeduppaths())
    site.execsitecustomize()
    sys._stasis_image = True
"#;

thread_local! {
    /// `_adopt` of [`ADOPT`], made by [`preinit`].
    static ADOPT_FN: RefCell<Option<PyObjectRef>> = const { RefCell::new(None) };
}

/// Brings this run's world into the interpreter [`preinit`] built (see the module documentation), whose
/// settings are those of a run with the default options but `settings`' argv and `PYTHONPATH`. `false`
/// when the run's path configuration is not the image's: the run then needs an interpreter of its own.
fn adopt(vm: &VirtualMachine, settings: &Settings) -> PyResult<bool> {
    // The path configuration depends on argv[0] and on files (a `pyvenv.cfg`), so it is worked out again,
    // for the image's settings, in this run's world. (`stdlib_dir` is not: the frozen standard library's
    // start hook sets it whatever the world.)
    let image = &vm.state.config.paths;
    let run = rustpython::vm::getpath::init_path_config(&vm.state.config.settings);
    let same = run.prefix == image.prefix
        && run.base_prefix == image.base_prefix
        && run.exec_prefix == image.exec_prefix
        && run.base_exec_prefix == image.base_exec_prefix
        && run.module_search_paths == image.module_search_paths;
    if !same {
        return Ok(false);
    }
    let sys = &vm.sys_module;
    let strings = |items: &mut dyn Iterator<Item = String>| -> PyObjectRef {
        vm.ctx
            .new_list(items.map(|item| vm.ctx.new_str(item).into()).collect())
            .into()
    };
    sys.set_attr("executable", vm.ctx.new_str(run.executable), vm)?;
    sys.set_attr("_base_executable", vm.ctx.new_str(run.base_executable), vm)?;
    sys.set_attr("argv", strings(&mut settings.argv.iter().cloned()), vm)?;
    sys.set_attr(
        "orig_argv",
        strings(&mut std::env::args_os().map(|arg| arg.to_string_lossy().into_owned())),
        vm,
    )?;
    // `PYTHONPATH` comes first, as in the search path a fresh start computes.
    let path = sys.get_attr("path", vm)?;
    for (at, entry) in settings.path_list.iter().enumerate() {
        vm.call_method(&path, "insert", (at, entry.as_str()))?;
    }
    // `os.environ` (and `os.environb`) wrap this very dict on POSIX.
    let environ = vm.import("posix", 0)?.get_attr("environ", vm)?;
    vm.call_method(&environ, "clear", ())?;
    for (key, value) in std::env::vars_os() {
        // On WASI an OS string's encoded bytes are its bytes, as `posix` itself reads them.
        let key = vm.ctx.new_bytes(key.into_encoded_bytes());
        let value = vm.ctx.new_bytes(value.into_encoded_bytes());
        environ.set_item(key.as_object(), value.into(), vm)?;
    }
    let Some(python_part) = ADOPT_FN.with(|adopt| adopt.borrow_mut().take()) else {
        return Ok(false);
    };
    python_part.call((), vm)?;
    Ok(true)
}

/// Defines [`ADOPT`]'s `_adopt` in a namespace of its own and returns it.
fn define_adopt(vm: &VirtualMachine) -> PyResult<PyObjectRef> {
    let compiled = vm
        .compile(ADOPT, Mode::Exec, "<stasis-adopt>".to_owned())
        .map_err(|error| vm.new_syntax_error(&error, Some(ADOPT)))?;
    let scope = vm.new_scope_with_builtins();
    vm.run_code_obj(compiled, scope.clone())?;
    scope.globals.get_item("_adopt", vm)
}

/// What the interpreter does before the program, as CPython's start: the recursion limit, `warnings` (to
/// apply `-W`), `site`, and a `__main__` module for the program.
fn start(vm: &VirtualMachine, flags: &Flags) -> PyResult<Scope> {
    vm.sys_module
        .get_attr("setrecursionlimit", vm)?
        .call((RECURSION_LIMIT,), vm)?;
    let scope = vm.new_scope_with_main()?;
    vm.import("warnings", 0)?;
    if !flags.no_site {
        // CPython imports `site` at start (unless `-S`); what it sets up is part of the program's world.
        vm.import("site", 0)?;
    }
    Ok(scope)
}

/// Puts `dir` in front of `sys.path` (the script's directory, the working directory for `-m`, `''` for `-c`
/// and stdin), unless `-P` or `-I` said not to.
fn prepend_path(vm: &VirtualMachine, flags: &Flags, dir: &str) -> PyResult<()> {
    if flags.safe_path {
        return Ok(());
    }
    vm.insert_sys_path(vm.new_pyobj(dir))
}

/// A script given on the command line, once it is known to be readable.
enum Script {
    /// A source file, read.
    Source(Vec<u8>),
    /// A directory: its `__main__` module is run.
    Directory,
}

/// Reads the script at `path`, or prints CPython's message for one that cannot be opened and returns its
/// status (2), or 1 for a directory without a `__main__` module.
fn read_script(name: &str, path: &Path) -> Result<Script, i32> {
    let shown = path.display();
    let cannot_open = |error: std::io::Error| {
        eprintln!(
            "{name}: can't open file '{shown}': {}",
            describe_io_error(&error)
        );
        2
    };
    let metadata = std::fs::metadata(path).map_err(cannot_open)?;
    if metadata.is_dir() {
        if path.join("__main__.py").is_file() {
            return Ok(Script::Directory);
        }
        eprintln!("{name}: can't find '__main__' module in '{shown}'");
        return Err(1);
    }
    if metadata.len() > MAX_SOURCE_BYTES {
        eprintln!(
            "{name}: can't open file '{shown}': it is {} bytes, more than the {} MiB a program may be",
            metadata.len(),
            MAX_SOURCE_BYTES >> 20
        );
        return Err(2);
    }
    let mut source = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_SOURCE_BYTES + 1).read_to_end(&mut source))
        .map_err(cannot_open)?;
    if source.len() as u64 > MAX_SOURCE_BYTES {
        eprintln!(
            "{name}: can't open file '{shown}': it is more than the {} MiB a program may be",
            MAX_SOURCE_BYTES >> 20
        );
        return Err(2);
    }
    Ok(Script::Source(source))
}

/// `[Errno N] message` as CPython prints an `OSError`, with the errno numbers of Linux that CPython's users
/// know (WASI numbers its errors differently) for the errors opening a script meets.
fn describe_io_error(error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let (errno, message) = match error.kind() {
        ErrorKind::NotFound => (2, "No such file or directory"),
        ErrorKind::PermissionDenied => (13, "Permission denied"),
        ErrorKind::NotADirectory => (20, "Not a directory"),
        ErrorKind::IsADirectory => (21, "Is a directory"),
        ErrorKind::InvalidFilename => (36, "File name too long"),
        _ => return error.to_string(),
    };
    format!("[Errno {errno}] {message}")
}

/// Runs a script file (or a directory's `__main__`) as `__main__`, with its directory first on `sys.path`.
fn run_file(
    vm: &VirtualMachine,
    scope: Scope,
    path: &Path,
    script: Script,
    flags: &Flags,
) -> PyResult<()> {
    let shown = path.to_string_lossy();
    match script {
        Script::Directory => {
            prepend_path(vm, flags, &shown)?;
            run_module(vm, "__main__")
        }
        Script::Source(bytes) => {
            let dir = path
                .parent()
                .map_or_else(String::new, |dir| dir.to_string_lossy().into_owned());
            prepend_path(vm, flags, &dir)?;
            let code = decode(vm, bytes, &shown)?;
            scope
                .globals
                .set_item("__file__", vm.ctx.new_str(shown.as_ref()).into(), vm)?;
            scope.globals.set_item("__cached__", vm.ctx.none(), vm)?;
            run_source(vm, scope, &code, &shown)
        }
    }
}

/// The text of a program's source, or the `SyntaxError` CPython raises for source that is not UTF-8.
fn decode(vm: &VirtualMachine, bytes: Vec<u8>, filename: &str) -> PyResult<String> {
    match String::from_utf8(bytes) {
        Ok(mut text) => {
            // A UTF-8 byte order mark is allowed at the start of a source file.
            if text.starts_with('\u{feff}') {
                text.drain(..'\u{feff}'.len_utf8());
            }
            Ok(text)
        }
        Err(error) => {
            let bytes = error.as_bytes();
            let at = error.utf8_error().valid_up_to();
            let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
            Err(vm.new_exception_msg(
                vm.ctx.exceptions.syntax_error.to_owned(),
                format!(
                    "Non-UTF-8 code starting with '\\x{:02x}' in file {filename} on line {line}, but no \
                     encoding declared; see https://peps.python.org/pep-0263/ for details",
                    bytes[at]
                )
                .into(),
            ))
        }
    }
}

/// Compiles `code` as a module named `filename` and runs it in the `__main__` namespace.
fn run_source(vm: &VirtualMachine, scope: Scope, code: &str, filename: &str) -> PyResult<()> {
    let compiled = vm
        .compile(code, Mode::Exec, filename.to_owned())
        .map_err(|error| vm.new_syntax_error(&error, Some(code)))?;
    vm.run_code_obj(compiled, scope).map(drop)
}

/// `python3 -m MODULE`: runs the module as `__main__` with runpy, as CPython does (which also sets
/// `sys.argv[0]` to the module's file and reports a module that cannot be found).
fn run_module(vm: &VirtualMachine, module: &str) -> PyResult<()> {
    let runpy = vm.import("runpy", 0)?;
    runpy
        .get_attr("_run_module_as_main", vm)?
        .call((module, true), vm)
        .map(drop)
}

/// The whole of stdin as a program's text, at most [`MAX_SOURCE_BYTES`]. As in CPython, the program then
/// finds stdin at its end.
fn read_stdin(vm: &VirtualMachine) -> PyResult<String> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_SOURCE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| vm.new_os_error(format!("reading the program from stdin: {error}")))?;
    if bytes.len() as u64 > MAX_SOURCE_BYTES {
        return Err(vm.new_os_error(format!(
            "the program on stdin is more than the {} MiB a program may be",
            MAX_SOURCE_BYTES >> 20
        )));
    }
    decode(vm, bytes, "<stdin>")
}

/// The exit status of a program that ended with `error`, having printed what CPython prints for it:
/// `SystemExit`'s code (its message on stderr for a non-integer), 130 for `KeyboardInterrupt` (128 + SIGINT,
/// as a shell sees a Python killed by Ctrl-C), 1 with the traceback for any other exception.
fn exit_status(vm: &VirtualMachine, error: PyBaseExceptionRef) -> i32 {
    if error.fast_isinstance(vm.ctx.exceptions.keyboard_interrupt) {
        vm.print_exception(error);
        return 130;
    }
    // An integer code beyond 32 bits comes back as -1, as in CPython.
    vm.handle_exit_exception(error) as i32
}
