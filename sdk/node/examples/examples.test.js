// `npm test` runs every JavaScript example against a private moat home.
'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

for (const file of fs.readdirSync(__dirname).filter((f) => f.endsWith('.js') && !f.endsWith('.test.js'))) {
  test(`example ${file} runs`, () => {
    const home = fs.mkdtempSync(path.join(os.tmpdir(), 'moat-node-example-'))
    try {
      const run = spawnSync(process.execPath, [path.join(__dirname, file)], {
        env: { ...process.env, MOAT_HOME: home },
        encoding: 'utf8',
        timeout: 120_000,
      })
      assert.equal(run.status, 0, `${file} failed:\n${run.stdout}\n${run.stderr}`)
      assert.notEqual(run.stdout.trim(), '')
      assert.deepEqual(fs.readdirSync(path.join(home, 'sandboxes')), [], `${file} left a sandbox behind`)
    } finally {
      fs.rmSync(home, { recursive: true, force: true })
    }
  })
}
