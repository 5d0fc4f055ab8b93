//! Everything else: `true`, `false`, `exit`, `sleep`, `test`/`[`, `date`, `seq`, `which`, `type`, `command`,
//! `basename`, `dirname`, `source`.

use std::time::{Duration, SystemTime};

use crate::exec::Shell;
use crate::io::Io;

/// `true`, `:`
pub fn true_(_sh: &mut Shell, _argv: &[String], _io: &Io) -> i32 {
    0
}

/// `wait [PID...]`: waits for the programs started in the background (all of them, or those named) and
/// returns the status of the last one waited for.
pub fn wait(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    if argv.len() == 1 {
        return crate::external::wait_jobs(sh, None, io);
    }
    let mut status = 0;
    for arg in &argv[1..] {
        match arg.parse::<u32>() {
            Ok(pid) => status = crate::external::wait_jobs(sh, Some(pid), io),
            Err(_) => {
                io.eprintln(&format!("sh: wait: `{arg}': not a pid or valid job spec"));
                status = 2;
            }
        }
    }
    status
}

/// `kill [-s SIG | -SIG] PID...`: signals processes of the sandbox (SIG a number or a name: KILL, TERM,
/// INT, HUP, QUIT; TERM by default).
pub fn kill(_sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let mut rest = &argv[1..];
    let spec = match rest {
        [flag, spec, tail @ ..] if flag.as_str() == "-s" => {
            rest = tail;
            Some(spec.as_str())
        }
        [first, tail @ ..] if first.starts_with('-') && first.len() > 1 => {
            rest = tail;
            Some(&first[1..])
        }
        _ => None,
    };
    let mut signal = 15;
    if let Some(spec) = spec {
        let name = spec.strip_prefix("SIG").unwrap_or(spec);
        signal = match name {
            "KILL" => 9,
            "TERM" => 15,
            "INT" => 2,
            "HUP" => 1,
            "QUIT" => 3,
            n => match n.parse::<u32>() {
                Ok(n) => n,
                Err(_) => {
                    io.eprintln(&format!("sh: kill: {spec}: invalid signal specification"));
                    return 1;
                }
            },
        };
    }
    let args = rest.iter();
    let pids: Vec<&String> = args.collect();
    if pids.is_empty() {
        io.eprintln("sh: kill: usage: kill [-s sigspec | -sigspec] pid ...");
        return 2;
    }
    let mut status = 0;
    for pid in pids {
        match pid.parse::<u32>() {
            Ok(n) if crate::external::signal(n, signal) => {}
            _ => {
                io.eprintln(&format!("sh: kill: ({pid}) - No such process"));
                status = 1;
            }
        }
    }
    status
}

/// `false`
pub fn false_(_sh: &mut Shell, _argv: &[String], _io: &Io) -> i32 {
    1
}

/// `exit [N]`: stops the shell with status N (default: the last status), truncated to 0-255 like bash.
pub fn exit(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let status = match argv.get(1) {
        None => sh.status,
        Some(n) => match n.parse::<i64>() {
            Ok(v) => (v & 0xff) as i32,
            Err(_) => {
                io.eprintln(&format!("sh: exit: {n}: numeric argument required"));
                2
            }
        },
    };
    sh.exit = Some(status);
    status
}

/// `sleep N[smhd]...`: a WASI `poll_oneoff` clock wait, cut short by an interrupt (status 130).
pub fn sleep(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    if argv.len() < 2 {
        io.eprintln("sleep: missing operand");
        io.eprintln("Try 'sleep --help' for more information.");
        return 1;
    }
    let mut total = 0.0f64;
    for a in &argv[1..] {
        let (num, mult) = match a.chars().last() {
            Some('s') => (&a[..a.len() - 1], 1.0),
            Some('m') => (&a[..a.len() - 1], 60.0),
            Some('h') => (&a[..a.len() - 1], 3600.0),
            Some('d') => (&a[..a.len() - 1], 86400.0),
            _ => (a.as_str(), 1.0),
        };
        match num.parse::<f64>() {
            Ok(v) if v >= 0.0 && v.is_finite() => total += v * mult,
            _ => {
                io.eprintln(&format!("sleep: invalid time interval '{a}'"));
                io.eprintln("Try 'sleep --help' for more information.");
                return 1;
            }
        }
    }
    // What was printed before the pause is seen before it, as from a terminal or a streaming client.
    io.out.flush();
    sh.out.flush();
    if crate::tty::sleep(Duration::from_secs_f64(total.min(1e9))) {
        return crate::tty::INTERRUPT_STATUS;
    }
    0
}

