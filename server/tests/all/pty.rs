//! Processes with a terminal, as `sandbox.pty.create` starts them (`/bin/bash -i -l` with `pty.size`): an
//! interactive shell whose typed input is echoed and edited by the host's line discipline, whose output
//! comes as `data.pty` with `\r\n` line ends; Ctrl-C interrupting a running command without ending the
//! shell, Ctrl-D and `exit N` ending it with their status, resizing, a pause in the middle of a session,
//! and the errors of each call. Assertions wait for expected screen contents, never on timing.

use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use crate::common::Server;
use crate::processes::{Events, stream};

/// A terminal session as a client sees it: the stream of its events and everything shown so far.
struct Terminal {
    events: Events,
    pid: u64,
    /// What the terminal showed, in order.
    screen: String,
    /// How much of `screen` earlier waits consumed.
    seen: usize,
}

impl Terminal {
    /// Starts the SDKs' PTY command with a `cols`×`rows` terminal.
    async fn open(server: &Server, id: &str, cols: u32, rows: u32) -> anyhow::Result<Self> {
        let message = json!({
            "process": {"cmd": "/bin/bash", "args": ["-i", "-l"], "envs": {"TERM": "xterm-256color"}},
            "pty": {"size": {"cols": cols, "rows": rows}},
        });
        let mut events = stream(server, id, "Start", message).await?;
        let start = events.event().await?;
        let pid = start["start"]["pid"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("no start event: {start}"))?;
        Ok(Self {
            events,
            pid,
            screen: String::new(),
            seen: 0,
        })
    }

    /// Reads events until the screen shows `needle` after what earlier waits consumed; returns what came
    /// up to and including it. Fails on the end of the process, or on a minute without an event.
    async fn until(&mut self, needle: &str) -> anyhow::Result<String> {
        loop {
            if let Some(at) = self.screen[self.seen..].find(needle) {
                let end = self.seen + at + needle.len();
                let shown = self.screen[self.seen..end].to_owned();
                self.seen = end;
                return Ok(shown);
            }
            let event = self.events.event().await?;
            let data = event["data"]["pty"].as_str().ok_or_else(|| {
                anyhow::anyhow!(
                    "waiting for {needle:?} on a screen showing {:?}, got {event}",
                    &self.screen[self.seen..]
                )
            })?;
            self.screen
                .push_str(&String::from_utf8_lossy(&BASE64.decode(data)?));
        }
    }

    /// Reads events until the end event; returns it.
    async fn end(&mut self) -> anyhow::Result<Value> {
        loop {
            let event = self.events.event().await?;
            if let Some(end) = event.get("end") {
                return Ok(end.clone());
            }
            anyhow::ensure!(
                event["data"].get("pty").is_some(),
                "not terminal output: {event}"
            );
        }
    }
}

/// Types `bytes` into process `pid`'s terminal.
async fn type_in(server: &Server, id: &str, pid: u64, bytes: &[u8]) -> crate::common::Reply {
    let body = json!({"process": {"pid": pid}, "input": {"pty": BASE64.encode(bytes)}});
    server.unary(id, "/process.Process/SendInput", body).await
}

/// Types `bytes`, expecting the call to succeed.
async fn typed(server: &Server, id: &str, pid: u64, bytes: &[u8]) -> anyhow::Result<()> {
    let reply = type_in(server, id, pid, bytes).await;
    anyhow::ensure!(
        reply.status == StatusCode::OK,
        "SendInput: {} {:?}",
        reply.status,
        reply.body
    );
    Ok(())
}

/// The default prompt ends with this.
const PROMPT: &str = "$ ";

