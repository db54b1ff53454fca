// conference_wire.ts and conference_rules.ts (mirrors tests/test_call_core.py's rule tests).
import { test } from "node:test";
import assert from "node:assert/strict";
import { concat, fromHex, toHex, utf8 } from "../src/protocol/bytes.ts";
import { type CallAction, type CallActionKind, signAction } from "../src/protocol/calls.ts";
import {
  type CallState, type WireCallAction, fromCallAction, toCallAction,
} from "../src/protocol/conference_wire.ts";
import {
  Restrictions, actionProblem, endProblem, freshnessProblem, isLocked, seatFlags, seatOf, topologyFor,
} from "../src/protocol/conference_rules.ts";
import { ed25519PublicKey, randomBytes } from "../src/protocol/crypto.ts";
import type { Role } from "../src/protocol/recordtypes.ts";
import {
  decodeClientMessage, decodeServerMessage, encodeClientMessage, encodeServerMessage, type ClientMessage, type ServerMessage,
} from "../src/protocol/wire.ts";
import { type Json, vectors } from "./kat.ts";

const SPACE = "space0123456789";
const ROOM = "room0123456789";
const NOW = 1_800_000_000_000;

interface Person { seed: Uint8Array; key: Uint8Array; role: Role }
async function person(role: Role): Promise<Person> {
  const seed = randomBytes(32);
  return { seed, key: await ed25519PublicKey(seed), role };
}
function act(p: Person, callId: string, name: CallActionKind, target: Uint8Array = new Uint8Array(0), at = NOW,
  joinRef: Uint8Array = new Uint8Array(0)): Promise<CallAction> {
  return signAction({
    spaceId: SPACE, roomId: ROOM, callId, actor: p.key, action: name, target, issuedAt: at, nonce: randomBytes(16),
    headSeq: -1, headHash: new Uint8Array(0), joinRef,
  }, p.seed);
}
async function people() {
  return { owner: await person("owner"), mod: await person("moderator"), bob: await person("member"), carol: await person("member") };
}
const rolesOf = (ps: Record<string, Person>) => new Map(Object.values(ps).map((p) => [toHex(p.key), p.role] as const));

const v = vectors("calls.json");
function vecAction(j: Json): CallAction {
  return toCallAction({
    ...j, actor: fromHex(j.actor), target: fromHex(j.target), nonce: fromHex(j.nonce), head_hash: fromHex(j.head_hash),
    join_ref: fromHex(j.join_ref), sig: fromHex(j.sig),
  } as WireCallAction);
}