/// Evaluator for `test` expressions over the argument list, by recursive descent.
struct Test<'a> {
    sh: &'a Shell,
    args: &'a [String],
    /// For `[[`: each argument as a wildcard pattern (quoted characters escaped).
    pats: Option<&'a [String]>,
    pos: usize,
}

/// A `test` failure that bash reports with status 2.
struct TestError(String);

impl Test<'_> {
    fn peek(&self, k: usize) -> Option<&str> {
        self.args.get(self.pos + k).map(String::as_str)
    }

    fn or(&mut self, depth: usize) -> Result<bool, TestError> {
        let mut v = self.and(depth)?;
        while matches!(self.peek(0), Some("-o" | "||")) {
            self.pos += 1;
            let r = self.and(depth)?;
            v = v || r;
        }
        Ok(v)
    }

    fn and(&mut self, depth: usize) -> Result<bool, TestError> {
        let mut v = self.not(depth)?;
        while matches!(self.peek(0), Some("-a" | "&&")) {
            self.pos += 1;
            let r = self.not(depth)?;
            v = v && r;
        }
        Ok(v)
    }

    fn not(&mut self, depth: usize) -> Result<bool, TestError> {
        if depth > 64 {
            return Err(TestError("expression too complex".into()));
        }
        if self.peek(0) == Some("!") && self.peek(1).is_some() {
            self.pos += 1;
            return Ok(!self.not(depth + 1)?);
        }
        self.primary(depth)
    }

    fn int(&self, s: &str) -> Result<i64, TestError> {
        s.trim()
            .parse()
            .map_err(|_| TestError(format!("{s}: integer expression expected")))
    }

    fn primary(&mut self, depth: usize) -> Result<bool, TestError> {
        let args = self.args;
        let Some(a) = args.get(self.pos).map(String::as_str) else {
            return Err(TestError("argument expected".into()));
        };
        if a == "(" && self.args.len() - self.pos > 2 {
            self.pos += 1;
            let v = self.or(depth + 1)?;
            if self.peek(0) != Some(")") {
                return Err(TestError("`)' expected".into()));
            }
            self.pos += 1;
            return Ok(v);
        }
        if let (Some(op), Some(rhs)) = (
            args.get(self.pos + 1).map(String::as_str),
            args.get(self.pos + 2).map(String::as_str),
        ) {
            let lhs = a;
            let v = match op {
                "=" | "==" | "!=" => {
                    let eq = match self.pats.and_then(|p| p.get(self.pos + 2)) {
                        Some(pat) => crate::glob::matches(pat, lhs),
                        None => lhs == rhs,
                    };
                    Some(eq == (op != "!="))
                }
                "=~" if self.pats.is_some() => {
                    Some(crate::regex::Regex::new(rhs, true, false, false).is_match(lhs))
                }
                "<" => Some(lhs < rhs),
                ">" => Some(lhs > rhs),
                "-eq" | "-ne" | "-lt" | "-le" | "-gt" | "-ge" => {
                    let (x, y) = (self.int(lhs)?, self.int(rhs)?);
                    Some(match op {
                        "-eq" => x == y,
                        "-ne" => x != y,
                        "-lt" => x < y,
                        "-le" => x <= y,
                        "-gt" => x > y,
                        _ => x >= y,
                    })
                }
                _ => None,
            };
            if let Some(v) = v {
                self.pos += 3;
                return Ok(v);
            }
        }
        if a.len() == 2 && a.starts_with('-') && self.peek(1).is_some() {
            let Some(arg) = self.peek(1).map(str::to_string) else {
                return Err(TestError("argument expected".into()));
            };
            let path = self.sh.host_path(&arg);
            let v = match a {
                "-z" => arg.is_empty(),
                "-n" => !arg.is_empty(),
                "-e" | "-a" => !arg.is_empty() && path.exists(),
                "-f" => !arg.is_empty() && path.is_file(),
                "-d" => !arg.is_empty() && path.is_dir(),
                "-s" => !arg.is_empty() && std::fs::metadata(&path).is_ok_and(|m| m.len() > 0),
                "-r" | "-w" => !arg.is_empty() && path.exists(),
                "-x" => !arg.is_empty() && path.is_dir(),
                "-L" | "-h" => {
                    std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink())
                }
                _ => return Err(TestError(format!("{a}: unary operator expected"))),
            };
            self.pos += 2;
            return Ok(v);
        }
        self.pos += 1;
        Ok(!a.is_empty())
    }
}

