'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const { spawnSync } = require('node:child_process')
const path = require('node:path')
const { moat, home, uniqueName, config, cleanup, recordedStatus, recordedPid, pidAlive } = require('./helpers.js')
const { Sandbox, ExecOutput } = moat

test.after(cleanup)

test('create, exec, list, get, stop and remove a namespace sandbox', async () => {
  const name = uniqueName('life')
  const sb = await Sandbox.create(config(name, { env: { GREETING: 'hello' }, workdir: '/tmp' }))
  assert.ok(sb instanceof Sandbox)
  assert.equal(sb.name, name)
  assert.equal(sb.ownsLifecycle, true)

  const out = await sb.exec('sh', ['-c', 'echo "$GREETING from $(pwd)"; echo oops >&2; exit 3'])
  assert.ok(out instanceof ExecOutput)
  assert.equal(out.code, 3)
  assert.equal(out.success, false)
  assert.equal(out.stdout(), 'hello from /tmp\n')
  assert.equal(out.stderr(), 'oops\n')
  assert.deepEqual(out.stdoutBytes(), Buffer.from('hello from /tmp\n'))
  assert.deepEqual(out.stderrBytes(), Buffer.from('oops\n'))
  assert.deepEqual(out.status(), { code: 3, success: false })

  const ok = await sb.shell('true')
  assert.equal(ok.success, true)

  const listed = await Sandbox.list()
  const info = listed.find((s) => s.name === name)
  assert.equal(info.status, 'running')
  assert.equal(typeof info.createdAt, 'number')
  assert.equal(JSON.parse(info.configJson).name, name)

  const handle = await Sandbox.get(name)
  assert.equal(handle.name, name)
  assert.equal(handle.status, 'running')

  const pid = recordedPid(name)
  const status = await sb.stopAndWait()
  assert.equal(typeof status.code, 'number')
  assert.equal(recordedStatus(name), 'stopped')
  assert.equal(sb.ownsLifecycle, false, 'a stopped sandbox has nothing left for its handle to end')
  // The sandbox process was node's child: the package reaps it, leaving no zombie behind.
  for (let i = 0; i < 50 && fs.existsSync(`/proc/${pid}`); i++) {
    await Sandbox.list()
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  assert.equal(fs.existsSync(`/proc/${pid}`), false, `sandbox process ${pid} was not reaped`)
  assert.equal((await handle.refresh()).status, 'stopped')

  await Sandbox.remove(name)
  assert.equal(recordedStatus(name), null)
})

test('execWith takes an options object and the builder callback', async () => {
  const sb = await Sandbox.create(config(uniqueName('opts')))
  try {
    const viaObject = await sb.execWith('sh', {
      args: ['-c', 'cat; echo "$A" >&2; pwd'],
      env: { A: 'from-env' },
      cwd: '/',
      stdin: { kind: 'bytes', data: Buffer.from('from-stdin ') },
    })
    assert.equal(viaObject.stdout(), 'from-stdin /\n')
    assert.equal(viaObject.stderr(), 'from-env\n')

    const viaBuilder = await sb.execWith('sh', (b) =>
      b.args(['-c', 'cat; ulimit -n']).stdinBytes(Buffer.from('x')).rlimit('nofile', 77))
    assert.equal(viaBuilder.stdout(), 'x77\n')
  } finally {
    await sb.kill()
  }
})

test('a command that cannot start rejects with ExecFailedError', async () => {
  const sb = await Sandbox.create(config(uniqueName('nocmd')))
  try {
    await assert.rejects(sb.exec('/no/such/program'), (err) => {
      assert.ok(err instanceof moat.ExecFailedError)
      assert.equal(err.code, 'ERR_MOAT_EXEC_FAILED')
      return true
    })
    // The sandbox still serves the next command.
    assert.equal((await sb.exec('true')).code, 0)
  } finally {
    await sb.kill()
  }
})

test('a detached sandbox survives its handle; connect gives a non-owning handle', async () => {
  const name = uniqueName('detached')
  const sb = await Sandbox.createDetached(config(name))
  assert.equal(sb.ownsLifecycle, false)
  const again = await (await Sandbox.get(name)).connect()
  assert.equal(again.ownsLifecycle, false)
  assert.equal((await again.exec('echo', ['x'])).stdout(), 'x\n')
  await again.kill()
  assert.notEqual(recordedStatus(name), 'running')
  await (await Sandbox.get(name)).remove()
  assert.equal(recordedStatus(name), null)
})

test('replace removes a same-named sandbox first', async () => {
  const name = uniqueName('replace')
  await Sandbox.createDetached(config(name))
  await assert.rejects(Sandbox.createDetached(config(name)), { code: 'ERR_MOAT_ALREADY_EXISTS' })
  const second = await Sandbox.createDetached(config(name, { replace: true }))
  assert.equal((await second.exec('true')).code, 0)
  await second.kill()
})

test('exec does not block the event loop', async () => {
  const sb = await Sandbox.create(config(uniqueName('loop')))
  try {
    let ticks = 0
    const timer = setInterval(() => { ticks += 1 }, 20)
    await sb.exec('sleep', ['1'])
    clearInterval(timer)
    assert.ok(ticks >= 20, `only ${ticks} timer ticks during a 1 s exec`)
  } finally {
    await sb.kill()
  }
})

test('image functions read the image store', async () => {
  assert.deepEqual(await moat.imageList(), [])
  await assert.rejects(moat.imageInspect('alpine:3.20'), { code: 'ERR_MOAT_NOT_FOUND' })
  await assert.rejects(moat.imageGet('alpine:3.20'), (err) => err instanceof moat.NotFoundError)
  assert.equal(typeof (await moat.imageGc()), 'number')
  await assert.rejects(moat.imageRemove('alpine:3.20'), (err) => err instanceof moat.MoatError)
})

test('a garbage-collected attached handle kills its sandbox', () => {
  const name = uniqueName('collected')
  const script = `
    const { Sandbox } = require(${JSON.stringify(path.join(__dirname, '..'))})
    const fs = require('node:fs')
    ;(async () => {
      await Sandbox.create({ name: ${JSON.stringify(name)}, image: 'host', isolation: 'namespace' })
      const state = ${JSON.stringify(path.join(home, 'sandboxes', name, 'state.json'))}
      for (let i = 0; i < 100; i++) {
        global.gc()
        await new Promise((resolve) => setTimeout(resolve, 100))
        if (JSON.parse(fs.readFileSync(state, 'utf8')).status !== 'running') {
          console.log('ended')
          process.exit(0)
        }
      }
      process.exit(2)
    })().catch((err) => { console.error(err); process.exit(1) })`
  const child = spawnSync(process.execPath, ['--expose-gc', '-e', script], { env: { ...process.env, MOAT_HOME: home }, encoding: 'utf8' })
  assert.equal(child.status, 0, `the sandbox still ran 10 s after its handle was collected: ${child.stderr}`)
  assert.equal(child.stdout.trim(), 'ended')
  assert.notEqual(recordedStatus(name), 'running')
  assert.equal(pidAlive(recordedPid(name)), false)
})
