/**
 * Per-sender media keys of a call and the verification code they give (PROTOCOL.md §14.3,
 * §14.4; Python: client/callkeys.py). Pure apart from randomness; implements `SenderKeys` of
 * topology.ts for the SFU topology (mesh media needs no keys: DTLS-SRTP is end to end).
 *
 * Every participant makes a random base key (epoch 0) for the media it sends and seals it to
 * each admitted, live participant (call.ts). Membership changes, in the server's state order
 * (`version`): someone joins → every key ratchets (HKDF, epoch + 1) and senders seal the ratcheted
 * key to the joiner, who cannot derive earlier keys; someone leaves or is removed → every sender
 * rekeys (fresh random key, epoch + 1) and seals it to the remaining participants only; until
 * that arrives the sender's old key is stale. A key message says at which version it was
 * current, so a receiver that has seen later joins ratchets it itself and one that has seen a
 * later leave keeps it only as the superseded key (grace) and waits for the rekey.
 *
 * Members are hex keys. Methods that derive keys are async (WebCrypto); the caller (call.ts)
 * feeds them in order, one at a time.
 */
import { toHex } from "../protocol/bytes.ts";
import { type MediaKeyMessage, type SenderKey, keyCommitment, ratchetSenderKey, verificationCode } from "../protocol/calls.ts";
import { fromHex } from "../protocol/bytes.ts";
import { randomBytes } from "../protocol/crypto.ts";
import { MAX_EPOCH } from "../protocol/sframe.ts";
import type { SenderKeys } from "./topology.ts";

export const CHANGES_KEPT = 1000;
const KEY_LEN = 32;

interface Held {
  key: SenderKey;
  /** The state version this key is current for. */
  asOf: number;
}

export class CallKeys implements SenderKeys {
  readonly meHex: string;
  readonly maxEpoch: number;
  /** Our key cannot move on without reusing a key id: the call must end for us. */
  exhausted = false;
  own: SenderKey;
  previousOwn: SenderKey | null = null;
  version = -1;
  private readonly peers = new Map<string, Held>();
  private readonly previous = new Map<string, SenderKey>();
  private readonly stale = new Set<string>();
  private readonly changes: [number, "join" | "leave"][] = [];
  /** The newest change no longer in `changes`: keys sealed before it cannot be judged. */
  private forgotten = -1;
  private readonly listeners = new Set<(memberHex: string) => void>();

  constructor(
    me: Uint8Array,
    private readonly randomKey: () => Uint8Array = () => randomBytes(KEY_LEN),
    maxEpoch: number = MAX_EPOCH,
  ) {
    this.meHex = toHex(me);
    this.maxEpoch = Math.min(maxEpoch, MAX_EPOCH);
    this.own = { epoch: 0, key: this.randomKey() };
  }

  /** We were admitted at `version`: nothing before it concerns us. */
  baseline(version: number): void {
    this.version = Math.max(this.version, version);
  }

  /** The admitted participants changed at `version`: rekey if anyone left, else ratchet if
   * anyone joined. Resolves to the change made ("leave" | "join") or null. */
  async membership(version: number, joined: readonly string[], left: readonly string[]): Promise<"join" | "leave" | null> {
    for (const member of left) {
      const had = this.peers.get(member) ?? this.previous.get(member);
      this.peers.delete(member);
      this.previous.delete(member);
      this.stale.delete(member);
      if (had !== undefined) this.notify(member);
    }
    if (joined.length === 0 && left.length === 0) {
      this.version = Math.max(this.version, version);
      return null;
    }
    // A change in a state no newer than the last one (a server reordering states, or a state
    // judged again after a roster change) still moves every key: a leaver must not keep
    // reading, a joiner must not get the keys from before it joined.
    const late = version <= this.version;
    version = Math.max(version, this.version);
    if (this.own.epoch >= this.maxEpoch) {
      this.exhausted = true;
      this.version = version;
      return null;
    }
    const kind = left.length > 0 ? "leave" : "join";
    if (!late) {
      this.changes.push([version, kind]);
      if (this.changes.length > CHANGES_KEPT) {
        const dropped = this.changes.splice(0, this.changes.length - CHANGES_KEPT);
        this.forgotten = dropped.at(-1)?.[0] ?? this.forgotten;
      }
    }
    this.previousOwn = this.own;
    this.own = kind === "leave" ? { epoch: this.own.epoch + 1, key: this.randomKey() } : await ratchetSenderKey(this.own);
    for (const [member, held] of this.peers) {
      if (held.asOf < version || late) await this.advance(member, held, kind, version);
    }
    this.version = version;
    this.notify(this.meHex);
    return kind;
  }

