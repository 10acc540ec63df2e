'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const cbor = require('./cbor.js')
const { moat, uniqueName, config, cleanup } = require('./helpers.js')
const { Sandbox, AgentClient, ConnectionError, InvalidArgumentError } = moat

const { decode } = cbor
const SESSION_START = 0x02
const TERMINAL = 0x01

/** A frame body: the envelope with the payload CBOR-encoded on its own (PROTOCOL.md §2). */
function body(t, payload) {
  return cbor.encode({ v: 10, t, p: cbor.encode(payload) })
}
function open(frame) {
  const envelope = decode(frame.body)
  return { t: envelope.t, p: decode(envelope.p) }
}

let sb
test.before(async () => {
  sb = await Sandbox.create(config(uniqueName('agent')))
})
test.after(async () => {
  await sb.kill()
  cleanup()
})

test('connectSandbox reads the replayed core.ready; socketPath names the same socket', async () => {
  const client = await AgentClient.connectSandbox(sb.name)
  const ready = decode(client.readyBytes())
  assert.equal(ready.t, 'core.ready')
  assert.ok(AgentClient.socketPath(sb.name).endsWith(`/sandboxes/${sb.name}/agent.sock`))
  const byPath = await AgentClient.connect(AgentClient.socketPath(sb.name))
  assert.deepEqual(decode(byPath.readyBytes()).t, 'core.ready')
  await byPath.close()
  await client.close()
  await client.close() // idempotent
})

test('request: core.ping is answered by a terminal core.pong on the same id', async () => {
  const client = await AgentClient.connectSandbox(sb.name)
  const reply = await client.request(0, body('core.ping', {}))
  assert.equal(reply.flags, TERMINAL)
  assert.ok(reply.id > 0)
  assert.equal(open(reply).t, 'core.pong')
  const second = await client.request(0, body('core.ping', {}))
  assert.equal(second.id, reply.id + 1, 'ids are allocated upwards within the range')
  await client.close()
})

test('streamOpen/streamNext/send run an exec session to its terminal frame', async () => {
  // A generation-10 session (PROTOCOL.md §8.4): stdin only after core.exec.started, and
  // core.exec.exited only once every output chunk's charge (len + 256) is acknowledged.
  const client = await AgentClient.connectSandbox(sb.name)
  const request = { cmd: 'cat', args: [], env: [], cwd: null, user: null, tty: false, rows: 24, cols: 80, rlimits: [] }
  const { id, handle } = await client.streamOpen(SESSION_START, body('core.exec.request', request))
  assert.equal(typeof handle, 'bigint')
  const seen = []
  let stdout = ''
  let consumed = 0
  for (let frame; (frame = await client.streamNext(handle)) !== null;) {
    assert.equal(frame.id, id)
    const message = open(frame)
    seen.push(message.t)
    if (message.t === 'core.exec.started') {
      await client.send(id, 0, body('core.exec.stdin', { data: Buffer.from('ping\n') }))
      await client.send(id, 0, body('core.exec.stdin', { data: Buffer.alloc(0) }))
    }
    if (message.t === 'core.exec.stdout') {
      stdout += Buffer.from(message.p.data).toString()
      consumed += message.p.data.length + 256
      await client.send(id, 0, body('core.exec.output.ack', { consumed }))
    }
    if (message.t === 'core.exec.exited') {
      assert.equal(message.p.code, 0)
      assert.equal(frame.flags, TERMINAL)
    }
  }
  assert.equal(seen[0], 'core.exec.started')
  assert.equal(seen.at(-1), 'core.exec.exited')
  assert.equal(stdout, 'ping\n')
  assert.equal(await client.streamNext(handle), null, 'an ended stream stays ended')
  await client.streamClose(handle)
  await client.streamClose(handle)
  await client.close()
})

test('bad frames and closed connections are typed errors', async () => {
  const client = await AgentClient.connectSandbox(sb.name)
  const ping = body('core.ping', {})
  await assert.rejects(client.request(3, ping), (err) => err instanceof InvalidArgumentError && /flags/.test(err.message))
  await assert.rejects(client.send(0, 0, ping), (err) => err instanceof InvalidArgumentError && /outside/.test(err.message))
  await assert.rejects(client.request(0, 'not a buffer'), (err) => err instanceof InvalidArgumentError)
  await assert.rejects(client.request(0, Buffer.alloc(5 * 1024 * 1024)), (err) => err instanceof InvalidArgumentError)
  await assert.rejects(client.streamNext('nope'), (err) => err instanceof InvalidArgumentError)
  assert.equal(await client.streamNext(12345n), null)
  // The connection still works after refused input.
  assert.equal(open(await client.request(0, ping)).t, 'core.pong')
  await client.close()
  await assert.rejects(client.request(0, ping), (err) => err instanceof ConnectionError && err.code === 'ERR_MOAT_CLOSED')
  await assert.rejects(AgentClient.connect('/nonexistent/agent.sock'), (err) => err instanceof ConnectionError)
  await assert.rejects(AgentClient.connectSandbox('no-such-sandbox'), (err) => err.code === 'ERR_MOAT_NOT_FOUND')
  assert.throws(() => AgentClient.socketPath('../escape'), (err) => err instanceof InvalidArgumentError)
})

test('a socket that is not a relay is refused with ConnectionError', async () => {
  const socket = path.join(os.tmpdir(), `moat-not-a-relay-${process.pid}.sock`)
  const server = net.createServer((conn) => conn.on('error', () => {}).end(Buffer.from('\x00\x00\x00\x09\x00\x00\x00\x01garbage!!')))
  await new Promise((resolve) => server.listen(socket, resolve))
  try {
    await assert.rejects(AgentClient.connect(socket), (err) => err instanceof ConnectionError)
  } finally {
    server.close()
  }
})
