'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const { moat, uniqueName, config, cli, cleanup, recordedStatus, recordedPid, pidAlive } = require('./helpers.js')
const { Sandbox, InvalidArgumentError, NotSupportedError, NotFoundError, MoatError } = moat

test.after(cleanup)

function rejectsWith(Class, code, pattern) {
  return (err) => {
    assert.ok(err instanceof Class, `${err.constructor.name}: ${err.message}`)
    assert.ok(err instanceof MoatError)
    assert.ok(err instanceof Error)
    assert.equal(err.code, code)
    if (pattern) assert.match(err.message, pattern)
    return true
  }
}
const invalid = (pattern) => rejectsWith(InvalidArgumentError, 'ERR_MOAT_INVALID_ARGUMENT', pattern)
const unsupported = (pattern) => rejectsWith(NotSupportedError, 'ERR_MOAT_NOT_SUPPORTED', pattern)

test('wrong config types and missing fields reject with InvalidArgumentError', async () => {
  await assert.rejects(Sandbox.create({ name: 42, image: 'host' }), invalid(/name/))
  await assert.rejects(Sandbox.create({ image: 'host' }), invalid(/config\.name is required/))
  await assert.rejects(Sandbox.create({ name: 'x' }), invalid(/config\.image is required/))
  await assert.rejects(Sandbox.create(), invalid())
  await assert.rejects(Sandbox.create('just-a-string'), invalid())
  await assert.rejects(Sandbox.create(config('x', { cpus: 'two' })), invalid(/cpus/))
  await assert.rejects(Sandbox.create(config('x', { cpus: 0 })), invalid(/cpus/))
  await assert.rejects(Sandbox.create(config('x', { env: { A: 1 } })), invalid())
  await assert.rejects(Sandbox.create(config('x', { isolation: 'container' })), invalid(/isolation/))
  await assert.rejects(Sandbox.create(config('x', { image: './no/such/dir' })), invalid(/not a usable path/))
  await assert.rejects(Sandbox.create(config('bad/name')), invalid(/name/))
  await assert.rejects(Sandbox.create(config('x', { volumes: { '/m': { readonly: true } } })), invalid(/exactly one/))
  for (const stopSignal of ['SIGFOO', 'SIGRTMIN+99', 0, 65, 1.5, -9, true, {}]) {
    await assert.rejects(Sandbox.create(config('x', { stopSignal })), invalid(/stopSignal/), `stopSignal ${JSON.stringify(stopSignal)}`)
  }
  await assert.rejects(Sandbox.get(7), invalid())
  await assert.rejects(Sandbox.remove(undefined), invalid())
  assert.deepEqual(await Sandbox.list(), [], 'no sandbox was left behind')
})

test('config fields moat does not support reject by name', async () => {
  const fields = {
    secrets: [], entrypoint: ['x'], cmd: ['x'], logLevel: 'debug', snapshot: 'base',
  }
  for (const [field, value] of Object.entries(fields)) {
    await assert.rejects(Sandbox.create(config(uniqueName('unsup'), { [field]: value })),
      unsupported(new RegExp(`not supported by moat: config\\.${field}`)))
  }
  await assert.rejects(Sandbox.create(config('x', { pullPolicy: 'always' })), unsupported(/pullPolicy/))
  await assert.rejects(Sandbox.create(config('x', { labels: { a: 1 } })), invalid())
  await assert.rejects(Sandbox.create(config('x', { shell: 7 })), invalid())
  await assert.rejects(Sandbox.create(config('x', { image: '/disk.qcow2' })), unsupported(/disk image/))
  assert.deepEqual(await Sandbox.list(), [], 'no sandbox was left behind')
})

test('calls moat does not support reject by name; bad exec arguments are typed errors', async () => {
  const name = uniqueName('calls')
  const sb = await Sandbox.create(config(name))
  try {
    await assert.rejects(sb.metricsStream(0), invalid(/intervalMs/))
    await assert.rejects(sb.metricsStream('often'), invalid())
    await assert.rejects(sb.logs({ sources: 'stdout' }), invalid())
    await assert.rejects(Sandbox.listWith({ labels: { a: 1 } }), invalid())
    await assert.rejects(Sandbox.start('no-such-sandbox'), rejectsWith(NotFoundError, 'ERR_MOAT_NOT_FOUND'))
    await assert.rejects(Sandbox.start(name), rejectsWith(MoatError, 'ERR_MOAT_ALREADY_RUNNING'))

    await assert.rejects(sb.execStream(42), invalid())
    await assert.rejects(sb.execStream(''), invalid(/empty/))
    await assert.rejects(sb.execStreamWith('true', { timeoutMs: -5 }), invalid(/timeoutMs/))
    await assert.rejects(sb.execStreamWith('true', { stdin: { kind: 'pipe', data: Buffer.from('x') } }), invalid(/stdin kind/))
    await assert.rejects(sb.shellStream(null), invalid())
    await assert.rejects(sb.fs().read(42), invalid())
    await assert.rejects(sb.fs().write('/tmp/x', 42), invalid())
    await assert.rejects(sb.fs().copy('/tmp/x'), invalid())

    await assert.rejects(sb.exec(42), invalid())
    await assert.rejects(sb.exec('echo', 'not-an-array'), invalid())
    await assert.rejects(sb.exec(''), invalid(/empty/))
    await assert.rejects(sb.execWith('true', { timeoutMs: Number.NaN }), invalid(/timeoutMs/))
    await assert.rejects(sb.execWith('true', (b) => b.stdinPipe()), unsupported(/pipe/))
    await assert.rejects(sb.execWith('true', { stdin: { kind: 'file' } }), invalid(/stdin kind/))
    await assert.rejects(sb.execWith('true', { rlimits: [{ resource: 'nofile', soft: -1, hard: 1 }] }), invalid(/rlimit/))
    await assert.rejects(sb.execWith('true', () => 'not the builder'), invalid(/builder/))
    assert.equal((await sb.exec('true')).code, 0, 'the sandbox still works')
  } finally {
    await sb.kill()
  }
})

test('a sandbox removed under a live handle gives NotFoundError, not a crash', async () => {
  const name = uniqueName('gone')
  const sb = await Sandbox.create(config(name))
  const pid = recordedPid(name)
  const rm = cli('rm', '-f', name)
  assert.equal(rm.status, 0, rm.stderr)
  assert.equal(recordedStatus(name), null)
  assert.equal(pidAlive(pid), false, 'moat rm -f ended the sandbox process')
  const notFound = rejectsWith(NotFoundError, 'ERR_MOAT_NOT_FOUND', new RegExp(name))
  await assert.rejects(sb.exec('true'), notFound)
  await assert.rejects(sb.stop(), notFound)
  await assert.rejects(sb.kill(), notFound)
  await assert.rejects(sb.wait(), notFound)
  await assert.rejects(sb.removePersisted(), notFound)
  await assert.rejects(sb.execStream('true'), notFound)
  await assert.rejects(sb.shellStream('true'), notFound)
  await assert.rejects(sb.fs().read('/etc/hostname'), notFound)
  await assert.rejects(sb.fs().readStream('/etc/hostname'), notFound)
  await assert.rejects(sb.drain(), notFound)
  await assert.rejects(sb.metrics(), notFound)
  await assert.rejects(sb.metricsStream(100), notFound)
  await assert.rejects(Sandbox.start(name), notFound)
  await assert.rejects(Sandbox.get(name), notFound)
})

