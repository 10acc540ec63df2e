'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const crypto = require('node:crypto')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { moat, uniqueName, config, cleanup } = require('./helpers.js')
const { Sandbox, SandboxFs, FsReadStream, MoatError, NotFoundError, NotRunningError, ConnectionError } = moat

test.after(cleanup)

// Every test works in a tmpfs, so nothing touches the host root the 'host' image shares.
const scratch = { volumes: { '/scratch': { tmpfs: true, sizeMib: 64 } } }

function code(expected, Class = MoatError) {
  return (err) => {
    assert.ok(err instanceof Class, `${err.constructor.name}: ${err.message}`)
    assert.equal(err.code, expected)
    return true
  }
}

test('fs: write, read, readString, exists, stat, list, mkdir, copy, rename, remove, removeDir', async () => {
  const sb = await Sandbox.create(config(uniqueName('fs'), scratch))
  try {
    const f = sb.fs()
    assert.ok(f instanceof SandboxFs)
    await f.mkdir('/scratch/a/b')
    await f.write('/scratch/a/b/text', 'héllo\n')
    await f.write('/scratch/a/bytes', Buffer.from([0, 1, 2, 255]))

    const bytes = await f.read('/scratch/a/bytes')
    assert.ok(Buffer.isBuffer(bytes))
    assert.deepEqual(bytes, Buffer.from([0, 1, 2, 255]))
    assert.equal(await f.readString('/scratch/a/b/text'), 'héllo\n')
    assert.equal((await sb.exec('cat', ['/scratch/a/b/text'])).stdout(), 'héllo\n', 'the guest sees the write')

    assert.equal(await f.exists('/scratch/a/b/text'), true)
    assert.equal(await f.exists('/scratch/nothing'), false)

    await sb.exec('chmod', ['0444', '/scratch/a/bytes'])
    const stat = await f.stat('/scratch/a/bytes')
    assert.equal(stat.kind, 'file')
    assert.equal(stat.size, 4)
    assert.equal(stat.mode, 0o444)
    assert.equal(stat.readonly, true)
    assert.equal(typeof stat.modified, 'number')
    assert.ok(Math.abs(stat.modified - Date.now()) < 600_000, `modified is ms since the epoch: ${stat.modified}`)
    const dir = await f.stat('/scratch/a')
    assert.equal(dir.kind, 'directory')
    assert.equal(dir.readonly, false)

    const entries = (await f.list('/scratch/a')).sort((x, y) => x.path.localeCompare(y.path))
    assert.deepEqual(entries.map((e) => [e.path, e.kind]), [['/scratch/a/b', 'directory'], ['/scratch/a/bytes', 'file']])
    assert.equal(entries[1].size, 4)

    await f.copy('/scratch/a/b/text', '/scratch/copy')
    assert.equal(await f.readString('/scratch/copy'), 'héllo\n')
    await f.rename('/scratch/copy', '/scratch/moved')
    assert.equal(await f.exists('/scratch/copy'), false)
    assert.equal(await f.readString('/scratch/moved'), 'héllo\n')
    await f.remove('/scratch/moved')
    assert.equal(await f.exists('/scratch/moved'), false)
    await f.removeDir('/scratch/a')
    assert.equal(await f.exists('/scratch/a'), false, 'removeDir removes a directory with its contents')
  } finally {
    await sb.kill()
  }
})

test('fs: guest failures are typed errors with codes', async () => {
  const sb = await Sandbox.create(config(uniqueName('fserr'), scratch))
  try {
    const f = sb.fs()
    await assert.rejects(f.read('/scratch/missing'), code('ERR_MOAT_NOT_FOUND', NotFoundError))
    await assert.rejects(f.stat('/scratch/missing'), code('ERR_MOAT_NOT_FOUND', NotFoundError))
    await assert.rejects(f.list('/scratch/missing'), code('ERR_MOAT_NOT_FOUND', NotFoundError))
    await assert.rejects(f.write('/scratch/no/dir/file', 'x'), code('ERR_MOAT_NOT_FOUND', NotFoundError))
    await f.write('/scratch/file', Buffer.from([0xff, 0xfe]))
    await assert.rejects(f.readString('/scratch/file'), code('ERR_MOAT_NOT_UTF8'))
    await assert.rejects(f.list('/scratch/file'), code('ERR_MOAT_NOT_A_DIRECTORY'))
    await assert.rejects(f.read('/scratch'), code('ERR_MOAT_IS_A_DIRECTORY'))
  } finally {
    await sb.kill()
  }
  await assert.rejects(sb.fs().read('/etc/hostname'), code('ERR_MOAT_NOT_RUNNING', NotRunningError))
})

