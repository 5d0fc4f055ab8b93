//! `sh`: the command interpreter of Stasis's `base` template, run by the host as `sh -c "CMD"`, or as
//! `sh -i` for an interactive session on the host's PTY (see [`interactive`]).
//!
//! A POSIX-style shell subset whose utilities (`ls`, `cat`, `grep`, ...) are builtins; any other command
//! is a program of the sandbox (`python3`, `node`, a registered template) that the shell starts as a
//! child process through the host (see [`external`]).

mod arith;
mod brace;
mod builtins;
#[cfg(test)]
mod cases;
mod exec;
mod expand;
mod external;
mod glob;
mod io;
mod lexer;
mod parser;
mod regex;
#[cfg(test)]
mod table;
mod tty;

use std::io::{BufRead, BufWriter, Read};
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

/// The process's stdin, flushing stdout before each read. A read cut short by an interrupt (Ctrl-C on the
/// host's PTY) ends the input and records the interrupt, so the command reading it ends and the shell
/// unwinds to its prompt.
struct FlushingStdin(Sink);

impl Read for FlushingStdin {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.flush();
        match std::io::stdin().read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                tty::note();
                Ok(0)
            }
            other => other,
        }
    }
}

/// Longest command line the interactive shell accumulates (the host's line discipline bounds each line
/// already; this bounds a continuation that never completes).
const MAX_PENDING: usize = 1 << 20;

/// How a read of one line of the interactive session ended.
enum LineRead {
    /// A line, with its newline.
    Line(Vec<u8>),
    /// End of input (Ctrl-D on an empty line); bytes typed before it, if any.
    Eof(Vec<u8>),
    /// An interrupt (Ctrl-C): the line is abandoned.
    Interrupted,
}

/// Reads the next line of the session from stdin. Through the process's own buffered stdin, which the
/// commands read too, so a line typed ahead for a command (`cat`) stays for it.
fn read_line() -> LineRead {
    let stdin = std::io::stdin();
    let mut stdin = stdin.lock();
    let mut line = Vec::new();
    loop {
        let (used, done) = match stdin.fill_buf() {
            Ok([]) => return LineRead::Eof(line),
            Ok(buf) => match buf.iter().position(|&b| b == b'\n') {
                Some(n) => {
                    line.extend_from_slice(&buf[..=n]);
                    (n + 1, true)
                }
                None => {
                    line.extend_from_slice(buf);
                    (buf.len(), false)
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return LineRead::Interrupted,
            Err(_) => return LineRead::Eof(line),
        };
        stdin.consume(used);
        if done {
            return LineRead::Line(line);
        }
        if line.len() > MAX_PENDING {
            line.clear();
        }
    }
}

/// The prompt: `$PS1` (`$PS2` when continuing a command), by default `sandbox:CWD$ ` and `> `.
fn prompt(sh: &Shell, continuing: bool) -> String {
    let (name, default) = if continuing {
        ("PS2", "> ".to_owned())
    } else {
        ("PS1", format!("sandbox:{}$ ", sh.cwd))
    };
    sh.vars.get(name).map_or(default, |v| v.value.clone())
}

/// The interactive session (`sh -i` without a script): prompt, read a line, run it once it is a complete
/// command (`$PS2` while it is not), until end of input or `exit`; the status is the last command's.
///
/// The host's PTY does the line editing, the echo and the `\n` → `\r\n` of the output; this loop only
/// sees finished lines. An interrupt abandons the line being typed or the command running (status 130,
/// see [`tty`]) and prompts again; it never ends the shell.
fn interactive(sh: &mut Shell) -> i32 {
    let mut pending = String::new();
    loop {
        sh.out.flush();
        // To stderr, as bash does: unbuffered, so it is shown before the read blocks.
        sh.err.put(prompt(sh, !pending.is_empty()).as_bytes());
        let line = match read_line() {
            LineRead::Line(line) => line,
            LineRead::Interrupted => {
                tty::take();
                pending.clear();
                sh.status = tty::INTERRUPT_STATUS;
                continue;
            }
            LineRead::Eof(rest) if rest.is_empty() && pending.is_empty() => {
                sh.err.put(b"exit\n");
                break;
            }
            // Ctrl-D after some text, or in the middle of a continued command: run what there is.
            LineRead::Eof(rest) => rest,
        };
        let eof = !line.ends_with(b"\n");
        pending.push_str(&String::from_utf8_lossy(&line));
        if !eof
            && pending.len() < MAX_PENDING
            && parser::parse(&pending).is_err_and(|e| e.incomplete())
        {
            continue;
        }
        // Each command line reads stdin afresh: one that read to end of file (`cat` ended by Ctrl-D) must
        // not leave the next without input.
        sh.stdin = Input::stdin(FlushingStdin(sh.out.clone()));
        let io = sh.io();
        sh.run_str(&pending, &io);
        pending.clear();
        if tty::take() {
            sh.status = tty::INTERRUPT_STATUS;
            sh.flow = None;
        }
        if sh.exit.is_some() || eof {
            break;
        }
    }
    sh.exit.unwrap_or(sh.status)
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let mut errexit = false;
    let mut interactive_flag = false;
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
            "-i" => interactive_flag = true,
            "-l" | "--login" | "-s" | "--norc" | "--noprofile" | "-x" => {}
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
    let out = Sink::fd(BufWriter::new(std::io::stdout()), 1);
    let io = Io {
        // Output is flushed before stdin is read, so a prompt reaches whoever is to answer it.
        stdin: Input::stdin(FlushingStdin(out.clone())),
        out,
        // Unbuffered so diagnostics interleave with output the way a terminal would show them.
        err: Sink::fd(std::io::stderr(), 2),
    };
    let mut sh = Shell::new(PathBuf::from("/"), &cwd, std::env::vars(), io);
    sh.errexit = errexit;
    if script.is_none() && interactive_flag {
        let status = interactive(&mut sh);
        let status = sh.finish(status);
        sh.out.flush();
        sh.err.flush();
        std::process::exit(status);
    }
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
