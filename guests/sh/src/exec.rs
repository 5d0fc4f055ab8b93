//! The executor: shell state (variables, working directory, last status) and the AST walk.
//!
//! Builtins run in-process and pipeline stages run one after another through in-memory buffers; a
//! command that is not a builtin or a function is a program the host starts as a child process
//! ([`crate::external`]), its streams wired to the stage's. Paths are resolved against `root`, the
//! directory that plays `/`; in the wasm build that is the real `/`, in native tests a temporary directory.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::BufWriter;
#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;

use crate::builtins;
use crate::expand;
use crate::io::{Input, Io, Sink, errmsg};
use crate::lexer::RedirOp;
use crate::parser::{AndOr, Command, Connector, List, MAX_DEPTH, Pipeline, Redir, Simple, parse};

/// Bytes written to an in-memory sink, shared with the sink.
#[cfg(test)]
pub type Captured = std::rc::Rc<std::cell::RefCell<Vec<u8>>>;

/// A shell variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Var {
    /// Its value.
    pub value: String,
    /// Whether `env` and child commands see it.
    pub exported: bool,
}

/// A pending change of control flow requested by `break`, `continue` or `return`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Leave this many enclosing loops.
    Break(usize),
    /// Skip to the next iteration of the n-th enclosing loop.
    Continue(usize),
    /// Leave the current function.
    Return,
}

/// The interpreter state.
#[derive(Clone)]
pub struct Shell {
    /// The host directory that the shell presents as `/`.
    pub root: PathBuf,
    /// The logical working directory, always absolute and normalised (`/tmp`).
    pub cwd: String,
    /// Shell variables.
    pub vars: BTreeMap<String, Var>,
    /// `$?`.
    pub status: i32,
    /// `$0`, `$1`, ...
    pub args: Vec<String>,
    /// The shell's own standard streams.
    pub stdin: Input,
    /// The shell's stdout.
    pub out: Sink,
    /// The shell's stderr.
    pub err: Sink,
    /// Set by `exit`: stop executing and return this status.
    pub exit: Option<i32>,
    /// `set -e`.
    pub errexit: bool,
    /// Set by `break`/`continue`/`return` until the enclosing loop or function handles it.
    pub flow: Option<Flow>,
    /// How many loops enclose the running command (for `break`/`continue`).
    pub loop_depth: usize,
    /// How many function calls are active (for `return`).
    pub func_depth: usize,
    /// The command registered with `trap CMD EXIT`.
    pub exit_trap: Option<String>,
    /// Defined functions.
    pub functions: BTreeMap<String, std::rc::Rc<Command>>,
    /// `set -o pipefail`.
    pub pipefail: bool,
    depth: usize,
    /// Status of the last command substitution of the command being expanded.
    subst_status: Option<i32>,
    /// Set when an expansion of the current command failed (`$((1/0))`).
    expansion_failed: bool,
    /// Non-zero while running the condition of `if`/`while`/`&&`/`||`, where `set -e` does not apply.
    in_condition: usize,
    /// Programs started in the background (`&`) and not waited for yet.
    pub jobs: Vec<u32>,
    /// `$!`: the pid of the last program started in the background.
    pub last_background: Option<u32>,
}

/// Normalises an absolute path lexically: removes `.`, empty components and `..` (never above `/`).
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

