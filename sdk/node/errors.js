// The package's error classes, and the one function that turns what the native addon throws
// into them. The addon carries moat's code in the message (`ERR_MOAT_...: text`); napi's own
// argument conversion errors carry a napi status as `code` (`StringExpected`, `InvalidArg`...).
'use strict'

class MoatError extends Error {
  constructor(code, message, options) {
    super(message, options)
    this.name = new.target.name
    this.code = code
  }
}
class NotSupportedError extends MoatError {}
class InvalidArgumentError extends MoatError {}
class NotFoundError extends MoatError {}
class NotRunningError extends MoatError {}
class ExecFailedError extends MoatError {}
class ConnectionError extends MoatError {}

const BY_CODE = {
  ERR_MOAT_NOT_SUPPORTED: NotSupportedError,
  ERR_MOAT_INVALID_ARGUMENT: InvalidArgumentError,
  ERR_MOAT_NOT_FOUND: NotFoundError,
  ERR_MOAT_NOT_RUNNING: NotRunningError,
  ERR_MOAT_EXEC_FAILED: ExecFailedError,
  ERR_MOAT_CLOSED: ConnectionError,
  ERR_MOAT_PROTOCOL: ConnectionError,
}

// napi statuses that mean "the JS value has the wrong type or shape".
const NAPI_ARGUMENT_STATUSES = new Set([
  'InvalidArg', 'ObjectExpected', 'StringExpected', 'NameExpected', 'FunctionExpected',
  'NumberExpected', 'BooleanExpected', 'ArrayExpected', 'BigintExpected', 'DateExpected',
  'ArrayBufferExpected', 'DetachableArraybufferExpected',
])

const PREFIX = /^(ERR_MOAT_[A-Z0-9_]+): ([\s\S]*)$/

/** `err` as a MoatError subclass (errors that are already one, or not from the addon, pass). */
function translate(err) {
  if (!(err instanceof Error) || err instanceof MoatError) return err
  const match = PREFIX.exec(err.message)
  if (match) {
    const Class = BY_CODE[match[1]] || MoatError
    return new Class(match[1], match[2], { cause: err })
  }
  if (NAPI_ARGUMENT_STATUSES.has(err.code) || err instanceof TypeError) {
    return new InvalidArgumentError('ERR_MOAT_INVALID_ARGUMENT', err.message, { cause: err })
  }
  return err
}

/**
 * Wraps `fn` so that what it throws or rejects with goes through `translate`. For an `async`
 * call, an argument napi refuses before the call starts rejects the promise instead of throwing.
 */
function wrap(fn, { async = false } = {}) {
  return function moatCall(...args) {
    let result
    try {
      result = fn.apply(this, args)
    } catch (err) {
      if (async) return Promise.reject(translate(err))
      throw translate(err)
    }
    if (result && typeof result.then === 'function') {
      return result.then(undefined, (err) => {
        throw translate(err)
      })
    }
    return result
  }
}

module.exports = {
  MoatError,
  NotSupportedError,
  InvalidArgumentError,
  NotFoundError,
  NotRunningError,
  ExecFailedError,
  ConnectionError,
  translate,
  wrap,
}
