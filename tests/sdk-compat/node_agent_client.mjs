// microsandbox's own Node AgentClient (npm `microsandbox`, its prebuilt napi addon) against a moat
// relay socket. Usage: node node_agent_client.mjs SOCKET, with NODE_PATH-free resolution: run it
// from a directory whose node_modules holds `microsandbox` (tests/sdk-compat/run.sh makes one).
//
// The same checks as python_agent_client.py: the ready frame (generation 10, exec_limits), a
// ping, an exec's exit code, output past the agent's window completing because this client acks,
// and an exec that is never acked stopping at the window with its exit held back.
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'
import path from 'node:path'

const require = createRequire(import.meta.url)
const { encode, decode } = require('../../sdk/node/test/cbor.js')
const here = path.resolve(process.env.MSB_NODE_PREFIX ?? '.')
const msb = await import(pathToFileURL(path.join(here, 'node_modules/microsandbox/dist/index.js')).href)
const { AgentClient, FLAG_SESSION_START, FLAG_TERMINAL } = msb

function check (cond, what) {
  if (!cond) { console.error(`node AgentClient: ${what}`); process.exit(1) }
}
const envelope = (t, p) => encode({ v: 10, t, p: encode(p) })
function open (body) {
  const env = decode(body)
  return { v: env.v, t: env.t, p: env.p && env.p.length ? decode(env.p) : null }
}
const execRequest = (cmd, args) => ({ cmd, args, env: [], cwd: null, user: null, tty: false, rows: 24, cols: 80, rlimits: [] })

async function runExec (client, cmd, args) {
  const stream = await client.stream(FLAG_SESSION_START, envelope('core.exec.request', execRequest(cmd, args)))
  let stdout = 0; let zeros = true; let charge = 0; let acks = 0; let code = null; let text = ''
  for await (const frame of stream) {
    const { v, t, p } = open(frame.body)
    check(v === 10, `${t} came with generation ${v}, not 10`)
    if (t === 'core.exec.started') {
      await client.send(stream.id, 0, envelope('core.exec.stdin', { data: Buffer.alloc(0) }))
    } else if (t === 'core.exec.stdout' || t === 'core.exec.stderr') {
      if (t === 'core.exec.stdout') {
        stdout += p.data.length
        if (stdout < 64) text += Buffer.from(p.data).toString()
        zeros = zeros && Buffer.from(p.data).every((b) => b === 0)
      }
      charge += p.data.length + 256
      await client.send(stream.id, 0, envelope('core.exec.output.ack', { consumed: charge }))
      acks++
    } else if (t === 'core.exec.exited') {
      check(frame.flags & FLAG_TERMINAL, 'exec.exited is not terminal')
      code = p.code
    } else {
      check(false, `exec ${cmd} failed: ${t} ${JSON.stringify(p)}`)
    }
  }
  return { code, stdout, zeros, text, acks }
}

async function neverAck (client, size) {
  const stream = await client.stream(FLAG_SESSION_START, envelope('core.exec.request', execRequest('head', ['-c', String(size), '/dev/zero'])))
  const it = stream[Symbol.asyncIterator] ? stream[Symbol.asyncIterator]() : stream
  let charge = 0
  let pending = null
  for (;;) {
    pending = pending ?? it.next()
    const quiet = Symbol('quiet')
    const got = await Promise.race([pending, new Promise((resolve) => setTimeout(() => resolve(quiet), 2000))])
    if (got === quiet) break
    pending = null
    check(!got.done, 'the stream ended before its exit was acknowledged')
    const { t, p } = open(got.value.body)
    if (t === 'core.exec.started') await client.send(stream.id, 0, envelope('core.exec.stdin', { data: Buffer.alloc(0) }))
    else if (t === 'core.exec.stdout' || t === 'core.exec.stderr') charge += p.data.length + 256
    else check(false, `${t} arrived before the output was acknowledged`)
  }
  const stalledAt = charge
  await client.send(stream.id, 0, envelope('core.exec.signal', { signal: 9 }))
  await client.send(stream.id, 0, envelope('core.exec.output.ack', { consumed: charge }))
  for (;;) {
    const got = await pending
    check(!got.done, 'the stream ended without an exit')
    const { t, p } = open(got.value.body)
    if (t === 'core.exec.stdout' || t === 'core.exec.stderr') {
      charge += p.data.length + 256
      await client.send(stream.id, 0, envelope('core.exec.output.ack', { consumed: charge }))
    } else if (t === 'core.exec.exited') {
      return { stalledAt, code: p.code }
    }
    pending = it.next()
  }
}

const client = await AgentClient.connect(process.argv[2], { timeoutMs: 10000 })
try {
  const { v, t, p: ready } = open(client.readyBytes())
  check(t === 'core.ready', `the first frame is ${t}, not core.ready`)
  check(v === 10, `the agent announces generation ${v}, not 10`)
  check(ready.exec_limits && typeof ready.exec_limits === 'object', 'core.ready has no exec_limits')
  const window = Number(ready.exec_limits.output_limit)
  console.log(`ready: generation ${v}, exec_limits ${JSON.stringify(ready.exec_limits)}`)

  const pong = await client.request(0, envelope('core.ping', {}))
  check(open(pong.body).t === 'core.pong' && (pong.flags & FLAG_TERMINAL), `ping answered with ${open(pong.body).t}`)
  console.log('ping: pong')

  const small = await runExec(client, 'sh', ['-c', 'echo hello; exit 3'])
  check(small.code === 3 && small.text === 'hello\n', `echo exec gave code ${small.code}, stdout ${JSON.stringify(small.text)}`)
  console.log('exec: hello, exit 3')

  const size = 2 * window + 12345
  const big = await runExec(client, 'head', ['-c', String(size), '/dev/zero'])
  check(big.code === 0 && big.stdout === size && big.zeros, `the large exec gave code ${big.code}, ${big.stdout} bytes, not ${size}`)
  console.log(`flow control: ${size} bytes past a ${window}-byte window, ${big.acks} acks, exit 0`)

  const stalled = await neverAck(client, size)
  check(stalled.stalledAt > window / 2, `only ${stalled.stalledAt} of output charge arrived before the stall`)
  check(stalled.stalledAt <= window, `the agent sent ${stalled.stalledAt} unacknowledged, past its ${window} window`)
  console.log(`never acked: the agent stopped at ${stalled.stalledAt} of ${window} charge and held the exit; after kill + ack: exit code ${stalled.code}`)
} finally {
  await client.close()
}
