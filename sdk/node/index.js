// moat's Node package: the native addon (moat.node, built by `npm run build`) with every call's
// errors turned into MoatError subclasses, microsandbox's execWith builder callback and config
// factories (Mount, Patch, NetworkPolicy, Secret), and the check that refuses config keys moat
// does not know. (An attached sandbox needs no exit hook: the library ties it to this process.)
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
  'FsWriteSink', 'MetricsStream', 'LogStream', 'Volume', 'VolumeHandle', 'VolumeFs', 'VolumeFsReadStream',
  'VolumeFsWriteSink', 'AgentClient']
for (const name of CLASSES) classes[name] = wrapClass(native[name])

// The streams are async-iterable: `for await (const chunk of stream)` calls `recv()` until null.
// Leaving the loop early closes a LogStream (a follow would otherwise wait for the next entry
// until the stream is garbage-collected).
for (const name of ['ExecHandle', 'FsReadStream', 'MetricsStream', 'LogStream', 'VolumeFsReadStream']) {
  const closes = typeof native[name].prototype.close === 'function'
  native[name].prototype[Symbol.asyncIterator] = async function* iterate() {
    let ended = false
    try {
      for (let item; (item = await this.recv()) !== null;) yield item
      ended = true
    } finally {
      if (closes && !ended) await this.close()
    }
  }
}

// Config keys moat knows, by where they sit; any other key is refused by name rather than
// dropped (napi skips keys a struct does not declare). `undefined` values count as absent.
const CONFIG_KEYS = {
  config: ['name', 'image', 'isolation', 'cpus', 'memoryMib', 'env', 'workdir', 'user', 'hostname', 'scripts',
    'volumes', 'patches', 'ports', 'network', 'maxDurationSecs', 'idleTimeoutSecs', 'replace', 'registryAuth',
    'pullPolicy', 'quietLogs', 'shell', 'secrets', 'labels', 'ephemeral', 'entrypoint', 'cmd', 'logLevel',
    'stopSignal'],
  mount: ['bind', 'named', 'tmpfs', 'readonly', 'sizeMib', 'noexec', 'nosuid', 'nodev'],
  patch: ['kind', 'path', 'content', 'contentBytes', 'src', 'dst', 'target', 'link', 'mode', 'replace'],
  network: ['policy', 'rules', 'defaultAction', 'blockDomains', 'blockDomainSuffixes', 'dnsRebindProtection', 'tls',
    'maxConnections'],
  rule: ['action', 'direction', 'destination', 'protocol', 'port'],
  registryAuth: ['username', 'password'],
}

const isPlainObject = (value) => value !== null && typeof value === 'object' && !Array.isArray(value) && !Buffer.isBuffer(value)

function describe(value) {
  if (value === null || value === undefined) return String(value)
  if (Array.isArray(value)) return 'an array'
  return `a ${typeof value}`
}

// napi reads an object argument's fields by name and takes a string or a number for an object
// with no fields: every object-shaped argument is checked here first.
function requireObject(value, where, { optional = false } = {}) {
  if (optional && (value === undefined || value === null)) return false
  if (!isPlainObject(value)) {
    throw new errors.InvalidArgumentError('ERR_MOAT_INVALID_ARGUMENT', `${where} must be an object, not ${describe(value)}`)
  }
  return true
}

function requireArray(value, where) {
  if (value === undefined || value === null) return false
  if (!Array.isArray(value)) {
    throw new errors.InvalidArgumentError('ERR_MOAT_INVALID_ARGUMENT', `${where} must be an array, not ${describe(value)}`)
  }
  return true
}

function refuseUnknownKeys(value, kind, where) {
  for (const key of Object.keys(value)) {
    if (value[key] !== undefined && !CONFIG_KEYS[kind].includes(key)) {
      throw new errors.NotSupportedError('ERR_MOAT_NOT_SUPPORTED', `not supported by moat: ${where}.${key}`)
    }
  }
}

function checkObject(value, kind, where, options) {
  if (requireObject(value, where, options)) refuseUnknownKeys(value, kind, where)
}

