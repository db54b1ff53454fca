/**
 * The call client in the browser (PROTOCOL.md §13–§15; reference: client/call.py CallClient).
 *
 * It joins a conference room with a signed "join", follows the call's state as the server
 * pushes it, and trusts nothing it cannot check:
 * - who is in the call, muted, promoted, has a hand up, was admitted from the lobby: derived
 *   from the signed actions in each state, re-verified against our verified roster
 *   (conference_rules.ts seatFlags); lobby and stage come from the room's signed record;
 *   someone entering after us must do so with a fresh action whose nonce no other action used;
 * - a kick, denial or ban we verified is honoured whatever the server says next;
 * - why our part in the call ended: believed only with a signed action that says so;
 * - signals (SDP, media keys) are opened and verified end to end; a pair whose signalling fails
 *   is refused (topology.refuse) and never falls back to anything unverified;
 * - media keys (keys.ts) go only to participants we consider admitted and live for our join
 *   (liveness: someone already in the call when we were let in gets our key only once they sent
 *   us a signal naming our join); they give the verification code.
 * Media goes through a `Topology` (mesh.ts / sfu.ts, registered in TOPOLOGIES or passed in the
 * options), whichever the server's state names; a switch is make-before-break.
 *
 * The UI reads `view()` snapshots (subscribe) and calls the `CallIntents`; it never sees keys.
 */
import { ServerError, type SpaceContext, type WithoutId } from "../client/context.ts";
import { HeadCheck } from "../client/forks.ts";
import { memberName } from "../client/chat.ts";
import { cleanName, memberLabels } from "../client/names.ts";
import { NO_PROFILE, UNREADABLE_PROFILE } from "../client/space.ts";
import { roomName } from "../client/rooms.ts";
import { equal, fromHex, toHex } from "../protocol/bytes.ts";
import {
  CallError as ProtocolCallError, type CallAction, type CallActionKind, SEAT_ACTIONS, decodeMediaKeyMessage,
  encodeMediaKeyMessage, openSignal, pairLink, sealSignal, signAction, isOfferer,
} from "../protocol/calls.ts";
import {
  FRESHNESS_MS, RESTRICTIONS, Restrictions, SELF_STATE, type Seat as SeatActions, type SeatFlags, TARGETED, actionProblem,
  endProblem, freshnessProblem, isHost, isLocked, seatFlags, seatOf,
} from "../protocol/conference_rules.ts";
import {
  type CallEnded, type CallJoined, type CallInfo, type CallSignal, type CallState, type SfuAnswer, type SlotView, fromCallAction,
  toCallAction,
} from "../protocol/conference_wire.ts";
import { randomBytes } from "../protocol/crypto.ts";
import { fingerprint } from "../protocol/identities.ts";
import type { Role, Room } from "../protocol/recordtypes.ts";
import type { ClientMessage, IceServers, ServerMessage } from "../protocol/wire.ts";
import { CallKeys } from "./keys.ts";
import type {
  CallIntents, CallPhase, CallView, LinkState, LocalMedia, MediaSink, ParticipantView, Peer, Seat, SfuChannel,
  SignalKind, Signaller, Topology, TopologyFactory, TopologyName, TrackKind,
} from "./topology.ts";

export const JOIN_RETRIES = 3;
/** Older actions are stale for any clock within the skew. */
export const FORGET_MS = 2 * FRESHNESS_MS;
export const PENDING_SIGNAL_MS = 5_000;
export const PENDING_SIGNALS_MAX = 64;
/** Held back per sender: one participant not yet admitted cannot crowd out another's early signals. */
export const PENDING_PER_SENDER = 8;
/** The longest a topology being replaced keeps running. */
export const RETIRE_MS = 8_000;
export const SFU_OFFER_TIMEOUT_MS = 15_000;
export const LEAVE_TIMEOUT_MS = 2_000;
/** The longest our media waits for our new key to reach the server for its recipients (a join:
 * we keep the key everyone holds; a leave: we send nothing) before using it anyway (§15.5). */
export const KEY_SWITCH_MS = 3_000;
/** How many refused actions' verdicts are kept (a cache; a refused one seen again is checked again). */
export const REFUSED_KEPT = 1_000;
/** How long the call waits for the space client's verdict on a removal the server claims. */
export const SPACE_VERDICT_MS = 3_000;
/** The longest a knock may have waited in the lobby when a host first sees it (someone waiting
 * longer before any host arrives has to join again). */
export const KNOCK_MAX_AGE_MS = 30 * 60_000;
/** The notes, codes and key-log entries kept (the latest): a participant flooding hands or
 * media keys must not grow the page's memory with the call's length. */
export const LOG_KEPT = 1_000;

function keepLast<T>(list: T[], item: T): void {
  list.push(item);
  if (list.length > LOG_KEPT) list.splice(0, list.length - LOG_KEPT);
}
/** TURN credentials are asked for again when this share of their lifetime is left… */
export const ICE_REFRESH_MARGIN = 0.1;
/** …and never more often than this (client/ice.py). */
export const ICE_MIN_REFRESH_MS = 60_000;
const ICE_CHECK_MS = 15_000;

/** The topology factories by name (client/topology.py TOPOLOGIES); mesh.ts / sfu.ts register. */
export const TOPOLOGIES = new Map<TopologyName, TopologyFactory>();
export function registerTopology(name: TopologyName, factory: TopologyFactory): void {
  TOPOLOGIES.set(name, factory);
}

/** Plain words for every way a call can refuse or end us (the issue's list). */
export const REASONS = {
  banned: "You are banned from this call.",
  locked: "The call is locked: a host has to unlock it before you can join.",
  full: "The call is full.",
  restarting: "The call keeps restarting; try again.",
  noRelay: "Relay-only needs a TURN server, and this server offers none.",
  noTopology: (name: string) => `This app cannot take part in a ${name} call yet.`,
  keyIds: "This call changed keys too often; join it again.",
  connectionLost: "Connection to the server lost. Reconnecting…",
  removedFromSpace: "You were removed from the space.",
  bannedFromSpace: "You were banned from the space.",
  leftSpace: "You left the space.",
  connectionClosed: "The connection to the server was closed.",
  noRoom: "This room is not a conference room of the space.",
  unconfirmedRemoval: "The server closed this device's connection, saying you were removed from the space; the space's signed history does not show that.",
} as const;

export interface CallOptions {
  /** Topology factories by name; default: the TOPOLOGIES registry. */
  readonly topologies?: ReadonlyMap<TopologyName, TopologyFactory>;
  /** Our sources at the start (null tracks: none). */
  readonly media?: LocalMedia;
  /** Join with our microphone off (a local choice, not a signed mute). */
  readonly startMuted?: boolean;
  readonly cameraOff?: boolean;
  /** Every connection through the TURN server (iceTransportPolicy "relay"). */
  readonly relayOnly?: boolean;
  /** Display names (default: the context's `profile` if it has one, else the fingerprint). */
  readonly nameOf?: (memberKey: Uint8Array) => Promise<string>;
  /** ms since the epoch (tests). */
  readonly now?: () => number;
  /** Each line the CLI would print (notes); for logs and tests. */
  readonly onNote?: (text: string) => void;
}

/** One media-key message we accepted (the page's key log; never the key itself). */
export interface KeyLogEntry {
  readonly from: string;
  readonly epoch: number;
  readonly at: number;
  readonly news: boolean;
}

export interface CallCounters {
  rejectedActions: number;
  rejectedSignals: number;
  /** Relayed signals that arrived after our part in the call ended (should stay 0). */
  signalsAfterEnd: number;
  /** Media-key messages accepted in all (the key log keeps only the latest LOG_KEPT). */
  keyMessages: number;
  /** Lost media links made again, per member hex ("" for the SFU link). */
  reconnects: Record<string, number>;
}

interface Running {
  topology: Topology;
  feed: Feed;
  peers: Set<string>;
  retireTimer: ReturnType<typeof setTimeout> | null;
}

