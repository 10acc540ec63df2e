// create → exec → stop: a namespace sandbox on the host's root, one command, a clean end.
// Run from sdk/node after `npm run build`: node examples/quickstart.js
'use strict'

const { Sandbox } = require('..')

async function main() {
  const sandbox = await Sandbox.create({
    name: `quickstart-${process.pid}`,
    image: 'host', // or an OCI reference ('alpine:3.20'), or a root directory ('./rootfs')
    isolation: 'namespace',
    env: { GREETING: 'hello' },
  })
  try {
    const output = await sandbox.shell('echo "$GREETING from $(hostname)"')
    console.log(output.stdout().trim(), `(exit ${output.code})`)

    const listing = await sandbox.execWith('ls', (b) => b.args(['/']).cwd('/'))
    console.log(`/ has ${listing.stdout().split('\n').filter(Boolean).length} entries`)
  } finally {
    const status = await sandbox.stopAndWait()
    console.log(`stopped: ${JSON.stringify(status)}`)
    await Sandbox.remove(sandbox.name)
  }
}

main().catch((err) => {
  console.error(`${err.name} ${err.code}: ${err.message}`)
  process.exit(1)
})
