/**
 * The SFU topology in the browser (PROTOCOL.md §15.6–§15.8; the reference is
 * client/sfu_topology.py and client/e2ee_media.py SfuSession): one RTCPeerConnection to the
 * call's SFU node, every frame SFrame-protected in the media worker (`MediaKeys`).
 *
 * The offer (never renegotiated) publishes three `sendonly` sections — camera (VP8, simulcast:
 * CAMERA_LAYERS), audio (Opus), screen (VP8, one layer, marked `a=content:slides`) — and receives VIDEO_SLOTS camera,
 * AUDIO_SLOTS audio and SCREEN_SLOTS screen slots (`recvonly`), all BUNDLEd. The node fills
 * the slots with the most recent speakers and puts the publisher's sender index as the single
 * CSRC on every forwarded packet; each slot's receiver transform opens a frame only under a key
 * id naming that CSRC (§15.8). Which member a slot shows is read back from the worker: the key
 * id of the last frame it decrypted (authenticated) names the publisher's index, and the call
 * state names the member at that index.
 *
 * The `MediaKeys` worker belongs to the call, not to one topology: its sending counter must
 * never restart under the same key (a mesh → SFU → mesh → SFU switch, a reconnect).
 *
 * Tile sizes (./view.ts): each poll of the slots also works out how big the page shows each
 * camera and screen slot that shows someone, and a `ViewSender` tells the server (`SfuView`)
 * when that changes, so the node sends each slot a simulcast layer that fits its tile.
 *
 * Reconnection (`RetryPolicy`, ./retry.ts): when the connection fails, stays `disconnected` for a
 * few seconds (a network drop) or never connects, a fresh RTCPeerConnection is offered to the
 * server again (`sfuOffer`; the node replaces our old connection) with a jittered back-off, for
 * up to 30 s. The call, the seat and the worker's keys and counters stay as they were.
 */
import { MediaKeys } from "../media/media_keys.ts";
import { fitCamera } from "./devices.ts";
import { RetryPolicy, transportState } from "./retry.ts";
import { pageHidden, shownTracks, slotViews, ViewSender, type ShownTracks } from "./view.ts";
import { gathered, meshTopology, outgoingSdp, preferCodec, rtcConfiguration } from "./mesh.ts";
import type {
  LinkState, LocalMedia, Peer, SignalKind, Topology, TopologyContext, TopologyFactory, TopologyName, TrackKind,
} from "./topology.ts";

export const VIDEO_SLOTS = 6;
export const AUDIO_SLOTS = 6;
export const SCREEN_SLOTS = 2;
export const KEY_WAIT_MS = 3_000;
/** How often the connection's health goes to its retry policy. */
export const SUPERVISE_MS = 500;
/** How often the slots are looked at, and how long a slot may be quiet before its member's track goes. */
export const SLOT_POLL_MS = 250;
export const SLOT_IDLE_MS = 2_500;
/** A slot our view holds at 0 px is quiet because the SFU pauses it: it keeps its member this long
 * (then, left out of the view, it is sent again: a publisher the SFU moved into it shows up). */
export const SLOT_HELD_IDLE_MS = 10_000;
export const SCREEN_CONTENT = "a=content:slides";
/**
 * The camera's simulcast layers, lowest resolution first (the order the node relies on, §15.6;
 * it forwards each subscriber one layer, by its bandwidth and tile size): 320x180, 640x360 and
 * 1280x720 of the SFU capture (devices.ts SFU_VIDEO). The bitrate caps are what VP8 needs for a
 * talking head at each size — the low layer fits a 200 kbit/s link with audio, the full one
 * stays under 2 Mbit/s for the uplink. Every layer's frames go through the same SFrame
 * transform (one sending counter per key id, so the layers never reuse a nonce). Mesh and the
 * screen share stay one layer.
 */
