// Attached and detached lifecycles across processes, and config.stopSignal. A child node
// creates the sandboxes and ends (exits, is SIGKILLed or SIGTERMed); this process checks what
// became of them and removes them.
'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const { spawn, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { moat, home, uniqueName, config, cli, cleanup, recordedStatus, recordedPid, pidAlive } = require('./helpers.js')
const { Sandbox } = moat

test.after(cleanup)

const PKG = JSON.stringify(path.join(__dirname, '..'))
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** Polls until `name` is recorded as ended and its sandbox process is gone. */
async function untilEnded(name, what) {
  const deadline = Date.now() + 30_000
  while (Date.now() < deadline) {
    const status = recordedStatus(name)
    if (status !== 'running' && status !== 'draining' && !pidAlive(recordedPid(name))) return status
    await sleep(100)
  }
  assert.fail(`${what}: ${name} still ${recordedStatus(name)} after 30 s`)
}

/** A child node script: `body` runs after the package is loaded as `Sandbox`. */
function script(body) {
  return `
    const { Sandbox } = require(${PKG})
    ;(async () => {
      ${body}
    })().catch((err) => { console.error(err); process.exit(1) })`
}

function childEnv() {
  return { ...process.env, MOAT_HOME: home }
}

/** Removes every named sandbox (running ones too). */
function removeAll(...names) {
  for (const name of names) cli('rm', '-f', name)
}

test('a Sandbox.create sandbox stops when its node process exits; createDetached and detach() keep theirs', async () => {
  const attached = uniqueName('owned')
  const detached = uniqueName('free')
  const released = uniqueName('released')
  try {
    const child = spawnSync(process.execPath, ['-e', script(`
      const cfg = (name) => ({ name, image: 'host', isolation: 'namespace' })
      const a = await Sandbox.create(cfg(${JSON.stringify(attached)}))
      const d = await Sandbox.createDetached(cfg(${JSON.stringify(detached)}))
      const r = await Sandbox.create(cfg(${JSON.stringify(released)}))
      await r.detach()
      console.log(JSON.stringify([a.ownsLifecycle, d.ownsLifecycle, r.ownsLifecycle]))
      process.exit(0)`)], { env: childEnv(), encoding: 'utf8', timeout: 60_000 })
    assert.equal(child.status, 0, child.stderr)
    assert.deepEqual(JSON.parse(child.stdout), [true, false, false])

    assert.equal(await untilEnded(attached, 'the attached sandbox of an exited node'), 'stopped')
    // The others outlive their creator, for longer than the attached one took to stop.
    await sleep(1500)
    for (const name of [detached, released]) {
      assert.equal(recordedStatus(name), 'running', name)
      assert.equal(pidAlive(recordedPid(name)), true, name)
    }
    const again = await (await Sandbox.get(released)).connect()
    assert.equal((await again.exec('echo', ['alive'])).stdout(), 'alive\n')
  } finally {
    removeAll(attached, detached, released)
  }
})

test('an attached sandbox stops when its node process is SIGKILLed, and when it is SIGTERMed', async () => {
  for (const signal of ['SIGKILL', 'SIGTERM']) {
    const name = uniqueName(signal.toLowerCase())
    try {
      const child = spawn(process.execPath, ['-e', script(`
        await Sandbox.create({ name: ${JSON.stringify(name)}, image: 'host', isolation: 'namespace' })
        console.log('ready')
        setInterval(() => {}, 1000)`)], { env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] })
      let stderr = ''
      child.stderr.on('data', (chunk) => { stderr += chunk })
      const ended = new Promise((resolve) => child.on('exit', (code, sig) => resolve({ code, sig })))
      await new Promise((resolve, reject) => {
        child.stdout.on('data', (chunk) => { if (chunk.toString().includes('ready')) resolve() })
        child.on('exit', () => reject(new Error(`the child ended before creating: ${stderr}`)))
      })
      assert.equal(recordedStatus(name), 'running')
      child.kill(signal)
      assert.deepEqual(await ended, { code: null, sig: signal })
      assert.equal(await untilEnded(name, `the attached sandbox of a ${signal}ed node`), 'stopped')
    } finally {
      removeAll(name)
    }
  }
})

