// call.ts CallClient against a fake context (the real cross-check with the CLI is
// tests/test_web_call_signalling.py): plain-word refusals, CallEnded only with a signed action.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ServerError } from "../src/client/context.ts";
import { fromHex, toHex } from "../src/protocol/bytes.ts";
import { PROFILE_INFO } from "../src/client/space.ts";
import { encodeStruct } from "../src/protocol/schema.ts";
import { seal as secretboxSeal } from "../src/protocol/secretbox.ts";
import { encodeMediaKeyMessage, pairLink, sealSignal, signAction, type CallAction, type CallActionKind } from "../src/protocol/calls.ts";
import { fromCallAction, type CallState } from "../src/protocol/conference_wire.ts";
import { randomBytes } from "../src/protocol/crypto.ts";
import type { Roster } from "../src/protocol/roster.ts";
import { CallClient, REASONS } from "../src/call/call.ts";
import type { Topology, TopologyContext, TopologyFactory } from "../src/call/topology.ts";
import { FakeContext, people } from "./fakectx.ts";

const ROOM = "roomCALLCALLCALL";
const CALL = "callCALLCALLCALL";

async function context(who: "alice" | "bob"): Promise<FakeContext> {
  const ctx = await FakeContext.of(who);
  const r = ctx.roster();
  const room = {
    spec: { type: "room", room_id: ROOM, kind: "conference", epoch: 0, name_box: new Uint8Array(0), lobby: false, stage: false,
      topology: "auto", ttl: 0, history: "since-join" },
    publishers: new Set<string>(), createdSeq: r.head.seq, publisherLog: new Map(),
  } as const;
  // Bob is a moderator in records.json; here he is a plain member (alice owns the space).
  const members = new Map(r.members);
  const bob = people.bob.member_key as string;
  members.set(bob, { ...members.get(bob)!, role: "member" });
  (ctx as unknown as { current: Roster }).current = { ...r, members, rooms: new Map(r.rooms).set(ROOM, room as never) };
  ctx.handlers.set("get_ice_servers", () => ({ type: "ice_servers", servers: [{ urls: ["stun:127.0.0.1:3478"], username: "", credential: "" }], expires_at: 0 }));
  ctx.handlers.set("get_call", () => ({ type: "call_info", state: state([]) }));
  ctx.handlers.set("leave_call", () => ({ type: "done" }));
  return ctx;
}

function state(participants: CallState["participants"], version = 1): CallState {
  return { room_id: ROOM, call_id: CALL, version, topology: "mesh", requested_topology: "auto", participants, lock: null, bans: [] };
}

const recorder: { sending: { audio: boolean }[]; closed: number } = { sending: [], closed: 0 };
const mesh: TopologyFactory = (): Topology => ({
  name: "mesh",
  async setPeers() {},
  async onSignal() {},
  async refuse() {},
  setSending(s) {
    recorder.sending.push(s);
  },
  async setMedia() {},
  async close() {
    recorder.closed++;
  },
});

async function act(ctx: FakeContext, who: "alice" | "bob", name: CallActionKind, target: Uint8Array, joinRef: Uint8Array = new Uint8Array(0)): Promise<CallAction> {
  const head = ctx.roster().head;
  const p = people[who];
  return signAction({
    spaceId: ctx.spaceId, roomId: ROOM, callId: CALL, actor: fromHex(p.member_key), action: name, target, issuedAt: Date.now(),
    nonce: randomBytes(16), headSeq: head.seq, headHash: head.hash, joinRef,
  }, fromHex(p.signing_seed));
}

function client(ctx: FakeContext): CallClient {
  return new CallClient(ctx, ROOM, { topologies: new Map([["mesh", mesh]]) });
}

test("refusals to join have their own plain words (banned, locked, full)", async () => {
  for (const [code, reason] of [["banned", REASONS.banned], ["locked", REASONS.locked], ["call_full", REASONS.full]] as const) {
    const ctx = await context("bob");
    ctx.handlers.set("join_call", () => {
      throw new ServerError(code, "no");
    });
    const c = client(ctx);
    await c.join();
    assert.equal(c.view().phase, "failed");
    assert.equal(c.view().reason, reason);
  }
  const ctx = await context("bob");
  ctx.handlers.set("join_call", () => {
    throw new ServerError("stale_call", "again");
  });
  const c = client(ctx);
  await c.join();
  assert.equal(c.view().reason, REASONS.restarting);
  assert.equal(ctx.requests.filter((r) => r.type === "join_call").length, 3);
});

