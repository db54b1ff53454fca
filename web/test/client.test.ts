/**
 * The web client core's pure parts and its session state machine: back-off schedule, error
 * mapping, link handling, view derivation over real rosters, and `MemberSession` driven by a
 * scripted in-process WebSocket (reconnect, waiting requests, final removal).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { toHex } from "../src/protocol/bytes.ts";
import { ed25519Sign, randomBytes } from "../src/protocol/crypto.ts";
import { newMembership, type Membership as Identity } from "../src/protocol/identities.ts";
import { inviteKey, inviteSigningSeed } from "../src/protocol/invites.ts";
import { deriveSpaceId, joinStatement, signRecord, type RecordBody } from "../src/protocol/records.ts";
import { applyRecord, rosterFromRecords, type Roster } from "../src/protocol/roster.ts";
import { decodeClientMessage, encodeServerMessage, type ClientMessage, type ServerMessage } from "../src/protocol/wire.ts";
import { Removed, ServerError, Unreachable, VerificationError } from "../src/client/context.ts";
import {
  BACKOFF_MAX_MS, BACKOFF_MIN_MS, MemberSession, backoffDelay, checkServerUrl, removalOfAuthError, removalOfClose,
  websocketUrl,
} from "../src/client/session.ts";
import { Invitation, JoinError, joinErrorOf } from "../src/client/join.ts";
import {
  type MemberView, linksKnownTo, mayInvite, mayModerate, rolesFor, shouldRekey, sortMembers, wantedEpochs,
} from "../src/client/space.ts";
import { LinkError, SealError } from "../src/protocol/invites.ts";

// ---- back-off ----

test("back-off: 0.5 s doubling to 30 s, jittered within ±25 %, never outside [0.5 s, 30 s]", () => {
  assert.equal(backoffDelay(0, () => 0.5), 500);
  assert.equal(backoffDelay(1, () => 0.5), 1000);
  assert.equal(backoffDelay(2, () => 0.5), 2000);
  assert.equal(backoffDelay(5, () => 0.5), 16_000);
  assert.equal(backoffDelay(6, () => 0.5), 30_000);
  assert.equal(backoffDelay(60, () => 0.5), 30_000);
  assert.equal(backoffDelay(0, () => 0), BACKOFF_MIN_MS); // 375 ms, raised to the floor
  assert.equal(backoffDelay(3, () => 0), 3000);
  assert.equal(backoffDelay(3, () => 0.999), 4998);
  assert.equal(backoffDelay(10, () => 0.999), BACKOFF_MAX_MS);
  for (let attempt = 0; attempt < 30; attempt++) {
    const d = backoffDelay(attempt);
    assert.ok(d >= BACKOFF_MIN_MS && d <= BACKOFF_MAX_MS);
  }
});

// ---- error mapping ----

test("session_closed reasons: removed/banned/left are final removals, shutdown is not", () => {
  assert.equal(removalOfClose("removed")?.how, "kicked");
  assert.equal(removalOfClose("banned")?.how, "banned");
  assert.equal(removalOfClose("left")?.how, "left");
  assert.equal(removalOfClose("shutdown"), null);
  assert.ok(removalOfClose("banned") instanceof Removed);
});

test("a refused auth is a removal only when the key is no longer a member", () => {
  const refused = (message: string): Removed | null => removalOfAuthError(new ServerError("unauthenticated", message));
  assert.equal(refused("you are banned from this space")?.how, "banned");
  assert.equal(refused("you are no longer a member of this space")?.how, "kicked");
  assert.equal(refused("not a member of this space")?.how, "kicked");
  assert.equal(refused("the challenge signature does not verify"), null);
  assert.equal(removalOfAuthError(new ServerError("rate_limited", "not a member")), null);
  assert.equal(removalOfAuthError(new Unreachable("x")), null);
});

test("join errors: each server code and link problem has its own kind and plain message", () => {
  const kinds = ["expired", "revoked", "used_up", "stale", "not_found", "rate_limited"] as const;
  const messages = new Set<string>();
  for (const code of kinds) {
    const err = joinErrorOf(new ServerError(code, "server words"));
    assert.equal(err.kind, code);
    assert.ok(!err.message.includes("server words"));
    messages.add(err.message);
  }
  assert.equal(messages.size, kinds.length);
  assert.equal(joinErrorOf(new ServerError("unauthenticated", "the invite signature does not match this link")).kind, "damaged");
  assert.equal(joinErrorOf(new LinkError("bad")).kind, "damaged");
  assert.equal(joinErrorOf(new SealError("the invite's preview does not open")).kind, "damaged");
  assert.equal(joinErrorOf(new ServerError("forbidden", "you are banned from this space")).kind, "banned");
  assert.equal(joinErrorOf(new Unreachable("no route")).kind, "unreachable");
  assert.equal(joinErrorOf(new ServerError("internal", "oops")).kind, "failed");
  assert.equal(joinErrorOf(new VerificationError("fork")).kind, "failed");
  assert.throws(() => joinErrorOf(new TypeError("a bug")), TypeError);
});

test("links: parsing keeps the prefix; damaged links are JoinError('damaged')", () => {
  const secret = "A".repeat(42) + "A";
  const inv = Invitation.parse(`https://salon.example/pre/join/abcdefghijkl#${secret}`);
  assert.equal(inv.server, "https://salon.example/pre");
  assert.equal(inv.inviteId, "abcdefghijkl");
  for (const bad of [
    "not a link", "https://salon.example/join/abcdefghijkl", "https://salon.example/join/abcdefghijkl#short",
    "https://salon.example/join/bad#" + secret, "ftp://salon.example/join/abcdefghijkl#" + secret,
  ]) {
    assert.throws(() => Invitation.parse(bad), (err: unknown) => err instanceof JoinError && err.kind === "damaged", bad);
  }
});

test("server URLs: checked, and the WebSocket is PREFIX/ws", () => {
  assert.equal(checkServerUrl(" http://127.0.0.1:8080/ "), "http://127.0.0.1:8080");
  assert.equal(websocketUrl("http://127.0.0.1:8080"), "ws://127.0.0.1:8080/ws");
  assert.equal(websocketUrl("https://Salon.Example/pre"), "wss://Salon.Example/pre/ws");
  assert.throws(() => checkServerUrl("salon.example"));
});

// ---- views over real rosters ----

class Chain {
  records: Parameters<typeof applyRecord>[1][] = [];
  roster!: Roster;
  constructor(readonly spaceId: string) {}
  async add(who: Identity, body: RecordBody): Promise<Roster> {
    const head = this.roster?.head ?? { seq: -1, hash: new Uint8Array(32) };
    const record = await signRecord(who.signingSeed, {
      space_id: this.spaceId, seq: head.seq + 1, prev: head.hash, author: who.memberKey, created_at: 1_800_000_000, body,
    });
    this.roster = this.roster === undefined ? await rosterFromRecords(this.spaceId, [record]) : await applyRecord(this.roster, record);
    this.records.push(record);
    return this.roster;
  }
}

async function space(): Promise<{ chain: Chain; owner: Identity }> {
  const owner = await newMembership();
  const genesis = { type: "genesis" as const, box_key: owner.boxKey, nonce: randomBytes(16) };
  const chain = new Chain(await deriveSpaceId(owner.memberKey, genesis));
  await chain.add(owner, genesis);
  return { chain, owner };
}

async function invite(chain: Chain, by: Identity, id: string, maxUses: number, expiresAt = 4_000_000_000): Promise<Uint8Array> {
  const secret = randomBytes(32);
  await chain.add(by, { type: "invite", invite_id: id, invite_key: await inviteKey(secret, id), role: "member", expires_at: expiresAt, max_uses: maxUses });
  return secret;
}

async function join(chain: Chain, id: string, secret: Uint8Array): Promise<Identity> {
  const who = await newMembership();
  const sig = await ed25519Sign(await inviteSigningSeed(secret, id), joinStatement(chain.spaceId, who.memberKey, who.boxKey, id));
  await chain.add(who, { type: "join", invite_id: id, box_key: who.boxKey, invite_sig: sig });
  return who;
}

test("links known to a member: live multi-use links and the links it made (§8.5)", async () => {
  const { chain, owner } = await space();
  const multi = await invite(chain, owner, "multiAAAAAAAAAAA", 5);
  const single = await invite(chain, owner, "singleAAAAAAAAAA", 1);
  await invite(chain, owner, "otherAAAAAAAAAAA", 1);
  await invite(chain, owner, "oldmultiAAAAAAAA", 5, 1_000);
  await invite(chain, owner, "revokedAAAAAAAAA", 5);
  await chain.add(owner, { type: "invite_revoke", invite_id: "revokedAAAAAAAAA" });
  void multi;
  const bob = await join(chain, "singleAAAAAAAAAA", single);
  await chain.add(owner, { type: "role", member: bob.memberKey, role: "moderator" });
  await invite(chain, bob, "bobsAAAAAAAAAAAA", 1);
  const known = linksKnownTo(chain.roster, toHex(bob.memberKey), 2_000_000_000).sort();
  assert.deepEqual(known, ["bobsAAAAAAAAAAAA", "multiAAAAAAAAAAA"]);
});

test("rekey duty and wanted epochs follow the roster and the keys held (§9.2, §9.3)", async () => {
  const { chain, owner } = await space();
  const secret = await invite(chain, owner, "inviteAAAAAAAAAA", 5);
  const bob = await join(chain, "inviteAAAAAAAAAA", secret);
  const carol = await join(chain, "inviteAAAAAAAAAA", secret);
  const held0 = new Map([[0, randomBytes(32)]]);
  const none = new Map<number, Uint8Array>();
  const ownerId = toHex(owner.memberKey);
  const bobId = toHex(bob.memberKey);
  assert.equal(shouldRekey(chain.roster, ownerId, held0), false);
  await chain.add(carol, { type: "leave" });
  // A departure awaits its rekey: any member holding a key may complete it.
  assert.equal(shouldRekey(chain.roster, bobId, held0), true);
  assert.equal(shouldRekey(chain.roster, ownerId, held0), true);
  assert.equal(shouldRekey(chain.roster, bobId, none), false);
  await chain.add(bob, { type: "rekey", epoch: 1, prev_epoch: 0, prev_box: randomBytes(72) });
  assert.equal(shouldRekey(chain.roster, bobId, new Map([[0, randomBytes(32)], [1, randomBytes(32)]])), false);
  // The owner lacking epoch 1 repairs; a plain member may not.
  assert.equal(shouldRekey(chain.roster, ownerId, held0), true);
  assert.equal(shouldRekey(chain.roster, bobId, held0), false);
  assert.deepEqual(wantedEpochs(chain.roster, held0), [1]);
  assert.deepEqual(wantedEpochs(chain.roster, none), [1]);
  assert.deepEqual(wantedEpochs(chain.roster, new Map([[1, randomBytes(32)]])), []);
  await chain.add(owner, { type: "rekey", epoch: 2, prev_epoch: 0, prev_box: randomBytes(72) });
  assert.deepEqual(wantedEpochs(chain.roster, held0), [2]); // the repair stepped over epoch 1
});

test("permissions: who may invite, moderate whom, and give which roles (§7)", async () => {
  const { chain, owner } = await space();
  const secret = await invite(chain, owner, "inviteAAAAAAAAAA", 5);
  const bob = await join(chain, "inviteAAAAAAAAAA", secret);
  const carol = await join(chain, "inviteAAAAAAAAAA", secret);
  const dave = await join(chain, "inviteAAAAAAAAAA", secret);
  await chain.add(owner, { type: "role", member: bob.memberKey, role: "moderator" });
  await chain.add(owner, { type: "role", member: dave.memberKey, role: "moderator" });
  const r = chain.roster;
  const [o, b, c, d] = [owner, bob, carol, dave].map((x) => toHex(x.memberKey)) as [string, string, string, string];
  assert.deepEqual([mayInvite(r, o), mayInvite(r, b), mayInvite(r, c), mayInvite(r, "00")], [true, true, false, false]);
  assert.equal(mayModerate(r, o), true);
  assert.equal(mayModerate(r, c), false);
  assert.equal(mayModerate(r, b, c), true);
  assert.equal(mayModerate(r, b, d), false); // a moderator does not outrank a moderator
  assert.equal(mayModerate(r, b, o), false);
  assert.equal(mayModerate(r, o, o), false);
  assert.deepEqual(rolesFor(r, o, b), ["member", "owner"]);
  assert.deepEqual(rolesFor(r, b, c), ["moderator"]);
  assert.deepEqual(rolesFor(r, c, b), []);
});

test("members sort like the CLI: owners, moderators, members; then name, then fingerprint", () => {
  const view = (displayName: string, role: MemberView["role"], fp: string): MemberView => ({
    key: new Uint8Array(0), id: fp, displayName, avatar: null, role, fingerprint: fp, me: false,
  });
  const sorted = sortMembers([
    view("zed", "member", "1"), view("Amy", "member", "2"), view("bob", "owner", "3"), view("Amy", "member", "0"),
    view("Mod", "moderator", "4"),
  ]);
  assert.deepEqual(sorted.map((v) => `${v.displayName}/${v.fingerprint}`), ["bob/3", "Mod/4", "Amy/0", "Amy/2", "zed/1"]);
});

// ---- MemberSession against a scripted WebSocket ----

const ORIGIN = "http://127.0.0.1:9";

interface Script {
  /** What the server answers to `auth`. */
  auth: () => ServerMessage;
  sockets: FakeSocket[];
}

