/**
 * msgspec-style structs over msgpack.ts (PROTOCOL.md §2): a struct is a map of its fields in
 * declaration order, every field present; a tagged struct starts with "type": tag; an
 * array-like struct is an array of its fields. Decoding accepts keys in any order, ignores
 * unknown keys, fills defaults, and refuses a missing required field, a wrong type, a value
 * outside a literal set or an unknown tag with a `WireError`.
 *
 * Values on the JS side: str → string, bytes → Uint8Array, int → number (safe integer),
 * float → number, bool → boolean, T | None → T | null, list → array, struct → plain object
 * with the spec's (snake_case) field names; a tagged struct's object carries `type`.
 */
import { MsgFloat, decode, encode, type MsgMap, type MsgValue } from "./msgpack.ts";

export class WireError extends Error {
  override name = "WireError";
}

export type FieldType =
  | "str"
  | "bytes"
  | "int"
  | "float"
  | "bool"
  | { readonly optional: FieldType }
  | { readonly list: FieldType }
  | { readonly literal: readonly string[] }
  | { readonly struct: StructDef }
  | { readonly union: UnionDef };

export interface FieldDef {
  readonly name: string;
  readonly type: FieldType;
  /** Present iff the field has a default (a missing key then takes it). */
  readonly default?: unknown;
}

export interface StructDef {
  readonly name: string;
  readonly tag?: string;
  readonly arrayLike?: boolean;
  readonly fields: readonly FieldDef[];
}

export interface UnionDef {
  readonly name: string;
  readonly byTag: ReadonlyMap<string, StructDef>;
}

export function struct(name: string, fields: readonly FieldDef[], options: { tag?: string; arrayLike?: boolean } = {}): StructDef {
  return { name, fields, ...options };
}

export function union(name: string, defs: readonly StructDef[]): UnionDef {
  const byTag = new Map<string, StructDef>();
  for (const def of defs) {
    if (def.tag === undefined) throw new Error(`${def.name} has no tag`);
    byTag.set(def.tag, def);
  }
  return { name, byTag };
}

export const f = (name: string, type: FieldType): FieldDef => ({ name, type });
export const fd = (name: string, type: FieldType, value: unknown): FieldDef => ({ name, type, default: value });
export const optional = (type: FieldType): FieldType => ({ optional: type });
export const list = (type: FieldType): FieldType => ({ list: type });
export const literal = (...values: string[]): FieldType => ({ literal: values });
export const ref = (def: StructDef): FieldType => ({ struct: def });
export const oneOf = (def: UnionDef): FieldType => ({ union: def });

function copyDefault(value: unknown): unknown {
  if (Array.isArray(value)) return [...(value as unknown[])];
  if (value instanceof Uint8Array) return value.slice();
  return value;
}

// ---- JS value → MsgValue (validating: encoding a bad value is a programming error) ----

function toMsgField(type: FieldType, value: unknown, where: string): MsgValue {
  if (type === "str") {
    if (typeof value !== "string") throw new WireError(`${where}: expected str`);
    return value;
  }
  if (type === "bytes") {
    if (!(value instanceof Uint8Array)) throw new WireError(`${where}: expected bytes`);
    return value;
  }
  if (type === "int") {
    if (typeof value !== "number" || !Number.isSafeInteger(value)) throw new WireError(`${where}: expected int`);
    return value;
  }
  if (type === "float") {
    if (typeof value !== "number") throw new WireError(`${where}: expected float`);
    return new MsgFloat(value);
  }
  if (type === "bool") {
    if (typeof value !== "boolean") throw new WireError(`${where}: expected bool`);
    return value;
  }
  if ("optional" in type) return value === null ? null : toMsgField(type.optional, value, where);
  if ("list" in type) {
    if (!Array.isArray(value)) throw new WireError(`${where}: expected list`);
    return (value as unknown[]).map((item, i) => toMsgField(type.list, item, `${where}[${i}]`));
  }
  if ("literal" in type) {
    if (typeof value !== "string" || !type.literal.includes(value)) {
      throw new WireError(`${where}: expected one of ${type.literal.join("|")}`);
    }
    return value;
  }
  if ("struct" in type) return toMsg(type.struct, value);
  const tag = typeof value === "object" && value !== null ? (value as { type?: unknown }).type : undefined;
  const def = typeof tag === "string" ? type.union.byTag.get(tag) : undefined;
  if (def === undefined) throw new WireError(`${where}: not a ${type.union.name}`);
  return toMsg(def, value);
}

