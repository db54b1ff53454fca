/** Test helpers: read ../protocol/vectors/*.json and turn their hex fields into bytes by schema. */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fromHex } from "../src/protocol/bytes.ts";
import type { FieldType, StructDef, UnionDef } from "../src/protocol/schema.ts";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Json = any;

export function loadVectors(name: string): Json {
  return JSON.parse(readFileSync(join(process.cwd(), "..", "protocol", "vectors", `${name}.json`), "utf8"));
}

function field(type: FieldType, value: Json): unknown {
  if (type === "bytes") return fromHex(value as string);
  if (typeof type === "string") return value;
  if ("optional" in type) return value === null ? null : field(type.optional, value);
  if ("list" in type) return (value as Json[]).map((item) => field(type.list, item));
  if ("literal" in type) return value;
  if ("struct" in type) return fromJson(type.struct, value);
  return fromJsonUnion(type.union, value);
}

/** A vector's JSON object (bytes as hex) as the plain object the schema encodes. */
export function fromJson(def: StructDef, value: Json): Json {
  const out: Record<string, unknown> = {};
  if (def.arrayLike === true && Array.isArray(value)) {
    def.fields.forEach((item, i) => {
      if (i < value.length) out[item.name] = field(item.type, value[i]);
    });
    return out;
  }
  if (def.tag !== undefined) out["type"] = value.type;
  for (const item of def.fields) {
    if (item.name in value) out[item.name] = field(item.type, value[item.name]);
  }
  return out;
}

export function fromJsonUnion(def: UnionDef, value: Json): Json {
  const struct = def.byTag.get(value.type);
  if (struct === undefined) throw new Error(`no ${def.name} ${value.type}`);
  return fromJson(struct, value);
}

/** Flip one bit of a copy. */
export function flip(bytes: Uint8Array, index: number, bit = 0): Uint8Array {
  const out = bytes.slice();
  out[index] = out[index]! ^ (1 << bit);
  return out;
}
