// The SandboxConfig fields that reach past the root: patches, named volumes and bind mounts,
// network policies and published ports; and the Volume API.
'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const http = require('node:http')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const { moat, uniqueName, config, cleanup } = require('./helpers.js')
const { Sandbox, Volume, VolumeHandle, Mount, Patch, NetworkPolicy, Secret, MoatError, InvalidArgumentError, NotSupportedError, NotFoundError } = moat

test.after(cleanup)

/** The sandboxes whose names start with `prefix` (what a test that must leave none checks). */
async function left(prefix) {
  return (await Sandbox.list()).filter((info) => info.name.startsWith(prefix)).map((info) => info.name)
}

const invalid = (pattern) => (err) => {
  assert.ok(err instanceof InvalidArgumentError, `${err.constructor.name}: ${err.message}`)
  assert.equal(err.code, 'ERR_MOAT_INVALID_ARGUMENT')
  if (pattern) assert.match(err.message, pattern)
  return true
}
const unsupported = (pattern) => (err) => {
  assert.ok(err instanceof NotSupportedError, `${err.constructor.name}: ${err.message}`)
  assert.equal(err.code, 'ERR_MOAT_NOT_SUPPORTED')
  assert.match(err.message, pattern)
  return true
}

test('patches change the root before boot: text, file, mkdir, append, symlink, copies, remove', async () => {
  const host = fs.mkdtempSync(path.join(os.tmpdir(), 'moat-node-patch-'))
  fs.writeFileSync(path.join(host, 'conf.json'), '{"a":1}')
  fs.mkdirSync(path.join(host, 'tree'))
  fs.writeFileSync(path.join(host, 'tree', 'inner.txt'), 'inner')
  const sb = await Sandbox.create(config(uniqueName('patch'), {
    patches: [
      Patch.text('/etc/greeting.txt', 'hello patch\n'),
      Patch.mkdir('/app/data', { mode: 0o700 }),
      Patch.file('/app/bytes.bin', Buffer.from([0, 1, 2, 255]), { mode: 0o600 }),
      { kind: 'file', path: '/app/listed.bin', contentBytes: [104, 105] },
      Patch.append('/etc/greeting.txt', 'appended\n'),
      Patch.copyFile(path.join(host, 'conf.json'), '/app/conf.json'),
      Patch.copyDir(path.join(host, 'tree'), '/app/tree'),
      Patch.symlink('/etc/greeting.txt', '/app/link'),
      Patch.text('/etc/replaced.txt', 'first\n'),
      Patch.text('/etc/replaced.txt', 'second\n', { replace: true }),
      Patch.text('/app/doomed', 'x'),
      Patch.remove('/app/doomed'),
    ],
  }))
  try {
    const out = await sb.shell('cat /app/link; stat -c %a /app/data /app/bytes.bin; od -An -tu1 /app/bytes.bin; ' +
      'cat /app/listed.bin /app/conf.json /app/tree/inner.txt /etc/replaced.txt; ls /app/doomed 2>&1 || true')
    assert.equal(out.stdout(), 'hello patch\nappended\n700\n600\n   0   1   2 255\nhi{"a":1}innersecond\n' +
      'ls: cannot access \'/app/doomed\': No such file or directory\n')
    assert.equal(await sb.fs().readString('/etc/greeting.txt'), 'hello patch\nappended\n')
  } finally {
    await sb.kill()
    fs.rmSync(host, { recursive: true, force: true })
  }
})

test('bad patches are typed errors; a patch that cannot apply fails the boot, leaving nothing', async () => {
  const bad = (patches) => Sandbox.create(config(uniqueName('badpatch'), { patches }))
  await assert.rejects(bad([{ kind: 'zip', path: '/x' }]), invalid(/patches\[0\]\.kind/))
  await assert.rejects(bad([Patch.text('relative/path', 'x')]), invalid(/patch path "relative\/path"/))
  await assert.rejects(bad([{ kind: 'text', path: '/x' }]), invalid(/patches\[0\]\.content is required/))
  await assert.rejects(bad([{ kind: 'remove', path: '/x', mode: 0o644 }]), invalid(/mode does not apply/))
  await assert.rejects(bad([Patch.mkdir('/x', { mode: 0o77777 })]), invalid(/mode/))
  await assert.rejects(bad([{ kind: 'file', path: '/x', contentBytes: [256] }]), invalid(/byte values/))
  await assert.rejects(bad([{ kind: 'text', path: '/x', content: 'y', owner: 'root' }]), unsupported(/config\.patches\[0\]\.owner/))
  await assert.rejects(bad('not-an-array'), invalid())
  await assert.rejects(bad([Patch.text('/etc/hostname', 'no replace\n')]),
    (err) => err instanceof MoatError && err.code === 'ERR_MOAT_BOOT' && /exists/.test(err.message))
  assert.deepEqual(await left('badpatch'), [], 'no sandbox was left behind')
})

