//! The `sh` guest, replayed from its own table of command lines (`guests/sh/tests/cases.txt`, 170+ lines with
//! expected stdout, stderr and exit status) against the wasm build, inside real sandboxes.

use anyhow::Result;
use stasis::{ModuleKind, SandboxOptions};

#[path = "../../../guests/sh/src/table.rs"]
#[allow(dead_code)]
mod table;

#[test]
fn every_command_line_of_the_table_gives_what_bash_gives() -> Result<()> {
    let (_tmp, runtime) = crate::common::runtime()?;
    let sh = runtime.load_template("sh", &stasis_guests::bytes(stasis_guests::SH))?;
    assert_eq!(sh.kind(), ModuleKind::Command);
    let cases = table::parse_table(table::TABLE).map_err(anyhow::Error::msg)?;
    assert!(
        cases.iter().map(|c| c.runs.len()).sum::<usize>() >= 60,
        "the table has at least 60 command lines"
    );
    let env: Vec<(String, String)> = [("HOME", "/root"), ("PATH", "/bin"), ("USER", "user")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut failures = Vec::new();
    for case in &cases {
        let mut sandbox = runtime.create_sandbox(
            &sh,
            SandboxOptions {
                env: env.clone(),
                ..Default::default()
            },
        )?;
        std::fs::create_dir_all(sandbox.dir().join("tmp"))?;
        for run in &case.runs {
            let output = sandbox.run(&sh, &["-c".to_owned(), run.cmd.clone()], b"")?;
            let got = (
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                output.exit_code,
            );
            if got
                != (
                    run.stdout.as_str().into(),
                    run.stderr.as_str().into(),
                    run.status,
                )
            {
                failures.push(format!(
                    "[{}] $ {}\n  expected {:?} {:?} {}\n  got      {:?} {:?} {} {:?}",
                    case.name,
                    run.cmd,
                    run.stdout,
                    run.stderr,
                    run.status,
                    got.0,
                    got.1,
                    got.2,
                    output.trap
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} command lines differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}
