// The quickstart in TypeScript; `npm test` type-checks it with tsc (examples/tsconfig.json).
import {
  Sandbox, ExecOutput, ExecEvent, FsEntry, SandboxMetrics, LogEntry, LogStream, Volume, VolumeHandle, Mount, Patch,
  NetworkPolicy, MoatError, NotSupportedError, imageList,
} from '..'

async function main(): Promise<void> {
  const volume: Volume = await Volume.create({ name: `quickstart-ts-${process.pid}` })
  await volume.fs().write('/seed.txt', Buffer.from('seeded'))
  const sandbox: Sandbox = await Sandbox.create({
    name: `quickstart-ts-${process.pid}`,
    image: 'host',
    isolation: 'namespace',
    memoryMib: 256,
    volumes: { '/scratch': { tmpfs: true, sizeMib: 16 }, '/data': Mount.named(volume.name, { readonly: true }) },
    patches: [Patch.text('/etc/motd', 'typed\n', { replace: true }), { kind: 'mkdir', path: '/app', mode: 0o755 }],
    network: { ...NetworkPolicy.none(), rules: [{ action: 'allow', destination: 'host', port: 8080, protocol: 'tcp' }] },
  })
  try {
    const output: ExecOutput = await sandbox.exec('uname', ['-a'])
    console.log(output.stdout(), output.status().success)
    const withOptions = await sandbox.execWith('env', { env: { A: '1' }, cwd: '/' })
    console.log(withOptions.code)
    const viaBuilder = await sandbox.execWith('sh', (b) => b.args(['-c', 'exit 0']).env('B', '2'))
    console.log(viaBuilder.success)
    console.log((await imageList()).map((image) => image.reference))
    const fs = sandbox.fs()
    await fs.write('/scratch/note', 'typed')
    const entries: FsEntry[] = await fs.list('/scratch')
    console.log(entries.map((entry) => entry.path), await fs.readString('/scratch/note'))
    const handle = await sandbox.execStreamWith('cat', (b) => b.stdinPipe())
    const stdin = await handle.takeStdin()
    await stdin?.write(Buffer.from('streamed'))
    await stdin?.close()
    for await (const event of handle) {
      const seen: ExecEvent = event
      if (seen.eventType === 'stdout' && seen.data) process.stdout.write(seen.data)
    }
    const metrics: SandboxMetrics = await sandbox.metrics()
    console.log(metrics.cpuPercent, metrics.memoryBytes)
    for await (const sample of await sandbox.metricsStream(200)) {
      console.log(sample.uptimeMs)
      break
    }
    const logEntries: LogEntry[] = await sandbox.logs({ sources: ['stdout', 'stderr'], tail: 10 })
    console.log(logEntries.map((entry) => `${entry.timestampMs} ${entry.source} ${entry.sessionId}: ${entry.data}`))
    const logStream: LogStream = await sandbox.logStream({ follow: false, fromCursor: logEntries[0]?.cursor })
    for await (const entry of logStream) console.log(entry.cursor)
    const handle2: VolumeHandle = await Volume.get(volume.name)
    console.log(handle2.usedBytes, await handle2.fs().exists('/seed.txt'))
    await Sandbox.create({ name: 'x', image: 'host', secrets: [] }).catch((err: unknown) => {
      if (err instanceof NotSupportedError) console.log(err.code)
    })
  } catch (err) {
    if (err instanceof MoatError) console.error(err.code, err.message)
    throw err
  } finally {
    await sandbox.stop()
    await Volume.remove(volume.name)
  }
}

void main()
