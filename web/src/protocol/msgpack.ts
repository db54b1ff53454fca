/**
 * MessagePack exactly as msgspec 0.22 writes it (PROTOCOL.md §2): shortest integer forms,
 * floats always float64, `bin` for bytes, `str` for strings, maps kept in insertion order.
 *
 * A small value model instead of @msgpack/msgpack's: a float must stay a float64 even when it
 * is integral (msgspec writes `1.0` as `cb…`, @msgpack/msgpack as `01`), and a decoder that
 * keeps the int/float distinction lets wire.ts refuse a float where the spec says int.
 */

/** A MessagePack float64 (a plain JS number is always encoded as an integer). */
export class MsgFloat {
  constructor(readonly value: number) {}
}

export type MsgValue =
  | null
  | boolean
  | number
  | MsgFloat
  | string
  | Uint8Array
  | readonly MsgValue[]
  | MsgMap;

/** A map with string keys, in order (struct field order is part of the encoding). */
export type MsgMap = ReadonlyMap<string, MsgValue>;

export class MsgpackError extends Error {
  override name = "MsgpackError";
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

class Writer {
  private buf = new Uint8Array(256);
  private view = new DataView(this.buf.buffer);
  length = 0;

  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  u8(v: number): void {
    this.reserve(1);
    this.buf[this.length++] = v;
  }
  u16(v: number): void {
    this.reserve(2);
    this.view.setUint16(this.length, v);
    this.length += 2;
  }
  u32(v: number): void {
    this.reserve(4);
    this.view.setUint32(this.length, v);
    this.length += 4;
  }
  u64(v: bigint): void {
    this.reserve(8);
    this.view.setBigUint64(this.length, v);
    this.length += 8;
  }
  i64(v: bigint): void {
    this.reserve(8);
    this.view.setBigInt64(this.length, v);
    this.length += 8;
  }
  f64(v: number): void {
    this.reserve(8);
    this.view.setFloat64(this.length, v);
    this.length += 8;
  }
  bytes(b: Uint8Array): void {
    this.reserve(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }
  result(): Uint8Array {
    return this.buf.slice(0, this.length);
  }
}

function writeInt(w: Writer, n: number): void {
  if (!Number.isSafeInteger(n)) throw new MsgpackError(`not a safe integer: ${n}`);
  if (n >= 0) {
    if (n < 0x80) w.u8(n);
    else if (n < 0x100) (w.u8(0xcc), w.u8(n));
    else if (n < 0x10000) (w.u8(0xcd), w.u16(n));
    else if (n < 0x100000000) (w.u8(0xce), w.u32(n));
    else (w.u8(0xcf), w.u64(BigInt(n)));
  } else {
    if (n >= -32) w.u8(n & 0xff);
    else if (n >= -0x80) (w.u8(0xd0), w.u8(n & 0xff));
    else if (n >= -0x8000) (w.u8(0xd1), w.u16(n & 0xffff));
    else if (n >= -0x80000000) (w.u8(0xd2), w.u32(n >>> 0));
    else (w.u8(0xd3), w.i64(BigInt(n)));
  }
}

function writeLength(w: Writer, n: number, fix: number | null, fixMax: number, c8: number | null, c16: number, c32: number): void {
  if (fix !== null && n <= fixMax) w.u8(fix | n);
  else if (c8 !== null && n < 0x100) (w.u8(c8), w.u8(n));
  else if (n < 0x10000) (w.u8(c16), w.u16(n));
  else (w.u8(c32), w.u32(n));
}

function write(w: Writer, v: MsgValue): void {
  if (v === null) w.u8(0xc0);
  else if (v === false) w.u8(0xc2);
  else if (v === true) w.u8(0xc3);
  else if (typeof v === "number") writeInt(w, v);
  else if (v instanceof MsgFloat) (w.u8(0xcb), w.f64(v.value));
  else if (typeof v === "string") {
    const b = textEncoder.encode(v);
    writeLength(w, b.length, 0xa0, 31, 0xd9, 0xda, 0xdb);
    w.bytes(b);
  } else if (v instanceof Uint8Array) {
    writeLength(w, v.length, null, 0, 0xc4, 0xc5, 0xc6);
    w.bytes(v);
  } else if (Array.isArray(v)) {
    const items = v as readonly MsgValue[];
    writeLength(w, items.length, 0x90, 15, null, 0xdc, 0xdd);
    for (const item of items) write(w, item);
  } else if (v instanceof Map) {
    const map = v as MsgMap;
    writeLength(w, map.size, 0x80, 15, null, 0xde, 0xdf);
    for (const [key, item] of map) {
      write(w, key);
      write(w, item);
    }
  } else throw new MsgpackError("value has no MessagePack form");
}

/** msgpack(x) of §2. */
export function encode(value: MsgValue): Uint8Array {
  const w = new Writer();
  write(w, value);
  return w.result();
}

class Reader {
  at = 0;
  private readonly view: DataView;
  constructor(private readonly buf: Uint8Array) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  need(n: number): void {
    if (this.at + n > this.buf.length) throw new MsgpackError("truncated MessagePack");
  }
  u8(): number {
    this.need(1);
    return this.buf[this.at++]!;
  }
  u16(): number {
    this.need(2);
    const v = this.view.getUint16(this.at);
    this.at += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.view.getUint32(this.at);
    this.at += 4;
    return v;
  }
  big(signed: boolean): number {
    this.need(8);
    const v = signed ? this.view.getBigInt64(this.at) : this.view.getBigUint64(this.at);
    this.at += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw new MsgpackError("integer out of the safe range");
    }
    return Number(v);
  }
  f32(): number {
    this.need(4);
    const v = this.view.getFloat32(this.at);
    this.at += 4;
    return v;
  }
  f64(): number {
    this.need(8);
    const v = this.view.getFloat64(this.at);
    this.at += 8;
    return v;
  }
  take(n: number): Uint8Array {
    this.need(n);
    const out = this.buf.slice(this.at, this.at + n);
    this.at += n;
    return out;
  }
  done(): boolean {
    return this.at === this.buf.length;
  }
}

const MAX_DEPTH = 64;

function str(r: Reader, n: number): string {
  try {
    return textDecoder.decode(r.take(n));
  } catch {
    throw new MsgpackError("string is not valid UTF-8");
  }
}

function array(r: Reader, n: number, depth: number): MsgValue[] {
  const out: MsgValue[] = [];
  for (let i = 0; i < n; i++) out.push(read(r, depth + 1));
  return out;
}

function map(r: Reader, n: number, depth: number): MsgMap {
  const out = new Map<string, MsgValue>();
  for (let i = 0; i < n; i++) {
    const key = read(r, depth + 1);
    if (typeof key !== "string") throw new MsgpackError("map key is not a string");
    if (out.has(key)) throw new MsgpackError(`duplicate map key ${JSON.stringify(key)}`);
    out.set(key, read(r, depth + 1));
  }
  return out;
}

function read(r: Reader, depth: number): MsgValue {
  if (depth > MAX_DEPTH) throw new MsgpackError("MessagePack nested too deeply");
  const b = r.u8();
  if (b < 0x80) return b;
  if (b >= 0xe0) return b - 0x100;
  if (b >= 0xa0 && b <= 0xbf) return str(r, b & 0x1f);
  if (b >= 0x90 && b <= 0x9f) return array(r, b & 0x0f, depth);
  if (b >= 0x80 && b <= 0x8f) return map(r, b & 0x0f, depth);
  switch (b) {
    case 0xc0: return null;
    case 0xc2: return false;
    case 0xc3: return true;
    case 0xc4: return r.take(r.u8());
    case 0xc5: return r.take(r.u16());
    case 0xc6: return r.take(r.u32());
    case 0xca: return new MsgFloat(r.f32());
    case 0xcb: return new MsgFloat(r.f64());
    case 0xcc: return r.u8();
    case 0xcd: return r.u16();
    case 0xce: return r.u32();
    case 0xcf: return r.big(false);
    case 0xd0: return (r.u8() << 24) >> 24;
    case 0xd1: return (r.u16() << 16) >> 16;
    case 0xd2: return r.u32() | 0;
    case 0xd3: return r.big(true);
    case 0xd9: return str(r, r.u8());
    case 0xda: return str(r, r.u16());
    case 0xdb: return str(r, r.u32());
    case 0xdc: return array(r, r.u16(), depth);
    case 0xdd: return array(r, r.u32(), depth);
    case 0xde: return map(r, r.u16(), depth);
    case 0xdf: return map(r, r.u32(), depth);
    default: throw new MsgpackError(`unsupported MessagePack type 0x${b.toString(16)}`);
  }
}

/** Decode exactly one value filling all of `bytes` (trailing bytes are an error). */
export function decode(bytes: Uint8Array): MsgValue {
  const r = new Reader(bytes);
  const value = read(r, 0);
  if (!r.done()) throw new MsgpackError("trailing bytes after MessagePack value");
  return value;
}