#[tokio::test]
async fn pty_session_echoes_edits_runs_and_prompts_again() -> anyhow::Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({})).await;
    let mut term = Terminal::open(&server, &id, 80, 24).await?;
    let pid = term.pid;
    term.until(PROMPT).await?;

    // The echo, then the output with `\r\n`, then a new prompt.
    typed(&server, &id, pid, b"echo hi\r").await?;
    assert_eq!(term.until("hi\r\n").await?, "echo hi\r\n");
    term.until("hi\r\n").await?;
    term.until(PROMPT).await?;

    // Backspace (DEL and ^H) and Ctrl-U edit the line before the shell sees it.
    typed(&server, &id, pid, b"junk\x15echo abx\x7fc\x08d\r").await?;
    term.until("\r\nabd\r\n").await?;
    term.until(PROMPT).await?;

    // The size is in the environment; an open quote continues on a `> ` prompt.
    typed(&server, &id, pid, b"echo $COLUMNS x $LINES 'a\r").await?;
    term.until("> ").await?;
    typed(&server, &id, pid, b"b'\r").await?;
    term.until("80 x 24 a\r\nb\r\n").await?;
    term.until(PROMPT).await?;

    // Listed like any command, with the SDK's config.
    let reply = server.unary(&id, "/process.Process/List", json!({})).await;
    let processes = reply.json()["processes"].clone();
    assert_eq!(processes[0]["pid"], json!(pid), "{processes}");
    assert_eq!(processes[0]["config"]["args"], json!(["-i", "-l"]));

    // `exit N` ends the shell with N.
    typed(&server, &id, pid, b"exit 3\r").await?;
    assert_eq!(term.end().await?["exitCode"], 3);
    Ok(())
}

#[tokio::test]
async fn pty_ctrl_c_interrupts_the_running_command_and_the_shell_goes_on() -> anyhow::Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({})).await;
    let mut term = Terminal::open(&server, &id, 80, 24).await?;
    let pid = term.pid;
    term.until(PROMPT).await?;

    // A sleep, then a busy loop: each is interrupted, with status 130, and the prompt comes back.
    for line in [
        &b"echo sleeping; sleep 100\r"[..],
        b"echo looping; while true; do :; done\r",
    ] {
        typed(&server, &id, pid, line).await?;
        // The command's own output, after the echo of its line: it is running.
        term.until("ing\r\n").await?;
        typed(&server, &id, pid, b"\x03").await?;
        term.until("^C\r\n").await?;
        term.until(PROMPT).await?;
        typed(&server, &id, pid, b"echo status $?\r").await?;
        term.until("\r\nstatus 130\r\n").await?;
        term.until(PROMPT).await?;
    }

    // Ctrl-C at the prompt drops the line being typed.
    typed(&server, &id, pid, b"echo dropped\x03").await?;
    term.until("^C\r\n").await?;
    term.until(PROMPT).await?;
    typed(&server, &id, pid, b"echo kept\r").await?;
    let shown = term.until("\r\nkept\r\n").await?;
    assert!(!shown.contains("\r\ndropped"), "{shown:?}");
    term.until(PROMPT).await?;

    // Ctrl-D ends `cat` (one end of file), not the shell; on an empty prompt line it ends the shell with
    // the last status.
    typed(&server, &id, pid, b"cat\rline\r").await?;
    typed(&server, &id, pid, b"\x04").await?;
    // The echo of the line, then what `cat` read of it.
    term.until("line\r\nline\r\n").await?;
    term.until(PROMPT).await?;
    typed(&server, &id, pid, b"true\r").await?;
    term.until(PROMPT).await?;
    typed(&server, &id, pid, b"\x04").await?;
    assert_eq!(term.end().await?["exitCode"], 0);
    Ok(())
}

