#!/usr/bin/env node
// `npm run build`: makes sure the `moat`, `moat-sandbox` and `moat-agentd` binaries exist and are current
// (cargo builds the workspace's own unless $MOAT_BIN / $MOAT_AGENTD name others), builds the
// addon with napi (which regenerates index.d.ts), and records the binaries' paths in
// executables.json for index.js. `--release` builds optimized.
'use strict'

const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const release = process.argv.includes('--release')
const pkg = path.resolve(__dirname, '..')
const workspace = path.resolve(pkg, '..', '..')
const targetDir = process.env.CARGO_TARGET_DIR || path.join(workspace, 'target')
const profileDir = path.join(targetDir, release ? 'release' : 'debug')

function run(cmd, args, options = {}) {
  console.log(`$ ${cmd} ${args.join(' ')}`)
  const result = spawnSync(cmd, args, { stdio: 'inherit', cwd: pkg, ...options })
  if (result.error) throw result.error
  if (result.status !== 0) {
    console.error(`${cmd} failed with status ${result.status}`)
    process.exit(result.status || 1)
  }
}

function binary(envVar, name) {
  const given = process.env[envVar]
  if (given) {
    if (!fs.statSync(given, { throwIfNoEntry: false })?.isFile()) {
      console.error(`$${envVar}=${given} is not a file`)
      process.exit(1)
    }
    return { path: path.resolve(given), how: `from $${envVar}` }
  }
  return { path: path.join(profileDir, name), how: 'in the workspace target directory' }
}

const moat = binary('MOAT_BIN', 'moat')
const agentd = binary('MOAT_AGENTD', 'moat-agentd')
// The workspace's own binaries are (re)built by cargo every time: it rebuilds only what changed,
// and a stale moat-agentd beside a newer addon is a mismatch the tests would find the hard way.
const ours = [moat, agentd].filter((b) => b.how === 'in the workspace target directory')
if (ours.length > 0) {
  const cargoArgs = ['build', '-p', 'moat-runtime', '-p', 'moat-agentd', '--bin', 'moat', '--bin', 'moat-sandbox', '--bin', 'moat-agentd']
  if (release) cargoArgs.push('--release')
  run('cargo', cargoArgs, { cwd: workspace })
  for (const b of ours) b.how = 'built or up to date by cargo, in the workspace target directory'
}
for (const [name, b] of [['moat', moat], ['moat-agentd', agentd]]) {
  if (!fs.existsSync(b.path)) {
    console.error(`${name} is still missing at ${b.path}`)
    process.exit(1)
  }
  console.log(`${name}: ${b.path} (${b.how})`)
}

const header = fs.readFileSync(path.join(pkg, 'dts-header.d.ts'), 'utf8')
const napiArgs = ['build', '--manifest-path', 'Cargo.toml', '--output-dir', '.', '--dts', 'index.d.ts',
  '--dts-header', header, '--target-dir', targetDir]
if (release) napiArgs.push('--release')
run(path.join(pkg, 'node_modules', '.bin', 'napi'), napiArgs)

fs.writeFileSync(path.join(pkg, 'executables.json'),
  JSON.stringify({ moat: moat.path, agentd: agentd.path, profile: release ? 'release' : 'debug' }, null, 2) + '\n')
console.log(`addon: ${path.join(pkg, 'moat.node')}; binaries recorded in executables.json`)
