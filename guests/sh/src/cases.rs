//! The table-driven test: runs every case of `tests/cases.txt` (parsed by [`crate::table`]) natively, each in
//! a fresh temporary directory that plays the sandbox's `/`.

use crate::exec::Shell;
use crate::table::*;
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn temp_root() -> std::path::PathBuf {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("stasis-sh-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("tmp")).expect("temp dir is writable");
    dir
}

#[test]
fn table_has_enough_cases() {
    let cases = parse_table(TABLE).unwrap();
    let runs: usize = cases.iter().map(|c| c.runs.len()).sum();
    assert!(runs >= 60, "only {runs} command lines in the table");
}

#[test]
fn every_case_of_the_table_passes() {
    let cases = parse_table(TABLE).unwrap();
    let mut failures = Vec::new();
    for case in &cases {
        let root = temp_root();
        for run in &case.runs {
            let (mut sh, out, err) = Shell::for_test(&root);
            let status = sh.run_main(&run.cmd);
            let out = String::from_utf8_lossy(&out.borrow()).into_owned();
            let err = String::from_utf8_lossy(&err.borrow()).into_owned();
            if out != run.stdout || err != run.stderr || status != run.status {
                failures.push(format!(
                    "[{}] $ {}\n  stdout: {out:?}\n  want:   {:?}\n  stderr: {err:?}\n  want:   {:?}\n  status: {status}, want {}",
                    case.name, run.cmd, run.stdout, run.stderr, run.status
                ));
            }
        }
        let _ = std::fs::remove_dir_all(&root);
    }
    assert!(
        failures.is_empty(),
        "{} failing runs:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Random command lines built from shell-significant fragments must never panic (the guest would trap).
/// Loops that could run forever (`while`, `sleep`) are left out of the alphabet.
#[test]
fn random_command_lines_never_panic() {
    const FRAGMENTS: &[&str] = &[
        "echo", "cat", "ls", "grep", "sort", "wc", "printf", "seq", "test", "[", "]", "head",
        "tail", "tr", "cd", "mkdir", "rm", "cp", "mv", "touch", "read", "export", "uniq", "date",
        "x", "-n", "-l", "-e", "%d", "%s", "%", "\\", "'", "\"", "$", "${", "}", "$(", "$((", "(",
        ")", "{", "|", "||", "&&", ";", "&", ">", ">>", "<", "2>&1", "<<", "<<<", "EOF", "*", "?",
        "[a-", "#", "\n", " ", " ", " ", "=", "A=1", "$A", "$?", "if", "then", "else", "fi", "for",
        "in", "do", "done", "!", "/", "..", "/tmp", "3", "-1", "0", "a b", "é", "\t", "`", "~",
        "exit", "trap", "EXIT", "base64", "-d", "du", "[[", "]]", "==", "{a,b}", "{1..3}", "case",
        "esac", ";;", "f()", "f", "break", "continue", "return", "find", "cut", "-f1", "xargs",
        "sed", "s/a/b/g", "p", "$=",
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let root = temp_root();
    for _ in 0..3000 {
        let len = 1 + next() % 12;
        let line: String = (0..len)
            .map(|_| FRAGMENTS[(next() % FRAGMENTS.len() as u64) as usize])
            .collect();
        let (mut sh, _, _) = Shell::for_test(&root);
        let status = sh.run_main(&line);
        assert!((0..=255).contains(&status), "{line:?} gave status {status}");
    }
    let _ = std::fs::remove_dir_all(&root);
}