/// `test EXPR` and `[ EXPR ]`: status 0 for true, 1 for false, 2 for a malformed expression.
pub fn test(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let name = argv.first().map_or("test", String::as_str);
    let mut args = argv.get(1..).unwrap_or_default();
    if name == "[" {
        match args.split_last() {
            Some((last, rest)) if last == "]" => args = rest,
            _ => {
                io.eprintln("sh: [: missing `]'");
                return 2;
            }
        }
    }
    if args.is_empty() {
        return 1;
    }
    if args.len() == 2 && args[0] != "!" && !(args[0].len() == 2 && args[0].starts_with('-')) {
        io.eprintln(&format!("sh: {name}: {}: unary operator expected", args[0]));
        return 2;
    }
    let mut t = Test {
        sh,
        args,
        pats: None,
        pos: 0,
    };
    match t.or(0) {
        Ok(v) if t.pos == args.len() => i32::from(!v),
        Ok(_) => {
            io.eprintln(&format!("sh: {name}: too many arguments"));
            2
        }
        Err(TestError(e)) => {
            io.eprintln(&format!("sh: {name}: {e}"));
            2
        }
    }
}

/// `[[ EXPR ]]`: like `test`, plus `&&`/`||`, wildcard patterns after `==`/`!=` and regexes after `=~`.
pub fn cond(sh: &mut Shell, argv: &[String], pats: &[String], io: &Io) -> i32 {
    let n = argv.len();
    if n < 2 || argv[n - 1] != "]]" {
        io.eprintln("sh: syntax error: missing `]]'");
        return 2;
    }
    let args = &argv[1..n - 1];
    if args.is_empty() {
        io.eprintln("sh: syntax error near `]]'");
        return 2;
    }
    let mut t = Test {
        sh,
        args,
        pats: Some(&pats[1..n - 1]),
        pos: 0,
    };
    match t.or(0) {
        Ok(v) if t.pos == args.len() => i32::from(!v),
        Ok(_) => {
            io.eprintln("sh: syntax error in conditional expression");
            2
        }
        Err(TestError(e)) => {
            io.eprintln(&format!("sh: [[: {e}"));
            2
        }
    }
}

/// Abbreviated month names, as `date` and `ls -l` print them.
pub const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const MONTHS_LONG: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const DAYS_LONG: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// A broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// Year, e.g. 2026.
    pub year: i64,
    /// Month 1-12.
    pub month: u32,
    /// Day of month 1-31.
    pub day: u32,
    /// Hour 0-23.
    pub hour: u32,
    /// Minute 0-59.
    pub min: u32,
    /// Second 0-59.
    pub sec: u32,
    /// Day of week, 0 = Sunday.
    pub wday: u32,
    /// Day of year, 1-366.
    pub yday: u32,
}

/// Converts seconds since the Unix epoch to a UTC date (Howard Hinnant's days-from-civil inverse).
pub fn civil(secs: i64) -> Civil {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let before: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = before[month as usize - 1] + day + u32::from(leap && month > 2);
    Civil {
        year,
        month,
        day,
        hour: (rem / 3600) as u32,
        min: (rem % 3600 / 60) as u32,
        sec: (rem % 60) as u32,
        wday: (days + 4).rem_euclid(7) as u32,
        yday,
    }
}

