/**
 * The web client against a hostile server (red team, issue 9): an in-process WebSocket that
 * serves a real signed chain and then lies. Each test plays one attack and checks that the
 * client believes only what the signed chain proves.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { ed25519Sign, randomBytes } from "../src/protocol/crypto.ts";
import { newMembership, type Membership as Identity } from "../src/protocol/identities.ts";
import { formatInviteLink, inviteKey, inviteSigningSeed } from "../src/protocol/invites.ts";
import { deriveSpaceId, joinStatement, recordHash, signRecord, type Record, type RecordBody } from "../src/protocol/records.ts";
import { applyRecord, rosterFromRecords, type Roster } from "../src/protocol/roster.ts";
import { seal as secretboxSeal } from "../src/protocol/secretbox.ts";
import { encodeStruct } from "../src/protocol/schema.ts";
import { decodeClientMessage, decodeServerMessage, encodeServerMessage, type ClientMessage, type ServerMessage } from "../src/protocol/wire.ts";
import { MemorySlotStore, Vault } from "../src/keystore/store.ts";
import { generateDeviceKey } from "../src/keystore/vault.ts";
import { Removed, VerificationError } from "../src/client/context.ts";
import { PROFILE_INFO, SPACE_INFO, SpaceClient, makeInviteSeal } from "../src/client/space.ts";
import { Invitation, JoinError } from "../src/client/join.ts";
import { memberName } from "../src/client/chat.ts";
import { Rooms } from "../src/client/rooms.ts";
import { StoriesClient } from "../src/client/stories.ts";
import { MAX_NAME, cleanName, shortFingerprint } from "../src/client/names.ts";
import { toHex } from "../src/protocol/bytes.ts";
import { fingerprint } from "../src/protocol/identities.ts";

const ORIGIN = "http://127.0.0.1:9";

class Chain {
  records: Record[] = [];
  roster!: Roster;
  constructor(readonly spaceId: string) {}
  async add(who: Identity, body: RecordBody): Promise<Record> {
    const head = this.roster?.head ?? { seq: -1, hash: new Uint8Array(32) };
    const record = await signRecord(who.signingSeed, {
      space_id: this.spaceId, seq: head.seq + 1, prev: head.hash, author: who.memberKey, created_at: Math.floor(Date.now() / 1000), body,
    });
    this.roster = this.roster === undefined ? await rosterFromRecords(this.spaceId, [record]) : await applyRecord(this.roster, record);
    this.records.push(record);
    return record;
  }
}

/** Alice founds a space, invites Bob; Bob (the web client) joined and has a profile. */
async function world(): Promise<{ chain: Chain; alice: Identity; bob: Identity; key: Uint8Array }> {
  const alice = await newMembership();
  const genesis = { type: "genesis" as const, box_key: alice.boxKey, nonce: randomBytes(16) };
  const chain = new Chain(await deriveSpaceId(alice.memberKey, genesis));
  const key = randomBytes(32);
  await chain.add(alice, genesis);
  const secret = randomBytes(32);
  const id = "i".repeat(22);
  await chain.add(alice, { type: "invite", invite_id: id, invite_key: await inviteKey(secret, id), role: "member", expires_at: 4_000_000_000, max_uses: 5 });
  const bob = await newMembership();
  const sig = await ed25519Sign(await inviteSigningSeed(secret, id), joinStatement(chain.spaceId, bob.memberKey, bob.boxKey, id));
  await chain.add(bob, { type: "join", invite_id: id, box_key: bob.boxKey, invite_sig: sig });
  for (const who of [alice, bob]) {
    await chain.add(who, { type: "profile", epoch: 0, box: await secretboxSeal(key, encodeStruct(PROFILE_INFO, { display_name: who === alice ? "Alice" : "Bob", avatar: null })) });
  }
  return { chain, alice, bob, key };
}

interface Hostile {
  chain: Chain;
  sockets: HostileSocket[];
  /** What `auth` is answered with (default: welcome). */
  auth?: (m: ClientMessage) => ServerMessage;
  /** Any other answer (undefined: the default one). */
  reply?: (m: ClientMessage) => ServerMessage | undefined;
}

let hostile: Hostile;