test("conference frames: the vector actions inside them, round trips", async () => {
  for (const name of ["action", "join", "seat_action"]) {
    const a = vecAction(v[name].action);
    const frame = encodeClientMessage({ type: "act_in_call", id: 7, room_id: a.roomId, action: fromCallAction(a) });
    // {type, id, room_id, action: <the vector's CallAction bytes>}
    const head = concat(new Uint8Array([0x84, 0xa4]), utf8("type"), new Uint8Array([0xab]), utf8("act_in_call"),
      new Uint8Array([0xa2]), utf8("id"), new Uint8Array([0x07, 0xa7]), utf8("room_id"), new Uint8Array([0xb0]),
      utf8(a.roomId), new Uint8Array([0xa6]), utf8("action"));
    assert.equal(toHex(frame), toHex(head) + v[name].action_msgpack, name);
    const back = decodeClientMessage(frame) as ClientMessage & { type: "act_in_call" };
    assert.deepEqual(toCallAction(back.action), a);
  }
  const join = fromCallAction(vecAction(v.join.action));
  const state: CallState = {
    room_id: ROOM, call_id: "c1", version: 3, topology: "mesh", requested_topology: "auto",
    participants: [{ member: join.actor, index: 1, status: "joined", join, admission: null, mute: null, hand: join, stage: null, mic: join, camera: null }],
    lock: null, bans: [join],
  };
  const clients: ClientMessage[] = [
    { type: "get_call", id: 1, room_id: ROOM }, { type: "join_call", id: 2, room_id: ROOM, join },
    { type: "leave_call", id: 3, room_id: ROOM }, { type: "act_in_call", id: 4, room_id: ROOM, action: join },
    { type: "send_call_signal", id: 5, room_id: ROOM, call_id: "c1", to: join.actor, box: new Uint8Array([1, 2]) },
    { type: "sfu_offer", id: 6, room_id: ROOM, call_id: "c1", sdp: "v=0" },
    { type: "sfu_view", id: 7, room_id: ROOM, call_id: "c1", slots: [{ mid: "3", height: 360 }, { mid: "4", height: 0 }] },
    { type: "sfu_view", id: 8, room_id: ROOM, call_id: "c1", slots: [] },
  ];
  for (const m of clients) {
    const bytes = encodeClientMessage(m);
    assert.equal(toHex(encodeClientMessage(decodeClientMessage(bytes))), toHex(bytes), m.type);
  }
  const servers: ServerMessage[] = [
    { type: "call_info", id: 1, state }, { type: "call_joined", id: 2, state, status: "lobby" },
    { type: "call_update", state, action: join }, { type: "call_update", state, action: null },
    { type: "call_signal", room_id: ROOM, call_id: "c1", sender: join.actor, box: new Uint8Array(3) },
    { type: "call_ended", room_id: ROOM, call_id: "c1", reason: "removed", action: join },
    { type: "sfu_answer", id: 3, sdp: "v=0" },
    { type: "call_speaker", room_id: ROOM, call_id: "c1", member: new Uint8Array(0) },
    { type: "sfu_reconnect", room_id: ROOM, call_id: "c1", reason: "node gone" },
  ];
  for (const m of servers) {
    const bytes = encodeServerMessage(m);
    const back = decodeServerMessage(bytes);
    assert.deepEqual(back, m, m.type);
    assert.equal(toHex(encodeServerMessage(back)), toHex(bytes), m.type);
  }
  // an unknown action name or topology is refused, as msgspec's Literal does
  const bad = encodeServerMessage({ type: "call_info", id: 1, state }).slice();
  const at = toHex(bad).indexOf(toHex(utf8("mesh")));
  bad.set(utf8("mush"), at / 2);
  assert.throws(() => decodeServerMessage(bad));
});

test("action_problem", async () => {
  const ps = await people();
  const { owner, mod, bob, carol } = ps;
  const r = rolesOf(ps);
  const problem = (a: CallAction, callId: string | null = "c1") => actionProblem(a, r, { spaceId: SPACE, roomId: ROOM, callId });
  assert.equal(await problem(await act(mod, "c1", "mute", bob.key)), null);
  assert.equal(await problem(await act(bob, "c1", "hand-up", bob.key)), null);
  assert.equal(await problem(await act(bob, "c1", "mute", carol.key)), "its signer is not a host (owner or moderator)");
  assert.equal(await problem(await act(mod, "c0", "mute", bob.key)), "it belongs to another call");
  const seat = new Uint8Array(16);
  assert.equal(await problem(await act(mod, "c1", "kick", owner.key, NOW, seat)), "its target outranks its signer");
  assert.equal(await problem(await act(owner, "c1", "kick", owner.key, NOW, seat)), "a host cannot do that to themselves");
  assert.equal(await problem(await act(owner, "c1", "kick", bob.key)), "it names no join");
  assert.equal(await problem(await act(owner, "c1", "mute", bob.key, NOW, seat)), "it names a join it should not");
  assert.equal(await problem(await act(owner, "c0", "kick", bob.key, NOW, seat), null), null);
  assert.equal(await problem(await act(bob, "c1", "hand-up", carol.key)), "it is about someone else");
  assert.equal(await problem(await act(mod, "c1", "lock", bob.key)), "it names a target it should not");
  assert.equal(await problem(await act(mod, "c1", "mute")), "it names no member");
  const stranger = await person("owner");
  assert.equal(await problem(await act(stranger, "c1", "mute", bob.key)), "its signer is not a member of the space");
  const forged = { ...(await act(mod, "c1", "mute", bob.key)), target: carol.key };
  assert.equal(await problem(forged), "its signature does not verify");
  const fake = { ...(await act(bob, "c1", "mute", carol.key)), actor: owner.key };
  assert.equal(await problem(fake), "its signature does not verify");
});

