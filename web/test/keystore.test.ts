import assert from "node:assert/strict";
import { test } from "node:test";
import { toHex, utf8 } from "../src/protocol/bytes.ts";
import { ARGON2ID_INTERACTIVE, argon2id, randomBytes } from "../src/protocol/crypto.ts";
import { META_SLOT, MemorySlotStore, Vault } from "../src/keystore/store.ts";
import {
  IV_BYTES, type Membership, VaultCorrupt, WrongPassphrase, decodeMembership, encodeMembership, generateDeviceKey,
  openSlot, sealSlot,
} from "../src/keystore/vault.ts";

function membership(spaceId: string, name = "Bob"): Membership {
  return {
    type: "membership",
    space_id: spaceId,
    server: "https://salon.example",
    display_name: name,
    signing_seed: randomBytes(32),
    box_secret: randomBytes(32),
    space_keys: [{ epoch: 0, key: randomBytes(32) }, { epoch: 1, key: randomBytes(32) }],
    room_keys: [{ room_id: "r0omAAAAAAAAAAAA", epoch: 1, generation: 2, key: randomBytes(32) }],
    head_seq: 7,
    head_hash: randomBytes(32),
    name: "A space",
    invite_secrets: [{ invite_id: "inv0AAAAAAAAAAAA", secret: randomBytes(32) }],
    pending_key: null,
    removed: "",
  };
}

const snapshot = (store: MemorySlotStore): Map<string, string> =>
  new Map([...store.slots].map(([slot, bytes]) => [slot, toHex(bytes)]));

test("membership encoding round trips; anything else is VaultCorrupt", () => {
  const m = membership("aaaabbbbccccddddeeeeffff");
  assert.deepEqual(decodeMembership(encodeMembership(m)), m);
  assert.throws(() => decodeMembership(new Uint8Array([0x80])), VaultCorrupt);
});

test("argon2id (INTERACTIVE) matches PyNaCl's nacl.pwhash.argon2id.kdf", async () => {
  // nacl.pwhash.argon2id.kdf(32, b"correct horse", bytes(range(16)), OPSLIMIT_INTERACTIVE, MEMLIMIT_INTERACTIVE)
  const out = await argon2id(utf8("correct horse"), Uint8Array.from({ length: 16 }, (_, i) => i));
  assert.equal(toHex(out), "9aab5a81db651bf866ff7b6169794d2ad9bb00f3d95177925a5fca692a34dbd1");
  assert.deepEqual(ARGON2ID_INTERACTIVE, { opslimit: 2, memlimit: 67108864 });
});

test("the device key is non-extractable", async () => {
  const key = await generateDeviceKey();
  assert.equal(key.extractable, false);
  await assert.rejects(crypto.subtle.exportKey("raw", key));
  await assert.rejects(crypto.subtle.exportKey("jwk", key));
});

