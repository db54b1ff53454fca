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
    unread: [],
    seen_stories: [],
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

// ---- the passphrase: set, change, remove, and a change cut short ------------------------------

/** A slot store that fails every write after the first `budget` ones: a crash at that point. */
class CrashingStore extends MemorySlotStore {
  constructor(public budget: number) {
    super();
  }
  private spend(): void {
    if (this.budget <= 0) throw new Error("crash");
    this.budget -= 1;
  }
  override async put(slot: string, bytes: Uint8Array): Promise<void> {
    this.spend();
    await super.put(slot, bytes);
  }
  override async delete(slot: string): Promise<void> {
    this.spend();
    await super.delete(slot);
  }
}

const byslot = async (vault: Vault): Promise<Map<string, Membership>> =>
  new Map((await vault.list()).map(({ slot, membership: m }) => [slot, m]));

test("a passphrase is set, changed and removed; each time only the right one opens", async () => {
  const device = await generateDeviceKey();
  const store = new MemorySlotStore();
  const vault = await Vault.open(store, device);
  await vault.add(membership("aaaabbbbccccddddeeeeffff", "Bob"));
  await vault.add(membership("zzzzyyyyxxxxwwwwvvvvuuuu", "Robert"));
  const all = await byslot(vault);
  assert.equal(vault.hasPassphrase, false);

  await vault.setPassphrase("first passphrase");
  assert.equal(vault.hasPassphrase, true);
  assert.deepEqual(await byslot(vault), all); // the open vault keeps working
  await assert.rejects(Vault.open(store, device), WrongPassphrase);
  await assert.rejects(Vault.open(store, device, { passphrase: "wrong" }), WrongPassphrase);
  assert.deepEqual(await byslot(await Vault.open(store, device, { passphrase: "first passphrase" })), all);
  // Nothing staged is left behind, and every record really is under the passphrase now.
  assert.deepEqual([...store.slots.keys()].filter((s) => !s.startsWith("m.") && s !== META_SLOT), []);
  for (const slot of all.keys()) {
    await assert.rejects(openSlot({ device, passphrase: null }, slot, store.slots.get(slot)!).then(decodeMembership));
  }

  // Changing or removing it needs the current one: a wrong one changes nothing.
  const before = snapshot(store);
  await assert.rejects(vault.setPassphrase("second", "not it"), WrongPassphrase);
  await assert.rejects(vault.setPassphrase(null), WrongPassphrase);
  assert.deepEqual(snapshot(store), before);

  await vault.setPassphrase("second passphrase", "first passphrase");
  await assert.rejects(Vault.open(store, device, { passphrase: "first passphrase" }), WrongPassphrase);
  assert.deepEqual(await byslot(await Vault.open(store, device, { passphrase: "second passphrase" })), all);

  await vault.setPassphrase(null, "second passphrase");
  assert.equal(vault.hasPassphrase, false);
  await assert.rejects(Vault.open(store, device, { passphrase: "second passphrase" }), WrongPassphrase);
  assert.deepEqual(await byslot(await Vault.open(store, device)), all);
});

test("writes wait for a passphrase change: nothing written meanwhile is lost", async () => {
  const device = await generateDeviceKey();
  const store = new MemorySlotStore();
  const vault = await Vault.open(store, device);
  const m = membership("aaaabbbbccccddddeeeeffff");
  const slot = await vault.add(m);
  const changing = vault.setPassphrase("pw pw pw pw");
  const updated = { ...m, head_seq: 99 };
  const writing = vault.update(slot, updated);
  await Promise.all([changing, writing]);
  assert.deepEqual(await (await Vault.open(store, device, { passphrase: "pw pw pw pw" })).get(slot), updated);
});

test("a second tab's vault does not write under keys the first tab replaced", async () => {
  const device = await generateDeviceKey();
  const store = new MemorySlotStore();
  const first = await Vault.open(store, device);
  const m = membership("aaaabbbbccccddddeeeeffff");
  const slot = await first.add(m);
  const second = await Vault.open(store, device);
  await first.setPassphrase("new one here");
  await assert.rejects(second.update(slot, { ...m, head_seq: 100 }), WrongPassphrase);
  await assert.rejects(second.setPassphrase("another"), WrongPassphrase);
  assert.deepEqual(await (await Vault.open(store, device, { passphrase: "new one here" })).get(slot), m);
});

test("a passphrase change cut short at any write loses nothing", async () => {
  const device = await generateDeviceKey();
  // Writes of the change itself with two memberships: 2 staged, 1 switch, 2 × (copy, delete).
  for (let crashAt = 0; crashAt <= 7; crashAt += 1) {
    const store = new CrashingStore(Number.POSITIVE_INFINITY);
    const vault = await Vault.open(store, device);
    await vault.add(membership("aaaabbbbccccddddeeeeffff", "Bob"));
    await vault.add(membership("zzzzyyyyxxxxwwwwvvvvuuuu", "Robert"));
    const all = await byslot(vault);
    store.budget = crashAt;
    const change = vault.setPassphrase("a new passphrase");
    if (crashAt < 7) await assert.rejects(change, /crash/);
    else await change;
    store.budget = Number.POSITIVE_INFINITY;
    // Before the switch the vault still opens without a passphrase, after it only with the new one.
    const switched = crashAt >= 3;
    const reopened = switched ? await Vault.open(store, device, { passphrase: "a new passphrase" }) : await Vault.open(store, device);
    if (switched) await assert.rejects(Vault.open(store, device), WrongPassphrase);
    else await assert.rejects(Vault.open(store, device, { passphrase: "a new passphrase" }), WrongPassphrase);
    assert.deepEqual(await byslot(reopened), all, `crash at write ${crashAt}`);
    assert.deepEqual([...store.slots.keys()].sort(), [...all.keys(), META_SLOT].sort(), `crash at write ${crashAt}: staging cleared`);
  }
});

test("unread counts and seen stories are kept in the membership", () => {
  const m = { ...membership("aaaabbbbccccddddeeeeffff"), unread: [{ room_id: "r0omAAAAAAAAAAAA", count: 3, seq: 41 }], seen_stories: ["s1", "s2"] };
  assert.deepEqual(decodeMembership(encodeMembership(m)), m);
  const plain = decodeMembership(encodeMembership(membership("aaaabbbbccccddddeeeeffff")));
  assert.deepEqual([plain.unread, plain.seen_stories], [[], []]);
});