#[tokio::test]
async fn pty_resize_kill_and_errors() -> anyhow::Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({})).await;
    let mut term = Terminal::open(&server, &id, 80, 24).await?;
    let pid = term.pid;
    term.until(PROMPT).await?;
    let update = |pty: Value| json!({"process": {"pid": pid}, "pty": pty});
    let reply = server
        .unary(
            &id,
            "/process.Process/Update",
            update(json!({"size": {"cols": 120, "rows": 40}})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);

    // Absurd sizes and bodies are invalid arguments; unknown pids are not found.
    for pty in [
        json!({"size": {"cols": 0, "rows": 40}}),
        json!({"size": {"cols": 120, "rows": 10001}}),
        json!({"size": {"cols": "wide", "rows": 40}}),
        json!({}),
    ] {
        let reply = server
            .unary(&id, "/process.Process/Update", update(pty.clone()))
            .await;
        assert_eq!(reply.json()["code"], "invalid_argument", "{pty}");
    }
    let reply = server
        .unary(
            &id,
            "/process.Process/Update",
            json!({"process": {"pid": pid}}),
        )
        .await;
    assert_eq!(reply.json()["code"], "invalid_argument");
    let unknown = json!({"process": {"pid": 999_999}, "pty": {"size": {"cols": 1, "rows": 1}}});
    let reply = server.unary(&id, "/process.Process/Update", unknown).await;
    assert_eq!(reply.json()["code"], "not_found");
    assert_eq!(
        type_in(&server, &id, 999_999, b"x").await.json()["code"],
        "not_found"
    );
    let bad_input = json!({"process": {"pid": pid}, "input": {"pty": "***"}});
    let reply = server
        .unary(&id, "/process.Process/SendInput", bad_input)
        .await;
    assert_eq!(reply.json()["code"], "invalid_argument");
    // Its input goes through the terminal, not around it.
    let stdin = json!({"process": {"pid": pid}, "input": {"stdin": "eA=="}});
    let reply = server.unary(&id, "/process.Process/SendInput", stdin).await;
    assert_eq!(reply.json()["code"], "failed_precondition");
    // A start with an absurd size is refused before anything runs.
    for size in [json!({"cols": 80}), json!({"cols": 80, "rows": 20_000})] {
        let message = json!({
            "process": {"cmd": "/bin/bash", "args": ["-i"]},
            "pty": {"size": size},
        });
        let mut events = stream(&server, &id, "Start", message).await?;
        let (flags, end) = events.next().await?;
        assert_eq!(flags, 2, "{end}");
        assert_eq!(end["error"]["code"], "invalid_argument", "{end}");
    }

    // The session still answers; SIGKILL (what `pty.kill` sends) ends it with 137.
    typed(&server, &id, pid, b"echo alive\r").await?;
    term.until("\r\nalive\r\n").await?;
    let kill = json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"});
    let reply = server.unary(&id, "/process.Process/SendSignal", kill).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(term.end().await?["exitCode"], 137);
    Ok(())
}

#[tokio::test]
async fn pty_session_survives_a_pause() -> anyhow::Result<()> {
    let server = Server::new()?;
    let id = server.create(json!({})).await;
    let mut term = Terminal::open(&server, &id, 80, 24).await?;
    let pid = term.pid;
    term.until(PROMPT).await?;
    typed(&server, &id, pid, b"x=kept\r").await?;
    term.until(PROMPT).await?;
    let reply = server
        .api("POST", &format!("/sandboxes/{id}/pause"), Some(json!({})))
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let (flags, end) = term.events.next().await?;
    assert_eq!(
        (flags, end["error"]["code"].clone()),
        (2, json!("unavailable"))
    );
    let reply = server
        .api("POST", &format!("/sandboxes/{id}/connect"), Some(json!({})))
        .await;
    assert!(reply.status.is_success());

    // Re-attached, the same shell (its variables kept) answers through a terminal again.
    let mut events = stream(&server, &id, "Connect", json!({"process": {"pid": pid}})).await?;
    assert_eq!(events.event().await?["start"]["pid"], json!(pid));
    term.events = events;
    typed(&server, &id, pid, b"echo $x\r").await?;
    term.until("\r\nkept\r\n").await?;
    typed(&server, &id, pid, b"exit\r").await?;
    assert_eq!(term.end().await?["exitCode"], 0);
    Ok(())
}
