/**
 * A line-driven Node participant for tests/test_web_call_signalling.py: the web client's
 * CallClient (call.ts) over Node's global WebSocket, beside real `salon call` CLI participants.
 * One JSON command per stdin line, one JSON answer per stdout line (like core_e2e.ts).
 *
 * Node has no WebRTC, so the media topology is a small *recording* Topology: it is a test
 * harness for the signalling (who is admitted, which signals arrive verified, what may be
 * sent), never for media — the real mesh.ts / sfu.ts run in the browser tests. The context is
 * the real SpaceClient behind a thin wrapper that can also deliver a forged event "from the
 * server" (op inject_forged_mute), to show the client refuses it.
 */
import { type Command, serveLines } from "./e2e_lines.ts";
import { MemorySlotStore } from "../src/keystore/store.ts";
import { generateDeviceKey } from "../src/keystore/vault.ts";
import type { SpaceContext } from "../src/client/context.ts";
import type { SpaceClient } from "../src/client/space.ts";
import { Spaces } from "../src/client/spaces.ts";
import { roomName } from "../src/client/rooms.ts";
import { toHex } from "../src/protocol/bytes.ts";
import { signAction } from "../src/protocol/calls.ts";
import { fromCallAction, toCallAction, type CallState } from "../src/protocol/conference_wire.ts";
import { randomBytes } from "../src/protocol/crypto.ts";
import type { ServerMessage } from "../src/protocol/wire.ts";
import { CallClient, CallRefused } from "../src/call/call.ts";
import type {
  CallView, LocalMedia, Peer, SignalKind, Topology, TopologyContext, TopologyFactory, TopologyName,
} from "../src/call/topology.ts";


interface Recorded {
  topology: TopologyName;
  peers: string[][];
  signals: { from: string; kind: SignalKind; attempt: number }[];
  refused: { member: string; reason: string }[];
  sending: { audio: boolean; camera: boolean; screen: boolean }[];
  closed: boolean;
}
const recorded: Recorded[] = [];

function recording(name: TopologyName): TopologyFactory {
  return (_ctx: TopologyContext): Topology => {
    const log: Recorded = { topology: name, peers: [], signals: [], refused: [], sending: [], closed: false };
    recorded.push(log);
    return {
      name,
      async setPeers(peers: ReadonlyMap<string, Peer>) {
        log.peers.push([...peers.keys()]);
      },
      async onSignal(peer: Peer, kind: SignalKind, _payload: Uint8Array, attempt: number) {
        log.signals.push({ from: peer.memberHex, kind, attempt });
      },
      async refuse(memberHex: string, reason: string) {
        log.refused.push({ member: memberHex, reason });
      },
      setSending(sending) {
        log.sending.push({ ...sending });
      },
      async setMedia(_media: LocalMedia) {},
      async close() {
        log.closed = true;
      },
    };
  };
}

const fakeTrack = (kind: string) => ({ kind, id: `${kind}-fake`, enabled: true, stop() {} }) as unknown as MediaStreamTrack;

