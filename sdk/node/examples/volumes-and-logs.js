// A named volume that outlives its sandboxes, a root patched before boot, and the exec log read
// back and followed. The sandboxes are ephemeral; the volume is removed at the end.
'use strict'

const { Sandbox, Volume, Mount, Patch } = require('..')

async function main() {
  const volume = await Volume.create({ name: `cache-${process.pid}` })
  try {
    await volume.fs().write('/input.txt', 'written from the host\n')
    const common = {
      image: 'host',
      isolation: 'namespace',
      ephemeral: true,
      volumes: { '/cache': Mount.named(volume.name) },
      patches: [Patch.text('/etc/app.conf', 'mode=demo\n'), Patch.mkdir('/app/out', { mode: 0o755 })],
    }

    const writer = await Sandbox.create({ ...common, name: `writer-${process.pid}` })
    try {
      await writer.shell('cat /etc/app.conf /cache/input.txt > /cache/report.txt; echo wrote the report')
      // Follow the log while a command runs: its output arrives as the relay captures it.
      const follow = await writer.logStream({ follow: true, sources: ['stdout'] })
      const run = writer.shell('for i in 1 2 3; do echo "tick $i"; sleep 0.2; done')
      for await (const entry of follow) {
        console.log(`log [session ${entry.sessionId}] ${entry.data.toString().trim()}`)
        if (entry.data.includes('tick 3')) break // leaving the loop closes the stream
      }
      await run
      const last = await writer.logs({ tail: 1 })
      console.log('last log entry:', last[0].data.toString().trim())
    } finally {
      await writer.stop()
    }

    const reader = await Sandbox.create({ ...common, name: `reader-${process.pid}` })
    try {
      console.log((await reader.shell('cat /cache/report.txt')).stdout().trim())
    } finally {
      await reader.stop()
    }
    console.log('volume now holds:', (await volume.fs().list('/')).map((entry) => entry.path).join(' '))
  } finally {
    await Volume.remove(volume.name)
  }
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
