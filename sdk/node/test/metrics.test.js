'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const { moat, uniqueName, config, cleanup } = require('./helpers.js')
const { Sandbox, MetricsStream, NotRunningError } = moat

test.after(cleanup)

function checkShape(m) {
  for (const key of ['cpuPercent', 'vcpuTimeNs', 'memoryBytes', 'diskReadBytes', 'diskWriteBytes', 'uptimeMs', 'timestampMs']) {
    assert.equal(typeof m[key], 'number', key)
    assert.ok(m[key] >= 0, `${key} = ${m[key]}`)
  }
  assert.ok(Math.abs(m.timestampMs - Date.now()) < 60_000, 'timestampMs is ms since the epoch')
}

test('metrics(): a snapshot with microsandbox field names; the memory limit is the configured one', async () => {
  const name = uniqueName('metrics')
  const sb = await Sandbox.create(config(name, { memoryMib: 128 }))
  try {
    const m = await sb.metrics()
    checkShape(m)
    assert.ok(m.memoryBytes > 0)
    assert.equal(m.memoryLimitBytes, 128 * 1024 * 1024)
    const viaHandle = await (await Sandbox.get(name)).metrics()
    checkShape(viaHandle)
  } finally {
    await sb.kill()
  }
  await assert.rejects(sb.metrics(), NotRunningError)
  await assert.rejects((await Sandbox.get(name)).metrics(), NotRunningError)
})

test('metricsStream(): one sample per interval, async-iterable, null once the sandbox stops', async () => {
  const sb = await Sandbox.create(config(uniqueName('mstream')))
  const busy = await sb.execStream('sh', ['-c', 'while :; do :; done'])
  try {
    const stream = await sb.metricsStream(200)
    assert.ok(stream instanceof MetricsStream)
    const samples = []
    for await (const m of stream) {
      checkShape(m)
      samples.push(m)
      if (samples.length === 3) break
    }
    assert.ok(samples[2].timestampMs - samples[0].timestampMs >= 300, 'samples are an interval apart')
    assert.ok(samples.some((m) => m.cpuPercent > 20), `a busy loop shows: ${samples.map((m) => m.cpuPercent)}`)
    assert.ok(samples[2].vcpuTimeNs > samples[0].vcpuTimeNs)

    const ending = await sb.metricsStream(100)
    assert.notEqual(await ending.recv(), null)
    await busy.kill()
    await sb.stop()
    assert.equal(await ending.recv(), null)
    assert.equal(await ending.recv(), null)
  } finally {
    await sb.kill().catch(() => {})
  }
  await assert.rejects(sb.metricsStream(100), NotRunningError)
})
