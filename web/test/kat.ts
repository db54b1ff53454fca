// Shared by the tests: read a vector file of ../protocol/vectors (cwd is web/).
import { readFileSync } from "node:fs";
import { join } from "node:path";

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