/** The sink one topology delivers to (make-before-break: see client/call.py _Feed). */
class Feed implements MediaSink {
  readonly delivered = new Set<string>();
  constructor(private readonly client: CallClient) {}
  private current(): boolean {
    return this.client.currentFeed() === this;
  }
  onTrack(memberHex: string, kind: TrackKind, track: MediaStreamTrack | null): void {
    if (track !== null) this.delivered.add(memberHex);
    const current = this.client.currentFeed();
    if (!this.current() && current !== null && current.delivered.has(memberHex)) return; // superseded
    this.client.onTrack(memberHex, kind, track);
    if (this.current()) this.client.checkRetiring();
  }
  onLink(memberHex: string, state: LinkState, detail?: string): void {
    if (this.current()) this.client.onLink(memberHex, state, detail ?? "");
  }
  onSendKey(epoch: number): void {
    this.client.onSendKey(epoch);
  }
  onReconnected(memberHex: string | null, outageMs: number): void {
    if (this.current()) this.client.onReconnected(memberHex, outageMs);
  }
}

type Listener = (view: CallView) => void;

const hexOf = toHex;

export class CallClient implements CallIntents, Signaller, SfuChannel {
  readonly me: Uint8Array;
  readonly meHex: string;
  keys: CallKeys;
  readonly counters: CallCounters = { rejectedActions: 0, rejectedSignals: 0, signalsAfterEnd: 0, keyMessages: 0, reconnects: {} };
  readonly keyLog: KeyLogEntry[] = [];
  readonly notes: string[] = [];
  /** Every verification code shown, in order. */
  readonly codes: string[] = [];
  /** Each topology used, in order. */
  readonly topologiesUsed: TopologyName[] = [];

  callId = "";
  private state: CallState | null = null;
  private seats = new Map<string, SeatActions>();
  private flags = new Map<string, SeatFlags>();
  private admitted = new Map<string, string>(); // member → join nonce (hex)
  private live = new Map<string, string>();
  /** Membership changes whose new key we may still hold back (switchSendKey). */
  private keySwitches = 0;
  private meAdmitted = false;
  private myJoinNonce: Uint8Array = new Uint8Array(0);
  private seated = false;
  private phase: CallPhase = "idle";
  private reason = "";
  private roomLabel = "";
  private code: string | null = null;
  private current: Running | null = null;
  private retiring: Running | null = null;
  /** Shared with every topology (updated in place when TURN credentials are renewed). */
  private readonly iceServers: RTCIceServer[] = [];
  private iceExpiresAt = 0; // s since the epoch, 0: never
  /** Relay-only: asked for by the options, or by the server (§5.6 relay_only), never undone. */
  private relayOnly = false;
  private iceFetchedAt = 0; // ms
  private iceAskedAt = 0; // ms
  private iceTimer: ReturnType<typeof setInterval> | null = null;
  private checked = new Map<string, string | null>();
  private rosterGeneration = 0;
  private readonly fresh = new Map<string, string | null>();
  private readonly nonces = new Map<string, string>();
  private readonly noted = new Set<string>();
  private readonly refusedSigs: string[] = [];
  private labels: { generation: number; map: Map<string, string> } | null = null;
  /** join sig (hex) of each lobby seat shown → when first shown (ms). */
  private readonly knocksSeen = new Map<string, number>();
  private readonly judged: [number, string, string][] = [];
  private baselineSeen = false;
  private readonly restrictions = new Restrictions();
  private readonly pinned = new Map<string, CallAction>();
  private readonly barredNoted = new Set<string>();
  private pending: [number, CallSignal][] = [];
  private readonly lobbySeen = new Set<string>();
  private readonly unverified = new Set<string>();
  private readonly tracks = new Map<string, Partial<Record<TrackKind, MediaStreamTrack>>>();
  private readonly links = new Map<string, LinkState>();
  private readonly names = new Map<string, string>();
  private readonly fingerprints = new Map<string, string>();
  private readonly peerCache = new Map<string, Peer>();
  private speaker: string | null = null;
  private media: LocalMedia;
  private localMuted: boolean;
  private hostMuted = false;
  /** What we last said (signed "mic-off"/"camera-off" or "-on") for our current join: field →
   * `${join nonce}/${off|on}`. A new join starts "on" on every screen (the server drops it). */
  private said = new Map<"mic" | "camera", string>();
  private cameraOn: boolean;
  private sending = { audio: false, camera: false, screen: false };
  private readonly listeners = new Set<Listener>();
  private readonly unlisten: (() => void)[] = [];
  private queue: Promise<void> = Promise.resolve();
  private readonly heads: HeadCheck;
  private readonly now: () => number;
  private readonly factories: ReadonlyMap<TopologyName, TopologyFactory>;
  private cachedView: CallView | null = null;

  constructor(readonly ctx: SpaceContext, readonly roomId: string, readonly options: CallOptions = {}) {
    this.me = ctx.me.memberKey;
    this.meHex = hexOf(this.me);
    this.keys = new CallKeys(this.me);
    this.now = options.now ?? Date.now;
    this.factories = options.topologies ?? TOPOLOGIES;
    this.media = options.media ?? { audio: null, camera: null, screen: null };
    this.localMuted = options.startMuted ?? false;
    this.cameraOn = !(options.cameraOff ?? false);
    this.heads = new HeadCheck(ctx, () => ctx.sync());
  }

  // ---- the view -------------------------------------------------------------------------