export const CAMERA_LAYERS: readonly RTCRtpEncodingParameters[] = [
  { rid: "q", scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: "f", scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];

/**
 * How many simulcast layers Chromium sends of a capture this size (its simulcast.cc table, by
 * pixel count: 3 from 960x540, 2 from 480x270, else 1). It keeps the first encodings and drops
 * the others, whatever their scale.
 */
export function simulcastLayerCount(width: number, height: number): number {
  const pixels = width * height;
  return pixels >= 960 * 540 ? 3 : pixels >= 480 * 270 ? 2 : 1;
}

/**
 * CAMERA_LAYERS fitted to the capture: the layers Chromium will send, at halving sizes with the
 * top one at full resolution, the rest inactive — so a camera that cannot give 1280x720 (a
 * 640x480 one: 320x240 + 640x480) still sends its full picture instead of 160x120 + 320x240.
 * Same RIDs and order, so the negotiated simulcast stays as it was.
 */
export function cameraLayers(width: number, height: number): RTCRtpEncodingParameters[] {
  const count = Math.min(simulcastLayerCount(width, height), CAMERA_LAYERS.length);
  return CAMERA_LAYERS.map((layer, i) => {
    if (i >= count) return { ...layer, active: false };
    const scale = 2 ** (count - 1 - i);
    return { ...layer, active: true, scaleResolutionDownBy: scale, maxBitrate: layerBitrate(height / scale) };
  });
}

/** CAMERA_LAYERS' caps by picture height, and steps between them for other capture sizes. */
function layerBitrate(height: number): number {
  if (height <= 180) return 150_000;
  if (height <= 270) return 250_000;
  if (height <= 360) return 500_000;
  if (height <= 540) return 900_000;
  return 1_500_000;
}

/** The URL of the SFrame worker the build emitted (its `<meta name="salon-sframe-worker">`). */
export function sframeWorkerUrl(doc: Document = document): URL {
  const meta = doc.querySelector<HTMLMetaElement>('meta[name="salon-sframe-worker"]');
  const path = meta?.content ?? "/sframe_worker.js";
  return new URL(path, doc.baseURI);
}

/** `sdp` (CRLF) with `a=content:slides` after the `a=mid` line of each of `mids` (protocol/sfu_sdp.py). */
export function markScreenSections(sdp: string, mids: ReadonlySet<string>): string {
  const out: string[] = [];
  for (const line of sdp.replace(/\r\n/g, "\n").split("\n")) {
    out.push(line);
    if (line.startsWith("a=mid:") && mids.has(line.slice("a=mid:".length))) out.push(SCREEN_CONTENT);
  }
  return out.join("\r\n");
}

interface Slot {
  kind: TrackKind;
  label: string;
  transceiver: RTCRtpTransceiver;
  /** The member it shows now, and the worker's decrypted count when last looked at. */
  member: string | null;
  decrypted: number;
  lastFrame: number;
}

interface Sending {
  audio: boolean;
  camera: boolean;
  screen: boolean;
}

export class SfuTopology implements Topology {
  readonly name: TopologyName = "sfu";
  media: LocalMedia;
  sending: Sending = { audio: false, camera: false, screen: false };
  state: LinkState = "waiting";
  readonly peers = new Map<string, Peer>();
  readonly refused = new Set<string>();
  /** index → member, kept after they leave (an index stays bound to its first member, §15.5). */
  readonly #members = new Map<number, string>();
  #pc: RTCPeerConnection | null = null;
  #senders: RTCRtpTransceiver[] = []; // camera, audio, screen
  #slots: Slot[] = [];
  #connecting: Promise<void> | null = null;
  #closed = false;
  #changed = Date.now();
  #sendEpoch: number | null = null;
  /** A key change being delivered: our new key waits (deferSendKey). */
  #deferring: "join" | "leave" | null = null;
  #keyPaused = false;
  #poll: ReturnType<typeof setInterval> | null = null;
  /** Cameras raised to the SFU capture size (set back to the mesh one when this topology ends). */
  readonly #raised = new Set<MediaStreamTrack>();
  /** The capture size each camera sender's layers were last fitted to ("1280x720"). */
  readonly #fitted = new WeakMap<RTCRtpSender, string>();
  readonly #unlisten: () => void;
  /** reconnects: attempts after the first; reconnected: lost connections made again. */
  readonly counters = { connects: 0, reconnects: 0, reconnected: 0, sendKeySwitches: 0 };
  readonly policy = new RetryPolicy();
  #supervisor: ReturnType<typeof setInterval> | null = null;
  #generation = 0;
  readonly #shown: ShownTracks;
  /** Our tile sizes to the server (null: the channel cannot carry them). */
  readonly view: ViewSender | null;

  constructor(readonly ctx: TopologyContext, readonly keys: MediaKeys) {
    if (ctx.sfu === null) throw new Error("the SFU topology needs the call's SFU channel");
    this.media = { ...ctx.media };
    this.#shown = ctx.shown ?? shownTracks;
    const sfu = ctx.sfu;
    this.view = sfu.sfuView === undefined ? null : new ViewSender((slots) => sfu.sfuView!(slots));
    this.#members.set(ctx.sfu.myIndex, hex(ctx.me));
    this.#unlisten = ctx.keys.onChange((member) => void this.#onKey(member));
    void this.#onKey(hex(ctx.me));
  }

  get myIndex(): number {
    return (this.ctx.sfu as { myIndex: number }).myIndex;
  }

  /** The connection to the node (tests read its stats). */
  get connection(): RTCPeerConnection | null {
    return this.#pc;
  }

  // -- keys --------------------------------------------------------------------------------

  readonly #installed = new Map<string, Set<number>>(); // member → epochs posted to the worker

  async #onKey(memberHex: string): Promise<void> {
    if (this.#closed || this.refused.has(memberHex)) return;
    try {
      if (memberHex === hex(this.ctx.me)) {
        const own = this.ctx.keys.current();
        if (own === null || own.epoch === this.#sendEpoch) return;
        if (this.#deferring !== null) {
          if (this.#deferring === "leave" && !this.#keyPaused) {
            this.#keyPaused = true; // never the key a leaver holds, nor the next one yet
            await this.keys.stopSending();
          }
          return;
        }
        await this.keys.setSendKey(this.myIndex, own.epoch, own.key);
        this.#sendEpoch = own.epoch;
        this.counters.sendKeySwitches++;
        this.ctx.sink.onSendKey?.(own.epoch);
        return;
      }
      const peer = this.peers.get(memberHex);
      if (peer === undefined) return;
      const usable = [...this.ctx.keys.usable(memberHex)].sort((a, b) => a.epoch - b.epoch);
      const keys = this.ctx.keys;
      const current = keys.currentOf === undefined ? (usable.at(-1) ?? null) : keys.currentOf(memberHex);
      // §15.5: a leave made its key stale (its fresh one is on its way): whatever the worker
      // holds for it is superseded now — also when the leaver was never one of our peers.
      if (keys.currentOf !== undefined && current === null && usable.length > 0) await this.keys.supersede(peer.index);
      const held = this.#installed.get(memberHex) ?? new Set<number>();
      this.#installed.set(memberHex, held);
      for (const k of usable) {
        // §15.5: a key that is not the sender's current one (its previous, or one a leave made
        // stale) only decrypts a while, even when it is the only one this page holds for them.
        await this.keys.setReceiveKey(peer.index, k.epoch, k.key, current === null || k.epoch !== current.epoch);
        held.add(k.epoch);
      }
    } catch (err) {
      // A key the worker refuses (a key id already naming another key): nothing of it decrypts.
      this.ctx.sink.onLink(memberHex, this.state, `a media key was refused: ${err instanceof Error ? err.message : err}`);
    }
  }

  deferSendKey(kind: "join" | "leave"): void {
    this.#deferring = kind;
  }

  async releaseSendKey(): Promise<void> {
    this.#deferring = null;
    const paused = this.#keyPaused;
    this.#keyPaused = false;
    if (paused) this.#sendEpoch = null; // the worker dropped its key: give it ours again
    await this.#onKey(hex(this.ctx.me));
  }

  #ready(): boolean {
    for (const hexKey of this.ctx.awaited?.() ?? []) if (!this.refused.has(hexKey)) return false;
    for (const hexKey of this.peers.keys()) {
      if (this.refused.has(hexKey)) continue;
      if ((this.#installed.get(hexKey)?.size ?? 0) === 0) return false;
    }
    return this.#sendEpoch !== null;
  }

  // -- the Topology seam -------------------------------------------------------------------

  async setPeers(peers: ReadonlyMap<string, Peer>): Promise<void> {
    let left = false;
    for (const [memberHex, peer] of [...this.peers]) {
      // Gone, or joined again under a new sender index: the old one's keys go after the overlap.
      if (peers.get(memberHex)?.index === peer.index) continue;
      this.peers.delete(memberHex);
      this.#installed.delete(memberHex);
      left = true;
      await this.keys.removePublisher(peer.index);
      this.#dropMember(memberHex);
      this.ctx.sink.onLink(memberHex, "closed");
    }
    if (left) {
      // §15.5: every remaining sender's current key (the leaver held it) is superseded now —
      // unless its fresh key came first (the call's keys then hold it as current already).
      for (const [memberHex, peer] of peers) {
        const stale = (this.ctx.keys.currentOf?.(memberHex) ?? null) === null;
        if (this.peers.has(memberHex) && stale) await this.keys.supersede(peer.index);
      }
    }
    for (const [memberHex, peer] of peers) {
      const known = this.peers.has(memberHex);
      const named = this.#members.get(peer.index);
      if (named !== undefined && named !== memberHex) {
        if (!this.refused.has(memberHex)) {
          await this.refuse(memberHex, `the server gave them sender index ${peer.index}, already another's`);
        }
        continue;
      }
      this.#members.set(peer.index, memberHex);
      this.peers.set(memberHex, peer);
      if (!known) {
        await this.#onKey(memberHex);
        if (this.state === "connected") this.ctx.sink.onLink(memberHex, "connected");
        else if (this.state === "failed") this.ctx.sink.onLink(memberHex, "failed", "no connection to the SFU");
      }
    }
    this.#changed = Date.now();
    if (this.#pc === null && this.#connecting === null && !this.#closed) this.#connecting = this.#connect(true);
    if (this.#supervisor === null && !this.#closed) {
      const timer = setInterval(() => this.#supervise(), SUPERVISE_MS);
      (timer as { unref?: () => void }).unref?.(); // never what keeps a Node test alive
      this.#supervisor = timer;
    }
  }

  /** Peers send no SDP to each other on the SFU (media keys reach us through the call's keys). */
  async onSignal(_peer: Peer, _kind: SignalKind, _payload: Uint8Array, _attempt: number): Promise<void> {}

  async refuse(memberHex: string, reason: string): Promise<void> {
    this.refused.add(memberHex);
    const peer = this.peers.get(memberHex);
    if (peer !== undefined && this.#members.get(peer.index) === memberHex) await this.keys.removePublisher(peer.index);
    this.#dropMember(memberHex);
    this.ctx.sink.onLink(memberHex, "refused", reason);
  }

  setSending(sending: Sending): void {
    this.sending = { ...sending };
    void this.#applySending();
  }

  async setMedia(media: LocalMedia): Promise<void> {
    this.media = { ...media };
    await this.#applySending();
  }

  /** The server said our node connection is gone (`SfuReconnect`): connect again. */
  async reconnect(_reason: string): Promise<void> {
    if (this.#closed || this.#connecting !== null) return;
    this.#connecting = this.#connect(false);
    await this.#connecting;
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.view?.close();
    if (this.#supervisor !== null) clearInterval(this.#supervisor);
    this.#unlisten();
    this.#dropPc();
    for (const track of this.#raised) void fitCamera(track, false);
    this.#raised.clear();
  }

  // -- the connection ----------------------------------------------------------------------

  /** One attempt at a connection; `#supervise` decides whether and when another follows. */
  async #connect(first: boolean): Promise<void> {
    const generation = ++this.#generation;
    try {
      if (!first) this.counters.reconnects++;
      while (!this.#closed && !this.#ready() && Date.now() - this.#changed < KEY_WAIT_MS) await sleep(50);
      if (this.#closed || generation !== this.#generation) return;
      this.#dropPc();
      try {
        await this.#open();
      } catch (err) {
        if (generation !== this.#generation) return;
        this.#dropPc();
        this.#setState("failed", `no connection to the SFU: ${err instanceof Error ? err.message : err}`);
      }
    } finally {
      if (generation === this.#generation) this.#connecting = null;
    }
  }

  /** Feed the retry policy the connection's health; connect again on its word. */
  #supervise(): void {
    if (this.#closed) return;
    const pc = this.#pc;
    const before = this.policy.reconnects;
    const idle = this.#connecting !== null ? "connecting" : "failed";
    this.policy.observe(pc === null ? idle : transportState(pc.connectionState));
    if (this.policy.reconnects > before) {
      this.counters.reconnected++;
      this.ctx.sink.onReconnected?.(null, this.policy.recoveredMs ?? 0);
    }
    const decision = this.policy.poll();
    if (decision === "give-up") {
      if (this.#supervisor !== null) clearInterval(this.#supervisor);
      this.#setState("failed", `gave up on the SFU connection after ${this.policy.giveUpAfterMs / 1000} s`);
    } else if (decision === "retry") {
      if (this.state === "connected") this.#setState("connecting", "reconnecting to the SFU");
      this.#connecting = this.#connect(false); // supersedes one stuck on a lost offer
    }
  }

  async #open(): Promise<void> {
    const pc = new RTCPeerConnection(rtcConfiguration(this.ctx));
    this.#pc = pc;
    this.counters.connects++;
    this.policy.attemptStarted();
    const camera = pc.addTransceiver("video", { direction: "sendonly", sendEncodings: CAMERA_LAYERS.map((e) => ({ ...e })) });
    const audio = pc.addTransceiver("audio", { direction: "sendonly" });
    const screen = pc.addTransceiver("video", { direction: "sendonly" });
    preferCodec(camera, "video", "video/vp8", false);
    preferCodec(audio, "audio", "audio/opus", false);
    preferCodec(screen, "video", "video/vp8", false);
    this.keys.attachSender(camera.sender, "camera");
    this.keys.attachSender(audio.sender, "audio");
    this.keys.attachSender(screen.sender, "screen");
    this.#senders = [camera, audio, screen];
    const slots: Slot[] = [];
    const screens: RTCRtpTransceiver[] = [screen];
    for (const [kind, count] of [["camera", VIDEO_SLOTS], ["audio", AUDIO_SLOTS], ["screen", SCREEN_SLOTS]] as const) {
      for (let i = 0; i < count; i++) {
        const media = kind === "audio" ? "audio" : "video";
        const t = pc.addTransceiver(media, { direction: "recvonly" });
        preferCodec(t, media, media === "audio" ? "audio/opus" : "video/vp8", false);
        const label = `slot-${kind}-${i}`;
        this.keys.attachReceiver(t.receiver, label, "csrc");
        slots.push({ kind, label, transceiver: t, member: null, decrypted: 0, lastFrame: 0 });
        if (kind === "screen") screens.push(t);
      }
    }
    this.#slots = slots;
    await this.#applySending();
    pc.onconnectionstatechange = () => {
      if (pc !== this.#pc || this.#closed) return;
      if (pc.connectionState === "connected") this.#setState("connected");
      else if (pc.connectionState === "failed" || pc.connectionState === "closed") {
        this.#setState("failed", "the connection to the SFU was lost"); // #supervise retries
      }
    };
    this.#setState("connecting");
    await pc.setLocalDescription();
    await gathered(pc);
    if (pc !== this.#pc) return;
    const mids = new Set(screens.map((t) => t.mid).filter((m): m is string => m !== null));
    const local = pc.localDescription?.sdp ?? "";
    const offer = markScreenSections(outgoingSdp(local, this.ctx.relayOnly), mids);
    const answer = await (this.ctx.sfu as { sfuOffer(sdp: string): Promise<string> }).sfuOffer(offer);
    if (pc !== this.#pc) return;
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    const track = camera.sender.track;
    if (track !== null) await this.#fitLayers(camera.sender, track); // negotiated now: see #fitLayers
    this.view?.reset(); // the node may be a new one: it knows no view of ours
    if (this.#poll === null) this.#poll = setInterval(() => void this.#watchSlots(), SLOT_POLL_MS);
  }

  #dropPc(): void {
    const pc = this.#pc;
    this.#pc = null;
    for (const slot of this.#slots) this.#showSlot(slot, null);
    this.#slots = [];
    this.#senders = [];
    if (this.#poll !== null) clearInterval(this.#poll);
    this.#poll = null;
    pc?.close();
  }

  #setState(state: LinkState, detail = ""): void {
    if (this.state === state) return;
    this.state = state;
    for (const memberHex of this.peers.keys()) {
      if (!this.refused.has(memberHex)) this.ctx.sink.onLink(memberHex, state, detail === "" ? undefined : detail);
    }
  }

  async #applySending(): Promise<void> {
    const { media, sending } = this;
    const sources = [media.camera, media.audio, media.screen];
    const allowed = [sending.camera, sending.audio, sending.screen];
    await Promise.all(
      this.#senders.map(async (t, i) => {
        const source = sources[i] ?? null;
        const want = allowed[i] === true && source !== null && source.readyState === "live" ? source : null;
        if (i === 0 && want !== null && !this.#raised.has(want)) {
          this.#raised.add(want);
          await fitCamera(want, true);
        }
        if (t.sender.track !== want) await t.sender.replaceTrack(want);
        if (i === 0 && want !== null) await this.#fitLayers(t.sender, want);
      }),
    );
  }

  /**
   * The camera sender's layers for the size `track` captures at now (see cameraLayers). Only
   * once negotiated: a layer made inactive before the offer would be offered paused (`~f`).
   */
  async #fitLayers(sender: RTCRtpSender, track: MediaStreamTrack): Promise<void> {
    if (this.#pc?.remoteDescription == null) return;
    const { width, height } = track.getSettings();
    if (width === undefined || height === undefined) return;
    const size = `${width}x${height}`;
    if (this.#fitted.get(sender) === size) return;
    const wanted = new Map(cameraLayers(width, height).map((e) => [e.rid, e]));
    const params = sender.getParameters();
    params.encodings = params.encodings.map((e) => ({ ...e, ...wanted.get(e.rid) }));
    try {
      await sender.setParameters(params);
      this.#fitted.set(sender, size);
    } catch {
      // A browser that refuses: the layers stay as offered (fewer, smaller ones on a small camera).
    }
  }

  // -- slots → members ---------------------------------------------------------------------

  async #watchSlots(): Promise<void> {
    if (this.#pc === null || this.#closed) return;
    const { tracks } = await this.keys.counters();
    const now = Date.now();
    for (const slot of this.#slots) {
      const c = tracks[slot.label];
      if (c === undefined) continue;
      if (c.decrypted > slot.decrypted && c.lastKid !== null) {
        slot.decrypted = c.decrypted;
        slot.lastFrame = now;
        const member = this.#members.get(Math.floor(c.lastKid / 65536)) ?? null;
        const live = member !== null && this.peers.has(member) && !this.refused.has(member) ? member : null;
        this.#showSlot(slot, live);
      } else if (slot.member !== null && now - slot.lastFrame > (this.#heldAtZero(slot) ? SLOT_HELD_IDLE_MS : SLOT_IDLE_MS)) {
        this.#showSlot(slot, null);
      }
    }
    this.#updateView();
  }

  #heldAtZero(slot: Slot): boolean {
    const mid = slot.transceiver.mid;
    return this.view?.sent?.some((s) => s.mid === mid && s.height === 0) ?? false;
  }

  /** How big we show each camera and screen slot now, to the ViewSender (it sends changes). */
  #updateView(): void {
    if (this.view === null) return;
    const slots = this.#slots
      .filter((s) => s.kind !== "audio")
      .map((s) => ({ mid: s.transceiver.mid, trackId: s.transceiver.receiver.track.id, showing: s.member !== null }));
    this.view.update(slotViews(slots, (id) => this.#shown.height(id), pageHidden()));
  }

  #showSlot(slot: Slot, member: string | null): void {
    if (slot.member === member) return;
    const before = slot.member;
    slot.member = member;
    if (before !== null && !this.#slots.some((s) => s !== slot && s.kind === slot.kind && s.member === before)) {
      this.ctx.sink.onTrack(before, slot.kind, null);
    }
    if (member !== null) this.ctx.sink.onTrack(member, slot.kind, slot.transceiver.receiver.track);
  }

  #dropMember(memberHex: string): void {
    for (const slot of this.#slots) if (slot.member === memberHex) this.#showSlot(slot, null);
  }

  /** Which member each slot shows now (tests, status). */
  slotMembers(): Array<{ label: string; kind: TrackKind; member: string | null }> {
    return this.#slots.map((s) => ({ label: s.label, kind: s.kind, member: s.member }));
  }
}

/**
 * The factory call.ts uses: `keys` is the call's SFrame worker (`MediaKeys.start(sframeWorkerUrl())`),
 * kept for the whole call and closed when it ends.
 */
export function sfuTopology(keys: MediaKeys): TopologyFactory {
  return (ctx) => new SfuTopology(ctx, keys);
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * The topologies of one call in this browser, for `CallOptions.topologies`: mesh, and the SFU
 * with one SFrame worker for the whole call (started the first time the call goes through the
 * SFU; `MediaE2EEUnsupported` then, in plain words, where the browser cannot encrypt media).
 * `close()` when the call ends: the worker and its keys go.
 *
 *   const media = callTopologies();
 *   const call = new CallClient(ctx, room, { topologies: media.topologies, … });
 *   …; media.close();
 */
export function callTopologies(workerUrl: () => URL | string = sframeWorkerUrl): {
  topologies: Map<TopologyName, TopologyFactory>;
  /** The call's SFrame worker, once the SFU was used (its counters for a status line or tests). */
  mediaKeys(): MediaKeys | null;
  close(): void;
} {
  let keys: MediaKeys | null = null;
  const sfu: TopologyFactory = (ctx) => {
    keys ??= MediaKeys.start(workerUrl());
    return new SfuTopology(ctx, keys);
  };
  return {
    topologies: new Map<TopologyName, TopologyFactory>([["mesh", meshTopology], ["sfu", sfu]]),
    mediaKeys: () => keys,
    close(): void {
      keys?.close();
      keys = null;
    },
  };
}
