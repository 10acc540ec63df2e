// A small CBOR codec (RFC 8949) for the tests and examples: what AgentClient users bring
// themselves (a library such as cbor-x in a real program). Encodes integers, strings, byte
// strings (Buffer/Uint8Array), arrays, plain objects as text-keyed maps, booleans and null;
// decodes those plus indefinite lengths, tags (skipped), floats and 64-bit integers (BigInt
// when beyond Number's safe range).
'use strict'

function head(major, n) {
  if (n < 24) return Buffer.from([(major << 5) | n])
  if (n < 0x100) return Buffer.from([(major << 5) | 24, n])
  if (n < 0x10000) { const b = Buffer.alloc(3); b[0] = (major << 5) | 25; b.writeUInt16BE(n, 1); return b }
  if (n < 0x100000000) { const b = Buffer.alloc(5); b[0] = (major << 5) | 26; b.writeUInt32BE(n, 1); return b }
  const b = Buffer.alloc(9); b[0] = (major << 5) | 27; b.writeBigUInt64BE(BigInt(n), 1); return b
}

function encode(value) {
  if (value === null || value === undefined) return Buffer.from([0xf6])
  if (value === false) return Buffer.from([0xf4])
  if (value === true) return Buffer.from([0xf5])
  if (typeof value === 'number') {
    if (!Number.isInteger(value)) throw new TypeError(`cbor: only integers, not ${value}`)
    return value >= 0 ? head(0, value) : head(1, -1 - value)
  }
  if (typeof value === 'string') { const s = Buffer.from(value, 'utf8'); return Buffer.concat([head(3, s.length), s]) }
  if (value instanceof Uint8Array) return Buffer.concat([head(2, value.length), Buffer.from(value)])
  if (Array.isArray(value)) return Buffer.concat([head(4, value.length), ...value.map(encode)])
  const entries = Object.entries(value)
  return Buffer.concat([head(5, entries.length), ...entries.flatMap(([k, v]) => [encode(k), encode(v)])])
}

function decode(bytes) {
  const buf = Buffer.from(bytes)
  let pos = 0
  const BREAK = Symbol('break')
  function arg(info) {
    if (info < 24) return info
    if (info === 24) return buf[pos++]
    if (info === 25) { const v = buf.readUInt16BE(pos); pos += 2; return v }
    if (info === 26) { const v = buf.readUInt32BE(pos); pos += 4; return v }
    if (info === 27) {
      const v = buf.readBigUInt64BE(pos); pos += 8
      return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v
    }
    if (info === 31) return -1
    throw new Error(`cbor: bad additional info ${info}`)
  }
  function item() {
    if (pos >= buf.length) throw new Error('cbor: truncated')
    const first = buf[pos++]
    const major = first >> 5
    const info = first & 0x1f
    if (major === 7) {
      if (info === 20) return false
      if (info === 21) return true
      if (info === 22 || info === 23) return null
      if (info === 25) { const v = readHalf(buf.readUInt16BE(pos)); pos += 2; return v }
      if (info === 26) { const v = buf.readFloatBE(pos); pos += 4; return v }
      if (info === 27) { const v = buf.readDoubleBE(pos); pos += 8; return v }
      if (info === 31) return BREAK
      return info
    }
    const n = arg(info)
    switch (major) {
      case 0: return n
      case 1: return typeof n === 'bigint' ? -1n - n : -1 - n
      case 2: case 3: {
        let chunk
        if (n === -1) {
          const parts = []
          for (let part; (part = item()) !== BREAK;) parts.push(Buffer.from(part))
          chunk = Buffer.concat(parts)
        } else {
          chunk = buf.subarray(pos, pos + n); pos += n
        }
        return major === 2 ? Buffer.from(chunk) : chunk.toString('utf8')
      }
      case 4: {
        const out = []
        if (n === -1) for (let v; (v = item()) !== BREAK;) out.push(v)
        else for (let i = 0; i < n; i++) out.push(item())
        return out
      }
      case 5: {
        const out = {}
        if (n === -1) for (let k; (k = item()) !== BREAK;) out[k] = item()
        else for (let i = 0; i < n; i++) { const k = item(); out[k] = item() }
        return out
      }
      case 6: return item()
      default: throw new Error(`cbor: bad major type ${major}`)
    }
  }
  function readHalf(h) {
    const exp = (h >> 10) & 0x1f
    const mant = h & 0x3ff
    const sign = h & 0x8000 ? -1 : 1
    if (exp === 0) return sign * mant * 2 ** -24
    if (exp === 31) return mant ? NaN : sign * Infinity
    return sign * (1 + mant / 1024) * 2 ** (exp - 15)
  }
  return item()
}

module.exports = { encode, decode }