class HostileSocket {
  binaryType = "blob";
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: (() => void) | null = null;
  onerror: (() => void) | null = null;
  closed = false;
  constructor(readonly url: string) {
    hostile.sockets.push(this);
    setTimeout(() => this.deliver({ type: "challenge", nonce: randomBytes(32), origin: ORIGIN, version: 1 }), 1);
  }
  deliver(message: ServerMessage): void {
    if (this.closed) return;
    const bytes = encodeServerMessage(message);
    this.onmessage?.({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) });
  }
  send(data: Uint8Array): void {
    const m: ClientMessage = decodeClientMessage(data);
    const chain = hostile.chain;
    setTimeout(() => {
      const custom = hostile.reply?.(m);
      if (custom !== undefined) {
        this.deliver(custom);
      } else if (m.type === "auth") {
        this.deliver(hostile.auth?.(m) ?? { type: "welcome", id: m.id, space_id: chain.spaceId, head_seq: chain.roster.head.seq });
      } else if (m.type === "get_records") {
        this.deliver({ type: "records", id: m.id, records: chain.records.filter((r) => r.seq > m.after), head_seq: chain.roster.head.seq, head_hash: chain.roster.head.hash });
      } else if (m.type === "get_envelopes") {
        this.deliver({ type: "envelopes", id: m.id, envelopes: [] });
      } else if (m.type === "list_invites") {
        this.deliver({ type: "invites", id: m.id, invites: [] });
      } else {
        this.deliver({ type: "error", id: m.id, code: "forbidden", message: "no" });
      }
    }, 1);
  }
  close(): void {
    this.drop();
  }
  drop(): void {
    if (this.closed) return;
    this.closed = true;
    const onclose = this.onclose;
    setTimeout(() => onclose?.(), 1);
  }
}

async function withHostileServer(chain: Chain, run: () => Promise<void>): Promise<void> {
  const saved = globalThis.WebSocket;
  hostile = { chain, sockets: [] };
  (globalThis as { WebSocket: unknown }).WebSocket = HostileSocket;
  try {
    await run();
  } finally {
    (globalThis as { WebSocket: unknown }).WebSocket = saved;
  }
}

async function bobsVault(chain: Chain, bob: Identity, key: Uint8Array): Promise<{ vault: Vault; slot: string }> {
  const vault = await Vault.open(new MemorySlotStore(), await generateDeviceKey());
  const head = chain.roster.head;
  const slot = await vault.add({
    type: "membership", space_id: chain.spaceId, server: ORIGIN, display_name: "Bob", signing_seed: bob.signingSeed,
    box_secret: bob.boxSecret, space_keys: [{ epoch: 0, key }], room_keys: [], head_seq: head.seq, head_hash: head.hash,
    name: "", invite_secrets: [], pending_key: null,
  });
  return { vault, slot };
}

