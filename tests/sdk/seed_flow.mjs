// The seed's persistence flow, driven by the real Novita JavaScript SDK against a local Stasis server.
// Run by tests/sdk/run.sh, which starts the server and sets NOVITA_API_URL, NOVITA_SANDBOX_URL and
// NOVITA_API_KEY. Exits non-zero (with the failing step) if anything differs from what the documentation
// promises.
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { Sandbox } from 'novita-sandbox'

const step = (message) => console.log(`js: ${message}`)
const tag = randomUUID()

const sandbox = await Sandbox.create({ metadata: { suite: 'seed', tag }, timeoutMs: 120_000 })
step(`created ${sandbox.sandboxId}`)

const written = await sandbox.commands.run('echo hello > /tmp/message.txt')
assert.equal(written.exitCode, 0)
step('wrote /tmp/message.txt')

assert.equal(await sandbox.pause(), true, 'the first pause pauses')
assert.equal(await Sandbox.pause(sandbox.sandboxId), false, 'a second pause reports it was already paused')
step('paused')

const paused = await Sandbox.list({ query: { state: ['paused'], metadata: { tag } } }).nextItems()
assert.deepEqual(paused.map((s) => s.sandboxId), [sandbox.sandboxId])
step('listed among the paused sandboxes by metadata')

const resumed = await Sandbox.connect(sandbox.sandboxId, { timeoutMs: 600_000 })
const output = await resumed.commands.run('cat /tmp/message.txt')
assert.equal(output.stdout, 'hello\n')
step(`connected and read back ${JSON.stringify(output.stdout.trim())}`)

assert.equal(await resumed.files.read('/tmp/message.txt'), 'hello\n')
step('files api read')

const chunks = []
const streamed = await resumed.commands.run('echo a; sleep 1; echo b', { onStdout: (d) => chunks.push(d) })
assert.equal(streamed.stdout, 'a\nb\n')
assert.equal(chunks[0], 'a\n')
step(`output streamed as written: ${JSON.stringify(chunks)}`)

const cat = await resumed.commands.run('cat', { background: true, stdin: true })
assert.ok((await resumed.commands.list()).some((p) => p.pid === cat.pid), 'a background command is listed')
await resumed.commands.sendStdin(cat.pid, 'ping ')
await resumed.commands.sendStdin(cat.pid, 'pong')
await resumed.commands.closeStdin(cat.pid)
assert.equal((await cat.wait()).stdout, 'ping pong')
assert.ok(!(await resumed.commands.list()).some((p) => p.pid === cat.pid), 'an ended command is not listed')
step('background command: stdin sent, closed, echoed back')

const sleeper = await resumed.commands.run('sleep 100', { background: true })
assert.equal(await sleeper.kill(), true)
await assert.rejects(sleeper.wait(), (error) => error.exitCode === 137)
assert.equal(await resumed.commands.kill(sleeper.pid), false, 'a second kill reports not found')
step('background command killed (exit 137); a second kill reports not found')

assert.equal(await Sandbox.kill(sandbox.sandboxId), true)
assert.equal(await Sandbox.kill(sandbox.sandboxId), false, 'a second kill reports not found')
step('killed; a second kill reports not found')
