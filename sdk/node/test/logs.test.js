'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const { moat, uniqueName, config, cleanup } = require('./helpers.js')
const { Sandbox, LogStream, InvalidArgumentError, NotFoundError } = moat

test.after(cleanup)

const text = (entries) => entries.map((e) => e.data.toString())

/** `logs(opts)` once its entries' data add up to `expected` (the relay writes its log a moment
 * after an exec's output reached the client, in chunks as they came); fails after 10 s. */
async function settled(target, opts, expected) {
  let entries
  for (let i = 0; i < 100; i++) {
    entries = await target.logs(opts)
    if (text(entries).join('') === expected) return entries
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  assert.fail(`the log never held ${JSON.stringify(expected)}: ${JSON.stringify(text(entries))}`)
}

test('logs: entries with timestamp, source, session id, data and cursor; sources, tail, since, until', async () => {
  const sb = await Sandbox.create(config(uniqueName('logs')))
  try {
    const before = Date.now()
    await sb.shell('echo one; sleep 0.2; echo two >&2')
    await sb.shell('echo three')
    const entries = await settled(sb, undefined, 'one\ntwo\nthree\n')
    assert.deepEqual(text(entries), ['one\n', 'two\n', 'three\n'])
    assert.deepEqual(entries.map((e) => e.source), ['stdout', 'stderr', 'stdout'])
    for (const entry of entries) {
      assert.ok(Buffer.isBuffer(entry.data))
      assert.equal(typeof entry.cursor, 'string')
      assert.ok(entry.timestampMs >= before - 1000 && entry.timestampMs <= Date.now() + 1000, `${entry.timestampMs}`)
    }
    assert.equal(entries[0].sessionId, entries[1].sessionId, 'one exec, one session')
    assert.notEqual(entries[0].sessionId, entries[2].sessionId, 'a second exec is another session')

    assert.deepEqual(text(await sb.logs({ sources: ['stderr'] })), ['two\n'])
    assert.deepEqual(text(await sb.logs({ tail: 1 })), ['three\n'])
    assert.deepEqual(await sb.logs({ tail: 0 }), [])
    const system = await sb.logs({ sources: ['system'] })
    assert.ok(system.length >= 1, 'a start marker')
    assert.ok(system.every((e) => e.source === 'system' && e.sessionId == null))
    const all = await sb.logs({ sources: ['all'] })
    assert.equal(all.length, entries.length + system.length)

    const last = entries[2].timestampMs
    assert.deepEqual(text(await sb.logs({ sinceMs: last })), text(entries.filter((e) => e.timestampMs >= last)))
    assert.deepEqual(text(await sb.logs({ untilMs: last })), text(entries.filter((e) => e.timestampMs < last)),
      'untilMs is exclusive')
    assert.deepEqual(await sb.logs({ sinceMs: Date.now() + 60_000 }), [])

    // The handle reads the same log, running or not.
    const handle = await Sandbox.get(sb.name)
    assert.deepEqual(text(await handle.logs()), text(entries))
    await sb.stop()
    const stopped = await handle.logs({ sources: ['system'] })
    assert.ok(stopped.some((e) => /stopped/.test(e.data.toString())), text(stopped).join(''))
    assert.deepEqual(text(await sb.logs()), text(entries), 'a stopped sandbox keeps its log')
  } finally {
    await sb.kill().catch(() => {})
  }
})

test('logStream: a snapshot without follow; resume after a cursor; follow until the sandbox stops', async () => {
  const sb = await Sandbox.create(config(uniqueName('logstream')))
  try {
    await sb.shell('echo a; echo b; echo c')
    await sb.shell('echo d')
    const entries = await settled(sb, undefined, 'a\nb\nc\nd\n')
    const snapshot = await sb.logStream()
    assert.ok(snapshot instanceof LogStream)
    const read = []
    for await (const entry of snapshot) read.push(entry)
    assert.deepEqual(text(read), text(entries))
    assert.equal(await snapshot.recv(), null)

    const resumed = []
    for await (const entry of await sb.logStream({ fromCursor: entries[0].cursor })) resumed.push(entry)
    assert.deepEqual(text(resumed), text(entries.slice(1)))

    // Follow: what is there, then a later exec's output as it is written, then the end at the stop.
    const followed = await sb.logStream({ follow: true, sources: ['stdout'] })
    const present = []
    for (let i = 0; i < entries.length; i++) present.push(await followed.recv())
    assert.deepEqual(text(present), text(entries))
    const pending = followed.recv()
    await sb.shell('echo later')
    assert.equal((await pending).data.toString(), 'later\n')
    const ended = followed.recv()
    await sb.stop()
    assert.equal(await ended, null, 'the follow ends once the sandbox stopped and all is read')
  } finally {
    await sb.kill().catch(() => {})
  }
})

test('logStream: leaving for-await early or close() ends a follow; a pending recv() returns null', async () => {
  const sb = await Sandbox.create(config(uniqueName('logclose')))
  try {
    await sb.shell('echo first')
    await settled(sb, undefined, 'first\n')
    const stream = await sb.logStream({ follow: true })
    for await (const entry of stream) {
      assert.equal(entry.data.toString(), 'first\n')
      break
    }
    assert.equal(await stream.recv(), null, 'breaking out of the loop closed it')

    const other = await sb.logStream({ follow: true, sinceMs: Date.now() + 60_000 })
    const waiting = other.recv()
    await other.close()
    assert.equal(await waiting, null)
    await other.close()

    // Until a time already past: the stream ends by itself.
    const bounded = []
    for await (const entry of await sb.logStream({ follow: true, untilMs: Date.now() })) bounded.push(entry)
    assert.deepEqual(text(bounded), ['first\n'])
    assert.equal((await sb.exec('true')).code, 0, 'the sandbox still serves')
  } finally {
    await sb.kill()
  }
})

test('bad log options are typed errors; a removed sandbox is NotFoundError', async () => {
  const name = uniqueName('logbad')
  const sb = await Sandbox.create(config(name))
  const invalid = (err) => err instanceof InvalidArgumentError && err.code === 'ERR_MOAT_INVALID_ARGUMENT'
  await assert.rejects(sb.logs({ sources: ['stdin'] }), invalid)
  await assert.rejects(sb.logs({ sources: [] }), invalid)
  await assert.rejects(sb.logs({ tail: -1 }), invalid)
  await assert.rejects(sb.logs({ tail: 1.5 }), invalid)
  await assert.rejects(sb.logs({ sinceMs: 'yesterday' }), invalid)
  await assert.rejects(sb.logs('all'), invalid)
  await assert.rejects(sb.logStream(7), invalid)
  await assert.rejects((await Sandbox.get(name)).logs('all'), invalid)
  await assert.rejects(sb.logStream({ sinceMs: 1, fromCursor: '1:2' }), invalid)
  await assert.rejects(sb.logStream({ fromCursor: 'not-a-cursor' }), invalid)
  await sb.kill()
  await Sandbox.remove(name)
  await assert.rejects(sb.logs(), (err) => err instanceof NotFoundError)
  await assert.rejects(sb.logStream({ follow: true }), (err) => err instanceof NotFoundError)
})