async function joined(who: "alice" | "bob") {
  const ctx = await context(who);
  let join: CallAction | null = null;
  ctx.handlers.set("join_call", (m) => {
    const j = (m as { join: ReturnType<typeof fromCallAction> }).join;
    join = { ...j } as unknown as CallAction;
    return { type: "call_joined", status: "joined", state: state([{ member: j.actor, index: 0, status: "joined", join: j, admission: null, mute: null, hand: null, stage: null }]) };
  });
  const c = client(ctx);
  await c.join();
  assert.equal(c.view().phase, "in-call", c.view().reason);
  return { ctx, c, joinNonce: (join as unknown as { nonce: Uint8Array }).nonce as Uint8Array<ArrayBuffer> };
}

test("CallEnded is believed only with a fresh signed action that says so", async () => {
  {
    const { ctx, c } = await joined("bob");
    ctx.emit({ type: "call_ended", room_id: ROOM, call_id: CALL, reason: "removed", action: null });
    await until(() => c.view().phase !== "in-call");
    assert.equal(c.view().phase, "failed");
    assert.match(c.view().reason, /without any host's signed say-so/);
  }
  {
    // a kick of an earlier join of ours is no kick of this one
    const { ctx, c } = await joined("bob");
    const kick = await act(ctx, "alice", "kick", ctx.me.memberKey, randomBytes(16));
    ctx.emit({ type: "call_ended", room_id: ROOM, call_id: CALL, reason: "removed", action: fromCallAction(kick) });
    await until(() => c.view().phase !== "in-call");
    assert.equal(c.view().phase, "failed");
  }
  {
    const { ctx, c, joinNonce } = await joined("bob");
    const kick = await act(ctx, "alice", "kick", ctx.me.memberKey, joinNonce);
    ctx.emit({ type: "call_ended", room_id: ROOM, call_id: CALL, reason: "removed", action: fromCallAction(kick) });
    await until(() => c.view().phase !== "in-call");
    assert.equal(c.view().phase, "removed");
    assert.match(c.view().reason, /removed you from the call\.$/);
  }
  {
    const { ctx, c } = await joined("bob");
    const end = await act(ctx, "alice", "end", new Uint8Array(0));
    ctx.emit({ type: "call_ended", room_id: ROOM, call_id: CALL, reason: "ended", action: fromCallAction(end) });
    await until(() => c.view().phase !== "in-call");
    assert.equal(c.view().phase, "ended");
    assert.match(c.view().reason, /ended the call for everyone/);
    // an "end" signed by a plain member proves nothing
    const other = await joined("bob");
    const fake = await act(other.ctx, "bob", "end", new Uint8Array(0));
    other.ctx.emit({ type: "call_ended", room_id: ROOM, call_id: CALL, reason: "ended", action: fromCallAction(fake) });
    await until(() => other.c.view().phase !== "in-call");
    assert.equal(other.c.view().phase, "failed");
  }
});

test("hosts only: a member's moderation intent is refused before anything is signed", async () => {
  const { ctx, c } = await joined("bob");
  const before = ctx.requests.length;
  await assert.rejects(c.lock(true), /Only the space's owners and moderators/);
  assert.equal(ctx.requests.length, before);
  ctx.handlers.set("act_in_call", () => ({ type: "done" }));
  await c.setHand(true);
  const sent = ctx.requests.at(-1) as { type: string; action: { action: string; head_seq: number; head_hash: Uint8Array } };
  assert.equal(sent.type, "act_in_call");
  assert.equal(sent.action.action, "hand-up");
  assert.equal(sent.action.head_seq, ctx.roster().head.seq);
});

async function until(check: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 10));
  }
}

