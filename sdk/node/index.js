// moat's Node package: the native addon (moat.node, built by `npm run build`) with every call's
// errors turned into MoatError subclasses, microsandbox's execWith builder callback, and the
// exit hook that ends the sandboxes attached handles own.
'use strict'

const fs = require('node:fs')
const path = require('node:path')
const errors = require('./errors.js')

// The binaries `npm run build` found, unless the environment names others.
const recorded = path.join(__dirname, 'executables.json')
if (fs.existsSync(recorded)) {
  const found = JSON.parse(fs.readFileSync(recorded, 'utf8'))
  if (!process.env.MOAT_BIN && found.moat) process.env.MOAT_BIN = found.moat
  if (!process.env.MOAT_AGENTD && found.agentd) process.env.MOAT_AGENTD = found.agentd
}

const native = require('./moat.node')

// Prototype methods and getters are wrapped in place; napi defines a class's statics as
// read-only, so each class is exported as a subclass whose statics are the wrapped ones and
// whose `instanceof` accepts the native instances.
// The calls that return a value, not a promise; every other method and static is async.
const SYNC_CALLS = new Set(['fs', 'readyBytes', 'socketPath', 'stdout', 'stderr', 'stdoutBytes', 'stderrBytes', 'status'])

function wrapClass(Native) {
  for (const key of Object.getOwnPropertyNames(Native.prototype)) {
    const desc = Object.getOwnPropertyDescriptor(Native.prototype, key)
    if (key === 'constructor' || !desc.configurable) continue
    if (typeof desc.value === 'function') {
      Object.defineProperty(Native.prototype, key, { ...desc, value: errors.wrap(desc.value, { async: !SYNC_CALLS.has(key) }) })
    } else if (typeof desc.get === 'function') {
      Object.defineProperty(Native.prototype, key, { ...desc, get: errors.wrap(desc.get) })
    }
  }
  const Facade = class extends Native {
    static [Symbol.hasInstance](value) {
      return value instanceof Native
    }
  }
  Object.defineProperty(Facade, 'name', { value: Native.name })
  for (const key of Object.getOwnPropertyNames(Native)) {
    if (typeof Native[key] === 'function' && !['length', 'name', 'prototype'].includes(key)) {
      const value = errors.wrap(Native[key], { async: !SYNC_CALLS.has(key) })
      Object.defineProperty(Facade, key, { value, writable: true, configurable: true })
    }
  }
  return Facade
}

class ExecOptionsBuilder {
  constructor() {
    this._o = { args: [], env: {}, rlimits: [] }
  }
  arg(arg) { this._o.args.push(arg); return this }
  args(args) { this._o.args.push(...args); return this }
  cwd(cwd) { this._o.cwd = cwd; return this }
  user(user) { this._o.user = user; return this }
  env(key, value) { this._o.env[key] = value; return this }
  envs(vars) { Object.assign(this._o.env, vars); return this }
  timeout(ms) { this._o.timeoutMs = ms; return this }
  stdinNull() { this._o.stdin = { kind: 'null' }; return this }
  stdinPipe() { this._o.stdin = { kind: 'pipe' }; return this }
  stdinBytes(data) { this._o.stdin = { kind: 'bytes', data }; return this }
  tty(enabled) { this._o.tty = enabled; return this }
  rlimit(resource, limit) { this._o.rlimits.push({ resource, soft: limit, hard: limit }); return this }
  rlimitRange(resource, soft, hard) { this._o.rlimits.push({ resource, soft, hard }); return this }
  build() { return { ...this._o } }
}

const classes = {}
const CLASSES = ['Sandbox', 'SandboxHandle', 'ExecOutput', 'ExecHandle', 'ExecSink', 'SandboxFs', 'FsReadStream',
  'FsWriteSink', 'MetricsStream', 'AgentClient']
for (const name of CLASSES) classes[name] = wrapClass(native[name])

// The streams are async-iterable: `for await (const chunk of stream)` calls `recv()` until null.
for (const name of ['ExecHandle', 'FsReadStream', 'MetricsStream']) {
  native[name].prototype[Symbol.asyncIterator] = async function* iterate() {
    for (let item; (item = await this.recv()) !== null;) yield item
  }
}

// execWith and execStreamWith take options or microsandbox's builder callback.
for (const method of ['execWith', 'execStreamWith']) {
  const nativeCall = native.Sandbox.prototype[method]
  native.Sandbox.prototype[method] = function withOptions(cmd, options) {
    if (typeof options === 'function') {
      let built
      try {
        built = options(new ExecOptionsBuilder())
      } catch (err) {
        return Promise.reject(err)
      }
      if (!(built instanceof ExecOptionsBuilder)) {
        return Promise.reject(new errors.InvalidArgumentError('ERR_MOAT_INVALID_ARGUMENT',
          `the ${method} callback must return the builder it was given`))
      }
      options = built.build()
    }
    return nativeCall.call(this, cmd, options)
  }
}

// Attached sandboxes end with the process that owns them: at exit, and on the signals that
// end node by default. A signal handler runs only while it is the signal's sole listener (a
// program that handles the signal itself decides whether node ends); it then kills the
// attached sandboxes and re-raises the signal with node's default action.
process.on('exit', () => native.killAttachedSandboxes())
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, function endAttached() {
    if (process.listenerCount(signal) !== 1) return
    native.killAttachedSandboxes()
    process.removeListener(signal, endAttached)
    process.kill(process.pid, signal)
  })
}

const wrapped = {}
for (const name of ['imageList', 'imageGet', 'imageInspect', 'imageRemove', 'imageGc']) {
  wrapped[name] = errors.wrap(native[name], { async: true })
}

module.exports = {
  ...classes,
  ExecOptionsBuilder,
  ...wrapped,
  MoatError: errors.MoatError,
  NotSupportedError: errors.NotSupportedError,
  InvalidArgumentError: errors.InvalidArgumentError,
  NotFoundError: errors.NotFoundError,
  NotRunningError: errors.NotRunningError,
  ExecFailedError: errors.ExecFailedError,
  ConnectionError: errors.ConnectionError,
}