/** The MessagePack value of a struct (`value` is the plain object). */
export function toMsg(def: StructDef, value: unknown): MsgValue {
  if (typeof value !== "object" || value === null) throw new WireError(`${def.name}: expected an object`);
  const obj = value as Record<string, unknown>;
  if (def.tag !== undefined && obj["type"] !== def.tag) throw new WireError(`${def.name}: type must be ${def.tag}`);
  const items: [string, MsgValue][] = [];
  if (def.tag !== undefined) items.push(["type", def.tag]);
  for (const field of def.fields) {
    let item = obj[field.name];
    if (item === undefined) {
      if (!("default" in field)) throw new WireError(`${def.name}.${field.name} is missing`);
      item = copyDefault(field.default);
    }
    items.push([field.name, toMsgField(field.type, item, `${def.name}.${field.name}`)]);
  }
  if (def.arrayLike) return items.map(([, v]) => v);
  return new Map(items);
}

export function encodeStruct(def: StructDef, value: unknown): Uint8Array {
  return encode(toMsg(def, value));
}

/** Encode a member of a tagged union (its `type` picks the struct). */
export function encodeUnion(def: UnionDef, value: unknown): Uint8Array {
  return encode(toMsgField({ union: def }, value, def.name));
}

// ---- MsgValue → JS value (validating what came from elsewhere) ----

function fromMsgField(type: FieldType, value: MsgValue, where: string): unknown {
  if (type === "str") {
    if (typeof value !== "string") throw new WireError(`${where}: expected str`);
    return value;
  }
  if (type === "bytes") {
    if (!(value instanceof Uint8Array)) throw new WireError(`${where}: expected bytes`);
    return value;
  }
  if (type === "int") {
    if (typeof value !== "number") throw new WireError(`${where}: expected int`);
    return value;
  }
  if (type === "float") {
    if (value instanceof MsgFloat) return value.value;
    if (typeof value === "number") return value;
    throw new WireError(`${where}: expected float`);
  }
  if (type === "bool") {
    if (typeof value !== "boolean") throw new WireError(`${where}: expected bool`);
    return value;
  }
  if ("optional" in type) return value === null ? null : fromMsgField(type.optional, value, where);
  if ("list" in type) {
    if (!Array.isArray(value)) throw new WireError(`${where}: expected list`);
    return (value as readonly MsgValue[]).map((item, i) => fromMsgField(type.list, item, `${where}[${i}]`));
  }
  if ("literal" in type) {
    if (typeof value !== "string" || !type.literal.includes(value)) {
      throw new WireError(`${where}: expected one of ${type.literal.join("|")}`);
    }
    return value;
  }
  if ("struct" in type) return fromMsg(type.struct, value);
  if (!(value instanceof Map)) throw new WireError(`${where}: expected a ${type.union.name} map`);
  const tag = (value as MsgMap).get("type");
  if (typeof tag !== "string") throw new WireError(`${where}: ${type.union.name} without a type`);
  const def = type.union.byTag.get(tag);
  if (def === undefined) throw new WireError(`${where}: unknown ${type.union.name} type ${JSON.stringify(tag)}`);
  return fromMsg(def, value);
}

/** The plain object of a struct from its MessagePack value. */
export function fromMsg(def: StructDef, value: MsgValue): unknown {
  const out: Record<string, unknown> = {};
  if (def.arrayLike) {
    if (!Array.isArray(value)) throw new WireError(`${def.name}: expected an array`);
    const items = value as readonly MsgValue[];
    if (items.length > def.fields.length) throw new WireError(`${def.name}: too many elements`);
    def.fields.forEach((field, i) => {
      const item = items[i];
      if (item === undefined) {
        if (!("default" in field)) throw new WireError(`${def.name}.${field.name} is missing`);
        out[field.name] = copyDefault(field.default);
      } else out[field.name] = fromMsgField(field.type, item, `${def.name}.${field.name}`);
    });
    return out;
  }
  if (!(value instanceof Map)) throw new WireError(`${def.name}: expected a map`);
  const map = value as MsgMap;
  if (def.tag !== undefined) {
    if (map.get("type") !== def.tag) throw new WireError(`${def.name}: type must be ${def.tag}`);
    out["type"] = def.tag;
  }
  for (const field of def.fields) {
    const item = map.get(field.name);
    if (item === undefined) {
      if (!("default" in field)) throw new WireError(`${def.name}.${field.name} is missing`);
      out[field.name] = copyDefault(field.default);
    } else out[field.name] = fromMsgField(field.type, item, `${def.name}.${field.name}`);
  }
  return out;
}

function decodeOrThrow(bytes: Uint8Array): MsgValue {
  try {
    return decode(bytes);
  } catch (err) {
    throw new WireError(`not MessagePack: ${(err as Error).message}`);
  }
}

export function decodeStruct<T>(def: StructDef, bytes: Uint8Array): T {
  return fromMsg(def, decodeOrThrow(bytes)) as T;
}

export function decodeUnion<T>(def: UnionDef, bytes: Uint8Array): T {
  return fromMsgField({ union: def }, decodeOrThrow(bytes), def.name) as T;
}
