/**
 * Runs in a real browser page for tests/test_web_idb.py: the IndexedDB slot store and the
 * device key (keystore/idb.ts) under the vault (store.ts). `window.salonIdbCheck(step)` returns
 * what the test asserts: "write" creates the vault and a membership, "read" opens them again
 * (as a later page load would).
 */
import { toHex } from "../src/protocol/bytes.ts";
import { randomBytes } from "../src/protocol/crypto.ts";
import { openBrowserStore } from "../src/keystore/idb.ts";
import { Vault } from "../src/keystore/store.ts";

const DB = "salon-idb-check";

async function check(step: "write" | "read"): Promise<unknown> {
  const { store, device, db } = await openBrowserStore(DB);
  const vault = await Vault.open(store, device);
  let seed = "";
  if (step === "write") {
    const signing = randomBytes(32);
    seed = toHex(signing);
    await vault.add({
      type: "membership", space_id: "abcdefghijklmnopqrstuvwx", server: location.origin, display_name: "Bob",
      signing_seed: signing, box_secret: randomBytes(32), space_keys: [], room_keys: [], head_seq: -1,
      head_hash: new Uint8Array(0), name: "Tea club",
    });
  }
  const listed = await vault.list();
  const raw = await Promise.all((await store.list()).map(async (slot) => toHex((await store.get(slot))!)));
  db.close();
  return {
    extractable: device.extractable,
    algorithm: device.algorithm.name,
    usages: [...device.usages].sort(),
    memberships: listed.map(({ membership: m }) => ({ name: m.name, display_name: m.display_name, seed: toHex(m.signing_seed) })),
    seed,
    rawHoldsSeed: seed !== "" && raw.some((hex) => hex.includes(seed)),
    localStorage: localStorage.length,
    cookie: document.cookie,
  };
}

(globalThis as { salonIdbCheck?: unknown }).salonIdbCheck = check;