let script: Script;

class FakeSocket {
  binaryType = "blob";
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: (() => void) | null = null;
  onerror: (() => void) | null = null;
  closed = false;
  constructor(readonly url: string) {
    script.sockets.push(this);
    setTimeout(() => this.deliver({ type: "challenge", nonce: randomBytes(32), origin: ORIGIN, version: 1 }), 1);
  }
  deliver(message: ServerMessage): void {
    if (this.closed) return;
    const bytes = encodeServerMessage(message);
    this.onmessage?.({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) });
  }
  send(data: Uint8Array): void {
    const message: ClientMessage = decodeClientMessage(data);
    setTimeout(() => {
      if (message.type === "auth") this.deliver({ ...script.auth(), id: message.id } as ServerMessage);
      else if (message.type === "list_invites") this.deliver({ type: "invites", id: message.id, invites: [] });
    }, 1);
  }
  close(): void {
    this.drop();
  }
  /** The server (or network) ends the socket. */
  drop(): void {
    if (this.closed) return;
    this.closed = true;
    const onclose = this.onclose;
    setTimeout(() => onclose?.(), 1);
  }
}

const welcome = (): ServerMessage => ({ type: "welcome", id: 0, space_id: "s", head_seq: 0 });
const auth = { spaceId: "s", memberKey: new Uint8Array(32), signingSeed: new Uint8Array(32).fill(1) };

