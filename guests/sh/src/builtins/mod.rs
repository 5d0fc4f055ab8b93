//! The utilities the shell runs in-process, since a wasm sandbox has no other programs to execute.
//!
//! Each group lives in its own module; this one holds the name → function table and small helpers shared by
//! the utilities (flag parsing, reading operands).

use crate::exec::Shell;
use crate::io::{Io, errmsg};

pub mod env;
pub mod find;
pub mod fs;
pub mod misc;
pub mod sed;
pub mod text;

/// A builtin: gets the shell, the full argv (argv[0] is the command name) and its streams; returns a status.
pub type Builtin = fn(&mut Shell, &[String], &Io) -> i32;

const TABLE: &[(&str, Builtin)] = &[
    (".", misc::source),
    (":", misc::true_),
    ("[", misc::test),
    ("base64", text::base64),
    ("basename", misc::basename),
    ("break", env::break_),
    ("cat", fs::cat),
    ("cd", env::cd),
    ("command", misc::command),
    ("continue", env::continue_),
    ("chmod", misc::chmod),
    ("cp", fs::cp),
    ("cut", find::cut),
    ("date", misc::date),
    ("dirname", misc::dirname),
    ("du", fs::du),
    ("echo", text::echo),
    ("env", env::env),
    ("eval", misc::eval),
    ("exec", misc::exec),
    ("exit", misc::exit),
    ("export", env::export),
    ("false", misc::false_),
    ("find", find::find),
    ("grep", text::grep),
    ("head", text::head),
    ("hostname", misc::hostname),
    ("kill", misc::kill),
    ("local", env::local),
    ("ls", fs::ls),
    ("mkdir", fs::mkdir),
    ("mktemp", fs::mktemp),
    ("mv", fs::mv),
    ("printenv", env::printenv),
    ("printf", text::printf),
    ("pwd", env::pwd),
    ("realpath", misc::realpath),
    ("read", env::read),
    ("return", env::return_),
    ("rm", fs::rm),
    ("rmdir", fs::rmdir),
    ("sed", sed::sed),
    ("seq", misc::seq),
    ("set", env::set),
    ("shift", env::shift),
    ("sleep", misc::sleep),
    ("sort", text::sort),
    ("source", misc::source),
    ("tac", text::tac),
    ("tail", text::tail),
    ("tee", text::tee),
    ("test", misc::test),
    ("touch", fs::touch),
    ("tr", text::tr),
    ("trap", env::trap),
    ("true", misc::true_),
    ("type", misc::type_),
    ("umask", misc::true_),
    ("uname", misc::uname),
    ("uniq", text::uniq),
    ("unset", env::unset),
    ("wc", text::wc),
    ("wait", misc::wait),
    ("which", misc::which),
    ("whoami", misc::whoami),
    ("xargs", find::xargs),
];

/// The builtin called `name`, if any.
pub fn lookup(name: &str) -> Option<Builtin> {
    TABLE.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// Command-line flags and operands of a utility: single-letter flags may be combined (`-rf`), `--` ends them.
pub struct Args {
    /// The flag letters seen, in order.
    pub flags: Vec<char>,
    /// The operands.
    pub operands: Vec<String>,
}

impl Args {
    /// Whether flag `c` was given.
    pub fn has(&self, c: char) -> bool {
        self.flags.contains(&c)
    }
}

/// Splits argv (without argv[0]) into flags and operands, rejecting letters not in `allowed` with the
/// coreutils message `NAME: invalid option -- 'x'`.
pub fn parse_flags(name: &str, argv: &[String], allowed: &str, io: &Io) -> Result<Args, i32> {
    let mut a = Args {
        flags: Vec::new(),
        operands: Vec::new(),
    };
    let mut rest = argv.iter().skip(1);
    for arg in rest.by_ref() {
        if arg == "--" {
            break;
        }
        if arg.len() > 1 && arg.starts_with('-') && a.operands.is_empty() {
            for c in arg.chars().skip(1) {
                if !allowed.contains(c) {
                    io.eprintln(&format!("{name}: invalid option -- '{c}'"));
                    io.eprintln(&format!("Try '{name} --help' for more information."));
                    return Err(if name == "ls" { 2 } else { 1 });
                }
                a.flags.push(c);
            }
        } else {
            a.operands.push(arg.clone());
        }
    }
    a.operands.extend(rest.cloned());
    Ok(a)
}

/// Prints `NAME: missing operand` plus the usual hint, returning status 1.
pub fn missing_operand(name: &str, io: &Io) -> i32 {
    io.eprintln(&format!("{name}: missing operand"));
    io.eprintln(&format!("Try '{name} --help' for more information."));
    1
}

/// Reads an operand: `-` is stdin, otherwise a file. Errors come back as strerror text.
pub fn read_input(sh: &Shell, path: &str, io: &Io) -> Result<Vec<u8>, String> {
    if path == "-" {
        return Ok(io.stdin.read_all());
    }
    // The sandbox has no /dev, but scripts read /dev/null to mean "nothing".
    if path == "/dev/null" {
        return Ok(Vec::new());
    }
    let host = sh.host_path(path);
    if host.is_dir() {
        return Err("Is a directory".into());
    }
    std::fs::read(host).map_err(|e| errmsg(&e))
}

/// Splits text into lines without their terminators (a final newline does not make an empty line).
pub fn lines(data: &[u8]) -> Vec<String> {
    let s = String::from_utf8_lossy(data);
    let mut v: Vec<String> = s.split('\n').map(str::to_string).collect();
    if v.last().is_some_and(String::is_empty) {
        v.pop();
    }
    v
}