/// Formats a time with a basic `strftime` subset.
pub fn strftime(fmt: &str, secs: i64) -> String {
    let t = civil(secs);
    let mut out = String::new();
    let mut cs = fmt.chars();
    while let Some(c) = cs.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(d) = cs.next() else {
            out.push('%');
            break;
        };
        let s = match d {
            'Y' => t.year.to_string(),
            'y' => format!("{:02}", t.year.rem_euclid(100)),
            'C' => format!("{:02}", t.year.div_euclid(100)),
            'm' => format!("{:02}", t.month),
            'd' => format!("{:02}", t.day),
            'e' => format!("{:>2}", t.day),
            'H' => format!("{:02}", t.hour),
            'I' => format!("{:02}", (t.hour + 11) % 12 + 1),
            'M' => format!("{:02}", t.min),
            'S' => format!("{:02}", t.sec),
            'p' => (if t.hour < 12 { "AM" } else { "PM" }).to_string(),
            's' => secs.to_string(),
            'a' => DAYS[t.wday as usize].to_string(),
            'A' => DAYS_LONG[t.wday as usize].to_string(),
            'b' | 'h' => MONTHS[t.month as usize - 1].to_string(),
            'B' => MONTHS_LONG[t.month as usize - 1].to_string(),
            'j' => format!("{:03}", t.yday),
            'u' => (if t.wday == 0 { 7 } else { t.wday }).to_string(),
            'w' => t.wday.to_string(),
            'Z' => "UTC".to_string(),
            'z' => "+0000".to_string(),
            'F' => format!("{}-{:02}-{:02}", t.year, t.month, t.day),
            'T' => format!("{:02}:{:02}:{:02}", t.hour, t.min, t.sec),
            'R' => format!("{:02}:{:02}", t.hour, t.min),
            'D' => format!("{:02}/{:02}/{:02}", t.month, t.day, t.year.rem_euclid(100)),
            'c' => strftime("%a %b %e %H:%M:%S %Y", secs),
            'N' => "000000000".to_string(),
            'n' => "\n".to_string(),
            't' => "\t".to_string(),
            '%' => "%".to_string(),
            other => format!("%{other}"),
        };
        out.push_str(&s);
    }
    out
}

/// `date [-u] [-d @SECONDS] [+FORMAT]`, always in UTC (the sandbox has no time zone database).
pub fn date(_sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let mut secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut fmt = "%a %b %e %H:%M:%S %Z %Y".to_string();
    let mut i = 1;
    while let Some(a) = argv.get(i) {
        if let Some(f) = a.strip_prefix('+') {
            fmt = f.to_string();
        } else if a == "-d" || a.starts_with("--date=") {
            let v = if a == "-d" {
                i += 1;
                argv.get(i).cloned().unwrap_or_default()
            } else {
                a["--date=".len()..].to_string()
            };
            match v.strip_prefix('@').and_then(|n| n.parse().ok()) {
                Some(n) => secs = n,
                None => {
                    io.eprintln(&format!("date: invalid date '{v}'"));
                    return 1;
                }
            }
        } else if a == "-I" || a == "--iso-8601" {
            fmt = "%Y-%m-%d".into();
        } else if a != "-u" && a != "--utc" && a != "-R" {
            io.eprintln(&format!("date: invalid date '{a}'"));
            return 1;
        }
        i += 1;
    }
    io.print(&format!("{}\n", strftime(&fmt, secs)));
    0
}