test("topology switch is make-before-break: the old one delivers until the new one does", async () => {
  const made: { name: string; ctx: TopologyContext; closed: boolean; peers: string[][] }[] = [];
  const fake = (name: "mesh" | "sfu"): TopologyFactory => (ctx) => {
    const rec = { name, ctx, closed: false, peers: [] as string[][] };
    made.push(rec);
    return {
      name, async setPeers(p) {
        rec.peers.push([...p.keys()]);
      }, async onSignal() {}, async refuse() {}, setSending() {}, async setMedia() {},
      async close() {
        rec.closed = true;
      },
    };
  };
  const ctx = await context("bob");
  ctx.handlers.set("send_call_signal", () => ({ type: "done" }));
  let mine: ReturnType<typeof fromCallAction> | null = null;
  ctx.handlers.set("join_call", (m) => {
    mine = (m as { join: ReturnType<typeof fromCallAction> }).join;
    return { type: "call_joined", status: "joined", state: state([seat(mine, 0)]) };
  });
  const c = new CallClient(ctx, ROOM, { topologies: new Map([["mesh", fake("mesh")], ["sfu", fake("sfu")]]) });
  await c.join();
  const alice = fromHex(people.alice.member_key);
  const aliceJoin = fromCallAction(await act(ctx, "alice", "join", alice));
  ctx.emit({ type: "call_update", state: state([seat(mine!, 0), seat(aliceJoin, 1)], 2), action: aliceJoin });
  await until(() => made[0]!.peers.at(-1)?.length === 1);
  const aliceHex = people.alice.member_key as string;
  const t1 = { kind: "video", id: "t1" } as unknown as MediaStreamTrack;
  const t2 = { kind: "video", id: "t2" } as unknown as MediaStreamTrack;
  made[0]!.ctx.sink.onTrack(aliceHex, "camera", t1);
  assert.equal(c.view().participants.find((p) => p.memberHex === aliceHex)?.tracks.camera, t1);
  ctx.emit({ type: "call_update", state: { ...state([seat(mine!, 0), seat(aliceJoin, 1)], 3), topology: "sfu" }, action: null });
  await until(() => made.length === 2);
  assert.equal(made[1]!.name, "sfu");
  assert.ok(made[1]!.ctx.sfu !== null && made[0]!.closed === false); // the mesh keeps going
  made[1]!.ctx.sink.onTrack(aliceHex, "camera", t2);
  await until(() => made[0]!.closed);
  made[0]!.ctx.sink.onTrack(aliceHex, "camera", t1); // superseded: ignored
  assert.equal(c.view().participants.find((p) => p.memberHex === aliceHex)?.tracks.camera, t2);
  assert.equal(c.view().topology, "sfu");
  assert.deepEqual(c.topologiesUsed, ["mesh", "sfu"]);
  // alice, who entered after us with a fresh join, got our media key at once
  assert.ok(ctx.requests.some((r) => r.type === "send_call_signal"));
  await c.leave();
  assert.ok(made[1]!.closed);
  assert.equal(c.view().phase, "ended");
});

function seat(join: ReturnType<typeof fromCallAction>, index: number): CallState["participants"][number] {
  return { member: join.actor, index, status: "joined", join, admission: null, mute: null, hand: null, stage: null };
}

test("events: a replayed or stale action is ignored and counted; a host's mute holds against self-unmute", async () => {
  const { ctx, c, joinNonce } = await joined("bob");
  void joinNonce;
  const me = c.view().participants.find((p) => p.me)!;
  const bobSeat = (mute: CallAction | null) => {
    const j = ctx.requests.find((r) => r.type === "join_call") as { join: ReturnType<typeof fromCallAction> };
    return { ...seat(j.join, 0), mute: mute === null ? null : fromCallAction(mute) };
  };
  const mute = await act(ctx, "alice", "mute", ctx.me.memberKey);
  ctx.emit({ type: "call_update", state: state([bobSeat(mute)], 2), action: fromCallAction(mute) });
  await until(() => c.notes.some((n) => n.includes("muted you")));
  assert.equal(c.counters.rejectedActions, 0);
  await assert.rejects(c.setMuted(false), /A host muted you/);
  ctx.emit({ type: "call_update", state: state([bobSeat(mute)], 3), action: fromCallAction(mute) });
  await until(() => c.counters.rejectedActions === 1);
  assert.match(c.notes.at(-1)!, /already delivered \(a replay\)/);
  const head = ctx.roster().head;
  const stale = await signAction({
    spaceId: ctx.spaceId, roomId: ROOM, callId: CALL, actor: fromHex(people.alice.member_key), action: "lock",
    target: new Uint8Array(0), issuedAt: Date.now() - 10 * 60_000, nonce: randomBytes(16), headSeq: head.seq, headHash: head.hash,
    joinRef: new Uint8Array(0),
  }, fromHex(people.alice.signing_seed));
  ctx.emit({ type: "call_update", state: state([bobSeat(mute)], 4), action: fromCallAction(stale) });
  await until(() => c.counters.rejectedActions === 2);
  assert.match(c.notes.at(-1)!, /stale/);
  // a host's unmute lets us speak again
  const unmute = await act(ctx, "alice", "unmute", ctx.me.memberKey);
  ctx.emit({ type: "call_update", state: state([bobSeat(unmute)], 5), action: fromCallAction(unmute) });
  await until(() => c.notes.some((n) => n.includes("asks you to unmute")));
  await c.setMuted(false);
  assert.equal(me.me, true);
  await c.leave();
});