test('fs: copyFromHost and copyToHost move whole files', async () => {
  const sb = await Sandbox.create(config(uniqueName('fscp'), scratch))
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moat-fs-'))
  try {
    const data = crypto.randomBytes(5 * 1024 * 1024 + 17)
    fs.writeFileSync(path.join(dir, 'in'), data)
    await sb.fs().copyFromHost(path.join(dir, 'in'), '/scratch/in')
    const sum = (await sb.exec('sha256sum', ['/scratch/in'])).stdout().split(' ')[0]
    assert.equal(sum, crypto.createHash('sha256').update(data).digest('hex'))
    await sb.fs().copyToHost('/scratch/in', path.join(dir, 'out'))
    assert.ok(fs.readFileSync(path.join(dir, 'out')).equals(data))
    await assert.rejects(sb.fs().copyToHost('/scratch/missing', path.join(dir, 'never')), code('ERR_MOAT_NOT_FOUND', NotFoundError))
    assert.equal(fs.existsSync(path.join(dir, 'never')), false)
    await assert.rejects(sb.fs().copyFromHost(path.join(dir, 'missing'), '/scratch/x'), MoatError)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
    await sb.kill()
  }
})

test('fs: readStream yields chunks of at most 3 MiB; writeStream writes piece by piece', async () => {
  const sb = await Sandbox.create(config(uniqueName('fsstream'), scratch))
  try {
    const f = sb.fs()
    await sb.exec('sh', ['-c', 'head -c 7340033 /dev/urandom > /scratch/big'])
    const want = (await sb.exec('sha256sum', ['/scratch/big'])).stdout().split(' ')[0]

    const stream = await f.readStream('/scratch/big')
    assert.ok(stream instanceof FsReadStream)
    const hash = crypto.createHash('sha256')
    const sizes = []
    for await (const chunk of stream) {
      assert.ok(Buffer.isBuffer(chunk))
      sizes.push(chunk.length)
      hash.update(chunk)
    }
    assert.equal(hash.digest('hex'), want)
    assert.equal(sizes.reduce((a, b) => a + b, 0), 7340033)
    assert.ok(sizes.every((n) => n > 0 && n <= 3 * 1024 * 1024), `chunk sizes ${sizes}`)
    assert.ok(sizes.length >= 3)
    assert.equal(await stream.recv(), null, 'an ended stream stays ended')

    const sink = await f.writeStream('/scratch/written')
    await sink.write(Buffer.from('one '))
    await sink.write('two ')
    await sink.write(Buffer.alloc(0))
    await sink.write('three')
    await sink.close()
    await sink.close()
    assert.equal(await f.readString('/scratch/written'), 'one two three')
    await assert.rejects(sink.write('late'), code('ERR_MOAT_CLOSED', ConnectionError))

    await assert.rejects(f.readStream('/scratch/missing'), code('ERR_MOAT_NOT_FOUND', NotFoundError))
  } finally {
    await sb.kill()
  }
})

test('fs: a read stream whose sandbox is killed ends with a typed error, not a crash', async () => {
  const sb = await Sandbox.create(config(uniqueName('fskill'), scratch))
  await sb.exec('sh', ['-c', 'head -c 7340032 /dev/zero > /scratch/big'])
  const stream = await sb.fs().readStream('/scratch/big')
  assert.equal((await stream.recv()).length, 3 * 1024 * 1024)
  await sb.kill()
  await assert.rejects(stream.recv(), MoatError)
  assert.equal(await stream.recv(), null)
})