/// `seq [FIRST [INCREMENT]] LAST`
pub fn seq(_sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let mut sep = "\n".to_string();
    let mut nums = Vec::new();
    let mut i = 1;
    while let Some(a) = argv.get(i) {
        if a == "-s" {
            i += 1;
            sep = argv.get(i).cloned().unwrap_or_default();
        } else if let Some(s) = a.strip_prefix("-s") {
            sep = s.to_string();
        } else {
            match a.parse::<f64>() {
                Ok(v) if v.is_finite() => nums.push(v),
                _ => {
                    io.eprintln(&format!("seq: invalid floating point argument: '{a}'"));
                    io.eprintln("Try 'seq --help' for more information.");
                    return 1;
                }
            }
        }
        i += 1;
    }
    let (first, step, last) = match nums.as_slice() {
        [l] => (1.0, 1.0, *l),
        [f, l] => (*f, 1.0, *l),
        [f, s, l] => (*f, *s, *l),
        [] => {
            io.eprintln("seq: missing operand");
            io.eprintln("Try 'seq --help' for more information.");
            return 1;
        }
        _ => {
            io.eprintln(&format!(
                "seq: extra operand '{}'",
                argv.last().map_or("", String::as_str)
            ));
            io.eprintln("Try 'seq --help' for more information.");
            return 1;
        }
    };
    if step == 0.0 {
        io.eprintln("seq: invalid Zero increment value: '0'");
        return 1;
    }
    // Like coreutils, print as many decimals as the most precise operand has.
    let decimals = argv[1..]
        .iter()
        .filter(|a| a.parse::<f64>().is_ok())
        .filter_map(|a| a.split_once('.'))
        .map(|(_, f)| f.len())
        .max()
        .unwrap_or(0);
    // Streamed rather than collected: `seq 1000000` must not hold every line in the guest's memory.
    let mut k = 0u64;
    let mut line = String::new();
    loop {
        let v = first + step * k as f64;
        if (step > 0.0 && v > last + 1e-9) || (step < 0.0 && v < last - 1e-9) {
            break;
        }
        if k > 0 {
            line.push_str(&sep);
        }
        if decimals > 0 {
            line.push_str(&format!("{v:.decimals$}"));
        } else {
            line.push_str(&format!("{}", v.round() as i64));
        }
        if line.len() > 8192 {
            io.print(&line);
            line.clear();
        }
        k += 1;
    }
    if k > 0 {
        line.push('\n');
    }
    io.print(&line);
    0
}

/// Builtins that are part of the shell itself in bash; the other utilities pose as programs in `/bin`.
const SHELL_BUILTINS: &[&str] = &[
    ".", ":", "[", "break", "cd", "command", "continue", "echo", "eval", "exec", "exit", "export",
    "false", "local", "printf", "pwd", "read", "return", "set", "shift", "source", "test", "true",
    "kill", "type", "unset", "wait",
];

/// `which NAME...`: builtins live in `/bin` as far as callers can tell; unknown names print nothing.
pub fn which(_sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let mut status = 0;
    for name in argv.iter().skip(1).filter(|a| !a.starts_with('-')) {
        if super::lookup(name).is_some() {
            io.print(&format!("/bin/{name}\n"));
        } else {
            status = 1;
        }
    }
    status
}

/// `type NAME...`
pub fn type_(_sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let mut status = 0;
    for name in argv.iter().skip(1) {
        if SHELL_BUILTINS.contains(&name.as_str()) {
            io.print(&format!("{name} is a shell builtin\n"));
        } else if super::lookup(name).is_some() {
            io.print(&format!("{name} is /bin/{name}\n"));
        } else {
            io.eprintln(&format!("sh: type: {name}: not found"));
            status = 1;
        }
    }
    status
}

/// `command [-v] NAME [ARGS...]`
pub fn command(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    match argv.get(1).map(String::as_str) {
        Some("-v" | "-V") => {
            let mut status = 0;
            for name in &argv[2..] {
                if SHELL_BUILTINS.contains(&name.as_str()) {
                    io.print(&format!("{name}\n"));
                } else if super::lookup(name).is_some() {
                    io.print(&format!("/bin/{name}\n"));
                } else {
                    status = 1;
                }
            }
            status
        }
        Some(_) => sh.run_argv(&argv[1..], io),
        None => 0,
    }
}

/// `basename PATH [SUFFIX]`
pub fn basename(_sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let Some(p) = argv.get(1) else {
        return super::missing_operand("basename", io);
    };
    let trimmed = p.trim_end_matches('/');
    let mut base = if trimmed.is_empty() && p.starts_with('/') {
        "/".to_string()
    } else {
        trimmed.rsplit('/').next().unwrap_or("").to_string()
    };
    if let Some(suffix) = argv.get(2)
        && base.len() > suffix.len()
        && base.ends_with(suffix.as_str())
    {
        base.truncate(base.len() - suffix.len());
    }
    io.print(&format!("{base}\n"));
    0
}

/// `dirname PATH`
pub fn dirname(_sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let Some(p) = argv.get(1) else {
        return super::missing_operand("dirname", io);
    };
    let trimmed = p.trim_end_matches('/');
    let dir = match trimmed.rfind('/') {
        Some(0) => "/".to_string(),
        Some(n) => trimmed[..n].trim_end_matches('/').to_string(),
        None if p.starts_with('/') => "/".to_string(),
        None => ".".to_string(),
    };
    io.print(&format!("{}\n", if dir.is_empty() { "/" } else { &dir }));
    0
}