test("redteam: a participant named like the host with invisible/bidi characters is cleaned and marked in the call", async () => {
  // Bob (a plain member) names himself "Alice" with a zero-width space and a right-to-left
  // override; Alice (the owner, a host) sees the call's tiles and verification dialog.
  const ctx = await context("alice");
  const key = ctx.spaceKey(0)!;
  const profile = async (name: string) => ({ epoch: 0, box: await secretboxSeal(key, encodeStruct(PROFILE_INFO, { display_name: name, avatar: null })) });
  const r = ctx.roster();
  const aliceHex = people.alice.member_key as string;
  const bobHex = people.bob.member_key as string;
  const profiles = new Map(r.profiles).set(aliceHex, await profile("Alice") as never).set(bobHex, await profile("Ali\u200Bce\u202E") as never);
  (ctx as unknown as { current: Roster }).current = { ...r, profiles };
  // like SpaceClient.profile: the raw name
  const raw = new Map([[aliceHex, "Alice"], [bobHex, "Ali\u200Bce\u202E"]]);
  (ctx as unknown as { profile: (k: Uint8Array | string) => Promise<unknown> }).profile = async (k) => ({ display_name: raw.get(typeof k === "string" ? k : toHex(k)) ?? "(no profile)", avatar: null });
  let mine: ReturnType<typeof fromCallAction> | null = null;
  ctx.handlers.set("join_call", (m) => {
    mine = (m as { join: ReturnType<typeof fromCallAction> }).join;
    return { type: "call_joined", status: "joined", state: state([seat(mine, 0)]) };
  });
  ctx.handlers.set("send_call_signal", () => ({ type: "done" }));
  const c = client(ctx);
  await c.join();
  const bobJoin = fromCallAction(await act(ctx, "bob", "join", fromHex(bobHex)));
  ctx.emit({ type: "call_update", state: state([seat(mine!, 0), seat(bobJoin, 1)], 2), action: bobJoin });
  await until(() => c.view().participants.some((p) => p.memberHex === bobHex));
  const bob = c.view().participants.find((p) => p.memberHex === bobHex)!;
  assert.doesNotMatch(bob.name, /[\u200B\u202E]/u, "invisible and bidi characters are gone");
  assert.notEqual(bob.name, "Alice", "the look-alike is not shown as the host's bare name");
  assert.match(bob.name, /^Alice \(\S{4} \S{4}\)$/u, "it carries its fingerprint");
  await c.leave();
});