impl Shell {
    /// A shell rooted at `root` whose working directory is `cwd` (a logical path).
    pub fn new(
        root: PathBuf,
        cwd: &str,
        env: impl IntoIterator<Item = (String, String)>,
        io: Io,
    ) -> Shell {
        let vars = env
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    Var {
                        value: v,
                        exported: true,
                    },
                )
            })
            .collect();
        let mut sh = Shell {
            root,
            cwd: normalize(cwd),
            vars,
            status: 0,
            args: vec!["sh".into()],
            stdin: io.stdin,
            out: io.out,
            err: io.err,
            exit: None,
            errexit: false,
            flow: None,
            loop_depth: 0,
            func_depth: 0,
            functions: BTreeMap::new(),
            exit_trap: None,
            pipefail: false,
            depth: 0,
            subst_status: None,
            expansion_failed: false,
            in_condition: 0,
            jobs: Vec::new(),
            last_background: None,
        };
        let cwd = sh.cwd.clone();
        sh.export_var("PWD", &cwd);
        sh
    }

    /// A shell rooted at `root` with fixed variables and in-memory streams, for tests:
    /// returns the shell plus its stdout and stderr buffers.
    #[cfg(test)]
    pub fn for_test(root: &Path) -> (Shell, Captured, Captured) {
        let (out, ob) = Sink::buffer();
        let (err, eb) = Sink::buffer();
        let env = [("HOME", "/root"), ("PATH", "/bin"), ("USER", "user")]
            .map(|(k, v)| (k.to_string(), v.to_string()));
        let io = Io {
            stdin: Input::bytes(Vec::new()),
            out,
            err,
        };
        (Shell::new(root.to_path_buf(), "/", env, io), ob, eb)
    }

    /// The shell's own streams.
    pub fn io(&self) -> Io {
        Io {
            stdin: self.stdin.clone(),
            out: self.out.clone(),
            err: self.err.clone(),
        }
    }

    /// The logical absolute path for a path typed by the user.
    pub fn logical(&self, path: &str) -> String {
        if path.starts_with('/') {
            normalize(path)
        } else {
            normalize(&format!("{}/{}", self.cwd, path))
        }
    }

    /// The host path for a path typed by the user (absolute paths are relative to the sandbox root).
    pub fn host_path(&self, path: &str) -> PathBuf {
        let logical = self.logical(path);
        let rel = logical.trim_start_matches('/');
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    /// A variable's value, or `None` when unset.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(|v| v.value.as_str())
    }

    /// Sets a variable, keeping its export flag.
    pub fn set_var(&mut self, name: &str, value: &str) {
        match self.vars.get_mut(name) {
            Some(v) => v.value = value.to_string(),
            None => {
                self.vars.insert(
                    name.to_string(),
                    Var {
                        value: value.to_string(),
                        exported: false,
                    },
                );
            }
        }
    }

    /// Sets and exports a variable.
    pub fn export_var(&mut self, name: &str, value: &str) {
        self.vars.insert(
            name.to_string(),
            Var {
                value: value.to_string(),
                exported: true,
            },
        );
    }

    /// `$HOME`, or `/` when unset.
    pub fn home(&self) -> String {
        self.var("HOME").unwrap_or("/").to_string()
    }

    /// The value of a parameter (`$?`, `$#`, `$1`, `$NAME`); unset parameters expand to nothing.
    pub fn param(&self, name: &str) -> String {
        match name {
            "?" => self.status.to_string(),
            "#" => self.args.len().saturating_sub(1).to_string(),
            "@" | "*" => self.args.get(1..).unwrap_or_default().join(" "),
            "$" => "1".into(),
            "!" => self
                .last_background
                .map(|pid| pid.to_string())
                .unwrap_or_default(),
            "-" => String::new(),
            _ if name.chars().all(|c| c.is_ascii_digit()) => name
                .parse::<usize>()
                .ok()
                .and_then(|n| self.args.get(n))
                .cloned()
                .unwrap_or_default(),
            _ => self.var(name).unwrap_or_default().to_string(),
        }
    }

    /// Whether a parameter is set (special parameters always are).
    pub fn is_set(&self, name: &str) -> bool {
        match name.parse::<usize>() {
            Ok(n) => n < self.args.len(),
            Err(_) => !super::parser::is_name(name) || self.vars.contains_key(name),
        }
    }

    /// Records that an expansion failed: the command is not run and its status is 1, as in bash.
    pub fn fail_expansion(&mut self) {
        self.expansion_failed = true;
    }

    /// Runs `$(src)` in a copy of the shell and returns its output without trailing newlines.
    pub fn substitute(&mut self, src: &str, io: &Io) -> String {
        let (out, buf) = Sink::buffer();
        let mut sub = self.clone();
        let status = sub.run_str(
            src,
            &Io {
                stdin: io.stdin.clone(),
                out,
                err: io.err.clone(),
            },
        );
        self.subst_status = Some(status);
        let mut s = String::from_utf8_lossy(&buf.borrow()).into_owned();
        while s.ends_with('\n') {
            s.pop();
        }
        s
    }

    /// Parses and runs a command line with the given streams, returning its status.
    pub fn run_str(&mut self, src: &str, io: &Io) -> i32 {
        if self.depth > MAX_DEPTH {
            io.eprintln("sh: maximum nesting depth exceeded");
            return 2;
        }
        match parse(src) {
            Ok(list) => {
                self.depth += 1;
                let status = self.run_list(&list, io);
                self.depth -= 1;
                status
            }
            Err(e) => {
                io.eprintln(&format!("sh: {e}"));
                self.status = 2;
                2
            }
        }
    }

    /// Runs a command line with the shell's own streams; this is what `sh -c` does.
    pub fn run_main(&mut self, src: &str) -> i32 {
        let io = self.io();
        let status = self.run_str(src, &io);
        let status = self.exit.unwrap_or(status);
        self.finish(status)
    }

    /// Ends the shell with `status`: `trap CMD EXIT` runs once, and its own status does not count.
    pub fn finish(&mut self, status: i32) -> i32 {
        if let Some(trap) = self.exit_trap.take() {
            self.exit = None;
            self.flow = None;
            let io = self.io();
            self.run_str(&trap, &io);
        }
        status
    }

    fn run_list(&mut self, list: &List, io: &Io) -> i32 {
        for ao in list {
            if self.stopped() {
                if crate::tty::interrupted() {
                    self.status = crate::tty::INTERRUPT_STATUS;
                }
                break;
            }
            let (status, exempt) = if ao.background {
                (self.run_background(ao, io), true)
            } else {
                self.run_and_or(ao, io)
            };
            self.status = status;
            if self.errexit
                && status != 0
                && !exempt
                && self.in_condition == 0
                && self.exit.is_none()
            {
                self.exit = Some(status);
            }
        }
        self.status
    }

    /// Runs `cmd &`: a program (a simple command naming no builtin or function, its output the shell's own
    /// streams) is started and not waited for — its pid is `$!` and `wait` reaps it; anything else runs
    /// in the foreground, as before programs could be started.
    fn run_background(&mut self, ao: &AndOr, io: &Io) -> i32 {
        if let ([], [Command::Simple(s)], false) = (
            ao.rest.as_slice(),
            ao.first.cmds.as_slice(),
            ao.first.negate,
        ) && s.assigns.is_empty()
            && s.redirs.is_empty()
            && crate::external::can_start_in_background(io)
        {
            let argv = expand::words(self, &s.words, io);
            if let Some(name) = argv.first()
                && !self.functions.contains_key(name)
                && builtins::lookup(name).is_none()
            {
                return match crate::external::start_in_background(self, &argv, io) {
                    Ok(pid) => {
                        self.jobs.push(pid);
                        self.last_background = Some(pid);
                        0
                    }
                    Err(status) => status,
                };
            }
        }
        self.run_and_or(ao, io).0
    }

    /// Runs `a && b || c`; also says whether the status is exempt from `set -e` because it came from a
    /// pipeline other than the last one (`false && x` does not stop a `set -e` script, as in bash).
    fn run_and_or(&mut self, ao: &AndOr, io: &Io) -> (i32, bool) {
        let n = ao.rest.len();
        self.in_condition += usize::from(n > 0);
        let mut status = self.run_pipeline(&ao.first, io);
        self.in_condition -= usize::from(n > 0);
        let mut last_ran = n == 0;
        for (i, (conn, p)) in ao.rest.iter().enumerate() {
            if self.stopped() {
                break;
            }
            let is_last = i + 1 == n;
            let run = match conn {
                Connector::And => status == 0,
                Connector::Or => status != 0,
            };
            if run {
                self.status = status;
                self.in_condition += usize::from(!is_last);
                status = self.run_pipeline(p, io);
                self.in_condition -= usize::from(!is_last);
                last_ran = is_last;
            }
        }
        (status, !last_ran)
    }

    fn run_pipeline(&mut self, p: &Pipeline, io: &Io) -> i32 {
        let status = if p.cmds.len() == 1 {
            self.run_command(&p.cmds[0], io)
        } else {
            let mut input = io.stdin.clone();
            // Each stage's status, or the pid of a program started to stream into the next stage.
            let mut stages: Vec<Result<i32, u32>> = Vec::with_capacity(p.cmds.len());
            for (i, cmd) in p.cmds.iter().enumerate() {
                let last = i + 1 == p.cmds.len();
                if !last && let Some((started, next)) = self.start_stage(cmd, &input, io) {
                    stages.push(started);
                    input = next;
                    continue;
                }
                let (out, buf) = if last {
                    (io.out.clone(), None)
                } else {
                    let (s, b) = Sink::buffer();
                    (s, Some(b))
                };
                // Each stage is a subshell in bash: `exit` or `cd` inside it does not affect the shell.
                let mut stage = self.clone();
                stages.push(Ok(stage.run_command(
                    cmd,
                    &Io {
                        stdin: input.clone(),
                        out,
                        err: io.err.clone(),
                    },
                )));
                if let Some(b) = buf {
                    input = Input::bytes(std::mem::take(&mut *b.borrow_mut()));
                }
            }
            // The last reader is done: programs still writing see a broken pipe, and end.
            drop(input);
            let statuses: Vec<i32> = stages
                .into_iter()
                .map(|stage| stage.unwrap_or_else(crate::external::reap))
                .collect();
            let status = statuses.last().copied().unwrap_or(0);
            let failed = statuses
                .iter()
                .rev()
                .copied()
                .find(|&s| s != 0)
                .unwrap_or(0);
            if self.pipefail && status == 0 {
                failed
            } else {
                status
            }
        };
        if p.negate {
            i32::from(status == 0)
        } else {
            status
        }
    }

    /// Starts pipeline stage `cmd` reading `input` without waiting for it, when it is a program (a simple
    /// command naming no builtin or function, without assignments or redirections) whose input can be
    /// handed over whole and whose stderr is the shell's own: the next stage reads its output as it is
    /// written (a program directly, a builtin through a pipe it reads), so `yes | head` ends when `head`
    /// does. Returns the stage (its pid, or the status of a start that failed) and the next stage's input;
    /// `None` leaves the stage to run to its end first.
    fn start_stage(
        &mut self,
        cmd: &Command,
        input: &Input,
        io: &Io,
    ) -> Option<(Result<i32, u32>, Input)> {
        let Command::Simple(s) = cmd else { return None };
        let name = s.words.first()?.plain()?;
        if !s.assigns.is_empty()
            || !s.redirs.is_empty()
            || self.functions.contains_key(name)
            || builtins::lookup(name).is_some()
            || name == "[["
        {
            return None;
        }
        let argv = expand::words(self, &s.words, io);
        if std::mem::take(&mut self.expansion_failed) || argv.is_empty() {
            return None;
        }
        crate::external::start_stage(self, &argv, input, io)
    }

    fn run_command(&mut self, cmd: &Command, io: &Io) -> i32 {
        if self.depth > MAX_DEPTH {
            io.eprintln("sh: maximum nesting depth exceeded");
            return 2;
        }
        self.depth += 1;
        let status = match cmd {
            Command::Simple(s) => self.run_simple(s, io),
            Command::Subshell(list, redirs) => match self.redirect(redirs, io) {
                Ok(io) => {
                    let mut sub = self.clone();
                    sub.run_list(list, &io);
                    sub.exit.unwrap_or(sub.status)
                }
                Err(s) => s,
            },
            Command::Group(list, redirs) => match self.redirect(redirs, io) {
                Ok(io) => self.run_list(list, &io),
                Err(s) => s,
            },
            Command::If {
                arms,
                otherwise,
                redirs,
            } => match self.redirect(redirs, io) {
                Ok(io) => self.run_if(arms, otherwise.as_ref(), &io),
                Err(s) => s,
            },
            Command::While {
                until,
                cond,
                body,
                redirs,
            } => match self.redirect(redirs, io) {
                Ok(io) => {
                    self.loop_depth += 1;
                    let mut status = 0;
                    loop {
                        let c = self.run_cond(cond, &io);
                        if self.loop_done() || (c == 0) == *until {
                            break;
                        }
                        status = self.run_list(body, &io);
                        if self.loop_done() {
                            break;
                        }
                    }
                    self.loop_depth -= 1;
                    status
                }
                Err(s) => s,
            },
            Command::For {
                var,
                items,
                body,
                redirs,
            } => match self.redirect(redirs, io) {
                Ok(io) => {
                    let values = match items {
                        Some(ws) => expand::words(self, ws, &io),
                        None => self.args.get(1..).unwrap_or_default().to_vec(),
                    };
                    self.loop_depth += 1;
                    let mut status = 0;
                    for v in values {
                        self.set_var(var, &v);
                        status = self.run_list(body, &io);
                        if self.loop_done() {
                            break;
                        }
                    }
                    self.loop_depth -= 1;
                    status
                }
                Err(s) => s,
            },
            Command::Case { word, arms, redirs } => match self.redirect(redirs, io) {
                Ok(io) => {
                    let value = expand::single(self, word, &io);
                    let mut status = 0;
                    'arms: for (pats, body) in arms {
                        for p in pats {
                            if crate::glob::matches(&expand::pattern(self, p, &io), &value) {
                                status = self.run_list(body, &io);
                                break 'arms;
                            }
                        }
                    }
                    status
                }
                Err(s) => s,
            },
            Command::Func { name, body } => {
                self.functions.insert(name.clone(), body.clone());
                0
            }
        };
        self.depth -= 1;
        status
    }

    /// Whether execution of the current list must stop (`exit`, `break`, `continue`, `return`, or an
    /// interrupt, which unwinds every loop and function up to whoever takes it).
    fn stopped(&self) -> bool {
        self.exit.is_some() || self.flow.is_some() || crate::tty::interrupted()
    }

    /// Consumes a pending `break`/`continue` aimed at the innermost loop; true when the loop must end.
    fn loop_done(&mut self) -> bool {
        if self.exit.is_some() || crate::tty::interrupted() {
            return true;
        }
        match self.flow {
            None => false,
            Some(Flow::Return) => true,
            Some(Flow::Break(n)) => {
                self.flow = (n > 1).then_some(Flow::Break(n - 1));
                true
            }
            Some(Flow::Continue(n)) => {
                self.flow = (n > 1).then_some(Flow::Continue(n - 1));
                n > 1
            }
        }
    }

    fn run_cond(&mut self, cond: &List, io: &Io) -> i32 {
        self.in_condition += 1;
        let s = self.run_list(cond, io);
        self.in_condition -= 1;
        s
    }

    fn run_if(&mut self, arms: &[(List, List)], otherwise: Option<&List>, io: &Io) -> i32 {
        for (cond, body) in arms {
            let c = self.run_cond(cond, io);
            if self.exit.is_some() {
                return c;
            }
            if c == 0 {
                return self.run_list(body, io);
            }
        }
        match otherwise {
            Some(body) => self.run_list(body, io),
            None => 0,
        }
    }

    fn run_simple(&mut self, s: &Simple, io: &Io) -> i32 {
        self.subst_status = None;
        self.expansion_failed = false;
        if s.words.first().and_then(|w| w.plain()) == Some("[[") {
            // No splitting or globbing inside `[[ ]]`; right-hand sides of `==` are patterns.
            let argv: Vec<String> = s
                .words
                .iter()
                .map(|w| expand::single(self, w, io))
                .collect();
            let pats: Vec<String> = s
                .words
                .iter()
                .map(|w| expand::pattern(self, w, io))
                .collect();
            let io = match self.redirect(&s.redirs, io) {
                Ok(io) => io,
                Err(status) => return status,
            };
            return builtins::misc::cond(self, &argv, &pats, &io);
        }
        let argv = expand::words(self, &s.words, io);
        let values: Vec<(String, String)> = s
            .assigns
            .iter()
            .map(|(name, w)| (name.clone(), expand::single(self, w, io)))
            .collect();
        if std::mem::take(&mut self.expansion_failed) {
            return 1;
        }
        // `x=$(false)` has the status of the substitution, like bash.
        let subst_status = self.subst_status.unwrap_or(0);
        let io = match self.redirect(&s.redirs, io) {
            Ok(io) => io,
            Err(status) => return status,
        };
        if argv.is_empty() {
            for (name, value) in values {
                self.set_var(&name, &value);
            }
            return subst_status;
        }
        // `VAR=value cmd`: the assignment is visible to the command only.
        let saved: Vec<(String, Option<Var>)> = values
            .iter()
            .map(|(n, _)| (n.clone(), self.vars.get(n).cloned()))
            .collect();
        for (name, value) in &values {
            self.export_var(name, value);
        }
        let status = self.run_argv(&argv, &io);
        // Stream output as commands finish, so a host showing progress sees it before the script ends.
        self.out.flush();
        for (name, old) in saved {
            match old {
                Some(v) => {
                    self.vars.insert(name, v);
                }
                None => {
                    self.vars.remove(&name);
                }
            }
        }
        status
    }

    /// Runs an already expanded command (also used by `env` and `command`).
    pub fn run_argv(&mut self, argv: &[String], io: &Io) -> i32 {
        let Some(name) = argv.first() else { return 0 };
        if let Some(body) = self.functions.get(name).cloned() {
            // Positional parameters are the call's arguments for the duration of the call; $0 stays.
            let mut args = vec![self.args.first().cloned().unwrap_or_default()];
            args.extend(argv[1..].iter().cloned());
            let saved = std::mem::replace(&mut self.args, args);
            let saved_loops = std::mem::take(&mut self.loop_depth);
            self.func_depth += 1;
            let mut status = self.run_command(&body, io);
            self.func_depth -= 1;
            self.loop_depth = saved_loops;
            self.args = saved;
            if self.flow == Some(Flow::Return) {
                self.flow = None;
                status = self.status;
            }
            return status;
        }
        match builtins::lookup(name) {
            Some(f) => f(self, argv, io),
            None => crate::external::run(self, argv, io),
        }
    }

    /// Applies redirections left to right, returning the streams the command gets.
    fn redirect(&mut self, redirs: &[Redir], io: &Io) -> Result<Io, i32> {
        let mut io = io.clone();
        for r in redirs {
            match r.op {
                RedirOp::HereDoc => {
                    io.stdin = Input::bytes(expand::single(self, &r.target, &io).into_bytes());
                    continue;
                }
                RedirOp::HereString => {
                    io.stdin = Input::bytes(
                        format!("{}\n", expand::single(self, &r.target, &io)).into_bytes(),
                    );
                    continue;
                }
                _ => {}
            }
            let targets = expand::words(self, std::slice::from_ref(&r.target), &io);
            let [target] = targets.as_slice() else {
                io.eprintln(&format!("sh: {}: ambiguous redirect", targets.join(" ")));
                return Err(1);
            };
            let sink = match r.op {
                RedirOp::Dup => match target.as_str() {
                    "1" => io.out.clone(),
                    "2" => io.err.clone(),
                    "-" => Sink::null(),
                    "0" => continue,
                    _ => {
                        io.eprintln(&format!("sh: {target}: bad file descriptor"));
                        return Err(1);
                    }
                },
                RedirOp::In => {
                    let data = if target == "/dev/null" {
                        Ok(Vec::new())
                    } else {
                        std::fs::read(self.host_path(target))
                    };
                    match data {
                        Ok(bytes) => io.stdin = Input::bytes(bytes),
                        Err(e) => {
                            io.eprintln(&format!("sh: {target}: {}", errmsg(&e)));
                            return Err(1);
                        }
                    }
                    continue;
                }
                RedirOp::HereDoc | RedirOp::HereString => continue,
                RedirOp::Out | RedirOp::Append | RedirOp::All | RedirOp::AllAppend => {
                    if target == "/dev/null" {
                        Sink::null()
                    } else {
                        let append = matches!(r.op, RedirOp::Append | RedirOp::AllAppend);
                        let mut opts = OpenOptions::new();
                        opts.create(true);
                        if append {
                            opts.append(true)
                        } else {
                            opts.write(true).truncate(true)
                        };
                        match opts.open(self.host_path(target)) {
                            Ok(f) => Sink::new(BufWriter::new(f)),
                            Err(e) => {
                                let msg = if self.host_path(target).is_dir() {
                                    "Is a directory".to_string()
                                } else {
                                    errmsg(&e)
                                };
                                io.eprintln(&format!("sh: {target}: {msg}"));
                                return Err(1);
                            }
                        }
                    }
                }
            };
            match (r.op, r.fd) {
                (RedirOp::All | RedirOp::AllAppend, _) => {
                    io.out = sink.clone();
                    io.err = sink;
                }
                (_, 1) => io.out = sink,
                (_, 2) => io.err = sink,
                _ => {}
            }
        }
        Ok(io)
    }

    /// Changes the logical working directory after checking that it is a directory.
    pub fn chdir(&mut self, path: &str) -> Result<(), String> {
        let logical = self.logical(path);
        match std::fs::metadata(self.host_path(&logical)) {
            Ok(m) if m.is_dir() => {
                let old = std::mem::replace(&mut self.cwd, logical.clone());
                self.export_var("OLDPWD", &old);
                self.export_var("PWD", &logical);
                Ok(())
            }
            Ok(_) => Err("Not a directory".into()),
            Err(e) => Err(errmsg(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_never_leaves_the_root() {
        assert_eq!(normalize("/a/./b/../c/"), "/a/c");
        assert_eq!(normalize("/../../x"), "/x");
        assert_eq!(normalize("/"), "/");
    }

    #[test]
    fn host_paths_are_inside_the_root() {
        let (mut sh, _, _) = Shell::for_test(Path::new("/r"));
        assert_eq!(sh.host_path("/tmp/x"), PathBuf::from("/r/tmp/x"));
        sh.cwd = "/tmp".into();
        assert_eq!(sh.host_path("../../etc"), PathBuf::from("/r/etc"));
        assert_eq!(sh.host_path("."), PathBuf::from("/r/tmp"));
    }
}