test('a named volume keeps its data across two sandboxes; Volume create, get, list, fs, remove', async () => {
  const name = uniqueName('vol')
  const volume = await Volume.create({ name })
  assert.equal(volume.name, name)
  assert.ok(fs.statSync(volume.path).isDirectory())
  await volume.fs().mkdir('/seed/deep')
  await volume.fs().write('/seed/deep/from-host.txt', 'host wrote this')

  const first = await Sandbox.create(config(uniqueName('vol-a'), { volumes: { '/data': Mount.named(name) } }))
  try {
    assert.equal((await first.shell('cat /data/seed/deep/from-host.txt; echo kept > /data/note')).stdout(), 'host wrote this')
    await assert.rejects(Volume.remove(name), (err) => err instanceof MoatError && err.code === 'ERR_MOAT_IN_USE')
  } finally {
    await first.kill()
  }
  const second = await Sandbox.create(config(uniqueName('vol-b'), { volumes: { '/mnt/v': { named: name, readonly: true } } }))
  try {
    assert.equal((await second.shell('cat /mnt/v/note')).stdout(), 'kept\n', 'the second sandbox sees the first one\'s write')
    assert.notEqual((await second.shell('echo x > /mnt/v/other')).code, 0, 'read-only mount')
  } finally {
    await second.kill()
  }

  const vfs = volume.fs()
  assert.equal(await vfs.readString('/note'), 'kept\n')
  assert.deepEqual(await vfs.read('note'), Buffer.from('kept\n'))
  assert.equal(await vfs.exists('/note'), true)
  assert.equal(await vfs.exists('/missing'), false)
  assert.equal(await vfs.exists('/missing/deeper'), false)
  const stat = await vfs.stat('/note')
  assert.equal(stat.kind, 'file')
  assert.equal(stat.size, 5)
  assert.equal(typeof stat.modified, 'number')
  assert.equal((await vfs.stat('/seed')).kind, 'directory')
  assert.deepEqual((await vfs.list('/')).map((e) => [e.path, e.kind]), [['/note', 'file'], ['/seed', 'directory']])
  await vfs.copy('/note', '/note-copy')
  assert.equal(await vfs.readString('/note-copy'), 'kept\n')
  const sink = await vfs.writeStream('/streamed.bin')
  const chunk = Buffer.alloc(1024 * 1024, 7)
  for (let i = 0; i < 5; i++) await sink.write(chunk)
  await sink.close()
  let total = 0
  for await (const part of await vfs.readStream('/streamed.bin')) total += part.length
  assert.equal(total, 5 * 1024 * 1024)
  await assert.rejects(vfs.read('/missing'), (err) => err instanceof NotFoundError)
  await assert.rejects(vfs.read('/seed'), (err) => err.code === 'ERR_MOAT_IS_A_DIRECTORY')
  await assert.rejects(vfs.read('/../escape'), (err) => err.code === 'ERR_MOAT_PATH_ESCAPES')
  fs.symlinkSync('/etc', path.join(volume.path, 'out'))
  await assert.rejects(vfs.read('/out/hostname'), (err) => err.code === 'ERR_MOAT_PATH_ESCAPES')
  await assert.rejects(vfs.remove('/note'), unsupported(/VolumeFs\.remove/))
  await assert.rejects(vfs.removeDir('/seed'), unsupported(/VolumeFs\.removeDir/))
  await assert.rejects(vfs.rename('/note', '/n'), unsupported(/VolumeFs\.rename/))

  const handle = await Volume.get(name)
  assert.ok(handle instanceof VolumeHandle)
  assert.equal(handle.name, name)
  assert.equal(handle.kind, 'directory')
  assert.ok(handle.usedBytes > 5 * 1024 * 1024)
  assert.equal(handle.quotaMib, null)
  assert.equal(typeof handle.createdAt, 'number')
  assert.deepEqual(handle.labels, {})
  assert.ok((await Volume.list()).some((info) => info.name === name && info.kind === 'directory'))
  assert.equal(await handle.fs().readString('/note'), 'kept\n')
  await handle.remove()
  await assert.rejects(Volume.get(name), (err) => err instanceof NotFoundError)
  await assert.rejects(Volume.remove(name), (err) => err instanceof NotFoundError)
})