for (const passphrase of [undefined, "correct horse battery staple"]) {
  const opts = passphrase === undefined ? {} : { passphrase };
  const label = passphrase === undefined ? "device key only" : "device key and passphrase";

  test(`vault round trip (${label}): add, list, update, reopen`, async () => {
    const device = await generateDeviceKey();
    const store = new MemorySlotStore();
    const vault = await Vault.open(store, device, opts);
    const a = membership("aaaabbbbccccddddeeeeffff", "Bob");
    const b = membership("zzzzyyyyxxxxwwwwvvvvuuuu", "Robert");
    const slotA = await vault.add(a);
    const slotB = await vault.add(b);
    assert.notEqual(slotA, slotB);
    a.head_seq = 9;
    await vault.update(slotA, a);
    const again = await Vault.open(store, device, opts);
    const listed = new Map((await again.list()).map(({ slot, membership: m }) => [slot, m]));
    assert.deepEqual(listed, new Map([[slotA, a], [slotB, b]]));
    // Slot names carry nothing of the space.
    for (const slot of store.slots.keys()) assert.ok(!slot.includes("aaaa") && !slot.includes("zzzz"));
  });

  test(`vault refuses moved and flipped records (${label})`, async () => {
    const device = await generateDeviceKey();
    const store = new MemorySlotStore();
    const vault = await Vault.open(store, device, opts);
    const slotA = await vault.add(membership("aaaabbbbccccddddeeeeffff"));
    const slotB = await vault.add(membership("zzzzyyyyxxxxwwwwvvvvuuuu"));
    const bytesA = store.slots.get(slotA)!;
    const bytesB = store.slots.get(slotB)!;
    // Swapping two slots' records: each opens only under its own slot id.
    store.slots.set(slotA, bytesB);
    store.slots.set(slotB, bytesA);
    await assert.rejects(vault.get(slotA), VaultCorrupt);
    await assert.rejects(vault.get(slotB), VaultCorrupt);
    store.slots.set(slotB, bytesB);
    // Every bit of a record matters.
    for (let i = 0; i < bytesA.length; i += 7) {
      for (const bit of [0x01, 0x80]) {
        const flipped = bytesA.slice();
        flipped[i]! ^= bit;
        store.slots.set(slotA, flipped);
        await assert.rejects(vault.get(slotA), VaultCorrupt);
      }
    }
    store.slots.set(slotA, bytesA.subarray(0, bytesA.length - 1));
    await assert.rejects(vault.get(slotA), VaultCorrupt);
    store.slots.set(slotA, bytesA);
    assert.equal((await vault.get(slotA)).space_id, "aaaabbbbccccddddeeeeffff");
    // Another device's key opens nothing.
    await assert.rejects(Vault.open(store, await generateDeviceKey(), opts), VaultCorrupt);
    // A flipped vault record.
    const meta = store.slots.get(META_SLOT)!.slice();
    meta[meta.length - 1]! ^= 1;
    store.slots.set(META_SLOT, meta);
    await assert.rejects(Vault.open(store, device, opts), VaultCorrupt);
    // A missing vault record beside memberships.
    store.slots.delete(META_SLOT);
    await assert.rejects(Vault.open(store, device, opts), VaultCorrupt);
  });

  test(`removing a membership leaves no trace in the store (${label})`, async () => {
    const store = new MemorySlotStore();
    const vault = await Vault.open(store, await generateDeviceKey(), opts);
    await vault.add(membership("aaaabbbbccccddddeeeeffff"));
    const before = snapshot(store);
    const slot = await vault.add(membership("zzzzyyyyxxxxwwwwvvvvuuuu"));
    await vault.update(slot, membership("zzzzyyyyxxxxwwwwvvvvuuuu", "Rob"));
    await vault.remove(slot);
    assert.deepEqual(snapshot(store), before);
    assert.equal((await vault.list()).length, 1);
  });
}

test("IVs are fresh on every write, and a rewrite of the same record differs", async () => {
  const device = await generateDeviceKey();
  const store = new MemorySlotStore();
  const vault = await Vault.open(store, device, { passphrase: "pw" });
  const m = membership("aaaabbbbccccddddeeeeffff");
  const slot = await vault.add(m);
  const outer = new Set<string>();
  const inner = new Set<string>();
  const sealedSeen = new Set<string>();
  for (let i = 0; i < 40; i++) {
    await vault.update(slot, m);
    const sealed = store.slots.get(slot)!;
    sealedSeen.add(toHex(sealed));
    outer.add(toHex(sealed.subarray(1, 1 + IV_BYTES)));
    // The inner (passphrase) layer's IV sits right after the device layer's IV in the plaintext.
    const innerBlob = await openSlot({ device, passphrase: null }, slot, sealed);
    inner.add(toHex(innerBlob.subarray(0, IV_BYTES)));
  }
  assert.equal(sealedSeen.size, 40);
  assert.equal(outer.size, 40);
  assert.equal(inner.size, 40);
  for (const iv of outer) assert.ok(!inner.has(iv));
});

test("sealSlot/openSlot: the slot id is bound as associated data", async () => {
  const keys = { device: await generateDeviceKey(), passphrase: null };
  const sealed = await sealSlot(keys, "m.one", new Uint8Array([1, 2, 3]));
  assert.deepEqual(await openSlot(keys, "m.one", sealed), new Uint8Array([1, 2, 3]));
  await assert.rejects(openSlot(keys, "m.two", sealed), VaultCorrupt);
});

test("a wrong or missing passphrase is WrongPassphrase, and leaks nothing else", async () => {
  const device = await generateDeviceKey();
  const store = new MemorySlotStore();
  const vault = await Vault.open(store, device, { passphrase: "right" });
  const slot = await vault.add(membership("aaaabbbbccccddddeeeeffff"));
  for (const opts of [{ passphrase: "wrong" }, { passphrase: "Right" }, {}]) {
    const err = await Vault.open(store, device, opts).then(() => undefined, (e: unknown) => e);
    assert.ok(err instanceof WrongPassphrase);
    assert.ok(!err.message.includes("right") && !err.message.includes("aaaa"));
  }
  assert.equal((await (await Vault.open(store, device, { passphrase: "right" })).get(slot)).display_name, "Bob");
  // A vault without a passphrase refuses one rather than ignoring it.
  const plain = new MemorySlotStore();
  await Vault.open(plain, device);
  await assert.rejects(Vault.open(plain, device, { passphrase: "x" }), WrongPassphrase);
});
