//! `sh`: the command interpreter of Stasis's `base` template, run by the host as `sh -c "CMD"`.
//!
//! A POSIX-style shell subset whose utilities (`ls`, `cat`, `grep`, ...) are builtins, because a
//! wasm32-wasip1 sandbox cannot start other programs.

mod arith;
mod brace;
mod builtins;
#[cfg(test)]
mod cases;
#[cfg(test)]
mod table;
mod exec;
mod expand;
mod glob;
mod io;
mod lexer;
mod parser;
mod regex;

use std::io::{BufWriter, Read};
use std::path::PathBuf;

use exec::Shell;
use io::{Input, Io, Sink};

/// Where the command line comes from.
enum Script {
    /// `-c CMD`
    Inline(String),
    /// A script file operand.
    File(String),
}

/// The process's stdin, flushing stdout before each read.
struct FlushingStdin(Sink);

impl Read for FlushingStdin {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.flush();
        std::io::stdin().read(buf)
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let mut errexit = false;
    let mut script = None;
    let mut rest = argv.iter().skip(1);
    let mut positional = Vec::new();
    while let Some(a) = rest.next() {
        match a.as_str() {
            "-c" => {
                let Some(cmd) = rest.next() else {
                    eprintln!("sh: -c: option requires an argument");
                    std::process::exit(2);
                };
                script = Some(Script::Inline(cmd.clone()));
                break;
            }
            "-e" => errexit = true,
            "-l" | "--login" | "-i" | "-s" | "--norc" | "--noprofile" | "-x" => {}
            "--" => break,
            _ => {
                script = Some(Script::File(a.clone()));
                break;
            }
        }
    }
    positional.extend(rest.cloned());

    // The host may say where to start via PWD; otherwise `/`, the sandbox directory.
    let cwd = std::env::var("PWD")
        .ok()
        .filter(|p| p.starts_with('/') && std::path::Path::new(p).is_dir());
    let cwd = cwd.unwrap_or_else(|| "/".to_string());
    let out = Sink::new(BufWriter::new(std::io::stdout()));
    let io = Io {
        // Output is flushed before stdin is read, so a prompt reaches whoever is to answer it.
        stdin: Input::reader(FlushingStdin(out.clone())),
        out,
        // Unbuffered so diagnostics interleave with output the way a terminal would show them.
        err: Sink::new(std::io::stderr()),
    };
    let mut sh = Shell::new(PathBuf::from("/"), &cwd, std::env::vars(), io);
    sh.errexit = errexit;
    let src = match script {
        Some(Script::Inline(cmd)) => {
            // `sh -c CMD NAME ARGS...`: NAME becomes $0.
            if !positional.is_empty() {
                sh.args = positional;
            }
            cmd
        }
        Some(Script::File(path)) => {
            sh.args = std::iter::once(path.clone()).chain(positional).collect();
            match std::fs::read(sh.host_path(&path)) {
                Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                Err(e) => {
                    eprintln!("sh: {path}: {}", io::errmsg(&e));
                    std::process::exit(127);
                }
            }
        }
        None => {
            // No operands: the script is read from stdin.
            let mut s = String::new();
            let _ = std::io::stdin().read_to_string(&mut s);
            sh.stdin = Input::bytes(Vec::new());
            s
        }
    };
    let status = sh.run_main(&src);
    sh.out.flush();
    sh.err.flush();
    std::process::exit(status);
}