test('bind mounts and tmpfs; bad volumes are typed errors', async () => {
  const host = fs.mkdtempSync(path.join(os.tmpdir(), 'moat-node-bind-'))
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'moat-node-bind-'))
  fs.writeFileSync(path.join(host, 'in.txt'), 'from the host')
  const sb = await Sandbox.create(config(uniqueName('bind'), {
    volumes: { '/src': Mount.bind(host, { readonly: true }), '/work': Mount.bind(work), '/scratch': Mount.tmpfs({ sizeMib: 8 }) },
  }))
  try {
    assert.equal((await sb.shell('cat /src/in.txt; echo out > /work/out.txt; df -m /scratch | tail -1 | awk \'{print $2}\'')).stdout(),
      'from the host8\n')
    assert.notEqual((await sb.shell('echo x > /src/no')).code, 0)
    assert.equal(fs.readFileSync(path.join(work, 'out.txt'), 'utf8'), 'out\n')
  } finally {
    await sb.kill()
    fs.rmSync(host, { recursive: true, force: true })
    fs.rmSync(work, { recursive: true, force: true })
  }
  const bad = (volumes) => Sandbox.create(config(uniqueName('badvol'), { volumes }))
  await assert.rejects(bad({ '/d': Mount.named('no-such-volume') }), (err) => err instanceof NotFoundError && /no-such-volume/.test(err.message))
  await assert.rejects(bad({ '/d': { named: '../up' } }), invalid(/named/))
  await assert.rejects(bad({ '/d': { bind: '/tmp', named: 'x' } }), invalid(/exactly one/))
  await assert.rejects(bad({ '/d': { named: 'x', sizeMib: 4 } }), invalid(/sizeMib/))
  await assert.rejects(bad({ '/d': { tmpfs: true, readonly: true } }), unsupported(/read-only tmpfs/))
  await assert.rejects(bad({ '/d': { bind: '/tmp', shared: true } }), unsupported(/config\.volumes\["\/d"\]\.shared/))
  await assert.rejects(Volume.create({ name: uniqueName('v'), labels: { a: 'b' } }), unsupported(/VolumeConfig\.labels/))
  await assert.rejects(Volume.create({ name: uniqueName('v'), kind: 'disk' }), unsupported(/disk/))
  await assert.rejects(Volume.create({ name: '.hidden' }), invalid(/volume name/))
  await assert.rejects(Volume.create({ name: 42 }), invalid())
  await assert.rejects(Volume.create('name'), invalid(/config must be an object/))
  assert.deepEqual(await left('badvol'), [], 'no sandbox was left behind')
})

/** An HTTP server on the host's loopback answering `hi-PORT`, and how many requests it got. */
async function loopbackServer() {
  const server = http.createServer((req, res) => {
    server.hits += 1
    res.end(`hi-${server.address().port}`)
  })
  server.hits = 0
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return server
}

/** A host port nothing listens on now. */
async function freePort() {
  const probe = net.createServer()
  await new Promise((resolve) => probe.listen(0, '127.0.0.1', resolve))
  const { port } = probe.address()
  await new Promise((resolve) => probe.close(resolve))
  return port
}

/** The guest's verdict on GETting host.moat.internal:PORT: its body, or "denied". */
const probe = (port) => `(curl -s -m 3 http://host.moat.internal:${port}/ && echo) || echo denied`

test('network: the default is loopback only; an allow rule for host.moat.internal:PORT opens that port only', async () => {
  const allowed = await loopbackServer()
  const other = await loopbackServer()
  try {
    await networkScenarios(allowed, other)
  } finally {
    allowed.close()
    other.close()
  }
})

async function networkScenarios(allowed, other) {
  const [a, b] = [allowed.address().port, other.address().port]
  const closed = await Sandbox.create(config(uniqueName('nonet')))
  try {
    assert.equal((await closed.shell('ls /sys/class/net')).stdout(), 'lo\n')
    assert.equal((await closed.shell(probe(a))).stdout(), 'denied\n')
  } finally {
    await closed.kill()
  }
  const sb = await Sandbox.create(config(uniqueName('net'), {
    network: { policy: 'none', rules: [{ action: 'allow', destination: 'host', port: a, protocol: 'tcp' }] },
  }))
  try {
    assert.equal((await sb.shell(`${probe(a)}; ${probe(b)}`)).stdout(), `hi-${a}\ndenied\n`)
    assert.equal(allowed.hits, 1)
    assert.equal(other.hits, 0, 'the denied server saw nothing')
    // The guest's root cannot lift the policy: it lives outside the sandbox.
    const lift = 'nft flush ruleset 2>/dev/null; iptables -F 2>/dev/null; ip route flush all; ip route add default dev eth0; '
    assert.equal((await sb.shell(lift + probe(b))).stdout(), 'denied\n')
    assert.equal(other.hits, 0)
  } finally {
    await sb.kill()
  }
  // allow-all opens what the host reaches, but host.moat.internal only by a rule; a deny rule
  // written as an address (the alias's port here) wins over an allow after it.
  const all = await Sandbox.create(config(uniqueName('netall'), {
    network: { ...NetworkPolicy.allowAll(), rules: [
      { action: 'deny', destination: 'host', port: String(a) },
      { action: 'allow', destination: 'host', port: `${Math.min(a, b)}-${Math.max(a, b)}` },
    ] },
  }))
  try {
    assert.equal((await all.shell(`${probe(a)}; ${probe(b)}`)).stdout(), `denied\nhi-${b}\n`)
  } finally {
    await all.kill()
  }
}

