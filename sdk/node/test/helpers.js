// Test support: a private moat home per test file, unique sandbox names, and the CLI for
// checks that must not go through the package under test.
'use strict'

const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const home = fs.mkdtempSync(path.join(os.tmpdir(), 'moat-node-test-'))
process.env.MOAT_HOME = home

const moat = require('..')
const executables = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'executables.json'), 'utf8'))

let counter = 0
function uniqueName(prefix) {
  counter += 1
  return `${prefix}-${process.pid}-${counter}`
}

function config(name, extra = {}) {
  return { name, image: 'host', isolation: 'namespace', ...extra }
}

/** Runs the moat CLI against the test home. */
function cli(...args) {
  const result = spawnSync(executables.moat, args, { env: { ...process.env, MOAT_HOME: home }, encoding: 'utf8' })
  return result
}

/** Every sandbox in the test home ends removed; call from `after`. */
function cleanup() {
  const dir = path.join(home, 'sandboxes')
  for (const name of fs.existsSync(dir) ? fs.readdirSync(dir) : []) cli('rm', '-f', name)
  fs.rmSync(home, { recursive: true, force: true })
}

/** The state file's status of `name`, read without the package. */
function recordedStatus(name) {
  const file = path.join(home, 'sandboxes', name, 'state.json')
  return fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, 'utf8')).status : null
}

/** Whether `pid` runs (a zombie, ended but not yet reaped, does not). */
function pidAlive(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z'
  } catch {
    return false
  }
}

function recordedPid(name) {
  const file = path.join(home, 'sandboxes', name, 'state.json')
  return JSON.parse(fs.readFileSync(file, 'utf8')).pid
}

module.exports = { moat, home, uniqueName, config, cli, cleanup, recordedStatus, recordedPid, pidAlive, executables }
