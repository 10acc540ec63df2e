'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const path = require('node:path')
const { spawnSync } = require('node:child_process')
const { moat, home, uniqueName, config, cleanup } = require('./helpers.js')
const { Sandbox, ExecHandle, ExecSink, ExecOutput, MoatError, ExecFailedError, ConnectionError } = moat

test.after(cleanup)

const PKG = JSON.stringify(path.join(__dirname, '..'))

/** Whether the guest process `pid` still runs, asked through a fresh exec. */
async function guestAlive(sb, pid) {
  return (await sb.exec('sh', ['-c', `kill -0 ${pid}`])).code === 0
}

async function until(check, what) {
  for (let i = 0; i < 100; i++) {
    if (await check()) return
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  assert.fail(`timed out waiting until ${what}`)
}

/** The first stdout chunk of `handle` as a number: the scripts below start with `echo $$`. */
async function firstPid(handle) {
  for (let event; (event = await handle.recv()) !== null;) {
    if (event.eventType === 'stdout') return Number(event.data.toString().trim())
  }
  assert.fail('no stdout')
}

test('execStream: started, stdout, stderr, exited in order, async-iterable, then null', async () => {
  const sb = await Sandbox.create(config(uniqueName('stream')))
  try {
    const handle = await sb.execStream('sh', ['-c', 'echo out; echo err >&2; exit 3'])
    assert.ok(handle instanceof ExecHandle)
    const events = []
    for await (const event of handle) events.push(event)
    assert.equal(events[0].eventType, 'started')
    assert.equal(events.at(-1).eventType, 'exited')
    assert.equal(events.at(-1).code, 3)
    const text = (type) => Buffer.concat(events.filter((e) => e.eventType === type).map((e) => e.data)).toString()
    assert.equal(text('stdout'), 'out\n')
    assert.equal(text('stderr'), 'err\n')
    assert.equal(await handle.recv(), null)
    assert.deepEqual(await handle.wait(), { code: 3, success: false })

    const collected = await (await sb.shellStream('printf abc; printf def >&2')).collect()
    assert.ok(collected instanceof ExecOutput)
    assert.equal(collected.stdout(), 'abc')
    assert.equal(collected.stderr(), 'def')
    assert.equal(collected.code, 0)

    assert.deepEqual(await (await sb.execStream('sh', ['-c', 'exit 7'])).wait(), { code: 7, success: false })

    const big = await (await sb.execStream('sh', ['-c', 'head -c 20000000 /dev/zero'])).collect()
    assert.equal(big.stdoutBytes().length, 20000000)
  } finally {
    await sb.kill()
  }
})

test('execStreamWith: stdin pipe through takeStdin, bytes, env and the builder callback', async () => {
  const sb = await Sandbox.create(config(uniqueName('stdin')))
  try {
    const handle = await sb.execStreamWith('cat', (b) => b.stdinPipe())
    const sink = await handle.takeStdin()
    assert.ok(sink instanceof ExecSink)
    assert.equal(await handle.takeStdin(), null, 'the sink is taken once')
    await sink.write('hello ')
    await sink.write(Buffer.from('world'))
    await sink.close()
    await sink.close()
    await assert.rejects(sink.write('late'), (err) => err instanceof ConnectionError && err.code === 'ERR_MOAT_CLOSED')
    const out = await handle.collect()
    assert.equal(out.stdout(), 'hello world')

    const noPipe = await sb.execStream('cat')
    assert.equal(await noPipe.takeStdin(), null, 'without "pipe" there is no sink')
    assert.equal((await noPipe.collect()).stdout(), '', 'and stdin is closed: cat ends')

    const bytes = await sb.execStreamWith('sh', { args: ['-c', 'cat; echo " $X"'], env: { X: 'y' }, stdin: { kind: 'bytes', data: Buffer.from('in') } })
    assert.equal((await bytes.collect()).stdout(), 'in y\n')
  } finally {
    await sb.kill()
  }
})

test('kill() ends a quiet command while a recv() waits; signal() delivers a signal', async () => {
  const sb = await Sandbox.create(config(uniqueName('kill')))
  try {
    const handle = await sb.execStream('sh', ['-c', 'echo $$; exec sleep 1000'])
    const pid = await firstPid(handle)
    assert.equal(await guestAlive(sb, pid), true)
    const pending = handle.recv()
    await handle.kill()
    const event = await pending
    assert.equal(event.eventType, 'exited')
    assert.notEqual(event.code, 0)
    assert.equal(await guestAlive(sb, pid), false)
    await handle.kill()
    assert.equal(await handle.recv(), null)

    const trapped = await sb.execStream('sh', ['-c', 'trap "echo got-term; exit 9" TERM; echo ready; while :; do sleep 0.1; done'])
    assert.equal((await trapped.recv()).eventType, 'started')
    assert.equal((await trapped.recv()).data.toString(), 'ready\n')
    await trapped.signal(15)
    const out = await trapped.collect()
    assert.equal(out.stdout(), 'got-term\n')
    assert.equal(out.code, 9)
    await assert.rejects(trapped.signal(0), (err) => err instanceof MoatError && err.code === 'ERR_MOAT_INVALID_ARGUMENT')
  } finally {
    await sb.kill()
  }
})

test('timeoutMs kills a command that runs too long (collected and streamed)', async () => {
  const sb = await Sandbox.create(config(uniqueName('timeout')))
  try {
    const started = Date.now()
    await assert.rejects(sb.execWith('sleep', (b) => b.args(['30']).timeout(300)),
      (err) => err instanceof MoatError && err.code === 'ERR_MOAT_TIMEOUT')
    const status = await (await sb.execStreamWith('sleep', { args: ['30'], timeoutMs: 300 })).wait()
    assert.equal(status.success, false)
    assert.ok(Date.now() - started < 15_000, 'both ended long before 30 s')
    assert.equal((await sb.execWith('echo', { args: ['fast'], timeoutMs: 10_000 })).stdout(), 'fast\n')
  } finally {
    await sb.kill()
  }
})

test('a command that cannot start rejects with ExecFailedError; a killed sandbox gives a typed end', async () => {
  const sb = await Sandbox.create(config(uniqueName('fail')))
  const failed = await sb.execStream('/no/such/program')
  await assert.rejects(failed.wait(), ExecFailedError)
  const live = await sb.execStream('sleep', ['1000'])
  await sb.kill()
  const ended = await live.wait().then((status) => status, (err) => err)
  if (ended instanceof Error) assert.ok(ended instanceof MoatError, `${ended.constructor.name}: ${ended.message}`)
  else assert.equal(ended.success, false)
})

/** Runs `body` in a child node with a detached sandbox `name`; returns its stdout. */
function child(name, body, args = []) {
  const script = `
    const { Sandbox } = require(${PKG})
    ;(async () => {
      const sb = await (await Sandbox.get(${JSON.stringify(name)})).connect()
      ${body}
    })().catch((err) => { console.error(err); process.exit(1) })`
  const run = spawnSync(process.execPath, [...args, '-e', script], { env: { ...process.env, MOAT_HOME: home }, encoding: 'utf8', timeout: 60_000 })
  assert.equal(run.status, 0, run.stderr)
  return run.stdout
}

test('a streamed command ends when node exits and when its handle is garbage-collected', async () => {
  const name = uniqueName('orphan')
  const sb = await Sandbox.createDetached(config(name))
  try {
    const exited = child(name, `
      const handle = await sb.execStream('sh', ['-c', 'echo $$; exec sleep 1000'])
      for (let e; (e = await handle.recv()) !== null;) if (e.eventType === 'stdout') { console.log(e.data.toString().trim()); break }
      process.exit(0)`)
    const pid = Number(exited.trim())
    assert.ok(pid > 0)
    await until(async () => !(await guestAlive(sb, pid)), `the command of an exited node (pid ${pid}) ends`)

    const collected = child(name, `
      let handle = await sb.execStream('sh', ['-c', 'echo $$; exec sleep 1000'])
      let pid
      for (let e; (e = await handle.recv()) !== null;) if (e.eventType === 'stdout') { pid = e.data.toString().trim(); break }
      handle = null
      for (let i = 0; i < 100; i++) {
        global.gc()
        await new Promise((resolve) => setTimeout(resolve, 100))
        const probe = await sb.exec('sh', ['-c', 'kill -0 ' + pid])
        if (probe.code !== 0) { console.log('ended'); return }
      }
      console.log('still running')`, ['--expose-gc'])
    assert.equal(collected.trim(), 'ended')
  } finally {
    await sb.kill()
  }
})