/** The SpaceClient, with one more way in for events: inject(). */
function withInjection(client: SpaceClient): { ctx: SpaceContext; inject: (event: ServerMessage) => void } {
  const extra = new Set<(event: ServerMessage) => void>();
  const ctx = new Proxy(client, {
    get(target, prop, receiver) {
      if (prop === "onEvent") {
        return (listener: (event: ServerMessage) => void) => {
          extra.add(listener);
          const off = target.onEvent(listener);
          return () => {
            extra.delete(listener);
            off();
          };
        };
      }
      const value = Reflect.get(target, prop, receiver) as unknown;
      return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  }) as unknown as SpaceContext;
  return { ctx, inject: (event) => extra.forEach((l) => l(event)) };
}

const spaces = await Spaces.open({ store: new MemorySlotStore(), device: await generateDeviceKey() });
let space: SpaceClient | null = null;
let injector: ((event: ServerMessage) => void) | null = null;
let call: CallClient | null = null;
let lastState: CallState | null = null;

function need<T>(value: T | null, what: string): T {
  if (value === null) throw new Error(`no ${what}`);
  return value;
}

async function until<T>(check: () => Promise<T | undefined> | T | undefined, timeoutMs = 30_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > end) throw new Error(`timed out waiting; view: ${JSON.stringify(plain(call?.view()))}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function plain(view: CallView | undefined): unknown {
  if (view === undefined) return null;
  const person = (p: CallView["participants"][number]) => ({
    member: p.memberHex, name: p.name, fingerprint: p.fingerprint, me: p.me, seat: p.seat, muted: p.muted, hand: p.hand,
    link: p.link,
  });
  return { ...view, participants: view.participants.map(person), lobby: view.lobby.map(person) };
}

function memberByName(name: string): string {
  const view = need(call, "call").view();
  const found = [...view.participants, ...view.lobby].find((p) => p.name === name);
  if (found === undefined) throw new Error(`${name} is not in the call or its lobby: ${JSON.stringify(plain(view))}`);
  return found.memberHex;
}

async function roomIdByName(name: string): Promise<string> {
  const c = need(space, "space");
  await c.sync();
  for (const [id, room] of c.roster().rooms) if ((await roomName(c, room.spec)) === name) return id;
  throw new Error(`no room ${name}`);
}

const handlers: { [op: string]: (c: Command) => Promise<unknown> } = {
  join: async (c) => {
    const result = await spaces.join(c["link"] as string, c["name"] as string);
    space = result.client;
    return { space_id: result.spaceId };
  },
  call: async (c) => {
    const client = need(space, "space");
    const roomId = await roomIdByName(c["room"] as string);
    const wrapped = withInjection(client);
    injector = wrapped.inject;
    client.onEvent((event) => {
      if ((event.type === "call_update" || event.type === "call_joined") && event.state.room_id === roomId) lastState = event.state;
    });
    call = new CallClient(wrapped.ctx, roomId, {
      topologies: new Map([["mesh", recording("mesh")], ["sfu", recording("sfu")]]),
      media: { audio: fakeTrack("audio"), camera: fakeTrack("video"), screen: null },
    });
    await call.join();
    return plain(call.view());
  },
  view: async () => plain(need(call, "call").view()),
  wait_phase: async (c) => until(() => (call?.view().phase === c["phase"] ? plain(call!.view()) : undefined)),
  wait_code: async (c) => until(() => {
    const v = need(call, "call").view();
    // `not`: a code to wait past (the one before a rekey: the view may show it a moment longer).
    const stale = (c["not"] as string | undefined) ?? null;
    return v.code !== null && v.code !== stale && v.participants.length === (c["people"] as number) ? plain(v) : undefined;
  }),
  wait_lobby: async (c) => until(() => (need(call, "call").view().lobby.some((p) => p.name === c["name"]) ? plain(call!.view()) : undefined)),
  wait_muted: async (c) => until(() => {
    const me = need(call, "call").view().participants.find((p) => p.me);
    return me !== undefined && me.muted === (c["muted"] ?? true) ? plain(call!.view()) : undefined;
  }),
  wait_participant: async (c) => until(() => {
    const p = need(call, "call").view().participants.find((x) => x.name === c["name"]);
    return p !== undefined && (c["muted"] === undefined || p.muted === c["muted"]) ? plain(call!.view()) : undefined;
  }),
  intent: async (c) => {
    const cc = need(call, "call");
    const name = c["name"] as string;
    const who = c["member"] === undefined ? null : memberByName(c["member"] as string);
    switch (name) {
      case "admit": return cc.admit(who!);
      case "deny": return cc.deny(who!);
      case "mute": return cc.mute(who!);
      case "kick": return cc.kick(who!, c["ban"] === true);
      case "set_muted": return cc.setMuted(c["muted"] as boolean);
      case "hand": return cc.setHand(c["up"] as boolean);
      case "lock": return cc.lock(c["locked"] as boolean);
      case "leave": return cc.leave();
      default: throw new Error(`unknown intent ${name}`);
    }
  },
  /** A CallUpdate as a lying server could send it: Bob's seat muted by an "Alice" whose
   * signature is not hers (signed with our own seed). */
  inject_forged_mute: async (c) => {
    const cc = need(call, "call");
    const state = need(lastState, "call state");
    const client = need(space, "space");
    const actor = memberByName(c["actor"] as string);
    const head = client.roster().head;
    const forged = await signAction({
      spaceId: client.spaceId, roomId: state.room_id, callId: state.call_id, actor: Uint8Array.from(Buffer.from(actor, "hex")),
      action: "mute", target: client.me.memberKey, issuedAt: Date.now(), nonce: randomBytes(16), headSeq: head.seq,
      headHash: head.hash, joinRef: new Uint8Array(0),
    }, client.me.signingSeed);
    const participants = state.participants.map((p) => (toHex(p.member) === toHex(client.me.memberKey) ? { ...p, mute: fromCallAction(forged) } : p));
    const before = cc.counters.rejectedActions;
    need(injector, "injector")({ type: "call_update", state: { ...state, version: state.version, participants }, action: fromCallAction(forged) });
    await until(() => (cc.counters.rejectedActions > before ? true : undefined));
    void toCallAction;
    return { rejected: cc.counters.rejectedActions - before, view: plain(cc.view()), notes: cc.notes.slice(-3) };
  },
  /** Close our WebSocket as a network drop would (the session reconnects by itself). */
  drop_connection: async () => {
    const session = (need(space, "space") as unknown as { session: { conn: { ws: WebSocket } } }).session;
    session.conn.ws.close();
    return null;
  },
  wait_reason: async (c) => until(() => (need(call, "call").view().reason === c["reason"] ? plain(call!.view()) : undefined)),
  recorded: async () => recorded,
  stats: async () => {
    const cc = need(call, "call");
    return { counters: cc.counters, key_log: cc.keyLog, codes: cc.codes, notes: cc.notes, topologies: cc.topologiesUsed };
  },
};

await serveLines(handlers, (err) => (err instanceof CallRefused ? { error: err.message, kind: "refused", name: err.name } : undefined));
await (call as CallClient | null)?.leave().catch(() => undefined);
await spaces.closeAll();
process.exit(0);
