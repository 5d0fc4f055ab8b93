// The persistence surface the Novita JavaScript SDK has, driven by the real `novita-sandbox` against a local
// Stasis server: snapshots (create, list by sandbox one page at a time, create from one, delete), metrics,
// clones, the network policy, watchDir (the WatchDir stream), multi-file writes, and volumes mounted into sandboxes.
// Sandbox.clone (the JS SDK's fork). (It has no filesystem-only pause and no logs: persistence.py covers those.)
// Run by tests/sdk/run.sh, which sets NOVITA_API_URL, NOVITA_SANDBOX_URL and NOVITA_API_KEY and samples
// metrics every second. Exits non-zero with the failing step.
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { Sandbox, Volume } from 'novita-sandbox'

const step = (message) => console.log(`js: ${message}`)
const tag = randomUUID().slice(0, 12)
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function eventually(what, check, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(200)
  }
}

// Snapshots.
const source = await Sandbox.create({ timeoutMs: 120_000 })
await source.commands.run('echo from js > /home/user/js.txt')
const first = await source.createSnapshot()
const second = await source.createSnapshot()
assert.ok(first.snapshotId.startsWith('snap_'), first.snapshotId)
const ids = []
const paginator = source.listSnapshots({ limit: 1 })
while (paginator.hasNext) {
  const page = await paginator.nextItems()
  assert.ok(page.length <= 1)
  ids.push(...page.map((s) => s.snapshotId))
}
assert.deepEqual(ids, [first.snapshotId, second.snapshotId])
step('createSnapshot, and listSnapshots one page at a time')
const restored = await Sandbox.create(first.snapshotId, { timeoutMs: 60_000 })
assert.equal(await restored.files.read('/home/user/js.txt'), 'from js\n')
step('Sandbox.create(snapshotId) starts with its files')
assert.equal(await Sandbox.deleteSnapshot(first.snapshotId), true)
assert.equal(await Sandbox.deleteSnapshot(first.snapshotId), false)
assert.equal(await Sandbox.deleteSnapshot(second.snapshotId), true)
step('deleteSnapshot: true, then false')
await restored.kill()

// Clones: copies of the running source, which keeps running.
const cloned = await Sandbox.clone(source.sandboxId, { count: 2, strict: true, timeoutMs: 60_000 })
assert.equal(cloned.count, 2)
assert.notEqual(cloned.sandboxes[0].sandboxId, cloned.sandboxes[1].sandboxId)
for (const clone of cloned.sandboxes) {
  assert.notEqual(clone.sandboxId, source.sandboxId)
  assert.equal(await clone.files.read('/home/user/js.txt'), 'from js\n')
  await clone.files.write('/home/user/own.txt', clone.sandboxId)
}
assert.equal(await cloned.sandboxes[0].files.read('/home/user/own.txt'), cloned.sandboxes[0].sandboxId)
assert.equal(await source.isRunning(), true)
await assert.rejects(Sandbox.clone(source.sandboxId, { count: 21 }))
for (const clone of cloned.sandboxes) await clone.kill()
step('Sandbox.clone: two copies with the source\'s files, each on its own; a count of 21 refused')

// Metrics.
await source.files.write('/home/user/disk.bin', new Uint8Array(200_000))
const metrics = await eventually('two samples', async () => {
  const m = await source.getMetrics()
  return m.length >= 2 && m
})
assert.ok(metrics.every((m) => m.cpuCount === 1 && m.memTotal > 0 && m.timestamp instanceof Date))
assert.ok(Math.max(...metrics.map((m) => m.diskUsed)) >= 200_000)
step(`getMetrics: ${metrics.length} samples`)

// Network policy and info.
await source.setNetwork({ allowOut: ['1.1.1.1'], denyOut: ['0.0.0.0/0'] })
const info = await source.getInfo()
assert.deepEqual(info.network.allowOut, ['1.1.1.1'])
assert.deepEqual(info.network.denyOut, ['0.0.0.0/0'])
assert.deepEqual(info.lifecycle, { onTimeout: 'kill', autoResume: false })
assert.equal(info.envdVersion, '0.5.7')
step('setNetwork stored and reported by getInfo, with the lifecycle')

// watchDir (the WatchDir stream) and writing several files.
await source.files.makeDir('/home/user/watched')
const events = []
const handle = await source.files.watchDir('/home/user/watched', (e) => events.push(e), { recursive: true })
const written = await source.files.write([
  { path: '/home/user/watched/one.txt', data: '1' },
  { path: '/home/user/watched/deep/two.txt', data: '2' },
])
assert.deepEqual(written.map((w) => w.path).sort(), ['/home/user/watched/deep/two.txt', '/home/user/watched/one.txt'])
await eventually('the watch events', () =>
  events.some((e) => e.name === 'one.txt' && e.type === 'create') &&
  events.some((e) => e.name === 'deep/two.txt' && e.type === 'create'))
await handle.stop()
assert.equal((await source.commands.run('cat /home/user/watched/deep/two.txt')).stdout, '2')
step('watchDir streams create events (recursive); files.write wrote two files in one request')
await source.kill()

// Volumes.
const volume = await Volume.create(`jsvol-${tag}`)
assert.ok(volume.volumeId.startsWith('vol_') && volume.token)
const mounted = await Sandbox.create({ timeoutMs: 120_000, volumeMounts: { '/data': volume } })
await mounted.commands.run('echo kept > /data/kept.txt')
const other = await Sandbox.create({ timeoutMs: 120_000, volumeMounts: { '/shared': volume.name } })
assert.equal((await other.commands.run('cat /shared/kept.txt')).stdout, 'kept\n')
assert.deepEqual((await mounted.getInfo()).volumeMounts, [{ name: volume.name, path: '/data' }])
step('Volume.create, mounted into two sandboxes (by Volume and by name)')
assert.equal(await mounted.pause(), true)
await other.files.write('/shared/later.txt', 'while the first was paused')
const back = await Sandbox.connect(mounted.sandboxId)
assert.equal((await back.commands.run('cat /data/later.txt')).stdout, 'while the first was paused')
step('a paused sandbox resumes with its mount, and sees what was written meanwhile')
await back.kill()
await other.kill()
const connected = await Volume.connect(volume.volumeId)
assert.equal(connected.name, volume.name)
assert.ok((await Volume.list()).some((v) => v.volumeId === volume.volumeId))
assert.ok((await Volume.getInfo(volume.volumeId)).usedSizeBytes > 0, 'kill leaves the volume intact')
assert.equal(await Volume.destroy(volume.volumeId), true)
assert.equal(await Volume.destroy(volume.volumeId), false)
step('Volume.connect, list, getInfo after the sandboxes are gone, destroy')
