/**
 * The frame logic of the SFrame media worker (PROTOCOL.md §14.3, §15), pure and testable in
 * node: a sender's key and counter, receivers' per-publisher contexts (keys, overlap, replay
 * windows), and what happens to one encoded frame. No DOM, no worker globals, no clock of its
 * own (callers pass `now` in milliseconds). Key bytes never leave this module's objects.
 *
 * Only SFU media goes through here: mesh media is DTLS-SRTP end to end between the pair
 * (§14.2), its media keys serve only the verification code (§14.4).
 */
import {
  type Codec, type SFrameKey, KeyIdExhausted, MAX_EPOCH, SFrameError, clearSize, decodeHeader, kidIndex,
  kidEpoch, mediaKid, protectFrame, sframeKey, unprotectFrame,
} from "../protocol/sframe.ts";

/** How long a superseded key still decrypts after a newer epoch of its sender decrypted a frame
 * (§15.5 `OVERLAP_SECONDS`) ... */
export const OVERLAP_MS = 2000;
/** ... and never longer than this after it was superseded (§15.5 `SUPERSEDED_MAX_SECONDS`). */
export const SUPERSEDED_MAX_MS = 5000;
/** Earlier epochs of a sender's ratchet chain (joins since its last fresh key) kept (§15.5). */
export const CHAIN_KEPT = 8;
const RATCHET_INFO = new Uint8Array([...new TextEncoder().encode("salon/call-media-ratchet/v1"), 0]);
/** Per key id (§15.3: audio and video share one counter). */
export const REPLAY_WINDOW = 1024;
/** How long a frame may wait for its key, and how many may wait per track (§15.5). */
export const HOLD_MS = 3000;
export const HOLD_MAX_FRAMES = 256;
/** Counters stop here: JS numbers are exact up to 2^53 − 1 (RFC 9605 allows 2^64 − 1). */
export const MAX_CTR = Number.MAX_SAFE_INTEGER;

export { KeyIdExhausted, MAX_EPOCH };

export class MediaKeyError extends Error {
  override name = "MediaKeyError";
}

function checkKey(key: Uint8Array): void {
  if (!(key instanceof Uint8Array) || key.length !== 32) throw new MediaKeyError("a media key is 32 bytes");
}

/** ratchet(k) of §14.3: HKDF-SHA256(k, salt "", info label || 0x00), 32 bytes. */
export async function ratchetKey(key: Uint8Array): Promise<Uint8Array> {
  const k = await crypto.subtle.importKey("raw", new Uint8Array(key), "HKDF", false, ["deriveBits"]);
  const params = { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info: RATCHET_INFO };
  return new Uint8Array(await crypto.subtle.deriveBits(params, k, 256));
}

async function fingerprint(key: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", new Uint8Array(key)));
  return Array.from(d.subarray(0, 16), (b) => b.toString(16).padStart(2, "0")).join("");
}

// ---- sender ---------------------------------------------------------------------------

/**
 * One participant's sending state: the current key id and its counter, shared by all its
 * tracks (§15.3). A new epoch switches at once (§15.5: receivers keep the previous key for
 * the overlap, that is the make-before-break). A key id is never re-added with another key,
 * and a counter never repeats under one key id, even if that key comes back.
 */
export class MediaSender {
  #current: { kid: number; key: SFrameKey } | null = null;
  /** kid → (fingerprint of its base key, next counter): no counter reuse, no kid with two keys. */
  readonly #used = new Map<number, { print: string; next: number }>();

  get kid(): number | null {
    return this.#current?.kid ?? null;
  }

  get index(): number | null {
    return this.#current === null ? null : kidIndex(this.#current.kid);
  }

  /** Installs the sender's key for (index, epoch); throws KeyIdExhausted for an epoch without a key id. */
  async setKey(index: number, epoch: number, baseKey: Uint8Array): Promise<number> {
    checkKey(baseKey);
    const kid = mediaKid(index, epoch);
    const cur = this.#current;
    if (cur !== null && kidIndex(cur.kid) === index && kid < cur.kid) {
      throw new MediaKeyError(`epoch ${epoch} is older than the current one`);
    }
    const print = await fingerprint(baseKey);
    const used = this.#used.get(kid);
    if (used !== undefined && used.print !== print) {
      throw new KeyIdExhausted(`key id ${kid} was already sent under another key`);
    }
    if (used === undefined) this.#used.set(kid, { print, next: 0 });
    this.#current = { kid, key: await sframeKey(baseKey, kid) };
    return kid;
  }