const waitFor = async (check: () => boolean): Promise<void> => {
  for (let i = 0; i < 400 && !check(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(check(), "timed out");
};

// ---- removal: the server's word is not a removal ----

test("hostile server: session_closed 'removed' without a remove record on the chain is not believed", async () => {
  const { chain, bob, key } = await world();
  await withHostileServer(chain, async () => {
    const { vault, slot } = await bobsVault(chain, bob, key);
    const client = await SpaceClient.open(vault, slot, { random: () => 0 });
    let removed: Removed | null = null;
    client.onRemoved((err) => (removed = err));
    hostile.sockets[0]!.deliver({ type: "session_closed", reason: "removed" });
    hostile.sockets[0]!.drop();
    await waitFor(() => removed !== null);
    assert.equal((removed as Removed | null)?.how, "unconfirmed");
    assert.equal((removed as Removed | null)?.confirmed, false);
    // Whatever the page asks next says the same (never the server's "kicked").
    for (const ask of [() => client.sync(), () => client.request({ type: "list_invites" }), () => client.listInvites()]) {
      await assert.rejects(ask(), (err: unknown) => err instanceof Removed && err.how === "unconfirmed");
    }
    // Nothing was forgotten: the keys are still in the vault.
    assert.equal((await vault.get(slot)).space_keys.length, 1);
  });
});

test("hostile server: auth refused as 'not a member' at open is an unconfirmed removal", async () => {
  const { chain, bob, key } = await world();
  await withHostileServer(chain, async () => {
    const { vault, slot } = await bobsVault(chain, bob, key);
    hostile.auth = (m) => ({ type: "error", id: (m as { id: number }).id, code: "unauthenticated", message: "not a member of this space" });
    await assert.rejects(SpaceClient.open(vault, slot), (err: unknown) => err instanceof Removed && err.how === "unconfirmed" && !err.confirmed);
  });
});

test("a real kick pushed as record_added before session_closed is a confirmed removal, remembered in the vault", async () => {
  const { chain, alice, bob, key } = await world();
  await withHostileServer(chain, async () => {
    const { vault, slot } = await bobsVault(chain, bob, key);
    const client = await SpaceClient.open(vault, slot, { random: () => 0 });
    let removed: Removed | null = null;
    client.onRemoved((err) => (removed = err));
    const remove = await chain.add(alice, { type: "remove", member: bob.memberKey, ban: true });
    hostile.auth = (m) => ({ type: "error", id: (m as { id: number }).id, code: "unauthenticated", message: "you are banned from this space" });
    hostile.sockets[0]!.deliver({ type: "record_added", record: remove });
    hostile.sockets[0]!.deliver({ type: "session_closed", reason: "banned" });
    hostile.sockets[0]!.drop();
    await waitFor(() => removed !== null);
    assert.equal((removed as Removed | null)?.how, "banned");
    assert.equal((removed as Removed | null)?.confirmed, true);
    // Reopening later (the server refuses us): the vault remembers the verified removal.
    const stored = await vault.get(slot);
    assert.equal(stored.head_seq, remove.seq);
    assert.deepEqual(stored.head_hash, await recordHash(remove));
    await assert.rejects(SpaceClient.open(vault, slot), (err: unknown) => err instanceof Removed && err.how === "banned" && err.confirmed);
  });
});

test("hostile server: a forged remove record (not signed by a moderator) pushed with session_closed is not believed", async () => {
  const { chain, bob, key } = await world();
  await withHostileServer(chain, async () => {
    const { vault, slot } = await bobsVault(chain, bob, key);
    const client = await SpaceClient.open(vault, slot, { random: () => 0 });
    let removed: Removed | null = null;
    client.onRemoved((err) => (removed = err));
    const mallory = await newMembership();
    const head = chain.roster.head;
    const forged = await signRecord(mallory.signingSeed, {
      space_id: chain.spaceId, seq: head.seq + 1, prev: head.hash, author: mallory.memberKey, created_at: Math.floor(Date.now() / 1000),
      body: { type: "remove", member: bob.memberKey, ban: true },
    });
    hostile.sockets[0]!.deliver({ type: "record_added", record: forged });
    hostile.sockets[0]!.deliver({ type: "session_closed", reason: "banned" });
    hostile.sockets[0]!.drop();
    await waitFor(() => removed !== null);
    assert.equal((removed as Removed | null)?.how, "unconfirmed");
  });
});

// ---- a malicious participant's display name ----

test("names: invisible and bidi characters are removed, white space collapsed, length capped", () => {
  assert.equal(cleanName("Al\u200Bice"), "Alice");
  assert.equal(cleanName("\u202Eecila\u202C"), "ecila");
  assert.equal(cleanName("  A\n\tB\u2028C  "), "A B C");
  assert.equal(cleanName("\u3164\u200D"), "");
  const long = cleanName("x".repeat(10_000));
  assert.equal(Array.from(long).length, MAX_NAME);
  assert.ok(long.endsWith("…"));
});

test("malicious participant: a member posing as Alice (zero-width, other case) is labelled with fingerprints", async () => {
  const { chain, alice, bob, key } = await world();
  // Mallory joins through a second invite and names herself "ALICE" with a zero-width space.
  const secret = randomBytes(32);
  const id = "j".repeat(22);
  await chain.add(alice, { type: "invite", invite_id: id, invite_key: await inviteKey(secret, id), role: "member", expires_at: 4_000_000_000, max_uses: 1 });
  const mallory = await newMembership();
  const sig = await ed25519Sign(await inviteSigningSeed(secret, id), joinStatement(chain.spaceId, mallory.memberKey, mallory.boxKey, id));
  await chain.add(mallory, { type: "join", invite_id: id, box_key: mallory.boxKey, invite_sig: sig });
  await chain.add(mallory, { type: "profile", epoch: 0, box: await secretboxSeal(key, encodeStruct(PROFILE_INFO, { display_name: "ALI\u200BCE\u202E", avatar: null })) });
  await withHostileServer(chain, async () => {
    const { vault, slot } = await bobsVault(chain, bob, key);
    const client = await SpaceClient.open(vault, slot, { random: () => 0 });
    const views = await client.members();
    const label = (who: Identity): string => views.find((v) => v.id === toHex(who.memberKey))!.displayName;
    const fp = async (who: Identity): Promise<string> => shortFingerprint(await fingerprint(who.memberKey));
    assert.equal(label(alice), `Alice (${await fp(alice)})`);
    assert.equal(label(mallory), `ALICE (${await fp(mallory)})`);
    assert.equal(label(bob), "Bob");
    assert.equal(await memberName(client, toHex(mallory.memberKey)), `ALICE (${await fp(mallory)})`);
    assert.equal(await memberName(client, toHex(bob.memberKey)), "Bob");
    client.close();
  });
});

// ---- forks and rollbacks against the head remembered in the vault ----

test("hostile server: a rewritten chain (a fork of the remembered head) or a rolled-back one is refused at open", async () => {
  const { chain, alice, bob, key } = await world();
  const { vault, slot } = await bobsVault(chain, bob, key);
  // The fork: the same first records, then Alice's last profile signed again (another hash).
  const fork = new Chain(chain.spaceId);
  for (const r of chain.records.slice(0, -1)) {
    fork.records.push(r);
    fork.roster = fork.roster === undefined ? await rosterFromRecords(chain.spaceId, [r]) : await applyRecord(fork.roster, r);
  }
  await fork.add(bob, { type: "profile", epoch: 0, box: await secretboxSeal(key, encodeStruct(PROFILE_INFO, { display_name: "Bob", avatar: null })) });
  await withHostileServer(fork, async () => {
    await assert.rejects(SpaceClient.open(vault, slot), (err: unknown) => err instanceof VerificationError && /rewrote|fork|history/i.test(err.message));
  });
  // The rollback: the chain cut before Bob's head (his profile withheld, the head moved back).
  const old = new Chain(chain.spaceId);
  for (const r of chain.records.slice(0, -1)) {
    old.records.push(r);
    old.roster = old.roster === undefined ? await rosterFromRecords(chain.spaceId, [r]) : await applyRecord(old.roster, r);
  }
  await withHostileServer(old, async () => {
    await assert.rejects(SpaceClient.open(vault, slot), VerificationError);
  });
  void alice;
});

// ---- a story part that never ends ----

test("hostile server: a story part streamed without end (or claiming gigabytes) is refused, not buffered", async () => {
  const { chain, bob, key } = await world();
  await withHostileServer(chain, async () => {
    const { vault, slot } = await bobsVault(chain, bob, key);
    const client = await SpaceClient.open(vault, slot, { random: () => 0 });
    const info = {
      story_id: "s".repeat(22), room_id: "r".repeat(22), sender: bob.memberKey, epoch: 0, ttl: 3600, posted_at: 1, expires_at: 4_000_000_000,
      meta: new Uint8Array(10), image_size: 1 << 30, thumb_size: 10,
    };
    let served = 0;
    hostile.reply = (m) => {
      if (m.type !== "fetch_story_part") return undefined;
      served += 1;
      return { type: "story_part", id: m.id, story: info, part: m.part, offset: m.offset, total: 1 << 30, data: new Uint8Array(1 << 20) } as ServerMessage;
    };
    const stories = new StoriesClient(client, new Rooms(client));
    await assert.rejects(stories.view(info.story_id, "image"), (err: unknown) => err instanceof VerificationError && /larger than any story/.test(err.message));
    assert.ok(served <= 1, `fetched ${served} chunks`);
    client.close();
  });
});

// ---- joining: the space key a hostile server hands over must fit the chain ----

async function joinThrough(
  sealKeyOf: (real: Uint8Array) => Uint8Array, before?: (vault: Vault, spaceId: string) => Promise<void>,
): Promise<unknown> {
  const alice = await newMembership();
  const genesis = { type: "genesis" as const, box_key: alice.boxKey, nonce: randomBytes(16) };
  const chain = new Chain(await deriveSpaceId(alice.memberKey, genesis));
  const key = randomBytes(32);
  await chain.add(alice, genesis);
  await chain.add(alice, { type: "meta", epoch: 0, box: await secretboxSeal(key, encodeStruct(SPACE_INFO, { name: "Harbour", description: "" })) });
  const link = { server: ORIGIN, inviteId: "k".repeat(22), secret: randomBytes(32) };
  await chain.add(alice, { type: "invite", invite_id: link.inviteId, invite_key: await inviteKey(link.secret, link.inviteId), role: "member", expires_at: 4_000_000_000, max_uses: 5 });
  const seal = await makeInviteSeal(link, 0, sealKeyOf(key), { space_id: chain.spaceId, name: "Harbour", description: "", inviter: "Alice" });
  let result: unknown = null;
  await withHostileServer(chain, async () => {
    hostile.reply = (m) => {
      if (m.type === "open_invite") {
        return { type: "invite_opened", id: m.id, space_id: chain.spaceId, role: "member", expires_at: 4_000_000_000, preview: seal.preview, head_seq: chain.roster.head.seq, head_hash: chain.roster.head.hash };
      }
      return undefined;
    };
    const realSend = HostileSocket.prototype.send;
    HostileSocket.prototype.send = function (this: HostileSocket, data: Uint8Array): void {
      const m = decodeClientMessage(data);
      if (m.type !== "join_space") return realSend.call(this, data);
      void applyRecord(chain.roster, m.record).then((roster) => {
        chain.roster = roster;
        chain.records.push(m.record);
        this.deliver({ type: "joined", id: m.id, space_id: chain.spaceId, head_seq: roster.head.seq, seal });
      });
    };
    try {
      const vault = await Vault.open(new MemorySlotStore(), await generateDeviceKey());
      await before?.(vault, chain.spaceId);
      result = await Invitation.parse(formatInviteLink(link)).join(vault, "Bob", null, { random: () => 0 }).then(
        (joined) => {
          joined.client.close();
          return { spaceName: joined.spaceName };
        },
        (err: unknown) => err,
      );
    } finally {
      HostileSocket.prototype.send = realSend;
    }
  });
  return result;
}

test("hostile server: a Joined seal whose space key the chain does not hold is refused (key_refused)", async () => {
  const honest = await joinThrough((real) => real);
  assert.deepEqual(honest, { spaceName: "Harbour" });
  const forged = await joinThrough(() => randomBytes(32));
  assert.ok(forged instanceof JoinError, String(forged));
  assert.equal((forged as JoinError).kind, "key_refused");
});

// ---- the invite list comes from the chain ----

test("hostile server: hiding a live invite from a moderator's list (or calling it revoked) does not work", async () => {
  const { chain, alice, key } = await world();
  await withHostileServer(chain, async () => {
    const { vault, slot } = await bobsVault(chain, alice, key); // Alice, the owner, in the browser
    await vault.update(slot, { ...(await vault.get(slot)), display_name: "Alice" });
    const client = await SpaceClient.open(vault, slot, { random: () => 0 });
    hostile.reply = (m) => (m.type === "list_invites" ? { type: "invites", id: m.id, invites: [] } : undefined);
    const listed = await client.listInvites();
    assert.equal(listed.length, 1);
    assert.deepEqual([listed[0]!.inviteId, listed[0]!.usesLeft, listed[0]!.revoked], ["i".repeat(22), 4, false]);
    hostile.reply = (m) => (m.type === "list_invites"
      ? { type: "invites", id: m.id, invites: [{ invite_id: "i".repeat(22), role: "owner", expires_at: 1, max_uses: 1, uses: 1, revoked: true, seal_epoch: 0 }] }
      : undefined);
    const again = await client.listInvites();
    assert.deepEqual([again[0]!.role, again[0]!.usesLeft, again[0]!.revoked, again[0]!.expired], ["member", 4, false, false]);
    client.close();
  });
});

// ---- a malicious member's bogus rekey (the server colluding) ----

test("malicious participant: a rekey sealed to nobody else warns Bob's page (not bricked) and Alice's page repairs it", async () => {
  const { chain, alice, bob, key } = await world();
  const joinWith = async (id: string): Promise<Identity> => {
    const secret = randomBytes(32);
    await chain.add(alice, { type: "invite", invite_id: id, invite_key: await inviteKey(secret, id), role: "member", expires_at: 4_000_000_000, max_uses: 1 });
    const who = await newMembership();
    const sig = await ed25519Sign(await inviteSigningSeed(secret, id), joinStatement(chain.spaceId, who.memberKey, who.boxKey, id));
    await chain.add(who, { type: "join", invite_id: id, box_key: who.boxKey, invite_sig: sig });
    return who;
  };
  const mallory = await joinWith("m".repeat(22));
  const dave = await joinWith("d".repeat(22));
  await chain.add(dave, { type: "leave" });
  // Mallory's rekey: a key nobody else gets, and a prev_box that does not carry epoch 0's key.
  await chain.add(mallory, { type: "rekey", epoch: 1, prev_epoch: 0, prev_box: await secretboxSeal(randomBytes(32), randomBytes(32)) });
  await withHostileServer(chain, async () => {
    const appended: Record[] = [];
    hostile.reply = (m) => {
      if (m.type !== "append") return undefined;
      appended.push(...m.records);
      return { type: "error", id: m.id, code: "unavailable", message: "held for the test" };
    };
    const warnings: string[] = [];
    const { vault, slot } = await bobsVault(chain, bob, key);
    const bobs = await SpaceClient.open(vault, slot, { random: () => 0, onWarning: (w) => warnings.push(w) });
    await waitFor(() => warnings.some((w) => w.includes("epoch 1")));
    assert.equal((await bobs.members()).length, 3); // Alice, Bob, Mallory: the page works
    assert.equal(bobs.spaceKey(1), undefined);
    bobs.close();
    // Alice, the owner, opens the space in her browser: her page appends the repairing rekey.
    const { vault: aliceVault, slot: aliceSlot } = await bobsVault(chain, alice, key);
    const alices = await SpaceClient.open(aliceVault, aliceSlot, { random: () => 0 });
    await waitFor(() => appended.some((r) => r.body.type === "rekey"));
    const repair = appended.find((r) => r.body.type === "rekey")!.body as { epoch: number; prev_epoch: number };
    assert.deepEqual([repair.epoch, repair.prev_epoch], [2, 0]); // past the bad epoch, from the last good key
    alices.close();
  });
});

test("removed member: a new link works after a verified removal; a second join while still a member is refused", async () => {
  const old = (removed: string) => async (vault: Vault, spaceId: string): Promise<void> => {
    const who = await newMembership();
    await vault.add({
      type: "membership", space_id: spaceId, server: ORIGIN, display_name: "Bob", signing_seed: who.signingSeed,
      box_secret: who.boxSecret, space_keys: [], room_keys: [], head_seq: -1, head_hash: new Uint8Array(0), name: "",
      invite_secrets: [], pending_key: null, removed,
    });
  };
  assert.deepEqual(await joinThrough((real) => real, old("kicked")), { spaceName: "Harbour" });
  const twice = await joinThrough((real) => real, old(""));
  assert.ok(twice instanceof JoinError && twice.kind === "already_member", String(twice));
});

// ---- frames built to hang or exhaust the decoder ----

test("hostile server: deep nesting, lying lengths and huge counts are refused at once", () => {
  const deep = new Uint8Array(100_000).fill(0x91); // [[[[…]]]]
  const lyingArray = Uint8Array.from([0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0]); // 4 billion items, one sent
  const lyingMap = Uint8Array.from([0xdf, 0xff, 0xff, 0xff, 0xff]);
  const lyingBin = Uint8Array.from([0xc6, 0xff, 0xff, 0xff, 0xff, 0x00]); // 4 GiB of bytes, one sent
  const lyingStr = Uint8Array.from([0xdb, 0x7f, 0xff, 0xff, 0xff, 0x61]);
  for (const frame of [deep, lyingArray, lyingMap, lyingBin, lyingStr]) {
    const start = Date.now();
    assert.throws(() => decodeServerMessage(frame));
    assert.ok(Date.now() - start < 500, "refused at once");
  }
});

// ---- avatars: one member's picture never shows for another ----

test("malicious participant: an avatar crafted to match another's sampled bytes gets its own picture", async () => {
  const { Bridge } = await import("../src/ui/core.ts");
  const { Store } = await import("../src/ui/state.ts");
  const bridge = new Bridge(new Store()) as unknown as { photo(a: Uint8Array): string };
  const alices = randomBytes(4000);
  const mallorys = alices.slice();
  for (let i = 1; i < mallorys.length; i++) if (i % 97 !== 0) mallorys[i] = mallorys[i]! ^ 0xff; // same every 97th byte
  assert.notEqual(bridge.photo(alices), bridge.photo(mallorys));
  assert.equal(bridge.photo(alices), bridge.photo(alices.slice()));
});

// ---- the page says so when the server's history contradicts the verified one ----

async function forkOf(chain: Chain, author: Identity, key: Uint8Array, keep: number): Promise<Chain> {
  const fork = new Chain(chain.spaceId);
  for (const r of chain.records.slice(0, keep)) {
    fork.records.push(r);
    fork.roster = fork.roster === undefined ? await rosterFromRecords(chain.spaceId, [r]) : await applyRecord(fork.roster, r);
  }
  await fork.add(author, { type: "profile", epoch: 0, box: await secretboxSeal(key, encodeStruct(PROFILE_INFO, { display_name: "Forked", avatar: null })) });
  await fork.add(author, { type: "profile", epoch: 0, box: await secretboxSeal(key, encodeStruct(PROFILE_INFO, { display_name: "Forked again", avatar: null })) });
  return fork;
}

test("hostile server: a forked history is named on the page (opening, and later while open), not 'could not be opened'", async () => {
  const { Bridge, HISTORY_MISMATCH } = await import("../src/ui/core.ts");
  const { Store } = await import("../src/ui/state.ts");
  const { Spaces } = await import("../src/client/spaces.ts");
  const { chain, bob, key } = await world();
  const store = new MemorySlotStore();
  const device = await generateDeviceKey();
  const { vault, slot } = await (async () => {
    const v = await Vault.open(store, device);
    const head = chain.roster.head;
    const s = await v.add({
      type: "membership", space_id: chain.spaceId, server: ORIGIN, display_name: "Bob", signing_seed: bob.signingSeed,
      box_secret: bob.boxSecret, space_keys: [{ epoch: 0, key }], room_keys: [], head_seq: head.seq, head_hash: head.hash,
      name: "Harbour", invite_secrets: [], pending_key: null,
    });
    return { vault: v, slot: s };
  })();
  void vault;
  const fork = await forkOf(chain, bob, key, chain.records.length - 1);
  const ui = new Store();
  const bridge = new Bridge(ui) as unknown as { spaces: unknown; entries: unknown[]; reloadList(): Promise<void>; openSpace(slot: string): void };
  bridge.spaces = await Spaces.open({ store, device, client: { random: () => 0 } });
  await bridge.reloadList();
  await withHostileServer(fork, async () => {
    bridge.openSpace(slot);
    await waitFor(() => ui.state.spaceErrors[slot] !== undefined);
    assert.ok(ui.state.spaceErrors[slot]!.startsWith(HISTORY_MISMATCH), ui.state.spaceErrors[slot]);
  });
  bridge.entries = []; // no more retries
  await new Promise((r) => setTimeout(r, 5_200));
  // Now honest at first; later the server rewrites the last record and pushes a new one.
  bridge.entries = [{ slot }];
  await bridge.reloadList();
  await withHostileServer(chain, async () => {
    bridge.openSpace(slot);
    await waitFor(() => ui.state.space[slot] !== undefined);
    assert.ok(!ui.state.space[slot]!.warning);
    const later = await forkOf(chain, bob, key, chain.records.length - 1);
    hostile.chain = later;
    hostile.sockets.at(-1)!.deliver({ type: "record_added", record: later.records.at(-1)! });
    await waitFor(() => ui.state.space[slot]?.warning === HISTORY_MISMATCH);
    (bridge as unknown as { live: Map<string, { client: SpaceClient }> }).live.get(slot)!.client.close();
  });
});