function checkConfig(config) {
  checkObject(config, 'config', 'config')
  for (const field of ['env', 'scripts', 'labels', 'ports']) requireObject(config[field], `config.${field}`, { optional: true })
  if (requireObject(config.volumes, 'config.volumes', { optional: true })) {
    for (const [guest, mount] of Object.entries(config.volumes)) checkObject(mount, 'mount', `config.volumes[${JSON.stringify(guest)}]`)
  }
  if (requireArray(config.patches, 'config.patches')) config.patches.forEach((patch, i) => checkObject(patch, 'patch', `config.patches[${i}]`))
  checkObject(config.network, 'network', 'config.network', { optional: true })
  if (config.network && requireArray(config.network.rules, 'config.network.rules')) {
    config.network.rules.forEach((rule, i) => checkObject(rule, 'rule', `config.network.rules[${i}]`))
  }
  checkObject(config.registryAuth, 'registryAuth', 'config.registryAuth', { optional: true })
}

/** Replaces `Class.prototype[method]` (or the static, with `statics`) by one that runs `check` on its arguments first. */
function checked(target, method, check) {
  const call = target[method]
  Object.defineProperty(target, method, {
    value: function checkedCall(...args) {
      try {
        check(...args)
      } catch (err) {
        return Promise.reject(err)
      }
      return call.apply(this, args)
    },
    writable: true,
    configurable: true,
  })
}

for (const method of ['create', 'createDetached']) checked(classes.Sandbox, method, checkConfig)
checked(classes.Sandbox, 'listWith', (filter) => requireObject(filter, 'filter'))
checked(classes.Volume, 'create', (config) => requireObject(config, 'config'))
for (const Class of [native.Sandbox, native.SandboxHandle]) {
  checked(Class.prototype, 'logs', (opts) => requireObject(opts, 'opts', { optional: true }))
  checked(Class.prototype, 'logStream', (opts) => requireObject(opts, 'opts', { optional: true }))
}
for (const method of ['execWith', 'execStreamWith']) {
  checked(native.Sandbox.prototype, method, (cmd, options) => {
    if (typeof options !== 'function') requireObject(options, 'options')
  })
}

// microsandbox's config factories: plain objects of the shapes SandboxConfig takes.
const Mount = {
  bind: (path, opts = {}) => ({ ...opts, bind: path }),
  named: (name, opts = {}) => ({ ...opts, named: name }),
  tmpfs: (opts = {}) => ({ ...opts, tmpfs: true }),
}
const Patch = {
  text: (path, content, opts = {}) => ({ kind: 'text', path, content, ...opts }),
  file: (path, content, opts = {}) => ({ kind: 'file', path, content, ...opts }),
  mkdir: (path, opts = {}) => ({ kind: 'mkdir', path, ...opts }),
  append: (path, content) => ({ kind: 'append', path, content }),
  copyFile: (src, dst, opts = {}) => ({ kind: 'copyFile', src, dst, ...opts }),
  copyDir: (src, dst, opts = {}) => ({ kind: 'copyDir', src, dst, ...opts }),
  symlink: (target, link, opts = {}) => ({ kind: 'symlink', target, link, ...opts }),
  remove: (path) => ({ kind: 'remove', path }),
}
const NetworkPolicy = {
  none: () => ({ policy: 'none' }),
  publicOnly: () => ({ policy: 'public-only' }),
  allowAll: () => ({ policy: 'allow-all' }),
}
// Secrets are not supported by moat: an entry made here is refused by Sandbox.create, by name.
const Secret = {
  env: (envVar, opts = {}) => ({ envVar, ...opts }),
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

const wrapped = {}
for (const name of ['imageList', 'imageGet', 'imageInspect', 'imageRemove', 'imageGc']) {
  wrapped[name] = errors.wrap(native[name], { async: true })
}

module.exports = {
  ...classes,
  ExecOptionsBuilder,
  Mount,
  Patch,
  NetworkPolicy,
  Secret,
  ...wrapped,
  MoatError: errors.MoatError,
  NotSupportedError: errors.NotSupportedError,
  InvalidArgumentError: errors.InvalidArgumentError,
  NotFoundError: errors.NotFoundError,
  NotRunningError: errors.NotRunningError,
  ExecFailedError: errors.ExecFailedError,
  ConnectionError: errors.ConnectionError,
}