  /** Stops sending (a participant leaving, or past its last key id). */
  clear(): void {
    this.#current = null;
  }

  /** protected frame, or null when there is no key or the counter is spent (the frame is dropped). */
  async protect(codec: Codec, frame: Uint8Array): Promise<Uint8Array | null> {
    const cur = this.#current;
    if (cur === null) return null;
    const state = this.#used.get(cur.kid);
    if (state === undefined || state.next > MAX_CTR) return null;
    const ctr = state.next;
    state.next = ctr + 1; // reserved before use: never handed out twice
    return protectFrame(cur.key, ctr, codec, frame);
  }
}

// ---- receivers ------------------------------------------------------------------------

/** A replay window of REPLAY_WINDOW counters below the highest accepted one. */
export class ReplayWindow {
  #top = -1;
  readonly #seen = new Uint8Array(REPLAY_WINDOW);

  /** True if `ctr` is fresh; records it. Call only for authentic frames. */
  accept(ctr: number): boolean {
    const slot = ctr % REPLAY_WINDOW;
    if (ctr > this.#top) {
      if (ctr - this.#top >= REPLAY_WINDOW) this.#seen.fill(0);
      else for (let c = this.#top + 1; c < ctr; c++) this.#seen[c % REPLAY_WINDOW] = 0;
      this.#top = ctr;
      this.#seen[slot] = 1;
      return true;
    }
    if (this.#top - ctr >= REPLAY_WINDOW || this.#seen[slot] === 1) return false;
    this.#seen[slot] = 1;
    return true;
  }
}

interface HeldKey {
  key: SFrameKey;
  epoch: number;
  print: string;
  /** The base key (to tell whether a newer key ratchets from it). */
  base: Uint8Array;
  /** null while current (or in the current key's ratchet chain); else when it stops decrypting. */
  expires: number | null;
  window: ReplayWindow;
}

/** Does `held` ratchet forward to `baseKey` at `epoch` (within CHAIN_KEPT steps)? */
async function ratchetsTo(held: HeldKey, epoch: number, baseKey: Uint8Array): Promise<boolean> {
  const steps = epoch - held.epoch;
  if (steps <= 0 || steps > CHAIN_KEPT) return false;
  let k = held.base;
  for (let i = 0; i < steps; i++) k = await ratchetKey(k);
  return k.length === baseKey.length && k.every((b, i) => b === baseKey[i]);
}

/** One publisher's receiving context (§15.8): only key ids naming its index. */
class PublisherContext {
  readonly keys = new Map<number, HeldKey>();
  /** The time the whole context goes (the publisher left), or null. */
  gone: number | null = null;
  /** The newest epoch ever installed (−1: none yet). */
  newestEpoch = -1;
  /** The newest epoch a frame decrypted under (−1: none yet). */
  inUse = -1;

  constructor(readonly index: number) {}

  /** Drops the keys whose time is over; returns their key ids. */
  prune(now: number): number[] {
    const gone: number[] = [];
    for (const [kid, k] of this.keys) {
      if (k.expires !== null && k.expires <= now) {
        this.keys.delete(kid);
        gone.push(kid);
      }
    }
    return gone;
  }

  /** The newest key not superseded (older unsuperseded ones are its ratchet chain). */
  current(): HeldKey | undefined {
    let cur: HeldKey | undefined;
    for (const k of this.keys.values()) if (k.expires === null && (cur === undefined || k.epoch > cur.epoch)) cur = k;
    return cur;
  }

  /** `k` is superseded: it goes OVERLAP_MS after a newer epoch decrypts a frame, SUPERSEDED_MAX_MS from now at the latest. */
  retireLater(k: HeldKey, now: number): void {
    let when = k.expires ?? now + SUPERSEDED_MAX_MS;
    if (this.inUse > k.epoch) when = Math.min(when, now + OVERLAP_MS);
    k.expires = when;
  }

  /** A frame under `epoch` decrypted: older keys have OVERLAP_MS left. */
  seen(epoch: number, now: number): void {
    if (epoch <= this.inUse) return;
    this.inUse = epoch;
    for (const k of this.keys.values()) if (k.expires !== null && k.epoch < epoch) k.expires = Math.min(k.expires, now + OVERLAP_MS);
  }
}

/** Why a received frame was not passed to the decoder. */
export type Drop = "foreign-kid" | "no-key" | "failure" | "replay" | "malformed" | "empty";

/** `hold`: a "no-key" frame may wait for its key (its kid names a current sender whose key is on its way). */
export type Opened =
  | { ok: true; kid: number; frame: Uint8Array }
  | { ok: false; drop: Drop; detail: string; hold?: boolean };

/**
 * Every publisher's receiving context. Keys come from the page's call code (which applies
 * §14.3: ratchets, at_version, leaves); here: install, supersede with an overlap, forget.
 */
export class MediaReceivers {
  readonly #contexts = new Map<number, PublisherContext>();
  /** Key ids whose key stopped decrypting here: never installed again (a page re-posting a
   * sender's usable keys would otherwise bring back a key a removed member holds, §15.5). */
  readonly #retired = new Set<number>();
  /** One's own sender index: frames under it are refused (§15.8). */
  self: number | null = null;

  /**
   * Installs publisher `index`'s key for `epoch`. A newer epoch becomes current; the held keys
   * it ratchets from (a join) stay, as its chain (CHAIN_KEPT), any other is superseded
   * (retireLater); an older one, or one the call's keys say is `superseded` (sealed before a
   * leave this page saw), is kept only as a superseded key. A key id already held with another
   * key is refused (one key id names one key); one whose key stopped decrypting here is never
   * installed again.
   */
  async setKey(index: number, epoch: number, baseKey: Uint8Array, now: number, superseded = false): Promise<number> {
    checkKey(baseKey);
    const kid = mediaKid(index, epoch);
    if (index === this.self) throw new MediaKeyError("that sender index is one's own");
    let ctx = this.#contexts.get(index);
    if (ctx === undefined || ctx.gone !== null) {
      if (ctx !== undefined) for (const old of ctx.keys.keys()) this.#retired.add(old);
      ctx = new PublisherContext(index);
      this.#contexts.set(index, ctx);
    }
    this.#prune(ctx, now);
    if (this.#retired.has(kid)) return kid; // its time is over: never again
    const print = await fingerprint(baseKey);
    const held = ctx.keys.get(kid);
    if (held !== undefined) {
      if (held.print !== print) throw new MediaKeyError(`key id ${kid} already has another key`);
      return kid;
    }
    const entry: HeldKey = {
      key: await sframeKey(baseKey, kid), epoch, print, base: new Uint8Array(baseKey), expires: null, window: new ReplayWindow(),
    };
    const cur = ctx.current();
    if (superseded || (cur !== undefined && cur.epoch > epoch)) {
      ctx.retireLater(entry, now); // late, or sealed before a leave: only a superseded key
    } else {
      const chain: HeldKey[] = [];
      for (const v of ctx.keys.values()) {
        if (v.expires !== null) continue; // superseded already: runs out on its own
        if (await ratchetsTo(v, epoch, baseKey)) chain.push(v);
        else ctx.retireLater(v, now); // make-before-break: decrypts a while longer
      }
      chain.sort((a, b) => b.epoch - a.epoch);
      for (const v of chain.slice(CHAIN_KEPT)) ctx.retireLater(v, now);
    }

    ctx.keys.set(kid, entry);
    ctx.newestEpoch = Math.max(ctx.newestEpoch, epoch);
    return kid;
  }

  #prune(ctx: PublisherContext, now: number): void {
    for (const kid of ctx.prune(now)) this.#retired.add(kid);
  }

  /** A publisher the page knows is in the call (a receiver bound to it): its first frames may wait for its first key. */
  expect(index: number): void {
    if (index === this.self || this.#contexts.has(index)) return;
    this.#contexts.set(index, new PublisherContext(index));
  }

  /** Someone left: publisher `index`'s current key becomes previous, decrypting OVERLAP_MS more (§15.5). */
  supersede(index: number, now: number): void {
    const ctx = this.#contexts.get(index);
    if (ctx === undefined) return;
    for (const k of ctx.keys.values()) ctx.retireLater(k, now); // with its ratchet chain
  }

  /** Publisher `index` left: all its keys stop after OVERLAP_MS (§15.5). */
  remove(index: number, now: number): void {
    const ctx = this.#contexts.get(index);
    if (ctx === undefined) return;
    ctx.gone = now + OVERLAP_MS;
    for (const k of ctx.keys.values()) if (k.expires === null || k.expires > ctx.gone) k.expires = ctx.gone;
  }

  /** The key ids currently held (for tests and status, no key material). */
  kids(now: number): number[] {
    const out: number[] = [];
    for (const ctx of this.#contexts.values()) {
      this.#prune(ctx, now);
      out.push(...ctx.keys.keys());
    }
    return out.sort((a, b) => a - b);
  }

  /**
   * §15.8: the frame's source (the publisher bound to the receiver, or the CSRC the SFU put
   * on it) picks the only context tried; the key id read after the clear bytes must name it.
   * Refused frames touch no key and no replay window. Only an authentic frame moves its key
   * id's replay window.
   */
  async open(source: number | null, codec: Codec, data: Uint8Array, now: number): Promise<Opened> {
    if (source === null) return { ok: false, drop: "foreign-kid", detail: "no source" };
    if (source === this.self) return { ok: false, drop: "foreign-kid", detail: "one's own index" };
    const ctx = this.#contexts.get(source);
    if (ctx === undefined) return { ok: false, drop: "foreign-kid", detail: `unknown sender index ${source}` };
    if (data.length === 0) return { ok: false, drop: "empty", detail: "an empty frame" }; // browsers make some
    const full = clearSize(codec, data);
    let kid: number;
    try {
      if (data.length <= full) throw new SFrameError("no SFrame header after the clear bytes");
      kid = decodeHeader(data.subarray(full)).kid;
    } catch (e) {
      return { ok: false, drop: "malformed", detail: e instanceof Error ? e.message : "bad header" };
    }
    if (kidIndex(kid) !== source) return { ok: false, drop: "foreign-kid", detail: `key id ${kid} is not sender ${source}'s` };
    this.#prune(ctx, now);
    const held = ctx.keys.get(kid);
    if (held === undefined) {
      // §15.5: a current sender's first key, or a later epoch than the newest installed, may be on its way
      const hold = ctx.gone === null && kidEpoch(kid) > ctx.newestEpoch;
      return { ok: false, drop: "no-key", detail: `no key for key id ${kid}`, hold };
    }
    let out: { kid: number; ctr: number; frame: Uint8Array };
    try {
      out = await unprotectFrame(codec, data, (k) => (k === kid ? held.key : undefined));
    } catch (e) {
      return { ok: false, drop: "failure", detail: e instanceof Error ? e.message : "does not authenticate" };
    }
    if (out.kid !== kid) return { ok: false, drop: "failure", detail: "split mismatch" };
    if (ctx.keys.get(kid) !== held) return { ok: false, drop: "no-key", detail: "key removed meanwhile" };
    if (!held.window.accept(out.ctr)) return { ok: false, drop: "replay", detail: `counter ${out.ctr} replayed` };
    ctx.seen(held.epoch, now);
    return { ok: true, kid, frame: out.frame };
  }
}

// ---- one picture per slot (§15.8) ---------------------------------------------------------

/**
 * Which sender's picture a video slot's decoder holds: the key that opened a frame names its
 * sender (`kid >> 16`). A frame from another sender (a switch, or a hostile SFU interleaving
 * two publishers' genuine frames) starts a new picture only at its keyframe; its delta frames
 * before one are refused, never decoded on the other's picture.
 */
export class SlotPicture {
  of: number | null = null;

  /** Whether the decrypted VP8 `frame`, opened under `kid`, may go to this slot's decoder. */
  admit(kid: number, frame: Uint8Array): boolean {
    const from = kidIndex(kid);
    if (from === this.of) return true;
    const keyframe = frame.length > 0 && (frame[0]! & 0x01) === 0;
    if (keyframe) this.of = from;
    return keyframe || this.of === null; // the first picture: the decoder waits for its keyframe
  }
}

// ---- frames waiting for their key (§15.5) --------------------------------------------------

/**
 * One receiving track's frames in order: each is opened as it comes, unless frames wait
 * before it; a frame whose key is on its way (Opened.hold) waits up to HOLD_MS, at most
 * HOLD_MAX_FRAMES of them; `retry` (a key arrived, or time passed) opens what waits, in order.
 * Only opened frames are emitted; everything else is dropped, counted by the caller.
 * With `lane` (the frame's source: a slot may carry several publishers), frames wait only
 * behind waiting frames of their own lane: one publisher's frames under an epoch whose key
 * never comes do not hold up another's.
 */
export class FrameQueue<F> {
  readonly #items: { frame: F; since: number; waited: boolean }[] = [];
  /** Frames that waited for their key (opened or not in the end). */
  waited = 0;
  #chain: Promise<void> = Promise.resolve();

  constructor(
    readonly open: (frame: F) => Promise<Opened>,
    readonly emit: (frame: F, opened: Opened & { ok: true }) => void,
    readonly drop: (frame: F, opened: Opened & { ok: false }) => void,
    readonly lane: (frame: F) => number | null = () => null,
  ) {}

  get waiting(): number {
    return this.#items.length;
  }

  /** A new frame, at `now` (ms). Resolves once it was handled or put to wait. */
  push(frame: F, now: number): Promise<void> {
    this.#items.push({ frame, since: now, waited: false });
    return this.retry(now);
  }

  /** Opens the waiting frames, in order, as far as their keys allow. */
  retry(now: number): Promise<void> {
    // Never a rejected chain: one bad frame must not stall the track for good.
    this.#chain = this.#chain.then(() => this.#drain(now)).catch(() => undefined);
    return this.#chain;
  }

  async #open(frame: F): Promise<Opened> {
    try {
      return await this.open(frame);
    } catch (e) {
      return { ok: false, drop: "malformed", detail: e instanceof Error ? e.message : "could not be read" };
    }
  }

  async #drain(now: number): Promise<void> {
    const waiting = new Set<number | null>(); // lanes whose first frame waits for its key
    let at = 0;
    while (at < this.#items.length) {
      const head = this.#items[at] as { frame: F; since: number; waited: boolean };
      const lane = this.#lane(head.frame);
      if (waiting.has(lane)) {
        at++; // behind a frame of its lane that waits: stays in order
        continue;
      }
      const opened = await this.#open(head.frame);
      if (opened.ok) {
        this.#items.splice(at, 1);
        this.#handOut(() => this.emit(head.frame, opened));
        continue;
      }
      const young = now - head.since < HOLD_MS;
      if (opened.hold === true && young && this.#items.length <= HOLD_MAX_FRAMES) {
        if (!head.waited) {
          head.waited = true;
          this.waited++;
        }
        waiting.add(lane); // wait for the key
        at++;
        continue;
      }
      this.#items.splice(at, 1);
      this.#handOut(() => this.drop(head.frame, opened));
    }
  }

  #lane(frame: F): number | null {
    try {
      return this.lane(frame);
    } catch {
      return null;
    }
  }

  /** A callback that throws loses its one frame, not the queue. */
  #handOut(f: () => void): void {
    try {
      f();
    } catch {
      // the frame is gone; the frames behind it still go on
    }
  }
}

