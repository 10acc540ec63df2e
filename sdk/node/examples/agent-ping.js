// The raw AgentClient: connect to a sandbox's relay and ping its agent with hand-made CBOR.
// Run from sdk/node after `npm run build`: node examples/agent-ping.js
'use strict'

// The tests' small CBOR codec; a real program would use a library such as cbor-x.
const cbor = require('../test/cbor.js')
const { Sandbox, AgentClient } = require('..')

const { decode } = cbor

async function main() {
  const sandbox = await Sandbox.create({ name: `agent-ping-${process.pid}`, image: 'host', isolation: 'namespace' })
  try {
    const client = await AgentClient.connectSandbox(sandbox.name)
    const ready = decode(client.readyBytes())
    console.log(`connected: ${ready.t}, agent ${decode(ready.p).agent_version}`)
    // An envelope {v, t, p} whose p is the payload's own CBOR encoding.
    const reply = await client.request(0, cbor.encode({ v: 10, t: 'core.ping', p: cbor.encode({}) }))
    console.log(`reply on id ${reply.id}: ${decode(reply.body).t}`)
    await client.close()
  } finally {
    await sandbox.kill()
    await Sandbox.remove(sandbox.name)
  }
}

main().catch((err) => {
  console.error(`${err.name} ${err.code}: ${err.message}`)
  process.exit(1)
})