test("redteam: a hostile server cannot get our media key to a knocker it seats without a signed admit, with a replayed admit, or after a kick it hides", async () => {
  const ctx = await context("alice"); // the owner: a host
  const r = ctx.roster();
  const roomEntry = r.rooms.get(ROOM)!;
  const lobbyRoom = { ...roomEntry, spec: { ...roomEntry.spec, lobby: true } };
  (ctx as unknown as { current: Roster }).current = { ...r, rooms: new Map(r.rooms).set(ROOM, lobbyRoom as never) };
  let mine: ReturnType<typeof fromCallAction> | null = null;
  ctx.handlers.set("join_call", (m) => {
    mine = (m as { join: ReturnType<typeof fromCallAction> }).join;
    return { type: "call_joined", status: "joined", state: state([seat(mine, 0)]) };
  });
  ctx.handlers.set("send_call_signal", () => ({ type: "done" }));
  const c = client(ctx);
  await c.join();
  assert.equal(c.view().phase, "in-call", c.view().reason);
  const bobHex = people.bob.member_key as string;
  const bob = fromHex(bobHex);
  const toBob = () => ctx.requests.filter((q) => q.type === "send_call_signal" && toHex((q as { to: Uint8Array }).to) === bobHex).length;
  const settle = async (version: number) => {
    await until(() => c.notes.length > 0 && (c as unknown as { state: CallState | null }).state?.version === version);
    await new Promise((res) => setTimeout(res, 50));
  };
  // 1. the server seats Bob as joined, with no admission at all
  const bobJoin = fromCallAction(await act(ctx, "bob", "join", bob));
  ctx.emit({ type: "call_update", state: state([seat(mine!, 0), seat(bobJoin, 1)], 2), action: bobJoin });
  await settle(2);
  assert.equal(toBob(), 0, "no key for an unadmitted knocker");
  assert.ok(!c.view().participants.some((p) => p.memberHex === bobHex));
  // 2. an admission Alice signed for an earlier join of Bob's, replayed into this one
  const oldAdmit = fromCallAction(await act(ctx, "alice", "admit", bob, randomBytes(16)));
  ctx.emit({ type: "call_update", state: state([seat(mine!, 0), { ...seat(bobJoin, 1), admission: oldAdmit }], 3), action: null });
  await settle(3);
  assert.equal(toBob(), 0, "no key through an admission of another join");
  // 3. an admission signed by a plain member (Bob admitting himself)
  const selfAdmit = fromCallAction(await act(ctx, "bob", "admit", bob, bobJoin.nonce));
  ctx.emit({ type: "call_update", state: state([seat(mine!, 0), { ...seat(bobJoin, 1), admission: selfAdmit }], 4), action: null });
  await settle(4);
  assert.equal(toBob(), 0, "no key through a plain member's admission");
  // control: Alice's real admission of this join lets Bob in (he gets our key)
  const admit = fromCallAction(await act(ctx, "alice", "admit", bob, bobJoin.nonce));
  ctx.emit({ type: "call_update", state: state([seat(mine!, 0), { ...seat(bobJoin, 1), admission: admit }], 5), action: admit });
  await until(() => toBob() === 1);
  assert.ok(c.view().participants.some((p) => p.memberHex === bobHex));
  // 4. Alice kicks Bob; the server shows the kick but keeps Bob seated (and a later state omits it)
  const kick = fromCallAction(await act(ctx, "alice", "kick", bob, bobJoin.nonce));
  ctx.emit({ type: "call_update", state: state([seat(mine!, 0), { ...seat(bobJoin, 1), admission: admit }], 6), action: kick });
  await settle(6);
  ctx.emit({ type: "call_update", state: state([seat(mine!, 0), { ...seat(bobJoin, 1), admission: admit }], 7), action: null });
  await settle(7);
  assert.equal(toBob(), 1, "no key for a kicked member the server still lists");
  assert.ok(!c.view().participants.some((p) => p.memberHex === bobHex));
  await c.leave();
});

test("redteam: a server pushing endless unverifiable actions does not grow the client's tables", async () => {
  const { ctx, c } = await joined("bob");
  const j = ctx.requests.find((q) => q.type === "join_call") as { join: ReturnType<typeof fromCallAction> };
  const genuine = await act(ctx, "alice", "hand-up", fromHex(people.alice.member_key));
  const N = 2_500;
  for (let n = 0; n < N; n++) {
    const forged = fromCallAction({ ...genuine, nonce: randomBytes(16), sig: randomBytes(64) });
    ctx.emit({ type: "call_update", state: state([seat(j.join, 0)], 2 + n), action: forged });
  }
  await until(() => c.counters.rejectedActions === N, 60_000);
  const inner = c as unknown as { checked: Map<string, unknown>; noted: Set<string> };
  assert.ok(inner.checked.size <= 1_100, `checked holds ${inner.checked.size}`);
  assert.ok(inner.noted.size <= 1_100, `noted holds ${inner.noted.size}`);
  // still refused when shown again, and a genuine action still counts once
  const again = fromCallAction({ ...genuine, nonce: randomBytes(16), sig: randomBytes(64) });
  ctx.emit({ type: "call_update", state: state([seat(j.join, 0)], 2 + N), action: again });
  await until(() => c.counters.rejectedActions === N + 1);
  await c.leave();
});

