//! The table of command lines the shell is tested with (`tests/cases.txt`) and its parser. Plain Rust with
//! no dependency on the rest of the shell, so the host runtime's tests include this very file to replay the
//! table against the wasm build (the native runner is in `cases.rs`). Format:
//!
//! ```text
//! == name of the case          (starts a case: a fresh root containing an empty /tmp)
//! $ command line               (one `sh -c` run; several may follow, sharing the files)
//! > more of it                 (continues the command line after a newline, for here-documents)
//! 1 a line of expected stdout  (`1%` instead of `1 `: the same line without its trailing newline)
//! 2 a line of expected stderr
//! ? 1                          (expected exit status; 0 when absent)
//! ```
//!
//! The environment of every run is `HOME=/root PATH=/bin USER=user`, the working directory `/`, stdin empty.
//! Lines starting with `#` are comments.

/// One `sh -c` invocation and what it must produce.
#[derive(Debug, Default, Clone)]
pub struct Run {
    /// The command line.
    pub cmd: String,
    /// Expected stdout.
    pub stdout: String,
    /// Expected stderr.
    pub stderr: String,
    /// Expected exit status.
    pub status: i32,
}

/// A named sequence of runs sharing one sandbox directory.
#[derive(Debug, Default, Clone)]
pub struct Case {
    /// The name after `==`.
    pub name: String,
    /// The runs in order.
    pub runs: Vec<Run>,
}

/// The table's source text.
pub const TABLE: &str = include_str!("../tests/cases.txt");

/// Parses the table format described in the module documentation.
pub fn parse_table(src: &str) -> Result<Vec<Case>, String> {
    let mut cases: Vec<Case> = Vec::new();
    for (n, line) in src.lines().enumerate() {
        let err = || format!("cases.txt:{}: unexpected line {line:?}", n + 1);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix("== ") {
            cases.push(Case {
                name: name.to_string(),
                runs: Vec::new(),
            });
            continue;
        }
        let case = cases.last_mut().ok_or_else(err)?;
        if let Some(cmd) = line.strip_prefix("$ ") {
            case.runs.push(Run {
                cmd: cmd.to_string(),
                ..Run::default()
            });
            continue;
        }
        let run = case.runs.last_mut().ok_or_else(err)?;
        if let Some(more) = line.strip_prefix("> ").or((line == ">").then_some("")) {
            run.cmd.push('\n');
            run.cmd.push_str(more);
            continue;
        }
        let (tag, text) = line.split_at(line.len().min(2));
        match tag {
            "1 " | "1" => run.stdout.push_str(&format!("{text}\n")),
            "1%" => run.stdout.push_str(text.strip_prefix(' ').unwrap_or(text)),
            "2 " | "2" => run.stderr.push_str(&format!("{text}\n")),
            "? " => run.status = text.trim().parse().map_err(|_| err())?,
            _ => return Err(err()),
        }
    }
    Ok(cases)
}