test('ports: a published port reaches a server in the guest; a port in use is a typed error', async () => {
  const hostPort = await freePort()
  const sb = await Sandbox.create(config(uniqueName('ports'), { ports: { [hostPort]: 8080 } }))
  try {
    await sb.shell('mkdir -p /tmp/www && echo served > /tmp/www/index.html && ' +
      '(busybox httpd -f -p 8080 -h /tmp/www </dev/null >/dev/null 2>&1 &)')
    let body
    for (let i = 0; i < 50 && body === undefined; i++) {
      body = await fetch(`http://127.0.0.1:${hostPort}/index.html`).then((r) => r.text(), () => undefined)
      if (body === undefined) await new Promise((resolve) => setTimeout(resolve, 200))
    }
    assert.equal(body, 'served\n')
    assert.equal((await sb.shell(probe(hostPort))).stdout(), 'denied\n', 'publishing gives the guest no way out')
  } finally {
    await sb.kill()
  }
  const busy = await loopbackServer()
  try {
    await assert.rejects(Sandbox.create(config(uniqueName('busy'), { ports: { [busy.address().port]: 80 } })),
      (err) => err instanceof MoatError && err.code === 'ERR_MOAT_PORT_UNAVAILABLE' && /cannot bind the host port/.test(err.message))
  } finally {
    busy.close()
  }
  assert.deepEqual(await left('busy'), [], 'no sandbox was left behind')
})

test('bad network and ports shapes are typed errors; what moat cannot do is NotSupportedError by name', async () => {
  const bad = (extra) => Sandbox.create(config(uniqueName('badnet'), extra))
  const rule = (fields) => bad({ network: { rules: [{ action: 'allow', ...fields }] } })
  await assert.rejects(bad({ ports: { abc: 80 } }), invalid(/config\.ports/))
  await assert.rejects(bad({ ports: { 8080: 70000 } }), invalid(/guest port/))
  await assert.rejects(bad({ ports: { 8080: 'eighty' } }), invalid())
  await assert.rejects(bad({ network: { policy: 'bridge' } }), invalid(/policy/))
  await assert.rejects(bad({ network: { policy: 'none', defaultAction: 'allow' } }), invalid(/disagree/))
  await assert.rejects(bad({ network: { defaultAction: 'maybe' } }), invalid(/defaultAction/))
  await assert.rejects(bad({ network: 'public-only' }), invalid(/config\.network must be an object/))
  await assert.rejects(rule({ destination: '10.0.0.1/8' }), invalid(/host bits/))
  await assert.rejects(rule({ destination: 'not a host!' }), invalid(/destination/))
  await assert.rejects(rule({ port: '90-80' }), invalid(/port/))
  await assert.rejects(rule({ port: 0 }), invalid(/port/))
  await assert.rejects(rule({ protocol: 'sctp' }), invalid(/protocol/))
  await assert.rejects(bad({ network: { rules: [{ action: 'permit' }] } }), invalid(/action/))
  await assert.rejects(bad({ network: { rules: [{ destination: '*' }] } }), invalid())
  await assert.rejects(rule({ direction: 'inbound' }), unsupported(/rules\[0\]\.direction "inbound"/))
  await assert.rejects(rule({ protocol: 'icmpv4' }), unsupported(/rules\[0\]\.protocol "icmpv4"/))
  await assert.rejects(rule({ destination: 'public' }), unsupported(/destination "public"/))
  await assert.rejects(rule({ via: 'x' }), unsupported(/config\.network\.rules\[0\]\.via/))
  await assert.rejects(bad({ network: { policy: 'non-local' } }), unsupported(/non-local/))
  for (const field of ['tls', 'dnsRebindProtection', 'maxConnections']) {
    await assert.rejects(bad({ network: { [field]: field === 'tls' ? {} : 1 } }), unsupported(new RegExp(`config\\.network\\.${field}`)))
  }
  await assert.rejects(bad({ network: { polcy: 'none' } }), unsupported(/config\.network\.polcy/))
  await assert.rejects(bad({ secrets: [Secret.env('API_KEY', { value: 'x', allowHosts: ['api.example.com'] })] }),
    unsupported(/config\.secrets/))
  await assert.rejects(bad({ network: { rules: 'allow all' } }), invalid(/rules must be an array/))
  await assert.rejects(bad({ ports: [8080] }), invalid(/ports must be an object/))
  assert.deepEqual(await left('badnet'), [], 'no sandbox was left behind')
})
