//! Builtins that change or show the shell's own state: `cd`, `pwd`, `env`, `export`, `unset`, `read`, `set`,
//! `local`, and the control-flow builtins `break`, `continue`, `return`.

use crate::exec::{Flow, Shell};
use crate::io::Io;
use crate::parser::is_name;

/// `cd [DIR|-]`: no operand means `$HOME`.
pub fn cd(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let (target, print) = match argv.get(1).map(String::as_str) {
        None => (sh.home(), false),
        Some("-") => match sh.var("OLDPWD") {
            Some(old) => (old.to_string(), true),
            None => {
                io.eprintln("sh: cd: OLDPWD not set");
                return 1;
            }
        },
        Some(dir) => (dir.to_string(), false),
    };
    if argv.len() > 2 {
        io.eprintln("sh: cd: too many arguments");
        return 1;
    }
    match sh.chdir(&target) {
        Ok(()) => {
            if print {
                io.print(&format!("{}\n", sh.cwd));
            }
            0
        }
        Err(e) => {
            io.eprintln(&format!("sh: cd: {target}: {e}"));
            1
        }
    }
}

/// `pwd`
pub fn pwd(sh: &mut Shell, _argv: &[String], io: &Io) -> i32 {
    io.print(&format!("{}\n", sh.cwd));
    0
}

/// `env [-i] [NAME=VALUE]... [COMMAND ARGS...]`: prints the exported variables or runs a command with more.
pub fn env(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let mut sub = sh.clone();
    let mut i = 1;
    if argv.get(1).is_some_and(|a| a == "-i") {
        sub.vars.clear();
        i += 1;
    }
    while let Some((name, value)) = argv.get(i).and_then(|a| a.split_once('=')) {
        sub.export_var(name, value);
        i += 1;
    }
    if i < argv.len() {
        return sub.run_argv(&argv[i..], io);
    }
    for (k, v) in &sub.vars {
        if v.exported {
            io.print(&format!("{k}={}\n", v.value));
        }
    }
    0
}

/// `export [NAME[=VALUE]]...`; without operands lists exported variables like bash.
pub fn export(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let ops: Vec<&String> = argv.iter().skip(1).filter(|a| *a != "-p").collect();
    if ops.is_empty() {
        for (k, v) in &sh.vars {
            if v.exported {
                io.print(&format!(
                    "declare -x {k}=\"{}\"\n",
                    v.value.replace('\\', "\\\\").replace('"', "\\\"")
                ));
            }
        }
        return 0;
    }
    let mut status = 0;
    for op in ops {
        let (name, value) = match op.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (op.as_str(), None),
        };
        if !is_name(name) {
            io.eprintln(&format!("sh: export: `{op}': not a valid identifier"));
            status = 1;
            continue;
        }
        // `export NAME` of an unset variable does not create it (bash keeps it out of the environment).
        let Some(value) = value.or_else(|| sh.var(name).map(str::to_string)) else {
            continue;
        };
        sh.export_var(name, &value);
    }
    status
}

/// `unset NAME...`
pub fn unset(sh: &mut Shell, argv: &[String], _io: &Io) -> i32 {
    for name in argv.iter().skip(1).filter(|a| !a.starts_with('-')) {
        sh.vars.remove(name);
    }
    0
}

/// `read [-r] NAME...`: reads a line from stdin; the last name gets the rest of the line.
pub fn read(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    // Options that take a value (`-p PROMPT`, `-t SECS`, ...) must not be mistaken for variable names.
    let mut names: Vec<&String> = Vec::new();
    let mut args = argv.iter().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-p" | "-t" | "-n" | "-N" | "-d" | "-u" | "-a" => {
                args.next();
            }
            _ if a.starts_with('-') => {}
            _ => names.push(a),
        }
    }
    let Some(line) = io.stdin.read_line() else {
        for n in &names {
            sh.set_var(n, "");
        }
        return 1;
    };
    let line = String::from_utf8_lossy(&line).into_owned();
    if names.is_empty() {
        sh.set_var("REPLY", &line);
        return 0;
    }
    let mut rest = line.trim_start_matches([' ', '\t']);
    for (i, n) in names.iter().enumerate() {
        if i + 1 == names.len() {
            sh.set_var(n, rest.trim_end_matches([' ', '\t']));
        } else {
            let end = rest.find([' ', '\t']).unwrap_or(rest.len());
            sh.set_var(n, &rest[..end]);
            rest = rest[end..].trim_start_matches([' ', '\t']);
        }
    }
    0
}

