// Files in and out of a sandbox with `sandbox.fs()`, and a command's output as it comes with
// `execStream`. The sandbox is ephemeral: it is removed when it stops.
'use strict'

const { Sandbox } = require('..')

async function main() {
  const sandbox = await Sandbox.create({
    name: `files-${process.pid}`,
    image: 'host',
    isolation: 'namespace',
    ephemeral: true,
    volumes: { '/work': { tmpfs: true, sizeMib: 16 } },
  })
  try {
    const fs = sandbox.fs()
    await fs.mkdir('/work/data')
    await fs.write('/work/data/numbers.txt', '3\n1\n2\n')
    for (const entry of await fs.list('/work/data')) console.log(entry.kind, entry.path, entry.size)
    console.log('stat:', await fs.stat('/work/data/numbers.txt'))

    // A file of any size, one chunk (at most 3 MiB) at a time.
    const stream = await fs.readStream('/work/data/numbers.txt')
    for await (const chunk of stream) console.log('chunk of', chunk.length, 'bytes')

    // Output as the command writes it; stdin through the handle's sink.
    const sort = await sandbox.execStreamWith('sort', (b) => b.stdinPipe())
    const stdin = await sort.takeStdin()
    await stdin.write(await fs.read('/work/data/numbers.txt'))
    await stdin.close()
    for await (const event of sort) {
      if (event.eventType === 'stdout') process.stdout.write(event.data)
      if (event.eventType === 'exited') console.log('sort exited with', event.code)
    }
  } finally {
    await sandbox.stop()
  }
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