test('an attached sandbox stops when its handle is garbage-collected; Sandbox.start is attached too', async () => {
  const name = uniqueName('collected')
  try {
    const child = spawnSync(process.execPath, ['--expose-gc', '-e', script(`
      const fs = require('node:fs')
      const statusOf = () => JSON.parse(fs.readFileSync(process.env.MOAT_HOME + '/sandboxes/${name}/state.json', 'utf8')).status
      const waitStopped = async () => {
        for (let i = 0; i < 300; i++) {
          global.gc()
          await new Promise((resolve) => setTimeout(resolve, 100))
          if (statusOf() === 'stopped') return true
        }
        return false
      }
      let sb = await Sandbox.create({ name: '${name}', image: 'host', isolation: 'namespace' })
      const fsHandle = sb.fs() // an fs handle does not keep the sandbox alive
      sb = null
      const first = await waitStopped()
      let restarted = await Sandbox.start('${name}')
      const owned = restarted.ownsLifecycle
      restarted = null
      const second = await waitStopped()
      console.log(JSON.stringify({ first, owned, second, kept: typeof fsHandle }))
      process.exit(0)`)], { env: childEnv(), encoding: 'utf8', timeout: 90_000 })
    assert.equal(child.status, 0, child.stderr)
    assert.deepEqual(JSON.parse(child.stdout), { first: true, owned: true, second: true, kept: 'object' })
  } finally {
    removeAll(name)
  }
})

/** The trapping shell: writes which signal came to /out/marker and exits; /out/ready says the traps are set. */
const TRAPPER = "trap 'echo USR1 > /out/marker; exit 0' USR1; trap 'echo TERM > /out/marker; exit 0' TERM; echo > /out/ready; while :; do sleep 0.1; done"

async function untilFile(file) {
  for (let i = 0; i < 200 && !fs.existsSync(file); i++) await sleep(100)
  assert.ok(fs.existsSync(file), `${file} never appeared`)
}

test('config.stopSignal is what stop() sends the running commands, and what an attached sandbox ends with', async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'moat-node-stopsig-'))
  const name = uniqueName('stopsig')
  const owned = uniqueName('stopsig-owned')
  try {
    const sb = await Sandbox.create(config(name, { stopSignal: 'SIGUSR1', volumes: { '/out': { bind: out } } }))
    assert.equal(JSON.parse(await sb.configJson()).config.stop_signal, 'SIGUSR1')
    const trapper = await sb.execStream('sh', ['-c', TRAPPER])
    await untilFile(path.join(out, 'ready'))
    const asked = Date.now()
    await sb.stop()
    assert.ok(Date.now() - asked < 8000, `the stop waited ${Date.now() - asked} ms: the signal did not end the command`)
    assert.equal(fs.readFileSync(path.join(out, 'marker'), 'utf8').trim(), 'USR1')
    assert.equal((await trapper.wait()).code, 0)
    await Sandbox.remove(name)

    // A number works as well, and the creator's end stops the sandbox with it. The command runs
    // from this process: a command ends anyway with the client that started it.
    fs.rmSync(path.join(out, 'ready'))
    fs.rmSync(path.join(out, 'marker'))
    const child = spawn(process.execPath, ['-e', script(`
      await Sandbox.create({ name: '${owned}', image: 'host', isolation: 'namespace', stopSignal: 10,
        volumes: { '/out': { bind: ${JSON.stringify(out)} } } })
      console.log('ready')
      setInterval(() => {}, 1000)`)], { env: childEnv(), stdio: ['ignore', 'pipe', 'inherit'] })
    const ended = new Promise((resolve) => child.on('exit', resolve))
    await new Promise((resolve, reject) => {
      child.stdout.on('data', (chunk) => { if (chunk.toString().includes('ready')) resolve() })
      child.on('exit', () => reject(new Error('the child ended before creating')))
    })
    const connected = await (await Sandbox.get(owned)).connect()
    const ownedTrapper = await connected.execStream('sh', ['-c', TRAPPER])
    await untilFile(path.join(out, 'ready'))
    child.kill('SIGKILL')
    await ended
    assert.equal((await ownedTrapper.wait()).code, 0)
    assert.equal(await untilEnded(owned, 'the attached sandbox with a stop signal'), 'stopped')
    assert.equal(fs.readFileSync(path.join(out, 'marker'), 'utf8').trim(), 'USR1')
  } finally {
    removeAll(name, owned)
    fs.rmSync(out, { recursive: true, force: true })
  }
})