test("redteam: a participant flooding media keys does not grow the page's logs without end", async () => {
  const { ctx, c, joinNonce } = await joined("bob");
  ctx.handlers.set("send_call_signal", () => ({ type: "done" }));
  const j = ctx.requests.find((q) => q.type === "join_call") as { join: ReturnType<typeof fromCallAction> };
  const alice = fromHex(people.alice.member_key);
  const aliceJoin = fromCallAction(await act(ctx, "alice", "join", alice));
  ctx.emit({ type: "call_update", state: state([seat(j.join, 0), seat(aliceJoin, 1)], 2), action: aliceJoin });
  await until(() => c.view().participants.some((p) => p.memberHex === people.alice.member_key));
  const link = await pairLink(alice, aliceJoin.nonce, ctx.me.memberKey, joinNonce);
  const N = 2_500;
  for (let n = 1; n <= N; n++) {
    const box = await sealSignal({
      spaceId: ctx.spaceId, roomId: ROOM, callId: CALL, sender: alice, recipient: ctx.me.memberKey, kind: "media-key", link, attempt: 0,
      payload: encodeMediaKeyMessage({ epoch: n, key: randomBytes(32), atVersion: 2 }),
    }, fromHex(people.alice.signing_seed), fromHex(people.alice.box_secret), ctx.me.boxKey);
    ctx.emit({ type: "call_signal", room_id: ROOM, call_id: CALL, sender: alice, box });
  }
  await until(() => c.keyLog.at(-1)?.epoch === N, 60_000);
  assert.ok(c.keyLog.length <= 1_000, `key log holds ${c.keyLog.length}`);
  assert.ok(c.codes.length <= 1_000, `codes hold ${c.codes.length}`);
  assert.ok(c.notes.length <= 1_000, `notes hold ${c.notes.length}`);
  assert.equal(c.keyLog.at(-1)!.epoch, N, "the latest entries are kept");
  assert.equal((c.counters as { keyMessages?: number }).keyMessages, N, "every key message is counted");
  await c.leave();
});

test("redteam: a media key sealed for an earlier join (another pair link) or from a sender we did not admit is refused", async () => {
  const { ctx, c, joinNonce } = await joined("bob");
  ctx.handlers.set("send_call_signal", () => ({ type: "done" }));
  const j = ctx.requests.find((q) => q.type === "join_call") as { join: ReturnType<typeof fromCallAction> };
  const alice = fromHex(people.alice.member_key);
  const sealKey = async (link: Uint8Array, epoch: number) => sealSignal({
    spaceId: ctx.spaceId, roomId: ROOM, callId: CALL, sender: alice, recipient: ctx.me.memberKey, kind: "media-key", link, attempt: 0,
    payload: encodeMediaKeyMessage({ epoch, key: randomBytes(32), atVersion: 2 }),
  }, fromHex(people.alice.signing_seed), fromHex(people.alice.box_secret), ctx.me.boxKey);
  // before Alice is admitted: held back (pending), never used
  const aliceJoin = fromCallAction(await act(ctx, "alice", "join", alice));
  const link = await pairLink(alice, aliceJoin.nonce, ctx.me.memberKey, joinNonce);
  ctx.emit({ type: "call_signal", room_id: ROOM, call_id: CALL, sender: alice, box: await sealKey(link, 1) });
  await new Promise((res) => setTimeout(res, 50));
  assert.equal(c.keyLog.length, 0);
  ctx.emit({ type: "call_update", state: state([seat(j.join, 0), seat(aliceJoin, 1)], 2), action: aliceJoin });
  await until(() => c.view().participants.some((p) => p.memberHex === people.alice.member_key));
  // an earlier join of Alice's (the link of another incarnation): ignored and counted
  const earlier = await pairLink(alice, randomBytes(16), ctx.me.memberKey, joinNonce);
  const before = c.counters.rejectedSignals;
  ctx.emit({ type: "call_signal", room_id: ROOM, call_id: CALL, sender: alice, box: await sealKey(earlier, 5) });
  await until(() => c.counters.rejectedSignals === before + 1);
  assert.ok(!c.keyLog.some((e) => e.epoch === 5));
  // a key for our earlier join of this call: the same
  const ours = await pairLink(alice, aliceJoin.nonce, ctx.me.memberKey, randomBytes(16));
  ctx.emit({ type: "call_signal", room_id: ROOM, call_id: CALL, sender: alice, box: await sealKey(ours, 6) });
  await until(() => c.counters.rejectedSignals === before + 2);
  assert.ok(!c.keyLog.some((e) => e.epoch === 6));
  await c.leave();
});

