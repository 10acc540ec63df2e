#!/usr/bin/env node
// `npm run bench`: the addon's overhead over moat's Rust API, measured in one run on one
// sandbox. An exec round trip (`exec('true')`) and a write then a read of a FS_MIB MiB file
// (`fs().write`, `fs().read`) through the addon, beside the same library calls made from Rust
// (bench/overhead.rs, built by cargo here), in alternating rounds. Prints the medians, the
// ratio addon ÷ Rust and the host's load; `--json` prints one JSON object instead. A benchmark
// reports: it never fails on a time. `--quick`: tiny sizes (what the smoke test runs).
'use strict'

const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const quick = process.argv.includes('--quick')
const json = process.argv.includes('--json')
const EXEC_ITERS = quick ? 5 : 100
const FS_ITERS = quick ? 1 : 3
const FS_MIB = quick ? 1 : 64
const ROUNDS = quick ? 1 : 3

const pkg = path.resolve(__dirname, '..')
const workspace = path.resolve(pkg, '..', '..')
const targetDir = process.env.CARGO_TARGET_DIR || path.join(workspace, 'target')
const log = (line) => process.stderr.write(`${line}\n`)

// The Rust half, built with cargo in the profile the addon was built in (`npm run build`: debug;
// `npm run build:release`: release), as executables.json records it.
const recorded = JSON.parse(fs.readFileSync(path.join(pkg, 'executables.json'), 'utf8'))
const profile = recorded.profile === 'release' ? 'release' : 'debug'
const cargoArgs = ['build', '-q', '-p', 'moat-node', '--example', 'overhead']
if (profile === 'release') cargoArgs.push('--release')
log(`building the Rust half: cargo ${cargoArgs.join(' ')}`)
const built = spawnSync('cargo', cargoArgs, { cwd: workspace, stdio: 'inherit' })
if (built.status !== 0) process.exit(built.status || 1)
const rustBin = path.join(targetDir, profile, 'examples', 'overhead')

const home = fs.mkdtempSync(path.join(os.tmpdir(), 'moat-node-bench-'))
process.env.MOAT_HOME = home
const { Sandbox } = require(pkg)

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

async function nodeRound(sb, samples) {
  for (let i = 0; i < EXEC_ITERS; i++) {
    const start = process.hrtime.bigint()
    const out = await sb.exec('true')
    samples.exec.push(Number(process.hrtime.bigint() - start) / 1e6)
    if (out.code !== 0) throw new Error(`exec true exited ${out.code}`)
  }
  const data = Buffer.alloc(FS_MIB * 1024 * 1024, 0x5a)
  const sfs = sb.fs()
  for (let i = 0; i < FS_ITERS; i++) {
    let start = process.hrtime.bigint()
    await sfs.write('/bench/node.bin', data)
    samples.fs_write.push(Number(process.hrtime.bigint() - start) / 1e6)
    start = process.hrtime.bigint()
    const back = await sfs.read('/bench/node.bin')
    samples.fs_read.push(Number(process.hrtime.bigint() - start) / 1e6)
    if (back.length !== data.length) throw new Error(`read ${back.length} bytes back, wrote ${data.length}`)
  }
}

function rustRound(name, samples) {
  const run = spawnSync(rustBin, [name, String(EXEC_ITERS), String(FS_ITERS), String(FS_MIB)], {
    env: { ...process.env, MOAT_HOME: home }, encoding: 'utf8', maxBuffer: 1 << 20,
  })
  if (run.status !== 0) throw new Error(`the Rust half failed (${run.status}): ${run.stderr}`)
  const got = JSON.parse(run.stdout)
  for (const key of Object.keys(samples)) samples[key].push(...got[key])
}

async function main() {
  const loadBefore = os.loadavg()
  const name = `bench-${process.pid}`
  const sb = await Sandbox.create({
    name, image: 'host', isolation: 'namespace',
    volumes: { '/bench': { tmpfs: true, sizeMib: Math.max(32, FS_MIB * 3) } },
  })
  const node = { exec: [], fs_write: [], fs_read: [] }
  const rust = { exec: [], fs_write: [], fs_read: [] }
  try {
    await sb.exec('true') // warm-up
    for (let round = 0; round < ROUNDS; round++) {
      log(`round ${round + 1}/${ROUNDS}: Rust, then the addon`)
      rustRound(name, rust)
      await nodeRound(sb, node)
    }
  } finally {
    await sb.kill().catch(() => {})
    await Sandbox.remove(name).catch(() => {})
    fs.rmSync(home, { recursive: true, force: true })
  }
  const figures = {}
  for (const key of Object.keys(node)) {
    const [n, r] = [median(node[key]), median(rust[key])]
    figures[key] = { addon_ms: n, rust_ms: r, ratio: n / r, overhead_pct: (n / r - 1) * 100, samples: node[key].length }
  }
  const report = {
    profile, exec_iters_per_round: EXEC_ITERS, fs_mib: FS_MIB, fs_iters_per_round: FS_ITERS, rounds: ROUNDS,
    cpus: os.cpus().length, load_before: loadBefore, load_after: os.loadavg(), node: process.version, figures,
  }
  if (json) {
    console.log(JSON.stringify(report, null, 2))
    return
  }
  const fmt = (x) => x.toFixed(2).padStart(9)
  console.log(`addon overhead (${profile} builds, ${ROUNDS} rounds, ${EXEC_ITERS} execs and ${FS_ITERS} × ${FS_MIB} MiB per round)`)
  console.log('figure        addon ms   Rust ms    ratio   overhead')
  for (const [key, f] of Object.entries(figures)) {
    console.log(`${key.padEnd(10)}${fmt(f.addon_ms)} ${fmt(f.rust_ms)} ${fmt(f.ratio)} ${f.overhead_pct.toFixed(1).padStart(8)} %`)
  }
  console.log(`load average before ${loadBefore.map((l) => l.toFixed(2)).join(' ')}, after ${os.loadavg().map((l) => l.toFixed(2)).join(' ')} (${os.cpus().length} CPUs)`)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