  view(): CallView {
    if (this.cachedView === null) this.cachedView = this.makeView();
    return this.cachedView;
  }

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    listener(this.view());
    return () => this.listeners.delete(listener);
  }

  /** Like subscribe, without the view (ui/call_core.ts CallSession). */
  onChange(listener: () => void): () => void {
    const wrapped: Listener = () => listener();
    this.listeners.add(wrapped);
    return () => this.listeners.delete(wrapped);
  }

  /** The CallIntents (this client implements them). */
  get intents(): CallIntents {
    return this;
  }

  private changed(): void {
    this.cachedView = null;
    if (this.listeners.size === 0) return;
    const view = this.view();
    for (const listener of this.listeners) listener(view);
  }

  private seatOf(memberHex: string, flags: SeatFlags | undefined, status: string): Seat {
    if (status === "lobby") return "lobby";
    if (flags === undefined) return "listener";
    return flags.host ? "host" : flags.speaker ? "speaker" : "listener";
  }

  /** The name a tile shows for someone (its fingerprint sits beside it). */
  private shownName(memberHex: string): string {
    return this.names.get(memberHex) ?? this.fingerprints.get(memberHex) ?? memberHex.slice(0, 8);
  }

  private participant(memberHex: string): ParticipantView {
    const seat = this.seats.get(memberHex);
    const flags = this.flags.get(memberHex);
    const me = memberHex === this.meHex;
    return {
      memberHex,
      name: me ? this.names.get(memberHex) ?? "You" : this.shownName(memberHex),
      fingerprint: this.fingerprints.get(memberHex) ?? "",
      me,
      seat: this.seatOf(memberHex, flags, seat?.status ?? "joined"),
      muted: me ? !this.sending.audio : (flags?.muted ?? false) || (flags?.micOff ?? false),
      mutedBy: flags?.muted && flags.mutedBy !== null ? this.shownName(hexOf(flags.mutedBy)) : null,
      cameraOff: me ? !this.sending.camera : this.tracks.get(memberHex)?.camera === undefined || (flags?.cameraOff ?? false),
      hand: flags?.handRaised ?? false,
      speaking: this.speaker === memberHex,
      link: me ? "connected" : this.links.get(memberHex) ?? "waiting",
      tracks: me ? this.ownTracks() : { ...(this.tracks.get(memberHex) ?? {}) },
    };
  }

  private ownTracks(): Partial<Record<TrackKind, MediaStreamTrack>> {
    const out: Partial<Record<TrackKind, MediaStreamTrack>> = {};
    if (this.media.camera !== null && this.cameraOn) out.camera = this.media.camera;
    if (this.media.screen !== null) out.screen = this.media.screen;
    return out;
  }

  private makeView(): CallView {
    const inCall = this.phase === "in-call";
    const participants: ParticipantView[] = [];
    if (inCall) participants.push(this.participant(this.meHex));
    for (const member of this.admitted.keys()) participants.push(this.participant(member));
    const lobby = [...this.seats.entries()].filter(([m, s]) => s.status === "lobby" && m !== this.meHex && this.knockProblem(s) === null)
      .map(([m]) => this.participant(m));
    const myRole = this.roles().get(this.meHex);
    const topology = this.current?.topology.name ?? null;
    return {
      phase: this.phase,
      reason: this.reason,
      roomName: this.roomLabel,
      topology: inCall ? topology : null,
      encrypted: inCall && topology !== null,
      code: inCall ? this.code : null,
      locked: this.state !== null && isLocked(this.state.lock === null ? null : toCallAction(this.state.lock), (a) => this.valid(a)),
      participants,
      lobby: isHost(myRole) ? lobby : [],
      mayModerate: isHost(myRole),
    };
  }

  // ---- helpers --------------------------------------------------------------------------

  private note(text: string): void {
    keepLast(this.notes, text);
    this.options.onNote?.(text);
  }

  private roles(): Map<string, Role> {
    return new Map([...this.ctx.roster().members].map(([k, m]) => [k, m.role]));
  }

  private room(): Room | null {
    return this.ctx.roster().rooms.get(this.roomId)?.spec ?? null;
  }

  label(memberHex: string): string {
    if (memberHex === this.meHex) return "you";
    const name = this.names.get(memberHex) ?? "someone";
    return `${name} (${(this.fingerprints.get(memberHex) ?? memberHex).slice(0, 8)})`;
  }

  private async learnName(memberHex: string): Promise<void> {
    if (this.fingerprints.has(memberHex)) return;
    const key = fromHex(memberHex);
    this.fingerprints.set(memberHex, await fingerprint(key));
    let name: string | undefined;
    try {
      // A display name is whatever its member typed: cleaned of invisible and bidi characters,
      // and with its fingerprint beside it when it looks like another member's (names.ts), so a
      // participant cannot pass for the host in a tile or the verification dialog.
      if (this.options.nameOf !== undefined) name = cleanName(await this.options.nameOf(key));
      else if (this.ctx.roster().members.has(memberHex)) name = await this.labelOf(memberHex);
    } catch {
      name = undefined;
    }
    if (name !== undefined && name !== "" && name !== "(no name)") this.names.set(memberHex, name);
  }

  /** The page's label of a current member (names.ts), computed once per roster for everyone. */
  private async labelOf(memberHex: string): Promise<string | undefined> {
    const withProfile = this.ctx as unknown as { profile?: (k: string) => Promise<{ display_name: string }> };
    if (typeof withProfile.profile !== "function") return memberName(this.ctx, memberHex);
    if (this.labels?.generation !== this.rosterGeneration) {
      const roster = this.ctx.roster();
      const names = new Map<string, string | null>();
      for (const id of roster.members.keys()) {
        const name = (await withProfile.profile(id)).display_name;
        names.set(id, name === NO_PROFILE || name === UNREADABLE_PROFILE ? null : name);
      }
      this.labels = { generation: this.rosterGeneration, map: await memberLabels(roster, names) };
    }
    return this.labels.map.get(memberHex);
  }

  private valid(action: CallAction): boolean {
    return this.checked.get(hexOf(action.sig)) === null;
  }

  private async problem(action: CallAction): Promise<string | null> {
    const sig = hexOf(action.sig);
    const known = this.checked.get(sig);
    if (known !== undefined) return known;
    const callId = RESTRICTIONS.has(action.action) ? null : this.callId;
    let problem = await actionProblem(action, this.roles(), { spaceId: this.ctx.spaceId, roomId: this.roomId, callId });
    // Signed on a roster head that is not on our chain: a forked history (syncs once if ahead).
    if (problem === null) problem = await this.heads.headProblem(action.headSeq, action.headHash);
    this.checked.set(sig, problem);
    if (problem !== null) {
      // Refusals are remembered only for a while: a server pushing endless unverifiable
      // actions must not grow this table with the call's length (valid ones age out in forgetOld).
      this.refusedSigs.push(sig);
      if (this.refusedSigs.length > REFUSED_KEPT) {
        for (const old of this.refusedSigs.splice(0, this.refusedSigs.length - REFUSED_KEPT)) {
          if (this.checked.get(old) !== null) this.checked.delete(old);
        }
      }
    }
    return problem;
  }

  /** Check every action (syncing as needed) so `valid` can answer synchronously. */
  private async checkAll(actions: readonly (CallAction | null)[]): Promise<void> {
    for (let round = 0; round < 3; round++) {
      const generation = this.rosterGeneration;
      for (const action of actions) if (action !== null) await this.problem(action);
      if (generation === this.rosterGeneration) return;
    }
  }

  private freshness(action: CallAction): string | null {
    const sig = hexOf(action.sig);
    if (!this.fresh.has(sig)) {
      this.forgetOld();
      if (!this.claimNonce(action)) {
        this.fresh.set(sig, "its nonce was already used (a replay)");
        this.judged.push([this.now(), sig, ""]);
      } else this.fresh.set(sig, freshnessProblem(action, this.now()));
    }
    return this.fresh.get(sig) ?? null;
  }

  private claimNonce(action: CallAction, keepUntil = 0): boolean {
    const nonce = hexOf(action.nonce);
    const sig = hexOf(action.sig);
    const first = this.nonces.get(nonce);
    if (first === undefined) {
      this.nonces.set(nonce, sig);
      const at = Math.min(Math.max(action.issuedAt, keepUntil), this.now() + FRESHNESS_MS);
      // keep `judged` ordered by time (a simple insertion: it is short-lived)
      let i = this.judged.length;
      while (i > 0 && this.judged[i - 1]![0] > at) i--;
      this.judged.splice(i, 0, [at, sig, nonce]);
    }
    return first === undefined || first === sig;
  }

  private forgetOld(): void {
    const horizon = this.now() - FORGET_MS;
    while (this.judged.length > 0 && this.judged[0]![0] < horizon) {
      const [, sig, nonce] = this.judged.shift()!;
      this.fresh.delete(sig);
      this.checked.delete(sig);
      this.noted.delete(sig);
      if (this.nonces.get(nonce) === sig) this.nonces.delete(nonce);
    }
  }

  private async eventProblem(action: CallAction): Promise<string | null> {
    return (await this.problem(action)) ?? this.freshness(action);
  }

  private async learn(action: CallAction): Promise<void> {
    if (RESTRICTIONS.has(action.action) && (await this.problem(action)) === null) this.restrictions.add(action, this.now());
  }

  private async sign(name: CallActionKind, target: Uint8Array = new Uint8Array(0), joinRef: Uint8Array = new Uint8Array(0)): Promise<CallAction> {
    const head = this.ctx.roster().head;
    return signAction({
      spaceId: this.ctx.spaceId, roomId: this.roomId, callId: this.callId, actor: this.me, action: name, target,
      issuedAt: this.now(), nonce: randomBytes(16), headSeq: head.seq, headHash: head.hash, joinRef,
    }, this.ctx.me.signingSeed);
  }

  private request<T extends ServerMessage>(message: WithoutId<ClientMessage>): Promise<T> {
    return this.ctx.request<T>(message);
  }

  /** Run `work` after everything queued before it (events and intents never interleave). */
  private serial<T>(work: () => Promise<T>): Promise<T> {
    const run = this.queue.then(work);
    this.queue = run.then(() => undefined, () => undefined);
    return run;
  }

  // ---- joining --------------------------------------------------------------------------

  /** Join the call (or its lobby). Resolves once we are seated or refused (see view()). */
  async join(): Promise<void> {
    if (this.phase !== "idle") return;
    this.phase = "joining";
    this.changed();
    const spec = this.room();
    if (spec === null || spec.kind !== "conference") return this.finish("failed", REASONS.noRoom);
    this.roomLabel = await roomName(this.ctx, spec).catch(() => "");
    await this.learnName(this.meHex);
    this.unlisten.push(
      this.ctx.onEvent((event) => void this.serial(() => this.handle(event)).catch((err) => this.crash(err))),
      this.ctx.onRoster(() => {
        this.rosterGeneration++;
        this.checked.clear(); // roles may have changed
      }),
      this.ctx.onConnectionState((state) => this.onConnection(state)),
      this.ctx.onReconnect(() => void this.serial(() => this.rejoin()).catch((err) => this.crash(err))),
    );
    try {
      await this.serial(async () => {
        await this.fetchIceServers();
        for (let attempt = 0; attempt < JOIN_RETRIES; attempt++) {
          const info = await this.request<CallInfo>({ type: "get_call", room_id: this.roomId });
          this.callId = info.state.call_id;
          const action = await this.sign("join", this.me);
          this.myJoinNonce = action.nonce;
          this.peerCache.clear();
          let joined: CallJoined;
          try {
            joined = await this.request<CallJoined>({ type: "join_call", room_id: this.roomId, join: fromCallAction(action) });
          } catch (err) {
            if (err instanceof ServerError) {
              if (err.code === "stale_call") continue;
              if (err.code === "banned") return this.finish("failed", REASONS.banned);
              if (err.code === "locked") return this.finish("failed", REASONS.locked);
              if (err.code === "call_full") return this.finish("failed", REASONS.full);
            }
            throw err;
          }
          this.seated = true;
          this.iceTimer = setInterval(() => void this.serial(() => this.renewIceServers()), ICE_CHECK_MS);
          (this.iceTimer as { unref?: () => void }).unref?.(); // (Node: never keeps a process alive)
          this.note(`joined call ${this.callId} in '${this.roomLabel}'`);
          await this.applyState(joined.state, null);
          return;
        }
        return this.finish("failed", REASONS.restarting);
      });
    } catch (err) {
      await this.crash(err);
    }
  }

  private async fetchIceServers(): Promise<void> {
    this.iceAskedAt = this.now();
    const answer = await this.request<IceServers>({ type: "get_ice_servers" });
    this.iceServers.splice(0, this.iceServers.length, ...answer.servers.map((s) => ({
      urls: s.urls, ...(s.username !== "" ? { username: s.username } : {}), ...(s.credential !== "" ? { credential: s.credential } : {}),
    })));
    this.iceExpiresAt = answer.expires_at;
    this.iceFetchedAt = this.now();
    const hasTurn = answer.servers.some((s) => s.urls.some((u) => u.startsWith("turn:") || u.startsWith("turns:")));
    this.relayOnly = this.relayOnly || this.options.relayOnly === true || answer.relay_only;
    if (this.relayOnly && !hasTurn) throw new CallRefused(REASONS.noRelay);
  }

  /** Whether the TURN credentials are near their end (client/ice.py IceConfig.stale). */
  private iceStale(): boolean {
    const now = this.now();
    if (this.iceExpiresAt === 0 || now - Math.max(this.iceFetchedAt, this.iceAskedAt) < ICE_MIN_REFRESH_MS) return false;
    const left = this.iceExpiresAt * 1000 - now;
    return left <= (this.iceExpiresAt * 1000 - this.iceFetchedAt) * ICE_REFRESH_MARGIN;
  }

  /** New TURN credentials for connections made from now on; the old ones stay if the server
   * cannot give new ones (relays in use keep theirs anyway). */
  private async renewIceServers(): Promise<void> {
    if (this.ended() || !this.iceStale()) return;
    try {
      await this.fetchIceServers();
    } catch (err) {
      this.note(`could not renew the TURN credentials: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  private async crash(err: unknown): Promise<void> {
    if (this.phase === "ended" || this.phase === "removed" || this.phase === "failed") return;
    const message = err instanceof CallRefused ? err.message : `The call failed: ${err instanceof Error ? err.message : String(err)}`;
    await this.finish("failed", message);
  }

  private onConnection(state: string): void {
    if (this.phase !== "in-call" && this.phase !== "lobby") return;
    if (state === "reconnecting") {
      this.reason = REASONS.connectionLost;
      this.changed();
    } else if (state === "online" && this.reason === REASONS.connectionLost) {
      this.reason = "";
      this.changed();
    } else if (state === "closed") {
      // For good: removed from the space (the space client says so), or the space was closed.
      this.seated = false;
      void this.serial(() => this.spaceEnd(false));
    }
  }

  /**
   * Our session is over for good: why, as the space client judged it from the verified chain
   * (client/space.ts: "unconfirmed" when the server's word is all there is). `claimed`: the
   * server said we were removed or banned; we wait a moment for that judgement, never take it
   * as said.
   */
  private async spaceEnd(claimed: boolean): Promise<void> {
    if (this.ended()) return;
    type Verdict = { how: string } | null;
    const space = this.ctx as unknown as { removed?: () => Verdict; onRemoved?: (l: (r: { how: string }) => void) => () => void };
    let removed: Verdict = space.removed?.() ?? null;
    if (removed === null && claimed && typeof space.onRemoved === "function") {
      const listen = space.onRemoved.bind(space);
      removed = await new Promise<Verdict>((resolve) => {
        let off: () => void = () => undefined;
        const timer = setTimeout(() => {
          off();
          resolve(space.removed?.() ?? null);
        }, SPACE_VERDICT_MS);
        off = listen((r) => {
          clearTimeout(timer);
          off();
          resolve(r);
        });
      });
    }
    if (removed === null || removed.how === "unconfirmed") {
      return this.finish("failed", claimed || removed !== null ? REASONS.unconfirmedRemoval : REASONS.connectionClosed);
    }
    const reason = removed.how === "banned" ? REASONS.bannedFromSpace : removed.how === "left" ? REASONS.leftSpace : REASONS.removedFromSpace;
    return this.finish("removed", reason);
  }

  /** After a reconnection: the server dropped our seat with the old connection (conference
   * routes: a session that closes leaves the call), so we join again — a new join, so everyone
   * rekeys; in a lobby room a host admits us again. */
  private async rejoin(): Promise<void> {
    if (this.phase !== "in-call" && this.phase !== "lobby") return;
    await this.closeTopologies();
    this.resetCallState();
    const info = await this.request<CallInfo>({ type: "get_call", room_id: this.roomId });
    this.callId = info.state.call_id;
    const action = await this.sign("join", this.me);
    this.myJoinNonce = action.nonce;
    let joined: CallJoined;
    try {
      joined = await this.request<CallJoined>({ type: "join_call", room_id: this.roomId, join: fromCallAction(action) });
    } catch (err) {
      if (err instanceof ServerError && err.code === "banned") return this.finish("failed", REASONS.banned);
      if (err instanceof ServerError && err.code === "locked") return this.finish("failed", REASONS.locked);
      if (err instanceof ServerError && err.code === "call_full") return this.finish("failed", REASONS.full);
      throw err;
    }
    this.seated = true;
    this.reason = "";
    this.note("joined the call again after the connection came back");
    await this.applyState(joined.state, null);
  }

  private resetCallState(): void {
    this.state = null;
    this.seats.clear();
    this.flags.clear();
    this.admitted.clear();
    this.live.clear();
    this.meAdmitted = false;
    this.baselineSeen = false;
    this.peerCache.clear();
    this.tracks.clear();
    this.links.clear();
    this.code = null;
    this.keys = new CallKeys(this.me);
  }

  // ---- events ---------------------------------------------------------------------------

  private ours(roomId: string, callId: string): boolean {
    return roomId === this.roomId && callId === this.callId;
  }

  private ended(): boolean {
    return this.phase === "ended" || this.phase === "removed" || this.phase === "failed";
  }

  /** One pushed event (serialized). */
  async handle(event: ServerMessage): Promise<void> {
    if (this.ended()) {
      if (event.type === "call_signal" && this.ours(event.room_id, event.call_id)) this.counters.signalsAfterEnd++;
      return;
    }
    switch (event.type) {
      case "call_update": {
        const action = event.action === null ? null : toCallAction(event.action);
        if (this.ours(event.state.room_id, event.state.call_id) && this.seated) {
          await this.applyState(event.state, action);
          if (this.keys.exhausted) return this.finish("failed", REASONS.keyIds);
          return this.removedAnyway();
        }
        if (action !== null && event.state.room_id === this.roomId) await this.learn(action);
        return;
      }
      case "call_signal":
        if (this.ours(event.room_id, event.call_id)) await this.onSignal(event);
        return;
      case "call_ended":
        if (this.ours(event.room_id, event.call_id)) await this.onEnded(event);
        return;
      case "call_speaker":
        if (this.ours(event.room_id, event.call_id)) {
          const member = hexOf(event.member);
          this.speaker = this.admitted.has(member) ? member : null;
          this.changed();
        }
        return;
      case "sfu_reconnect":
        if (this.ours(event.room_id, event.call_id) && this.current?.topology.name === "sfu") {
          const topology = this.current.topology as Topology & { reconnect?: (reason: string) => Promise<void> };
          this.note(`reconnecting to the SFU: ${event.reason}`);
          await topology.reconnect?.(event.reason);
        }
        return;
      case "record_added":
        await this.ctx.sync();
        this.checked.clear();
        if (this.state !== null && this.seated) await this.applyState(this.state, null);
        return;
      case "session_closed":
        this.seated = false;
        // The server's word is no removal: the space client checks it against the chain.
        if (event.reason === "removed" || event.reason === "banned") return this.spaceEnd(true);
        return;
      default:
        return;
    }
  }

  private async onEnded(event: CallEnded): Promise<void> {
    const action = event.action === null ? null : toCallAction(event.action);
    this.seated = false;
    let problem = endProblem(event.reason, action, this.me, this.myJoinNonce);
    if (problem === "" && action !== null) {
      const invalid = await this.eventProblem(action);
      if (invalid !== null) problem = `with a signed '${action.action}' that is invalid: ${invalid}`;
    }
    if (event.reason === "replaced" && problem === "") {
      return this.finish("ended", "You joined this call from another window or device.");
    }
    if (problem !== "" || action === null) {
      this.counters.rejectedActions++;
      this.note(`the server dropped you from the call (it says '${event.reason}') ${problem}; nothing a host signed shows that`);
      return this.finish("failed", "The server dropped you from the call, without any host's signed say-so.");
    }
    const actor = hexOf(action.actor);
    await this.learnName(actor);
    const who = this.names.get(actor) ?? "A host";
    if (event.reason === "removed") return this.finish("removed", `${who} removed you from the call.`);
    if (event.reason === "banned") return this.finish("removed", `${who} banned you from this call.`);
    if (event.reason === "denied") return this.finish("removed", `${who} did not let you in.`);
    return this.finish("ended", `${who} ended the call for everyone.`);
  }

  /** A host removed, banned or turned us away with a signed action the server told us about
   * but did not carry out: we go, as the host meant. */
  private async removedAnyway(): Promise<void> {
    if (!this.seats.has(this.meHex)) return;
    const barring = this.restrictions.barring(this.meHex, this.myJoinNonce);
    if (barring === null) return;
    const actor = hexOf(barring.actor);
    await this.learnName(actor);
    const who = this.names.get(actor) ?? "A host";
    const did = barring.action === "deny" ? "did not let you in" : barring.action === "ban" ? "banned you from this call" : "removed you from the call";
    await this.finish("removed", `${who} ${did}.`);
  }

  private async finish(phase: CallPhase, reason: string): Promise<void> {
    if (this.ended()) return;
    this.phase = phase;
    this.reason = reason;
    this.note(reason);
    this.changed();
    for (const off of this.unlisten.splice(0)) off();
    if (this.iceTimer !== null) clearInterval(this.iceTimer);
    this.iceTimer = null;
    await this.closeTopologies();
    if (this.seated) {
      this.seated = false;
      await Promise.race([
        this.request({ type: "leave_call", room_id: this.roomId }).catch(() => undefined),
        new Promise((r) => setTimeout(r, LEAVE_TIMEOUT_MS)),
      ]);
    }
    // Keep listening for relayed signals after the end (counted, never used).
    this.unlisten.push(this.ctx.onEvent((event) => {
      if (event.type === "call_signal" && this.ours(event.room_id, event.call_id)) this.counters.signalsAfterEnd++;
    }));
    this.changed();
  }

  // ---- state ----------------------------------------------------------------------------

  private pin(seat: SeatActions): SeatActions {
    let out = seat;
    for (const field of ["mute", "stage", "mic", "camera"] as const) {
      const key = `${hexOf(seat.member)}/${hexOf(seat.join.nonce)}/${field}`;
      const shown = seat[field] ?? null;
      let pinned = this.pinned.get(key);
      const newer = shown !== null && (pinned === undefined || shown.issuedAt >= pinned.issuedAt);
      if (newer && shown !== null && this.about(shown, seat, field)) {
        this.pinned.set(key, shown);
        pinned = shown;
      }
      if (pinned !== undefined && pinned !== shown) out = { ...out, [field]: pinned };
    }
    return out;
  }

  private about(action: CallAction, seat: SeatActions, field: "mute" | "stage" | "mic" | "camera"): boolean {
    if (field === "mute" && action.action === "mute-all") return action.target.length === 0 && this.valid(action);
    if (field === "mic" || field === "camera") { // the member's own word, about itself
      return (action.action === `${field}-off` || action.action === `${field}-on`) && equal(action.actor, seat.member)
        && equal(action.target, seat.member) && this.valid(action);
    }
    const names: CallActionKind[] = field === "mute" ? ["mute", "unmute"] : ["promote", "demote"];
    return names.includes(action.action) && equal(action.target, seat.member)
      && (field === "mute" || equal(action.joinRef, seat.join.nonce)) && this.valid(action);
  }

  /**
   * Why a lobby seat is no knock a host may admit, or null: its join must be the member's own,
   * for this call, verified, and fresh when we first saw it — else a server could show an old
   * join of someone who is not knocking (a re-used call id) and have a host's fresh admission
   * seat a ghost of them that everyone lets in.
   */
  private knockProblem(seat: SeatActions): string | null {
    const join = seat.join;
    if (join.action !== "join" || !equal(join.actor, seat.member) || join.callId !== this.callId || !this.valid(join)) {
      return "their 'join' does not verify";
    }
    const seen = this.knocksSeen.get(hexOf(join.sig)) ?? this.now();
    if (join.issuedAt > seen + FRESHNESS_MS) return "their 'join' is dated in the future";
    if (join.issuedAt < seen - KNOCK_MAX_AGE_MS) {
      return `their 'join' is ${Math.floor((seen - join.issuedAt) / 60_000)} min old when first shown (an old join, not a knock)`;
    }
    return null;
  }

  private entryProblem(seat: SeatActions): string | null {
    if (!this.claimNonce(seat.join, this.now() + FRESHNESS_MS)) {
      return "their 'join' was refused: its nonce was already used (a replay)";
    }
    const member = hexOf(seat.member);
    if (!this.baselineSeen || this.admitted.get(member) === hexOf(seat.join.nonce)) return null;
    const lobby = (this.room()?.lobby ?? false) && !(this.flags.get(member)?.host ?? false);
    const entry = lobby && seat.admission !== null ? seat.admission : seat.join;
    const problem = this.freshness(entry);
    return problem !== null ? `their '${entry.action}' was refused: ${problem}` : null;
  }

  private barred(seat: SeatActions): boolean {
    const barring = this.restrictions.barring(hexOf(seat.member), seat.join.nonce);
    if (barring === null) return false;
    const sig = hexOf(barring.sig);
    if (!this.barredNoted.has(sig)) {
      this.barredNoted.add(sig);
      this.note(`the server still lists ${this.label(hexOf(seat.member))}, whom ${this.label(hexOf(barring.actor))} ${barring.action === "kick" ? "removed" : barring.action === "deny" ? "turned away" : "banned"} (signed): ignoring them, no keys for them`);
    }
    return true;
  }

  private async applyState(state: CallState, action: CallAction | null): Promise<void> {
    const roster = this.ctx.roster();
    if (state.participants.some((p) => !roster.members.has(hexOf(p.member)))) {
      await this.ctx.sync(); // someone joined the space since we last looked
      this.checked.clear();
    }
    const rawSeats = state.participants.map(seatOf);
    const lock = state.lock === null ? null : toCallAction(state.lock);
    const bans = state.bans.map(toCallAction);
    const all: (CallAction | null)[] = [action, lock, ...bans, ...[...this.pinned.values()]];
    for (const s of rawSeats) all.push(s.join, s.admission, s.mute, s.hand, s.stage, s.mic ?? null, s.camera ?? null);
    await this.checkAll(all);
    for (const p of rawSeats) await this.learnName(hexOf(p.member));
    this.state = state;
    this.seats = new Map(rawSeats.map((s) => [hexOf(s.member), this.pin(s)]));
    const knocks = new Set(rawSeats.filter((s) => s.status === "lobby").map((s) => hexOf(s.join.sig)));
    for (const sig of knocks) if (!this.knocksSeen.has(sig)) this.knocksSeen.set(sig, this.now());
    for (const sig of [...this.knocksSeen.keys()]) if (!knocks.has(sig)) this.knocksSeen.delete(sig);
    const roles = this.roles();
    const room = this.room() ?? { lobby: false, stage: false };
    this.flags = new Map([...this.seats].map(([m, s]) => [m, seatFlags(s, room, this.callId, roles, (a) => this.valid(a))]));
    for (const ban of bans) await this.learn(ban);
    if (action !== null) await this.noteAction(action);
    const mine = this.seats.get(this.meHex);
    if (mine === undefined) {
      this.changed();
      return;
    }
    if (mine.status === "lobby") {
      if (!this.lobbySeen.has(this.meHex)) {
        this.lobbySeen.add(this.meHex);
        this.note("waiting in the lobby until a host admits you (no media, no keys yet)");
      }
      this.phase = "lobby";
      this.changed();
      return;
    }
    this.noteLobby(roles);
    if (!(this.flags.get(this.meHex)?.admitted ?? false)) {
      // The server seats us, but nothing signed admits us: wait (no keys, no media).
      this.phase = "lobby";
      this.changed();
      return;
    }
    await this.ensureTopology(state);
    const peers = new Map<string, SeatActions>();
    const barred = new Set<string>();
    for (const [m, seat] of this.seats) {
      if (m === this.meHex) continue;
      if (this.barred(seat)) {
        barred.add(m);
        continue;
      }
      if (seat.status === "joined" && (this.flags.get(m)?.admitted ?? false) && this.entryProblem(seat) === null) peers.set(m, seat);
    }
    for (const [m, seat] of this.seats) {
      const unverifiedSeat = m !== this.meHex && seat.status === "joined" && !peers.has(m) && !barred.has(m);
      const nonce = hexOf(seat.join.nonce);
      if (unverifiedSeat && !this.unverified.has(nonce)) {
        this.unverified.add(nonce);
        const why = this.flags.get(m)?.admitted ? this.entryProblem(seat) : null;
        this.note(`the server lists ${this.label(m)} in the call, but their join or admission does not verify${why ? ` (${why})` : ""}: not connecting to them, no keys for them`);
      }
    }
    const current = new Map([...peers].map(([m, s]) => [m, hexOf(s.join.nonce)]));
    const joined = [...current.keys()].filter((m) => this.admitted.get(m) !== current.get(m));
    const left = [...this.admitted.keys()].filter((m) => current.get(m) !== this.admitted.get(m));
    const first = !this.meAdmitted;
    if (first) {
      this.meAdmitted = true;
      this.keys.baseline(state.version);
      if (this.phase !== "in-call") this.note("you are in the call");
      this.phase = "in-call";
    } else {
      // Our next key goes out before we send under it (§15.5): see switchSendKey below.
      if (joined.length > 0 || left.length > 0) this.current?.topology.deferSendKey?.(left.length > 0 ? "leave" : "join");
      await this.keys.membership(state.version, joined, left);
      if (this.keys.exhausted) {
        this.setSending(false);
        return;
      }
    }
    this.admitted = current;
    this.live = new Map([...this.live].filter(([m, n]) => current.get(m) === n));
    if (!first) for (const m of joined) this.live.set(m, current.get(m)!);
    for (const m of left) {
      if (!current.has(m) && !barred.has(m)) this.note(`${this.label(m)} left`);
      this.tracks.delete(m);
      this.links.delete(m);
    }
    for (const m of joined) this.note(`${this.label(m)} is in the call`);
    await this.setLivePeers();
    const retiring = this.retiring;
    if (retiring !== null) {
      retiring.peers = new Set([...retiring.peers].filter((m) => this.live.has(m)));
      await retiring.topology.setPeers(await this.peerMap(retiring.peers));
    }
    const recipients = (left.length > 0 ? [...this.live.keys()] : joined).filter((m) => this.live.has(m));
    const sending = Promise.all(recipients.map(async (m) => this.sendKey(await this.peer(m))));
    if (first || (joined.length === 0 && left.length === 0)) await sending;
    else {
      // In the background: keys others send us meanwhile are not kept waiting behind it.
      const generation = ++this.keySwitches;
      void this.switchSendKey(sending, generation).catch((err: unknown) => {
        this.note(`a media key was not relayed: ${err instanceof Error ? err.message : String(err)}`);
      });
    }
    this.applyOwnFlags();
    await this.updateCode();
    await this.retryPending();
    this.baselineSeen = true;
    this.changed();
    this.sayOwnState();
  }

  /**
   * Tell everyone, signed, that our microphone or camera is off or on again ("mic-off",
   * "camera-on", …) when that differs from what we last said for this join — never from what
   * the seat shows, so this page never argues with our other device. Not awaited by callers
   * inside `serial` (the action itself is serialised).
   */
  private sayOwnState(): void {
    const seat = this.seats.get(this.meHex);
    if (this.phase !== "in-call" || seat === undefined || seat.status !== "joined" || this.ended()) return;
    const nonce = hexOf(seat.join.nonce);
    // The person's own choices (the pre-join "join muted" / "camera off" cover a missing device).
    const wanted = { mic: this.localMuted, camera: !this.cameraOn };
    for (const field of ["mic", "camera"] as const) {
      const off = wanted[field];
      const said = this.said.get(field) ?? `${nonce}/on`;
      const now = `${nonce}/${off ? "off" : "on"}`;
      if (said === now) continue;
      this.said.set(field, now);
      void this.act(`${field}-${off ? "off" : "on"}`, this.meHex).catch((err: unknown) => {
        if (this.said.get(field) === now) this.said.delete(field); // say it again next time
        this.note(`could not tell the others your ${field === "mic" ? "microphone" : "camera"} is ${off ? "off" : "on"}: ${err instanceof Error ? err.message : String(err)}`);
      });
    }
  }

  /** Send under our new key once the server has taken it for every recipient, or after
   * KEY_SWITCH_MS (§15.5): a receiver then holds it (or is about to) when the first frame under
   * it comes, however slowly this page or the relay runs. A later change's switch supersedes
   * this one (it releases our newest key when that is due). */
  private async switchSendKey(sending: Promise<unknown>, generation: number): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | null = null;
    const bound = new Promise<void>((resolve) => (timer = setTimeout(resolve, KEY_SWITCH_MS)));
    try {
      await Promise.race([sending, bound]);
    } finally {
      if (timer !== null) clearTimeout(timer);
      // never left deferred, whatever happened
      if (generation === this.keySwitches) await this.current?.topology.releaseSendKey?.();
    }
    await sending;
  }

  private async peer(memberHex: string): Promise<Peer> {
    const seat = this.seats.get(memberHex)!;
    const cacheKey = `${memberHex}/${hexOf(seat.join.nonce)}/${hexOf(this.myJoinNonce)}`;
    const cached = this.peerCache.get(cacheKey);
    if (cached !== undefined) return cached;
    // Our join as this device signed it, not as the server shows it.
    const link = await pairLink(this.me, this.myJoinNonce, seat.member, seat.join.nonce);
    const peer: Peer = {
      member: seat.member, memberHex, index: seat.index, link, offerer: isOfferer(this.me, seat.member), label: this.label(memberHex),
    };
    this.peerCache.set(cacheKey, peer);
    return peer;
  }

  private async peerMap(members: Iterable<string>): Promise<Map<string, Peer>> {
    const out = new Map<string, Peer>();
    for (const m of members) if (this.seats.has(m)) out.set(m, await this.peer(m));
    return out;
  }

  private async setLivePeers(): Promise<void> {
    if (this.current === null) return;
    await this.current.topology.setPeers(await this.peerMap(this.live.keys()));
    this.current.peers = new Set(this.live.keys());
  }

  private async nowLive(member: string): Promise<void> {
    this.live.set(member, this.admitted.get(member)!);
    await this.setLivePeers();
    await this.sendKey(await this.peer(member));
  }

  private noteLobby(roles: Map<string, Role>): void {
    if (!isHost(roles.get(this.meHex))) return;
    for (const [m, seat] of this.seats) {
      if (seat.status === "lobby" && !this.lobbySeen.has(m)) {
        this.lobbySeen.add(m);
        this.note(`${this.label(m)} is waiting in the lobby`);
      }
    }
    for (const m of [...this.lobbySeen]) if (m !== this.meHex && !this.seats.has(m)) this.lobbySeen.delete(m);
  }

  private async noteAction(action: CallAction): Promise<void> {
    await this.learn(action);
    let problem = await this.eventProblem(action);
    const sig = hexOf(action.sig);
    if (problem === null && this.noted.has(sig)) problem = "it was already delivered (a replay)";
    else if (problem === null) this.noted.add(sig); // (only valid ones: they age out with `judged`)
    if (problem !== null) {
      this.counters.rejectedActions++;
      this.note(`ignored an unverifiable '${action.action}' event: ${problem}`);
      return;
    }
    const who = this.label(hexOf(action.actor));
    const target = action.target.length > 0 ? this.label(hexOf(action.target)) : "";
    const texts: Partial<Record<CallActionKind, string>> = {
      "hand-up": `${who} raised a hand`, "hand-down": `${who} lowered their hand`,
      "mic-off": `${who} turned their microphone off`, "mic-on": `${who} turned their microphone on`,
      "camera-off": `${who} turned their camera off`, "camera-on": `${who} turned their camera on`,
      "lower-hand": `${who} lowered ${target}'s hand`, mute: `${who} muted ${target}`, "mute-all": `${who} muted everyone`,
      unmute: `${who} asked ${target} to unmute`, admit: `${who} admitted ${target}`, deny: `${who} turned ${target} away`,
      kick: `${who} removed ${target} from the call`, ban: `${who} banned ${target} from this call`,
      unban: `${who} lifted the ban on ${target}`, lock: `${who} locked the call`, unlock: `${who} unlocked the call`,
      promote: `${who} made ${target} a speaker`, demote: `${who} made ${target} a listener`,
    };
    const aboutMe = equal(action.target, this.me);
    if (action.action === "mute" && aboutMe) return; // applyOwnFlags says it, with what it means
    if (action.action === "unmute" && aboutMe) {
      this.note(`${who} asks you to unmute: you may turn your microphone on again`);
      return;
    }
    const text = texts[action.action];
    if (text !== undefined) this.note(text);
  }

  /** Whether our audio / camera / screen may leave this device, from our verified seat and
   * our own choices; told to every running topology. */
  private applyOwnFlags(): void {
    const flags = this.flags.get(this.meHex);
    if (flags === undefined) return;
    if (flags.muted && !this.hostMuted) {
      const by = flags.mutedBy !== null ? this.label(hexOf(flags.mutedBy)) : "a host";
      this.note(`${by} muted you: your audio is no longer sent`);
    }
    this.hostMuted = flags.muted;
    this.sending = {
      audio: flags.speaker && !flags.muted && !this.localMuted && this.media.audio !== null,
      camera: flags.speaker && this.cameraOn && this.media.camera !== null,
      screen: flags.speaker && this.media.screen !== null,
    };
    for (const running of [this.current, this.retiring]) running?.topology.setSending({ ...this.sending });
  }

  private setSending(on: boolean): void {
    this.sending = { audio: on && this.sending.audio, camera: on && this.sending.camera, screen: on && this.sending.screen };
    for (const running of [this.current, this.retiring]) running?.topology.setSending({ ...this.sending });
    this.changed();
  }

  // ---- topologies -----------------------------------------------------------------------

  currentFeed(): Feed | null {
    return this.current?.feed ?? null;
  }

  private async ensureTopology(state: CallState): Promise<void> {
    if (this.current !== null && this.current.topology.name === state.topology) return;
    const factory = this.factories.get(state.topology);
    if (factory === undefined) throw new CallRefused(REASONS.noTopology(state.topology));
    const old = this.current;
    if (this.retiring !== null) {
      await this.closeRunning(this.retiring);
      this.retiring = null;
    }
    const feed = new Feed(this);
    const topology = factory({
      me: this.me, keys: this.keys, sink: feed, signaller: this, media: { ...this.media },
      sfu: state.topology === "sfu" ? this : null, iceServers: this.iceServers, relayOnly: this.relayOnly,
      awaited: () => [...this.admitted.keys()].filter((m) => !this.live.has(m)),
    });
    const running: Running = { topology, feed, peers: new Set(), retireTimer: null };
    this.current = running;
    this.topologiesUsed.push(topology.name);
    if (old !== null) {
      // Make before break: the old one runs until the new one delivers (or RETIRE_MS pass).
      this.retiring = old;
      old.retireTimer = setTimeout(() => void this.serial(() => this.retire(old)), RETIRE_MS);
    }
    topology.setSending({ ...this.sending });
    this.note(`topology ${old !== null ? `moved from ${old.topology.name} to ` : ""}${topology.name}`);
  }

  /** Close the old topology once the new one delivers everyone the old one delivered. */
  checkRetiring(): void {
    const retiring = this.retiring;
    const current = this.current;
    if (retiring === null || current === null) return;
    const waiting = [...retiring.feed.delivered].filter((m) => this.admitted.has(m) && !current.feed.delivered.has(m));
    if (waiting.length === 0) void this.serial(() => this.retire(retiring));
  }

  private async retire(running: Running): Promise<void> {
    if (this.retiring !== running) return;
    this.retiring = null;
    await this.closeRunning(running);
  }

  private async closeRunning(running: Running): Promise<void> {
    if (running.retireTimer !== null) clearTimeout(running.retireTimer);
    await running.topology.close().catch(() => undefined);
  }

  private async closeTopologies(): Promise<void> {
    for (const running of [this.retiring, this.current]) if (running !== null) await this.closeRunning(running);
    this.retiring = null;
    this.current = null;
  }

  // ---- the media sink (through Feed) ----------------------------------------------------

  onTrack(memberHex: string, kind: TrackKind, track: MediaStreamTrack | null): void {
    const tracks = { ...(this.tracks.get(memberHex) ?? {}) };
    if (track === null) delete tracks[kind];
    else tracks[kind] = track;
    this.tracks.set(memberHex, tracks);
    this.changed();
  }

  onLink(memberHex: string, state: LinkState, detail: string): void {
    const before = this.links.get(memberHex);
    if (before === "refused" || (state === "closed" && before !== "connected")) return;
    this.links.set(memberHex, state);
    if (state === "connected" && before !== "connected") this.note(`connected to ${this.label(memberHex)}`);
    else if (state === "failed" || state === "refused") this.note(`no connection to ${this.label(memberHex)}: ${detail || state}`);
    this.changed();
  }

  onSendKey(epoch: number): void {
    this.note(`sending under our media key of epoch ${epoch}`);
  }

  /** A lost media link is back (same call, seat and keys): count it and say so. */
  onReconnected(memberHex: string | null, outageMs: number): void {
    const key = memberHex ?? "";
    this.counters.reconnects[key] = (this.counters.reconnects[key] ?? 0) + 1;
    const who = memberHex === null ? "the SFU" : this.label(memberHex);
    this.note(`reconnected to ${who} after ${(outageMs / 1000).toFixed(1)} s`);
    this.changed();
  }

  // ---- keys and the verification code ---------------------------------------------------

  private async sendKey(peer: Peer): Promise<void> {
    await this.send(peer, "media-key", encodeMediaKeyMessage(this.keys.message()), 0);
  }

  private async updateCode(): Promise<void> {
    if (!this.meAdmitted || this.admitted.size === 0) {
      if (this.code !== null) {
        this.code = null;
        this.changed();
      }
      return;
    }
    const code = await this.keys.code(this.admitted.keys());
    if (code !== null && code !== this.code) {
      keepLast(this.codes, code);
      this.note(`verification code ${code} (${this.admitted.size + 1} in the call; compare it out of band)`);
    }
    if (code !== this.code) {
      this.code = code;
      this.changed();
    }
  }

  // ---- signalling (Signaller, SfuChannel) -----------------------------------------------

  async send(peer: Peer, kind: SignalKind, payload: Uint8Array, attempt: number): Promise<void> {
    const boxKey = this.ctx.roster().boxKeys.get(peer.memberHex);
    if (boxKey === undefined || this.ended()) return;
    const me = this.ctx.me;
    const box = await sealSignal({
      spaceId: this.ctx.spaceId, roomId: this.roomId, callId: this.callId, sender: this.me, recipient: peer.member, kind,
      link: peer.link, attempt, payload,
    }, me.signingSeed, me.boxSecret, boxKey);
    try {
      await this.request({ type: "send_call_signal", room_id: this.roomId, call_id: this.callId, to: peer.member, box });
    } catch (err) {
      if (!(err instanceof ServerError)) throw err; // they left meanwhile: the next state says so
    }
  }

  get myIndex(): number {
    return this.seats.get(this.meHex)?.index ?? 0;
  }

  async sfuOffer(sdp: string): Promise<string> {
    const answer = this.request<SfuAnswer>({ type: "sfu_offer", room_id: this.roomId, call_id: this.callId, sdp });
    const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error("the SFU did not answer in time")), SFU_OFFER_TIMEOUT_MS));
    return (await Promise.race([answer, timeout])).sdp;
  }

  async sfuView(slots: SlotView[]): Promise<void> {
    await this.request({ type: "sfu_view", room_id: this.roomId, call_id: this.callId, slots });
  }

  private async onSignal(event: CallSignal): Promise<void> {
    const sender = hexOf(event.sender);
    if (!this.admitted.has(sender) || !this.seats.has(sender)) {
      const now = this.now();
      this.pending = this.pending.filter(([t]) => t > now);
      const theirs = this.pending.filter(([, ev]) => equal(ev.sender, event.sender)).length;
      if (this.pending.length < PENDING_SIGNALS_MAX && theirs < PENDING_PER_SENDER) this.pending.push([now + PENDING_SIGNAL_MS, event]);
      return;
    }
    const boxKey = this.ctx.roster().boxKeys.get(sender);
    const me = this.ctx.me;
    let body;
    try {
      if (boxKey === undefined) throw new ProtocolCallError("its sender is not a member of the space");
      body = await openSignal(event.box, { memberKey: this.me, boxSecret: me.boxSecret }, { memberKey: event.sender, boxKey },
        { spaceId: this.ctx.spaceId, roomId: this.roomId, callId: this.callId });
    } catch (err) {
      if (err instanceof ProtocolCallError) return this.refuse(sender, err.message);
      throw err;
    }
    const peer = await this.peer(sender);
    if (!equal(body.link, peer.link)) {
      if (body.kind === "media-key") {
        this.counters.rejectedSignals++;
        this.note(`ignored a media key from ${this.label(sender)}: it is for another join of theirs or ours (a replay)`);
      }
      return;
    }
    if (this.live.get(sender) !== this.admitted.get(sender)) await this.nowLive(sender);
    if (body.kind === "media-key") {
      let message;
      try {
        message = decodeMediaKeyMessage(body.payload);
      } catch (err) {
        if (err instanceof ProtocolCallError) return this.refuse(sender, "its media key is malformed");
        throw err;
      }
      const news = await this.keys.receive(sender, message);
      keepLast(this.keyLog, { from: sender, epoch: message.epoch, at: this.now(), news });
      this.counters.keyMessages++;
      if (news) await this.updateCode();
      return;
    }
    let topology = this.current?.topology;
    if (topology !== undefined && topology.name !== "mesh" && this.retiring !== null) topology = this.retiring.topology;
    await topology?.onSignal(peer, body.kind, body.payload, body.attempt);
  }

  private async refuse(sender: string, reason: string): Promise<void> {
    this.counters.rejectedSignals++;
    this.note(`refused signalling from ${this.label(sender)}: ${reason}; not connecting to them (no insecure fallback)`);
    this.links.set(sender, "refused");
    for (const running of [this.current, this.retiring]) await running?.topology.refuse(sender, reason);
    this.changed();
  }

  private async retryPending(): Promise<void> {
    const now = this.now();
    this.pending = this.pending.filter(([t]) => t > now);
    const ready = this.pending.filter(([, ev]) => this.admitted.has(hexOf(ev.sender)));
    this.pending = this.pending.filter(([, ev]) => !this.admitted.has(hexOf(ev.sender)));
    for (const [, event] of ready) await this.onSignal(event);
  }

  // ---- intents (CallIntents) ------------------------------------------------------------

  /** Our own microphone. Off: a local choice. On: refused while a host's signed mute holds
   * (only a host can lift it: they sign "unmute"). */
  setMuted(muted: boolean): Promise<void> {
    return this.serial(async () => {
      const flags = this.flags.get(this.meHex);
      if (!muted && flags?.muted === true && !flags.host) {
        throw new CallRefused("A host muted you; only a host can let you speak again.");
      }
      if (!muted && flags !== undefined && !flags.speaker) {
        throw new CallRefused("You are a listener on this stage; a host has to make you a speaker.");
      }
      this.localMuted = muted;
      this.applyOwnFlags();
      this.changed();
    }).then(() => this.sayOwnState());
  }

  setCamera(on: boolean): Promise<void> {
    return this.serial(async () => {
      this.cameraOn = on;
      this.applyOwnFlags();
      this.changed();
    }).then(() => this.sayOwnState());
  }

  /** Our sources changed (device switch, camera or screen opened/closed by the UI). */
  setLocalMedia(media: LocalMedia): Promise<void> {
    return this.serial(async () => {
      this.media = { ...media };
      for (const running of [this.current, this.retiring]) await running?.topology.setMedia({ ...this.media });
      this.applyOwnFlags();
      this.changed();
    });
  }

  /** Start/stop sharing: the UI opens the screen track (devices.ts) and passes it with
   * setLocalMedia; `shareScreen(false)` drops it. */
  shareScreen(on: boolean): Promise<void> {
    if (on && this.media.screen === null) return Promise.reject(new CallRefused("No screen is being captured."));
    if (on) return Promise.resolve();
    return this.setLocalMedia({ ...this.media, screen: null });
  }

  setHand(up: boolean): Promise<void> {
    return this.act(up ? "hand-up" : "hand-down", this.meHex);
  }

  leave(): Promise<void> {
    return this.serial(() => this.finish("ended", "You left the call."));
  }

  admit(memberHex: string): Promise<void> {
    return this.act("admit", memberHex);
  }
  deny(memberHex: string): Promise<void> {
    return this.act("deny", memberHex);
  }
  mute(memberHex: string): Promise<void> {
    return this.act("mute", memberHex);
  }
  unmute(memberHex: string): Promise<void> {
    return this.act("unmute", memberHex);
  }
  muteAll(): Promise<void> {
    return this.act("mute-all", null);
  }
  kick(memberHex: string, ban: boolean): Promise<void> {
    return ban ? this.act("ban", memberHex) : this.act("kick", memberHex);
  }
  unban(memberHex: string): Promise<void> {
    return this.act("unban", memberHex);
  }
  lock(locked: boolean): Promise<void> {
    return this.act(locked ? "lock" : "unlock", null);
  }
  promote(memberHex: string): Promise<void> {
    return this.act("promote", memberHex);
  }
  demote(memberHex: string): Promise<void> {
    return this.act("demote", memberHex);
  }
  lowerHand(memberHex: string): Promise<void> {
    return this.act("lower-hand", memberHex);
  }
  end(): Promise<void> {
    return this.act("end", null);
  }

  /** Sign one action (with our roster head and, for seat actions, the target's join) and send it. */
  private act(name: CallActionKind, targetHex: string | null): Promise<void> {
    return this.serial(async () => {
      if (this.callId === "" || this.ended()) throw new CallRefused("You are not in the call.");
      const self = SELF_STATE.has(name);
      if (!self && !isHost(this.roles().get(this.meHex))) {
        throw new CallRefused("Only the space's owners and moderators can do that.");
      }
      if (TARGETED.has(name) && targetHex === null) throw new CallRefused(`'${name}' needs someone to do it to.`);
      const target = targetHex === null ? new Uint8Array(0) : fromHex(targetHex);
      let joinRef: Uint8Array = new Uint8Array(0);
      if (SEAT_ACTIONS.has(name)) {
        const seat = this.seats.get(targetHex ?? "");
        if (seat === undefined) {
          throw new CallRefused(`${this.label(targetHex ?? "")} is not ${name === "admit" || name === "deny" ? "in the lobby" : "in the call"} right now.`);
        }
        if (name === "admit") {
          await this.checkAll([seat.join]); // (verdicts are dropped when the roster changes)
          const problem = seat.status === "lobby" ? this.knockProblem(seat) : null;
          if (problem !== null) throw new CallRefused(`${this.label(targetHex ?? "")} cannot be admitted: ${problem}.`);
        }
        joinRef = seat.join.nonce;
      }
      const action = await this.sign(name, target, joinRef);
      try {
        await this.request({ type: "act_in_call", room_id: this.roomId, action: fromCallAction(action) });
      } catch (err) {
        if (err instanceof ServerError) throw new CallRefused(`The server refused '${name}': ${err.message}`);
        throw err;
      }
    });
  }

  /** Stop everything (the page is closing): leave the call if seated. */
  close(): Promise<void> {
    return this.leave();
  }
}

/** A plain-words refusal (the UI shows `message` as is). */
export class CallRefused extends Error {
  override name = "CallRefused";
}