test("redteam: a host is not shown, and cannot admit, a 'knock' the server made of an old or forged join", async () => {
  const ctx = await context("alice"); // the owner: a host
  const r = ctx.roster();
  const roomEntry = r.rooms.get(ROOM)!;
  (ctx as unknown as { current: Roster }).current = { ...r, rooms: new Map(r.rooms).set(ROOM, { ...roomEntry, spec: { ...roomEntry.spec, lobby: true } } as never) };
  let mine: ReturnType<typeof fromCallAction> | null = null;
  ctx.handlers.set("join_call", (m) => {
    mine = (m as { join: ReturnType<typeof fromCallAction> }).join;
    return { type: "call_joined", status: "joined", state: state([seat(mine, 0)]) };
  });
  ctx.handlers.set("act_in_call", () => ({ type: "done" }));
  const c = client(ctx);
  await c.join();
  const bobHex = people.bob.member_key as string;
  const bob = fromHex(bobHex);
  const knock = (join: ReturnType<typeof fromCallAction>) => ({ ...seat(join, 1), status: "lobby" as const });
  const head = ctx.roster().head;
  // Bob's genuine join of this call id, from an hour ago (an earlier incarnation of a re-used id)
  const old = fromCallAction(await signAction({
    spaceId: ctx.spaceId, roomId: ROOM, callId: CALL, actor: bob, action: "join", target: bob, issuedAt: Date.now() - 60 * 60_000,
    nonce: randomBytes(16), headSeq: head.seq, headHash: head.hash, joinRef: new Uint8Array(0),
  }, fromHex(people.bob.signing_seed)));
  ctx.emit({ type: "call_update", state: state([seat(mine!, 0), knock(old)], 2), action: null });
  await until(() => (c as unknown as { state: CallState | null }).state?.version === 2);
  assert.deepEqual(c.view().lobby, [], "an old join is no knock");
  await assert.rejects(c.admit(bobHex), /cannot be admitted/);
  // a join with a forged signature
  const forged = { ...fromCallAction(await act(ctx, "bob", "join", bob)), sig: randomBytes(64) };
  ctx.emit({ type: "call_update", state: state([seat(mine!, 0), knock(forged)], 3), action: null });
  await until(() => (c as unknown as { state: CallState | null }).state?.version === 3);
  assert.deepEqual(c.view().lobby, []);
  await assert.rejects(c.admit(bobHex), /cannot be admitted/);
  assert.equal(ctx.requests.filter((q) => q.type === "act_in_call").length, 0, "nothing was signed for them");
  // control: Bob really knocking is listed and admitted
  const fresh = fromCallAction(await act(ctx, "bob", "join", bob));
  ctx.emit({ type: "call_update", state: state([seat(mine!, 0), knock(fresh)], 4), action: null });
  await until(() => c.view().lobby.length === 1);
  await c.admit(bobHex);
  assert.equal(ctx.requests.filter((q) => q.type === "act_in_call").length, 1);
  await c.leave();
});

test("redteam: a server saying 'session_closed: removed' without a remove record does not make the call page say you were removed", async () => {
  const verdicts: ({ how: string } | null)[] = [null, { how: "unconfirmed" }, { how: "kicked" }];
  for (const verdict of verdicts) {
    const { ctx, c } = await joined("bob");
    const listeners: ((r: { how: string }) => void)[] = [];
    let judged: { how: string } | null = null;
    Object.assign(ctx, {
      removed: () => judged,
      onRemoved: (l: (r: { how: string }) => void) => {
        listeners.push(l);
        return () => listeners.splice(listeners.indexOf(l), 1);
      },
    });
    ctx.emit({ type: "session_closed", reason: "removed" });
    if (verdict !== null) {
      // the space client's judgement from the chain, a moment later
      await new Promise((res) => setTimeout(res, 30));
      judged = verdict;
      for (const l of [...listeners]) l(verdict);
    }
    await until(() => c.view().phase !== "in-call", 10_000);
    if (verdict?.how === "kicked") {
      assert.equal(c.view().phase, "removed");
      assert.equal(c.view().reason, REASONS.removedFromSpace);
    } else {
      assert.equal(c.view().phase, "failed", `verdict ${JSON.stringify(verdict)}`);
      assert.equal(c.view().reason, REASONS.unconfirmedRemoval);
    }
  }
});

