import { test } from "node:test";
import assert from "node:assert/strict";
import { concat, equal, fromHex, toHex } from "../src/protocol/bytes.ts";

test("hex round trip and concat", () => {
  const bytes = fromHex("00ff10");
  assert.equal(toHex(concat(bytes, fromHex("ab"))), "00ff10ab");
  assert.ok(equal(fromHex(toHex(bytes)), bytes));
  assert.throws(() => fromHex("zz"));
});
