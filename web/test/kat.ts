// Shared by the tests: read a vector file of ../protocol/vectors (cwd is web/).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { MsgFloat, encode, type MsgValue } from "../src/protocol/msgpack.ts";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Json = any;

export function vectors(name: string): Json {
  return JSON.parse(readFileSync(join(process.cwd(), "..", "protocol", "vectors", name), "utf8"));
}

export function flip(bytes: Uint8Array, at: number): Uint8Array {
  const out = bytes.slice();
  out[at] = (out[at] ?? 0) ^ 1;
  return out;
}

/**
 * Test convenience: msgpack of a plain JS value through the one codec (msgpack.ts) — objects
 * become maps in key order, safe integers ints, other numbers float64.
 */
export function pack(value: unknown): Uint8Array {
  return encode(toMsgValue(value));
}

function toMsgValue(value: unknown): MsgValue {
  if (value === null || typeof value === "boolean" || typeof value === "string" || value instanceof Uint8Array) return value;
  if (typeof value === "number") return Number.isSafeInteger(value) ? value : new MsgFloat(value);
  if (Array.isArray(value)) return value.map(toMsgValue);
  if (typeof value === "object") return new Map(Object.entries(value as object).map(([k, v]) => [k, toMsgValue(v)]));
  throw new Error(`no MessagePack form for ${typeof value}`);
}