test("redteam: a participant not yet admitted flooding signals cannot crowd out another's early media key", async () => {
  const { ctx, c, joinNonce } = await joined("bob");
  ctx.handlers.set("send_call_signal", () => ({ type: "done" }));
  const j = ctx.requests.find((q) => q.type === "join_call") as { join: ReturnType<typeof fromCallAction> };
  const carol = fromHex(people.carol.member_key);
  for (let n = 0; n < 200; n++) ctx.emit({ type: "call_signal", room_id: ROOM, call_id: CALL, sender: carol, box: randomBytes(80) });
  // Alice's key arrives before the state that lets her in (a race the pending queue is for)
  const alice = fromHex(people.alice.member_key);
  const aliceJoin = fromCallAction(await act(ctx, "alice", "join", alice));
  const link = await pairLink(alice, aliceJoin.nonce, ctx.me.memberKey, joinNonce);
  const box = await sealSignal({
    spaceId: ctx.spaceId, roomId: ROOM, callId: CALL, sender: alice, recipient: ctx.me.memberKey, kind: "media-key", link, attempt: 0,
    payload: encodeMediaKeyMessage({ epoch: 0, key: randomBytes(32), atVersion: 2 }),
  }, fromHex(people.alice.signing_seed), fromHex(people.alice.box_secret), ctx.me.boxKey);
  ctx.emit({ type: "call_signal", room_id: ROOM, call_id: CALL, sender: alice, box });
  ctx.emit({ type: "call_update", state: state([seat(j.join, 0), seat(aliceJoin, 1)], 2), action: aliceJoin });
  await until(() => c.view().participants.some((p) => p.memberHex === people.alice.member_key));
  await until(() => c.keyLog.some((e) => e.from === people.alice.member_key), 2_000);
  await c.leave();
});

test("own mic/camera: the page's buttons say signed mic-off/-on, camera-off; others' own word shows, a forged one does not", async () => {
  const { ctx, c } = await joined("bob");
  ctx.handlers.set("act_in_call", () => ({ type: "done" }));
  const said = () => ctx.requests.filter((r) => r.type === "act_in_call")
    .map((r) => (r as { action: { action: string; target: Uint8Array; actor: Uint8Array } }).action);
  await c.setMuted(true);
  await until(() => said().length === 1);
  assert.equal(said()[0]!.action, "mic-off");
  assert.equal(toHex(said()[0]!.target), toHex(ctx.me.memberKey));
  await c.setCamera(false);
  await until(() => said().length === 2);
  assert.equal(said()[1]!.action, "camera-off");
  await c.setMuted(false);
  await until(() => said().length === 3);
  assert.equal(said()[2]!.action, "mic-on");
  await c.setMuted(false); // nothing new to say
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(said().length, 3);
  // Alice's own mic-off shows on her tile (no host named); a mic-off Bob signed about her, filed
  // by the server on her seat, does not.
  const j = ctx.requests.find((r) => r.type === "join_call") as { join: ReturnType<typeof fromCallAction> };
  const alice = fromHex(people.alice.member_key);
  const aliceJoin = fromCallAction(await act(ctx, "alice", "join", alice));
  const own = fromCallAction(await act(ctx, "alice", "mic-off", alice));
  const camOff = fromCallAction(await act(ctx, "alice", "camera-off", alice));
  ctx.emit({ type: "call_update", state: state([seat(j.join, 0), { ...seat(aliceJoin, 1), mic: own, camera: camOff }], 2), action: own });
  const aliceHex = people.alice.member_key as string;
  const view = () => c.view().participants.find((p) => p.memberHex === aliceHex);
  await until(() => view()?.muted === true);
  assert.equal(view()!.mutedBy, null);
  assert.equal(view()!.cameraOff, true);
  assert.ok(c.notes.some((n) => /turned their microphone off/.test(n)));
  const forged = fromCallAction(await act(ctx, "bob", "mic-off", alice));
  const on = fromCallAction(await act(ctx, "alice", "mic-on", alice));
  ctx.emit({ type: "call_update", state: state([seat(j.join, 0), { ...seat(aliceJoin, 1), mic: on }], 3), action: on });
  await until(() => view()?.muted === false);
  ctx.emit({ type: "call_update", state: state([seat(j.join, 0), { ...seat(aliceJoin, 1), mic: forged }], 4), action: null });
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(view()!.muted, false, "a mic-off someone else signed is ignored");
});