/// `set [-e|+e] [-o pipefail] [-x]...`: only the options that change how scripts behave are honoured.
pub fn set(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let mut args = argv.iter().skip(1);
    while let Some(a) = args.next() {
        let on = a.starts_with('-');
        if a == "-o" || a == "+o" {
            match args.next().map(String::as_str) {
                Some("pipefail") => sh.pipefail = on,
                Some("errexit") => sh.errexit = on,
                Some(_) => {}
                None => {
                    for (name, v) in [("errexit", sh.errexit), ("pipefail", sh.pipefail)] {
                        io.print(&format!("{name:<15}\t{}\n", if v { "on" } else { "off" }));
                    }
                }
            }
        } else if a == "--" {
            sh.args.truncate(1);
            sh.args.extend(args.by_ref().cloned());
        } else if on || a.starts_with('+') {
            for c in a.chars().skip(1) {
                if c == 'e' {
                    sh.errexit = on;
                }
            }
        }
    }
    0
}

/// The optional count operand of `break`/`continue` (at least 1).
fn count(name: &str, argv: &[String], io: &Io) -> Result<usize, i32> {
    match argv.get(1) {
        None => Ok(1),
        Some(n) => match n.parse::<usize>() {
            Ok(v) if v >= 1 => Ok(v),
            _ => {
                io.eprintln(&format!("sh: {name}: {n}: loop count out of range"));
                Err(1)
            }
        },
    }
}

/// `break [N]`
pub fn break_(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    if sh.loop_depth == 0 {
        io.eprintln("sh: break: only meaningful in a `for', `while', or `until' loop");
        return 0;
    }
    match count("break", argv, io) {
        Ok(n) => {
            sh.flow = Some(Flow::Break(n.min(sh.loop_depth)));
            0
        }
        Err(s) => s,
    }
}

/// `continue [N]`
pub fn continue_(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    if sh.loop_depth == 0 {
        io.eprintln("sh: continue: only meaningful in a `for', `while', or `until' loop");
        return 0;
    }
    match count("continue", argv, io) {
        Ok(n) => {
            sh.flow = Some(Flow::Continue(n.min(sh.loop_depth)));
            0
        }
        Err(s) => s,
    }
}

/// `return [N]`: leaves the current function with status N (default: the last status).
pub fn return_(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    if sh.func_depth == 0 {
        io.eprintln("sh: return: can only `return' from a function or sourced script");
        return 2;
    }
    let status = match argv.get(1) {
        None => sh.status,
        Some(n) => match n.parse::<i64>() {
            Ok(v) => (v & 0xff) as i32,
            Err(_) => {
                io.eprintln(&format!("sh: return: {n}: numeric argument required"));
                2
            }
        },
    };
    sh.status = status;
    sh.flow = Some(Flow::Return);
    status
}

/// `local NAME[=VALUE]...`: sets variables; they are not scoped to the function in this subset.
pub fn local(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    if sh.func_depth == 0 {
        io.eprintln("sh: local: can only be used in a function");
        return 1;
    }
    for a in argv.iter().skip(1) {
        match a.split_once('=') {
            Some((n, v)) => sh.set_var(n, v),
            None => sh.set_var(a, sh.var(a).unwrap_or_default().to_string().as_str()),
        }
    }
    0
}

/// `shift [N]`: drops the first N positional parameters.
pub fn shift(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let n = match argv.get(1).map(|n| n.parse::<usize>()) {
        None => 1,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            io.eprintln(&format!(
                "sh: shift: {}: numeric argument required",
                argv[1]
            ));
            return 1;
        }
    };
    if n >= sh.args.len() && n > 0 {
        return 1;
    }
    sh.args.drain(1..1 + n);
    0
}

/// `printenv [NAME...]`
pub fn printenv(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    if argv.len() < 2 {
        return env(sh, &argv[..1], io);
    }
    let mut status = 0;
    for name in &argv[1..] {
        match sh.vars.get(name).filter(|v| v.exported) {
            Some(v) => io.print(&format!("{}\n", v.value)),
            None => status = 1,
        }
    }
    status
}

/// `trap [CMD] [SIGNAL...]`: only `EXIT` (or `0`) is meaningful in a sandbox without signals.
pub fn trap(sh: &mut Shell, argv: &[String], _io: &Io) -> i32 {
    if let [_, cmd, sigs @ ..] = argv
        && sigs.iter().any(|s| s == "EXIT" || s == "0")
    {
        sh.exit_trap = if cmd == "-" || cmd.is_empty() {
            None
        } else {
            Some(cmd.clone())
        };
    }
    0
}