  private async advance(member: string, held: Held, kind: "join" | "leave", version: number): Promise<void> {
    held.asOf = version;
    // Superseded by a leave already: the sender's fresh key is on its way. A join does not
    // ratchet it on (the leaver could derive that key too), nor make it previous again.
    if (this.stale.has(member)) return;
    this.previous.set(member, held.key);
    if (kind === "leave" || held.key.epoch >= this.maxEpoch) {
      // Superseded now, not when the rekey arrives: a server withholding it must not keep
      // alive a key the removed member holds.
      this.stale.add(member);
    } else {
      held.key = await ratchetSenderKey(held.key);
    }
    this.notify(member);
  }

  /** Our current key, to seal to a participant. */
  message(): MediaKeyMessage {
    return { epoch: this.own.epoch, key: this.own.key, atVersion: this.version };
  }

  /** Take a key `sender` sealed to us; true if it is news (a newer epoch). */
  async receive(sender: string, message: MediaKeyMessage): Promise<boolean> {
    if (message.key.length !== KEY_LEN || !(message.epoch >= 0 && message.epoch <= this.maxEpoch)) return false;
    if (message.atVersion < this.forgotten) return false; // sealed before changes we no longer know of (a leave among them?)
    // Which changes it missed: the joins to ratchet over, up to a leave (the sender rekeys after
    // that one: the key is only kept as superseded). Judged before any key is derived, so a
    // message that is no news costs nothing (a flood of them neither).
    let joins = 0;
    let superseded = false;
    for (const [version, kind] of this.changes) {
      if (message.atVersion < version && version <= this.version) {
        if (kind === "leave") {
          superseded = true;
          break;
        }
        joins++;
      }
    }
    const epoch = message.epoch + joins;
    const held = this.peers.get(sender);
    const previous = this.previous.get(sender);
    if (held !== undefined && epoch <= held.key.epoch) return false;
    if (superseded && previous !== undefined && epoch <= previous.epoch) return false;
    if (!superseded && epoch > this.maxEpoch) return false;
    let key: SenderKey = { epoch: message.epoch, key: message.key };
    for (let i = 0; i < joins; i++) key = await ratchetSenderKey(key);
    if (superseded) {
      this.keepSuperseded(sender, key);
      return false;
    }
    if (held !== undefined && (previous === undefined || held.key.epoch > previous.epoch)) this.previous.set(sender, held.key);
    this.peers.set(sender, { key, asOf: Math.max(message.atVersion, this.version) });
    this.stale.delete(sender);
    this.notify(sender);
    return true;
  }

  /** A key the sender used until it heard of a later leave: never current again, but what it
   * sent meanwhile is ours to read (kept as the previous key, in grace). */
  private keepSuperseded(sender: string, key: SenderKey): void {
    const held = this.peers.get(sender);
    const previous = this.previous.get(sender);
    if (held !== undefined && key.epoch <= held.key.epoch) return;
    if (previous !== undefined && key.epoch <= previous.epoch) return;
    this.previous.set(sender, key);
    this.notify(sender);
  }

  /** SenderKeys.current: our sending key. */
  current(): SenderKey {
    return this.own;
  }

  /** The key `member` sends with now (ours for us); null if not held yet or stale. */
  currentOf(memberHex: string): SenderKey | null {
    if (memberHex === this.meHex) return this.own;
    const held = this.peers.get(memberHex);
    return held === undefined || this.stale.has(memberHex) ? null : held.key;
  }

  /** Every key of `member` that may still decrypt its media, newest first: current (unless
   * stale) and previous (the overlap). */
  usable(memberHex: string): SenderKey[] {
    const keys = memberHex === this.meHex ? [this.own, this.previousOwn] : [this.currentOf(memberHex), this.previous.get(memberHex) ?? null];
    return keys.filter((k): k is SenderKey => k !== null).sort((a, b) => b.epoch - a.epoch);
  }

  /** A key of `member` for `epoch`: the current or the previous one. */
  keyFor(memberHex: string, epoch: number): SenderKey | null {
    const candidates = memberHex === this.meHex ? [this.own, this.previousOwn] : [this.peers.get(memberHex)?.key ?? null, this.previous.get(memberHex) ?? null];
    return candidates.find((k) => k !== null && k.epoch === epoch) ?? null;
  }

  /** The verification code for these participants (us included or not), or null while a key
   * is missing or stale. */
  async code(participants: Iterable<string>): Promise<string | null> {
    const pairs: [Uint8Array, Uint8Array][] = [[fromHex(this.meHex), await keyCommitment(this.own.key)]];
    for (const member of new Set(participants)) {
      if (member === this.meHex) continue;
      const key = this.currentOf(member);
      if (key === null) return null;
      pairs.push([fromHex(member), await keyCommitment(key.key)]);
    }
    return verificationCode(pairs);
  }

  onChange(listener: (memberHex: string) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private notify(memberHex: string): void {
    for (const listener of this.listeners) listener(memberHex);
  }
}
