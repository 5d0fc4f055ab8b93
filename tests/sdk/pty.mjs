// An interactive terminal session, driven by the real Novita JavaScript SDK (`sandbox.pty`) against a local
// Stasis server: create with a size and onData, type a command, Ctrl-C interrupting a running command
// without ending the shell, resize, kill, and the exit code of `exit N`.
// Run by tests/sdk/run.sh, which sets NOVITA_API_URL, NOVITA_SANDBOX_URL and NOVITA_API_KEY. Exits non-zero
// with the failing step. Waits for expected screen contents (a minute at most), never on timing.
import assert from 'node:assert/strict'
import { CommandExitError, Sandbox } from 'novita-sandbox'

const step = (message) => console.log(`js (pty): ${message}`)
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const PROMPT = '$ '

// What a terminal showed, and how much of it earlier waits consumed.
function screen() {
  const decoder = new TextDecoder()
  const s = {
    text: '',
    seen: 0,
    onData: (data) => {
      s.text += decoder.decode(data, { stream: true })
    },
    async until(needle, timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs
      for (;;) {
        const at = s.text.indexOf(needle, s.seen)
        if (at >= 0) {
          const shown = s.text.slice(s.seen, at + needle.length)
          s.seen = at + needle.length
          return shown
        }
        if (Date.now() > deadline) {
          throw new Error(`${JSON.stringify(needle)} never showed; after the last wait: ${JSON.stringify(s.text.slice(s.seen))}`)
        }
        await sleep(50)
      }
    },
  }
  return s
}

async function exitCode(handle) {
  try {
    return (await handle.wait()).exitCode
  } catch (e) {
    if (e instanceof CommandExitError) return e.exitCode
    throw e
  }
}

const encode = (text) => new TextEncoder().encode(text)
const sandbox = await Sandbox.create({ timeoutMs: 120_000 })
let term = screen()
let handle = await sandbox.pty.create({ cols: 80, rows: 24, onData: term.onData })
const pid = handle.pid
await term.until(PROMPT)

await sandbox.pty.sendInput(pid, encode('echo hi\r'))
assert.equal(await term.until('hi\r\n'), 'echo hi\r\n')
await term.until('hi\r\n')
await term.until(PROMPT)
step('typed `echo hi`: echo, output with \\r\\n, a new prompt')

await sandbox.pty.sendInput(pid, encode('echo sleeping; sleep 100\r'))
await term.until('sleeping\r\n')
await sandbox.pty.sendInput(pid, encode('\x03'))
await term.until('^C\r\n')
await term.until(PROMPT)
await sandbox.pty.sendInput(pid, encode('echo status $? $COLUMNS\r'))
await term.until('\r\nstatus 130 80\r\n')
step('Ctrl-C interrupted `sleep 100` (status 130) and the shell answers')

await sandbox.pty.resize(pid, { cols: 120, rows: 40 })
const listed = (await sandbox.commands.list()).map((p) => p.pid)
assert.ok(listed.includes(pid), `${listed}`)
await sandbox.pty.sendInput(pid, encode('exit 3\r'))
assert.equal(await exitCode(handle), 3)
step('resize answers, commands.list shows the PTY, `exit 3` gives exit code 3')

term = screen()
handle = await sandbox.pty.create({ cols: 80, rows: 24, onData: term.onData })
await term.until(PROMPT)
assert.equal(await sandbox.pty.kill(handle.pid), true)
assert.equal(await exitCode(handle), 137)
await assert.rejects(sandbox.pty.sendInput(handle.pid, encode('x')), /not found/i)
step('kill gives 137; an ended PTY is not found')
await sandbox.kill()
step('passed')