test("topology_for", () => {
  assert.equal(topologyFor("auto", 4, 4, false), "mesh");
  assert.equal(topologyFor("sfu", 3, 4, false), "mesh");
  assert.equal(topologyFor("auto", 5, 4, false), null);
  assert.equal(topologyFor("auto", 5, 4, true), "sfu");
  assert.equal(topologyFor("sfu", 2, 4, true), "sfu");
  assert.equal(topologyFor("mesh", 5, 4, true), null);
  assert.equal(topologyFor("auto", 4, 4, true, { current: "sfu", meshReturnMax: 3 }), "sfu");
  assert.equal(topologyFor("auto", 3, 4, true, { current: "sfu", meshReturnMax: 3 }), "mesh");
});

test("freshness, restrictions (first-seen ban ordering) and end reasons", async () => {
  const { owner, bob } = await people();
  assert.equal(freshnessProblem(await act(owner, "c1", "lock"), NOW + 299_000), null);
  assert.match(String(freshnessProblem(await act(owner, "c1", "lock"), NOW + 301_000)), /behind this device's clock/);
  assert.match(String(freshnessProblem(await act(owner, "c1", "lock", undefined, NOW + 400_000), NOW)), /400 s ahead/);
  assert.match(String(freshnessProblem({ ...(await act(owner, "c1", "lock")), nonce: utf8("n") }, NOW)), /nonce/);

  const joinA = randomBytes(16);
  const joinB = randomBytes(16);
  const kept = new Restrictions();
  const kick = await act(owner, "c1", "kick", bob.key, NOW, joinA);
  assert.ok(kept.add(kick));
  assert.ok(!kept.add(kick));
  const bobHex = toHex(bob.key);
  assert.equal(kept.barring(bobHex, joinA), kick);
  assert.equal(kept.barring(bobHex, joinB), null);
  const ban = await act(owner, "c1", "ban", bob.key, NOW);
  const unban = await act(owner, "c1", "unban", bob.key, NOW + 10);
  assert.ok(kept.add(unban));
  assert.ok(!kept.add(ban));
  assert.equal(kept.barring(bobHex, joinB), null);
  assert.ok(kept.add(await act(owner, "c1", "ban", bob.key, NOW + 20)));
  assert.notEqual(kept.barring(bobHex, joinB), null);

  // First seen counts: a ban dated ahead, seen at NOW, then an unban seen later (dated NOW+5)
  // wins; showing the ban again later must not overtake it.
  const order = new Restrictions();
  const ahead = await act(owner, "c1", "ban", bob.key, NOW + 60_000);
  const lift = await act(owner, "c1", "unban", bob.key, NOW + 5);
  assert.ok(order.add(ahead, NOW));
  assert.ok(order.add(lift, NOW + 10));
  assert.ok(!order.add(ahead, NOW + 120_000));
  assert.equal(order.barring(bobHex, joinB), null);

  const mute = await act(owner, "c1", "mute", bob.key);
  assert.equal(endProblem("removed", kick, bob.key, joinA), "");
  assert.equal(endProblem("removed", kick, bob.key, joinB), "with a signed 'kick' of an earlier join");
  assert.equal(endProblem("removed", null, bob.key, joinA), "without a signed action");
  assert.equal(endProblem("removed", mute, bob.key, joinA), "with a signed 'mute', which is no 'kick'");
  assert.equal(endProblem("banned", ban, owner.key, joinA), "with a signed 'ban' of someone else");
  assert.equal(endProblem("ended", await act(owner, "c1", "end"), bob.key, joinA), "");
  assert.equal(endProblem("replaced", null, bob.key, joinA), "");
  assert.equal(endProblem("replaced", mute, bob.key, joinA), "it carries an action it should not");
});

test("seat_flags: lobby admission per join, mute, mute-all rank, hands, stage; forged mutes ignored", async () => {
  const ps = await people();
  const { owner, mod, bob, carol } = ps;
  const r = rolesOf(ps);
  const valid = new Set<string>();
  const check = async (a: CallAction) => {
    if ((await actionProblem(a, r, { spaceId: SPACE, roomId: ROOM, callId: "c1" })) === null) valid.add(toHex(a.sig));
    return a;
  };
  const ok = (a: CallAction) => valid.has(toHex(a.sig));
  const join = await check(await act(bob, "c1", "join", bob.key));
  const base = { member: bob.key, index: 2, status: "joined" as const, join, admission: null, mute: null, hand: null, stage: null };
  const open = { lobby: false, stage: false };
  const lobby = { lobby: true, stage: false };
  assert.ok(seatFlags(base, open, "c1", r, ok).admitted);
  assert.ok(!seatFlags(base, lobby, "c1", r, ok).admitted);
  assert.ok(!seatFlags(base, open, "c2", r, ok).admitted);
  const admit = await check(await act(mod, "c1", "admit", bob.key, NOW, join.nonce));
  assert.ok(seatFlags({ ...base, admission: admit }, lobby, "c1", r, ok).admitted);
  const oldAdmit = await check(await act(mod, "c1", "admit", bob.key, NOW, randomBytes(16)));
  assert.ok(!seatFlags({ ...base, admission: oldAdmit }, lobby, "c1", r, ok).admitted);
  const mute = await check(await act(mod, "c1", "mute", bob.key));
  const f = seatFlags({ ...base, mute }, open, "c1", r, ok);
  assert.ok(f.muted);
  assert.equal(toHex(f.mutedBy!), toHex(mod.key));
  // mute-all by a moderator does not silence the owner
  const all = await check(await act(mod, "c1", "mute-all"));
  assert.ok(seatFlags({ ...base, mute: all }, open, "c1", r, ok).muted);
  const ownerJoin = await check(await act(owner, "c1", "join", owner.key));
  assert.ok(!seatFlags({ ...base, member: owner.key, join: ownerJoin, mute: all }, open, "c1", r, ok).muted);
  // forged: by a member, by a stranger, from another call
  const stranger = await person("owner");
  for (const forged of [await act(carol, "c1", "mute", bob.key), await act(stranger, "c1", "mute", bob.key),
    await act(owner, "an-earlier-call", "mute", bob.key)]) {
    await check(forged);
    assert.ok(!seatFlags({ ...base, mute: forged }, open, "c1", r, ok).muted);
  }
  const hand = await check(await act(bob, "c1", "hand-up", bob.key));
  assert.ok(seatFlags({ ...base, hand }, open, "c1", r, ok).handRaised);
  const stageRoom = { lobby: false, stage: true };
  assert.ok(!seatFlags(base, stageRoom, "c1", r, ok).speaker);
  const promote = await check(await act(mod, "c1", "promote", bob.key, NOW, join.nonce));
  assert.ok(seatFlags({ ...base, stage: promote }, stageRoom, "c1", r, ok).speaker);
  const lock = await check(await act(owner, "c1", "lock"));
  assert.ok(isLocked(lock, ok));
  assert.ok(!isLocked(await act(carol, "c1", "lock"), ok));
  // seatOf converts a wire participant
  const s = seatOf({ ...base, join: fromCallAction(join), admission: null, mute: fromCallAction(mute), hand: null, stage: null });
  assert.ok(seatFlags(s, open, "c1", r, ok).muted);
});
