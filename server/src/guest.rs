//! Which guest runs a process request: every command line goes to the shell template, except the program
//! of a sandbox whose template is a user command module (see [`runs_own_template`]); this is the one place
//! that knows the shell's module and how `cmd`/`args` of a request become its arguments.

use std::collections::BTreeMap;

/// Name under which the shell is registered; sandboxes of the `base` template run it too.
pub const SHELL_TEMPLATE: &str = "base";

/// The wasm of the shell guest (`sh -c CMD`).
pub fn shell_wasm() -> Vec<u8> {
    stasis_guests::bytes(stasis_guests::SH)
}

/// The shell's arguments for a process request: `bash`/`sh` (any path) with `-c LINE` after flags such as
/// `-l` run LINE; anything else runs as a command line of its words, each quoted, so `cmd: "ls", args:
/// ["-la", "/tmp"]` means what it would in a real shell.
pub fn shell_args(cmd: &str, args: &[String]) -> Vec<String> {
    vec!["-c".to_owned(), command_line(cmd, args)]
}

/// Whether a process request started with a PTY asks for an interactive shell: `bash`/`sh` (any path)
/// with only flags (`-i -l`, what `sandbox.pty.create` sends), no `-c` and no script. The shell then runs
/// as `sh -i`.
pub fn interactive_shell(cmd: &str, args: &[String]) -> bool {
    let program = cmd.rsplit('/').next().unwrap_or(cmd);
    matches!(program, "bash" | "sh") && args.iter().all(|a| a.starts_with('-') && a != "-c")
}

/// Whether a process request for `cmd` runs the module of the sandbox's own template `template` (with the
/// request's `args` as its arguments) rather than the shell: when `template` is a user template and `cmd`
/// is its name, bare or as `/bin/NAME` or `/usr/bin/NAME`, the way an installed program is called. The
/// caller checks that the template is a command module. Built-in templates are the shell: never.
pub fn runs_own_template(template: &str, cmd: &str) -> bool {
    let program = ["/bin/", "/usr/bin/"]
        .iter()
        .find_map(|dir| cmd.strip_prefix(dir))
        .unwrap_or(cmd);
    program == template && !crate::templates::is_built_in(template)
}

/// The command line a process request stands for (see [`shell_args`]).
pub fn command_line(cmd: &str, args: &[String]) -> String {
    let program = cmd.rsplit('/').next().unwrap_or(cmd);
    if matches!(program, "bash" | "sh")
        && let Some(c) = args.iter().position(|a| a == "-c")
        && args[..c].iter().all(|a| a.starts_with('-'))
        && let Some(line) = args.get(c + 1)
    {
        return line.clone();
    }
    std::iter::once(cmd)
        .chain(args.iter().map(String::as_str))
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The environment of one command: the request's variables, and `PWD` for its working directory, which
/// the shell starts in.
pub fn command_env(envs: &BTreeMap<String, String>, cwd: Option<&str>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = envs
        .iter()
        .filter(|(k, _)| k.as_str() != "PWD")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(cwd) = cwd.filter(|c| !c.is_empty()) {
        env.push(("PWD".to_owned(), cwd.to_owned()));
    }
    env
}

/// Single-quotes a word for the shell unless it is plainly safe.
fn quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if safe {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn shells_with_dash_c_run_their_line() {
        let line = "echo hello > /tmp/m.txt";
        assert_eq!(command_line("/bin/bash", &words(&["-l", "-c", line])), line);
        assert_eq!(command_line("sh", &words(&["-c", line])), line);
        assert_eq!(command_line("bash", &words(&["-c", line, "arg0"])), line);
    }

    #[test]
    fn a_bare_shell_is_interactive_on_a_pty() {
        assert!(interactive_shell("/bin/bash", &words(&["-i", "-l"])));
        assert!(interactive_shell("sh", &[]));
        assert!(!interactive_shell("/bin/bash", &words(&["-l", "-c", "ls"])));
        assert!(!interactive_shell("bash", &words(&["x.sh"])));
        assert!(!interactive_shell("python", &words(&["-i"])));
    }

    #[test]
    fn other_commands_are_quoted_words() {
        assert_eq!(command_line("ls", &words(&["-la", "/tmp"])), "ls -la /tmp");
        assert_eq!(
            command_line("echo", &words(&["it's", "a b", ""])),
            r"echo 'it'\''s' 'a b' ''"
        );
        // A shell without -c is a plain command too.
        assert_eq!(command_line("bash", &words(&["x.sh"])), "bash x.sh");
    }

    #[test]
    fn a_user_template_runs_by_its_name_only() {
        for cmd in ["hello", "/bin/hello", "/usr/bin/hello"] {
            assert!(runs_own_template("hello", cmd), "{cmd}");
        }
        for cmd in [
            "hello2",
            "/sbin/hello",
            "bin/hello",
            "./hello",
            "/bin/sh",
            "",
        ] {
            assert!(!runs_own_template("hello", cmd), "{cmd}");
        }
        assert!(!runs_own_template("base", "base"));
        assert!(!runs_own_template(
            "code-interpreter-v1",
            "/bin/code-interpreter-v1"
        ));
    }

    #[test]
    fn cwd_becomes_pwd_and_overrides_an_env_pwd() {
        let envs = BTreeMap::from([
            ("PWD".to_owned(), "/x".to_owned()),
            ("A".into(), "1".into()),
        ]);
        assert_eq!(
            command_env(&envs, Some("/tmp")),
            vec![("A".into(), "1".into()), ("PWD".into(), "/tmp".into())]
        );
        assert_eq!(command_env(&envs, None), vec![("A".into(), "1".into())]);
    }
}
