'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const { moat, uniqueName, config, cleanup, recordedStatus } = require('./helpers.js')
const { Sandbox, NotFoundError, NotRunningError } = moat

test.after(cleanup)

test('Sandbox.start, startDetached and SandboxHandle.start relaunch a stopped sandbox', async () => {
  const name = uniqueName('restart')
  const first = await Sandbox.createDetached(config(name))
  await first.stop()
  assert.equal(recordedStatus(name), 'stopped')
  await assert.rejects(first.exec('true'), NotRunningError)

  const attached = await Sandbox.start(name)
  assert.equal(attached.ownsLifecycle, true)
  assert.equal(recordedStatus(name), 'running')
  assert.equal((await attached.exec('echo', ['again'])).stdout(), 'again\n')
  await attached.stop()

  const detached = await Sandbox.startDetached(name)
  assert.equal(detached.ownsLifecycle, false)
  assert.equal((await detached.shell('echo detached')).stdout(), 'detached\n')
  await detached.stop()

  const handle = await Sandbox.get(name)
  assert.equal(handle.status, 'stopped')
  const viaHandle = await handle.start()
  assert.equal(viaHandle.ownsLifecycle, true)
  assert.equal(recordedStatus(name), 'running')
  await viaHandle.kill()
  const viaHandleDetached = await (await Sandbox.get(name)).startDetached()
  assert.equal(viaHandleDetached.ownsLifecycle, false)
  await viaHandleDetached.kill()
  await Sandbox.remove(name)
})

test('drain refuses new execs and the sandbox stops once the running one ends', async () => {
  const name = uniqueName('drain')
  const sb = await Sandbox.create(config(name))
  const running = await sb.execStream('sh', ['-c', 'sleep 1; echo finished'])
  await sb.drain()
  assert.equal(recordedStatus(name), 'draining')
  await assert.rejects(sb.exec('true'), NotRunningError)
  const out = await running.collect()
  assert.equal(out.stdout(), 'finished\n', 'the running exec finishes')
  await sb.wait()
  assert.equal(recordedStatus(name), 'stopped')
})

test('an ephemeral sandbox is removed when it ends', async () => {
  const name = uniqueName('eph')
  const sb = await Sandbox.create(config(name, { ephemeral: true }))
  assert.equal((await sb.exec('true')).code, 0)
  await sb.kill()
  assert.equal(recordedStatus(name), null)
  await assert.rejects(Sandbox.get(name), NotFoundError)
  assert.equal((await Sandbox.list()).some((s) => s.name === name), false)
})

test('labels are recorded and Sandbox.listWith matches every given label', async () => {
  const a = uniqueName('lab-a')
  const b = uniqueName('lab-b')
  const sa = await Sandbox.create(config(a, { labels: { team: 'red', tier: 'web' } }))
  const sbb = await Sandbox.create(config(b, { labels: { team: 'blue', tier: 'web' } }))
  try {
    const names = async (labels) => (await Sandbox.listWith({ labels })).map((s) => s.name).filter((n) => n === a || n === b)
    assert.deepEqual(await names({ team: 'red' }), [a])
    assert.deepEqual(await names({ tier: 'web' }), [a, b].sort())
    assert.deepEqual(await names({ tier: 'web', team: 'blue' }), [b])
    assert.deepEqual(await names({ team: 'green' }), [])
    assert.deepEqual(await names({}), [a, b].sort())
    assert.deepEqual((await Sandbox.listWith({})).map((s) => s.name).filter((n) => n === a || n === b), [a, b].sort())
  } finally {
    await sa.kill()
    await sbb.kill()
  }
})

test('config.shell is what shell() and shellStream() run', async () => {
  const sb = await Sandbox.create(config(uniqueName('shell'), { shell: '/bin/echo' }))
  try {
    assert.equal((await sb.shell('hi there')).stdout(), '-c hi there\n')
    assert.equal((await (await sb.shellStream('streamed')).collect()).stdout(), '-c streamed\n')
  } finally {
    await sb.kill()
  }
  const plain = await Sandbox.create(config(uniqueName('sh')))
  try {
    assert.equal((await plain.shell('echo $0')).stdout(), '/bin/sh\n')
  } finally {
    await plain.kill()
  }
})