/// `source FILE` / `. FILE`: runs a script in the current shell.
pub fn source(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let Some(f) = argv.get(1) else {
        io.eprintln("sh: source: filename argument required");
        return 2;
    };
    match std::fs::read(sh.host_path(f)) {
        Ok(src) => sh.run_str(&String::from_utf8_lossy(&src), io),
        Err(e) => {
            io.eprintln(&format!("sh: {f}: {}", crate::io::errmsg(&e)));
            1
        }
    }
}

/// `eval ARGS...`: runs the arguments joined by spaces as a command line.
pub fn eval(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let src = argv.get(1..).unwrap_or_default().join(" ");
    sh.run_str(&src, io)
}

/// `exec COMMAND...`: there is no process image to replace, so run the command and exit with its status.
pub fn exec(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    if argv.len() < 2 {
        return 0;
    }
    let status = sh.run_argv(&argv[1..], io);
    sh.exit = Some(status);
    status
}

/// `uname [-asnrmo]`: a Linux-compatible answer, since scripts branch on `uname -s`; the machine is wasm32.
pub fn uname(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let host = sh.var("HOSTNAME").unwrap_or("sandbox").to_string();
    let fields = [
        ('s', "Linux".to_string()),
        ('n', host),
        ('r', "stasis".into()),
        ('v', "#1".into()),
        ('m', "wasm32".into()),
        ('o', "GNU/Linux".into()),
    ];
    let mut wanted: Vec<char> = argv
        .iter()
        .skip(1)
        .flat_map(|a| a.chars().skip(1))
        .collect();
    if wanted.contains(&'a') {
        wanted = fields.iter().map(|f| f.0).collect();
    }
    if wanted.is_empty() {
        wanted.push('s');
    }
    let out: Vec<&str> = fields
        .iter()
        .filter(|f| wanted.contains(&f.0))
        .map(|f| f.1.as_str())
        .collect();
    io.print(&format!("{}\n", out.join(" ")));
    0
}

/// `whoami`: `$USER`, as WASI has no user database.
pub fn whoami(sh: &mut Shell, _argv: &[String], io: &Io) -> i32 {
    io.print(&format!("{}\n", sh.var("USER").unwrap_or("user")));
    0
}

/// `hostname`
pub fn hostname(sh: &mut Shell, _argv: &[String], io: &Io) -> i32 {
    io.print(&format!("{}\n", sh.var("HOSTNAME").unwrap_or("sandbox")));
    0
}

/// `chmod MODE FILE...`: WASI has no permission bits, so this only checks that the files exist.
pub fn chmod(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let ops: Vec<&String> = argv
        .iter()
        .skip(1)
        .filter(|a| !a.starts_with('-') || a.len() == 1)
        .collect();
    let Some((_, files)) = ops.split_first().filter(|(_, f)| !f.is_empty()) else {
        return super::missing_operand("chmod", io);
    };
    let mut status = 0;
    for f in files {
        if std::fs::symlink_metadata(sh.host_path(f)).is_err() {
            io.eprintln(&format!(
                "chmod: cannot access '{f}': No such file or directory"
            ));
            status = 1;
        }
    }
    status
}

/// `realpath PATH...`: the normalised absolute path of existing files.
pub fn realpath(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let mut status = 0;
    for p in argv.iter().skip(1).filter(|a| !a.starts_with('-')) {
        if sh.host_path(p).exists() {
            io.print(&format!("{}\n", sh.logical(p)));
        } else {
            io.eprintln(&format!("realpath: {p}: No such file or directory"));
            status = 1;
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(
            strftime("%Y-%m-%d %H:%M:%S %a", 0),
            "1970-01-01 00:00:00 Thu"
        );
        assert_eq!(
            strftime("%a %b %e %H:%M:%S %Z %Y", 1_796_014_923),
            "Mon Nov 30 05:02:03 UTC 2026"
        );
        assert_eq!(strftime("%j %s %%", 86_400 * 59), "060 5097600 %");
        assert_eq!(civil(951_782_400).month, 2); // 2000-02-29, a leap day
        assert_eq!(civil(951_782_400).day, 29);
    }
}