// ---- counters -------------------------------------------------------------------------

/** What one track's transform did (no key material, safe to show). */
export interface TrackCounters {
  side: "send" | "receive";
  kind: "video" | "audio" | "";
  /** send: frames protected; receive: frames opened. */
  encrypted: number;
  decrypted: number;
  /** Authenticated-decryption failures under the source's own key id. */
  failures: number;
  droppedForeignKid: number;
  droppedNoKey: number;
  droppedReplay: number;
  droppedMalformed: number;
  /** Empty encoded frames (nothing to decrypt, nothing passed on). */
  droppedEmpty: number;
  /** send side: frames dropped for want of a key or a counter; any side: unsupported codec. */
  droppedOther: number;
  /** Video frames of another publisher than the one whose picture this slot decodes, before its keyframe (§15.8). */
  droppedOtherSender: number;
  /** receive side: frames that waited for their key (§15.5: up to 3 s). */
  held: number;
  /** send side: frames shorter than their clear bytes (empty), sent per §15.4 but dropped by receivers (§15.8). */
  sentShort: number;
  /** Plain frame bytes protected (send) or opened (receive). */
  bytes: number;
  /** Total time spent in protect/open (ms), for the figures. */
  cryptoMs: number;
  lastKid: number | null;
  /** Why the last dropped frame was dropped (words and numbers, no key material). */
  lastDrop: string;
}

export function newCounters(side: "send" | "receive"): TrackCounters {
  return {
    side, kind: "", encrypted: 0, decrypted: 0, failures: 0, droppedForeignKid: 0, droppedNoKey: 0, droppedReplay: 0,
    droppedMalformed: 0, droppedEmpty: 0, droppedOther: 0, droppedOtherSender: 0, sentShort: 0, held: 0, bytes: 0, cryptoMs: 0, lastKid: null, lastDrop: "",
  };
}

export function countDrop(c: TrackCounters, drop: Drop): void {
  if (drop === "foreign-kid") c.droppedForeignKid++;
  else if (drop === "no-key") c.droppedNoKey++;
  else if (drop === "failure") c.failures++;
  else if (drop === "replay") c.droppedReplay++;
  else if (drop === "empty") c.droppedEmpty++;
  else c.droppedMalformed++;
}