async function withFakeSockets(run: () => Promise<void>): Promise<void> {
  const saved = globalThis.WebSocket;
  script = { auth: welcome, sockets: [] };
  (globalThis as { WebSocket: unknown }).WebSocket = FakeSocket;
  try {
    await run();
  } finally {
    (globalThis as { WebSocket: unknown }).WebSocket = saved;
  }
}

const waitFor = async (check: () => boolean): Promise<void> => {
  for (let i = 0; i < 400 && !check(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(check(), "timed out");
};

test("session: a dropped socket reconnects, re-authenticates, and requests made meanwhile wait", () =>
  withFakeSockets(async () => {
    const session = await MemberSession.open(ORIGIN, auth, { random: () => 0 });
    const states: string[] = [];
    session.onState((s) => states.push(s));
    let reconnects = 0;
    session.onReconnect(() => reconnects++);
    assert.equal(session.state(), "online");
    script.sockets[0]!.drop();
    await waitFor(() => session.state() === "reconnecting");
    const reply = session.request({ type: "list_invites" });
    await reply;
    assert.equal(session.state(), "online");
    assert.deepEqual(states, ["reconnecting", "online"]);
    assert.equal(reconnects, 1);
    assert.equal(script.sockets.length, 2);
    session.close();
    assert.equal(session.state(), "closed");
    await assert.rejects(session.request({ type: "list_invites" }), Unreachable);
  }));

test("session: session_closed 'banned' is final — closed, Removed, no retry", () =>
  withFakeSockets(async () => {
    const session = await MemberSession.open(ORIGIN, auth, { random: () => 0 });
    let removed: Removed | null = null;
    session.onRemoved((err) => (removed = err));
    script.sockets[0]!.deliver({ type: "session_closed", reason: "banned" });
    script.sockets[0]!.drop();
    await waitFor(() => session.state() === "closed");
    assert.equal((removed as Removed | null)?.how, "banned");
    await assert.rejects(session.request({ type: "list_invites" }), (err: unknown) => err instanceof Removed && err.how === "banned");
    await new Promise((r) => setTimeout(r, 700));
    assert.equal(script.sockets.length, 1);
  }));

test("session: re-authentication refused as 'no longer a member' is a final removal", () =>
  withFakeSockets(async () => {
    const session = await MemberSession.open(ORIGIN, auth, { random: () => 0 });
    script.auth = () => ({ type: "error", id: 0, code: "unauthenticated", message: "you are no longer a member of this space" });
    const pending = session.request({ type: "list_invites" }).catch((err: unknown) => err);
    script.sockets[0]!.drop();
    const waiting = await pending;
    // The in-flight request failed with the lost connection, or ran before it.
    assert.ok(waiting instanceof Unreachable || (waiting as { type?: string }).type === "invites");
    await waitFor(() => session.state() === "closed");
    assert.ok(session.closedError() instanceof Removed);
    await new Promise((r) => setTimeout(r, 700));
    assert.equal(script.sockets.length, 2);
  }));

test("session: a challenge from another origin is refused; an auth refused as banned is Removed at open", () =>
  withFakeSockets(async () => {
    await assert.rejects(MemberSession.open("http://127.0.0.1:10", auth), VerificationError);
    script.auth = () => ({ type: "error", id: 0, code: "unauthenticated", message: "you are banned from this space" });
    await assert.rejects(MemberSession.open(ORIGIN, auth), (err: unknown) => err instanceof Removed && err.how === "banned");
  }));
