// A member's own microphone and camera state: signed "mic-off"/"mic-on", "camera-off"/"camera-on"
// (PROTOCOL §13; mirrors tests/test_call_selfmute.py).
import { test } from "node:test";
import assert from "node:assert/strict";
import { toHex } from "../src/protocol/bytes.ts";
import { type CallAction, type CallActionKind, signAction } from "../src/protocol/calls.ts";
import { CALL_PARTICIPANT, fromCallAction } from "../src/protocol/conference_wire.ts";
import { SELF_STATE, actionProblem, seatFlags, seatOf } from "../src/protocol/conference_rules.ts";
import { ed25519PublicKey, randomBytes } from "../src/protocol/crypto.ts";
import type { Role } from "../src/protocol/recordtypes.ts";
import { decodeServerMessage, encodeServerMessage, type ServerMessage } from "../src/protocol/wire.ts";

const SPACE = "space0123456789";
const ROOM = "room0123456789";
const NOW = 1_800_000_000_000;

interface Person { seed: Uint8Array; key: Uint8Array; role: Role }
async function person(role: Role): Promise<Person> {
  const seed = randomBytes(32);
  return { seed, key: await ed25519PublicKey(seed), role };
}
function act(p: Person, callId: string, name: CallActionKind, target: Uint8Array, at = NOW): Promise<CallAction> {
  return signAction({
    spaceId: SPACE, roomId: ROOM, callId, actor: p.key, action: name, target, issuedAt: at, nonce: randomBytes(16),
    headSeq: -1, headHash: new Uint8Array(0), joinRef: new Uint8Array(0),
  }, p.seed);
}

async function setup() {
  const ps = { owner: await person("owner"), mod: await person("moderator"), bob: await person("member"), carol: await person("member") };
  const r = new Map(Object.values(ps).map((p) => [toHex(p.key), p.role] as const));
  const valid = new Set<string>();
  const check = async (a: CallAction) => {
    if ((await actionProblem(a, r, { spaceId: SPACE, roomId: ROOM, callId: "c1" })) === null) valid.add(toHex(a.sig));
    return a;
  };
  const ok = (a: CallAction) => valid.has(toHex(a.sig));
  const join = await check(await act(ps.bob, "c1", "join", ps.bob.key));
  const base = { member: ps.bob.key, index: 2, status: "joined" as const, join, admission: null, mute: null, hand: null, stage: null };
  return { ...ps, r, check, ok, base, open: { lobby: false, stage: false } };
}

test("mic/camera actions are self actions: about the actor only, whoever signs", async () => {
  const { bob, carol, owner, r } = await setup();
  for (const name of ["mic-off", "mic-on", "camera-off", "camera-on"] as const) {
    assert.ok(SELF_STATE.has(name));
    const where = { spaceId: SPACE, roomId: ROOM, callId: "c1" };
    assert.equal(await actionProblem(await act(bob, "c1", name, bob.key), r, where), null);
    assert.equal(await actionProblem(await act(carol, "c1", name, bob.key), r, where), "it is about someone else");
    assert.equal(await actionProblem(await act(owner, "c1", name, bob.key), r, where), "it is about someone else");
  }
});

test("seatFlags: micOff/cameraOff from the member's own action; a mic-on never lifts a host's mute", async () => {
  const { bob, carol, mod, check, ok, base, open, r } = await setup();
  let f = seatFlags(base, open, "c1", r, ok);
  assert.ok(!f.micOff && !f.cameraOff && !f.muted);
  const micOff = await check(await act(bob, "c1", "mic-off", bob.key));
  const cameraOff = await check(await act(bob, "c1", "camera-off", bob.key));
  f = seatFlags({ ...base, mic: micOff, camera: cameraOff }, open, "c1", r, ok);
  assert.ok(f.micOff && f.cameraOff);
  assert.ok(!f.muted && f.mutedBy === null, "self-muted is no host's mute");
  const micOn = await check(await act(bob, "c1", "mic-on", bob.key));
  assert.ok(!seatFlags({ ...base, mic: micOn }, open, "c1", r, ok).micOff);
  // host-muted, then the member says mic-on: still muted, by the host
  const mute = await check(await act(mod, "c1", "mute", bob.key));
  f = seatFlags({ ...base, mute, mic: micOn }, open, "c1", r, ok);
  assert.ok(f.muted && !f.micOff);
  assert.equal(toHex(f.mutedBy!), toHex(mod.key));
  // forged: a server files Carol's own mic-off, or Carol's about Bob, or Bob's from another call
  const stranger = await person("member");
  for (const forged of [
    await act(carol, "c1", "mic-off", carol.key), await act(carol, "c1", "mic-off", bob.key),
    await act(stranger, "c1", "mic-off", bob.key), await act(bob, "an-earlier-call", "mic-off", bob.key),
  ]) {
    await check(forged);
    const g = seatFlags({ ...base, mic: forged, camera: forged }, open, "c1", r, ok);
    assert.ok(!g.micOff && !g.cameraOff);
  }
  // a mic-off in the camera field does not turn the camera off
  assert.ok(!seatFlags({ ...base, camera: micOff }, open, "c1", r, ok).cameraOff);
});

test("wire: mic/camera are optional participant fields (absent = on), byte-compatible both ways", async () => {
  const { bob, check, base, ok, r, open } = await setup();
  const micOff = await check(await act(bob, "c1", "mic-off", bob.key));
  assert.ok(CALL_PARTICIPANT.fields.some((fd) => fd.name === "mic"));
  const wire = { ...base, join: fromCallAction(base.join), mic: fromCallAction(micOff) };
  const state = { room_id: ROOM, call_id: "c1", version: 1, topology: "mesh" as const, requested_topology: "auto",
    participants: [wire], lock: null, bans: [] };
  const frame = encodeServerMessage({ type: "call_update", state, action: null } as ServerMessage);
  const back = decodeServerMessage(frame) as ServerMessage & { type: "call_update" };
  const seat = seatOf(back.state.participants[0]!);
  assert.ok(seatFlags(seat, open, "c1", r, ok).micOff);
  assert.equal(back.state.participants[0]!.camera, null);
  // an older peer's participant without the fields decodes as "on"
  const { mic: _dropped, ...old } = wire;
  const older = decodeServerMessage(encodeServerMessage({ type: "call_update", state: { ...state, participants: [old] }, action: null } as ServerMessage)) as ServerMessage & { type: "call_update" };
  assert.ok(!seatFlags(seatOf(older.state.participants[0]!), open, "c1", r, ok).micOff);
});
