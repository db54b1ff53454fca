/**
 * Chat messages: send, read and follow a room, end-to-end encrypted (PROTOCOL.md §11;
 * Python reference: client/chat.py).
 *
 * Sending: seal and sign under the room key of the current epoch and generation, with a
 * random 16-byte client id; on `stale` re-sync and seal again, and on a lost connection wait
 * for the reconnection and send again — always with the same client id, so the server
 * answers a retry with the first message (`duplicate`) and nothing is lost or doubled.
 *
 * Reading (`RoomReader.open`): the checks of §11.4 in order — expiry, epoch (fork warning),
 * key, decryption and signature, replay delay, head reference, the roster at the sender's
 * head (epoch, generation, right to post), the replay guard — and the time the message stops
 * being shown. A message that cannot be shown is reported (`unreadable` / `refused`, with the
 * reason), never dropped silently; only expired ones are skipped.
 *
 * Following (`Chat.follow`): fetch the backlog after the last seq with `follow`, then handle
 * `messages_added` events; after every reconnection fetch again from the last seq handled
 * (with `follow`), so nothing is missed and nothing is shown twice (like `salon read --follow`).
 * Plaintext lives only in memory.
 */
import { equal, toHex } from "../protocol/bytes.ts";
import { randomBytes } from "../protocol/crypto.ts";
import { fingerprint } from "../protocol/identities.ts";
import { type MessageHeader, MessageError, openMessage, sealMessage, unframe } from "../protocol/messages.ts";
import { rosterAt, roomGeneration } from "../protocol/roster.ts";
import { decodeStruct, f, fd, optional, struct } from "../protocol/schema.ts";
import { open as secretboxOpen } from "../protocol/secretbox.ts";
import {
  CLIENT_ID_LEN, type ChatMessage, type MessageSent, type Messages, type MessagesAdded,
} from "../protocol/chat_wire.ts";
import type { ServerMessage } from "../protocol/wire.ts";
import { ServerError, Unreachable, UsageError, type SpaceContext } from "./context.ts";
import { FORK_WARNING, HeadCheck } from "./forks.ts";
import { cleanName, memberLabels } from "./names.ts";
import { RoomKeyConflict, RoomKeyRefused, RoomKeyUnavailable, type Rooms } from "./rooms.ts";

export const PAGE = 500;
/** Seconds allowed between a sender's clock and the server's when bounding visibility. */
export const CLOCK_SKEW = 300;
/** §11.4 step 5: `sent_at − created_at` above this is a replay. */
export const REPLAY_DELAY = 900;
export const REPLAY_MEMORY = 100_000;
export const MAX_CHAT_MESSAGE_BYTES = 16_384;
export const MAX_TTL = 366 * 86400;
const SEND_ATTEMPTS = 3;
/** Messages opened between two yields to the event loop. */
export const YIELD_EVERY = 32;
const RECONNECT_RETRIES = 20;

/** A message in clear. Times are seconds since the epoch (server clock for `sentAt`). */
export interface ShownMessage {
  readonly kind: "shown";
  readonly roomId: string;
  readonly seq: number;
  readonly sentAt: number;
  /** The sender's signed clock. */
  readonly createdAt: number;
  /** When to remove it from the page (null = kept): min(server expiry, created_at + lifetime + 300 s). */
  readonly visibleUntil: number | null;
  readonly sender: Uint8Array;
  readonly senderHex: string;
  readonly senderName: string;
  readonly fingerprint: string;
  readonly text: string;
  readonly mine: boolean;
}

/** A message that cannot be shown: no key on this device (`unreadable`) or failing a check (`refused`). */
export interface HiddenMessage {
  readonly kind: "unreadable" | "refused";
  readonly roomId: string;
  readonly seq: number;
  readonly sentAt: number;
  readonly sender: Uint8Array;
  readonly senderHex: string;
  readonly fingerprint: string;
  /** The detailed reason (for a "details" view; may use protocol words). */
  readonly reason: string;
  /** One calm sentence for the page (no protocol words), from `plainReason`. */
  readonly summary: string;
  /** The refusal says the server may be showing this device a forked history. */
  readonly forked: boolean;
  /** The server's expiry (null = kept): remove the placeholder then too. */
  readonly visibleUntil: number | null;
}

/** The page's sentence for a message it cannot show (UX: no "epoch", "roster", "key generation"). */
export function plainReason(kind: "unreadable" | "refused", reason: string, what: "message" | "story" = "message"): string {
  if (kind === "unreadable") {
    if (reason.includes("history is closed")) return "Sent before you joined, so it can't be read here.";
    if (reason.includes("no member has shared")) return `Waiting for another member to share the key for this ${what}.`;
    return `This ${what} can't be read on this device.`;
  }
  if (reason.includes(FORK_WARNING)) {
    return "Hidden: the server may be showing you a different history than other members see.";
  }
  if (reason.includes("not allowed to post")) return "Hidden: its sender wasn't allowed to post here.";
  if (reason.includes("replay")) return `Hidden: a repeated copy of an earlier ${what}.`;
  return `Hidden: this ${what} failed its security checks.`;
}

export type ReadItem = ShownMessage | HiddenMessage;

/** 16 random bytes: no clock in them, nothing links a member's posts across rooms or memberships. */
export function newClientId(): Uint8Array {
  return randomBytes(CLIENT_ID_LEN);
}

/** When a message stops being shown: the server's expiry, never later than the signed
 * creation time plus the lifetime bound into the ciphertext (plus clock skew). */
export function visibleUntil(serverEnd: number | null, lifetime: number, createdAt: number): number | null {
  if (!lifetime) return serverEnd;
  const signedEnd = createdAt + lifetime + CLOCK_SKEW;
  return serverEnd === null ? signedEnd : Math.min(serverEnd, signedEnd);
}

/** What a reader already accepted in one room: (sender, client id) → seq, and each sender's newest epoch. */
export class ReplayGuard {
  private readonly seen = new Map<string, number>();
  private readonly epochs = new Map<string, number>();

  constructor(private readonly limit = REPLAY_MEMORY) {}

  problem(m: ChatMessage): string | null {
    const first = this.seen.get(`${toHex(m.sender)}/${toHex(m.client_id)}`);
    if (first !== undefined && first !== m.seq) return `it repeats message #${first} (a replay)`;
    const newest = this.epochs.get(toHex(m.sender)) ?? -1;
    if (m.epoch < newest) {
      return `it is encrypted for key epoch ${m.epoch}, older than epoch ${newest} its sender already posted at ` +
        "(a replay, or a post with a retired key)";
    }
    return null;
  }

  accept(m: ChatMessage): void {
    const id = `${toHex(m.sender)}/${toHex(m.client_id)}`;
    this.seen.delete(id);
    this.seen.set(id, m.seq);
    if (this.seen.size > this.limit) this.seen.delete(this.seen.keys().next().value!);
    const sender = toHex(m.sender);
    this.epochs.set(sender, Math.max(m.epoch, this.epochs.get(sender) ?? -1));
  }
}

const PROFILE_INFO = struct("ProfileInfo", [f("display_name", "str"), fd("avatar", optional("bytes"), null)]);

/** The display name in a member's (encrypted) profile, raw; null when missing or unreadable. */
async function profileName(ctx: SpaceContext, keyHex: string): Promise<string | null> {
  const profile = ctx.roster().profiles.get(keyHex);
  const key = profile === undefined ? undefined : ctx.spaceKey(profile.epoch);
  if (profile === undefined || key === undefined) return null;
  try {
    return decodeStruct<{ display_name: string }>(PROFILE_INFO, await secretboxOpen(key, profile.box)).display_name;
  } catch {
    return null;
  }
}

/**
 * A member's label (names.ts: cleaned, with its fingerprint when another member's name looks
 * the same); a former member's last name, marked "(left)".
 */
export async function memberName(ctx: SpaceContext, keyHex: string): Promise<string> {
  const roster = ctx.roster();
  if (roster.members.has(keyHex)) {
    const names = new Map<string, string | null>();
    for (const id of roster.members.keys()) names.set(id, await profileName(ctx, id));
    return (await memberLabels(roster, names)).get(keyHex) ?? "(no name)";
  }
  const name = cleanName((await profileName(ctx, keyHex)) ?? "");
  return name !== "" ? `${name} (left)` : "(former member)";
}

/** Every unexpired message with seq > after, in order, page by page; only strictly increasing seqs. */
export async function fetchAfter(ctx: SpaceContext, roomId: string, after: number, follow = false): Promise<ChatMessage[]> {
  const found: ChatMessage[] = [];
  for (;;) {
    const reply = await ctx.request<Messages>({ type: "fetch_messages", room_id: roomId, after, limit: PAGE, follow });
    follow = false; // once is enough
    const start = after;
    for (const m of reply.messages) {
      if (m.seq > after) {
        found.push(m);
        after = m.seq;
      }
    }
    if (reply.messages.length < PAGE || after === start) return found;
  }
}

/** Decrypts and verifies the messages of one room (§11.4). */
export class RoomReader {
  readonly heads: HeadCheck;
  private readonly names = new Map<string, string>();
  private readonly fingerprints = new Map<string, string>();

  constructor(
    private readonly ctx: SpaceContext, private readonly rooms: Rooms, readonly roomId: string,
    readonly guard: ReplayGuard = new ReplayGuard(),
  ) {
    this.heads = new HeadCheck(ctx, () => this.refresh());
  }

  async refresh(): Promise<void> {
    await this.ctx.sync();
    this.names.clear();
  }

  /** Drops cached display names (a profile may have changed). */
  forgetNames(): void {
    this.names.clear();
  }

  private async fp(senderHex: string, sender: Uint8Array): Promise<string> {
    let out = this.fingerprints.get(senderHex);
    if (out === undefined) {
      out = await fingerprint(sender);
      this.fingerprints.set(senderHex, out);
    }
    return out;
  }

  /** The message in clear, a report of why it cannot be shown, or null if it has expired. */
  async open(m: ChatMessage, now: number = Date.now() / 1000): Promise<ReadItem | null> {
    if (m.expires_at !== null && m.expires_at <= now) return null;
    const ctx = this.ctx;
    const senderHex = toHex(m.sender);
    const base = { roomId: this.roomId, seq: m.seq, sentAt: m.sent_at, sender: m.sender, senderHex, fingerprint: await this.fp(senderHex, m.sender) };
    const hidden = (kind: "unreadable" | "refused", reason: string): HiddenMessage => ({
      ...base, kind, reason, summary: plainReason(kind, reason), forked: reason.includes(FORK_WARNING), visibleUntil: m.expires_at,
    });
    if (!ctx.roster().boxKeys.has(senderHex)) await this.refresh(); // someone joined since we synced
    const epochProblem = await this.heads.epochProblem(m.epoch);
    if (epochProblem !== null) return hidden("refused", epochProblem);
    let generation: number;
    let box: Uint8Array;
    try {
      ({ generation, box } = unframe(m.box));
    } catch (err) {
      return hidden("refused", (err as Error).message);
    }
    let key: Uint8Array;
    try {
      key = await this.rooms.key(this.roomId, m.epoch, generation);
    } catch (err) {
      if (err instanceof RoomKeyRefused || err instanceof RoomKeyConflict) return hidden("refused", err.message);
      if (err instanceof RoomKeyUnavailable) return hidden("unreadable", err.message);
      throw err;
    }
    const header: MessageHeader = {
      spaceId: ctx.spaceId, roomId: this.roomId, epoch: m.epoch, sender: m.sender, clientId: m.client_id, ttl: m.ttl,
    };
    let content;
    try {
      content = await openMessage(box, header, key);
    } catch (err) {
      if (err instanceof MessageError) return hidden("refused", `it does not verify: ${err.message}`);
      throw err;
    }
    if (m.sent_at - content.createdAt > REPLAY_DELAY) {
      return hidden("refused", "it was signed long before the server says it came (a replay)");
    }
    const headProblem = await this.heads.headProblem(content.head, content.headHash);
    if (headProblem !== null) return hidden("refused", headProblem);
    const at = rosterAt(ctx.roster(), content.head);
    if (at === null || at.epoch !== m.epoch) return hidden("refused", "it claims a roster state that never was");
    if (at.roomGeneration(this.roomId) !== generation) return hidden("refused", "its key generation does not match");
    if (!at.mayPost(this.roomId, senderHex)) return hidden("refused", "its sender was not allowed to post here");
    const replay = this.guard.problem(m);
    if (replay !== null) return hidden("refused", replay);
    this.guard.accept(m);
    const roomTtl = ctx.roster().rooms.get(this.roomId)?.spec.ttl ?? 0;
    const until = visibleUntil(m.expires_at, m.ttl || roomTtl, content.createdAt);
    if (until !== null && until <= now) return null;
    let senderName = this.names.get(senderHex);
    if (senderName === undefined) {
      senderName = await memberName(ctx, senderHex);
      this.names.set(senderHex, senderName);
    }
    return {
      ...base, kind: "shown", createdAt: content.createdAt, visibleUntil: until, senderName, text: content.text,
      mine: equal(m.sender, ctx.me.memberKey),
    };
  }
}

export interface FollowHandlers {
  /** Each message in seq order (shown, unreadable or refused). */
  onMessage(item: ReadItem): void;
  /** A message (or a placeholder) reached its visible-until time: remove it from the page. */
  onExpired?(roomId: string, seq: number): void;
  /** A catch-up or an event could not be handled (the follower keeps going; a reconnection retries). */
  onError?(err: unknown): void;
}

/** Follows one room across reconnections; `last` is the last seq handled. */
export class Follower {
  last: number;
  private stopped = false;
  private queue: Promise<void> = Promise.resolve();
  private readonly timers = new Map<number, ReturnType<typeof setTimeout>>();
  private readonly offs: (() => void)[] = [];
  readonly reader: RoomReader;

  constructor(
    private readonly ctx: SpaceContext, rooms: Rooms, readonly roomId: string, private readonly handlers: FollowHandlers,
    after = 0,
  ) {
    this.last = after;
    this.reader = new RoomReader(ctx, rooms, roomId);
  }

  /** Subscribes and fetches the backlog; resolves once the backlog was delivered. */
  start(): Promise<void> {
    this.offs.push(this.ctx.onEvent((event) => this.onEvent(event)));
    this.offs.push(this.ctx.onReconnect(() => void this.enqueue(() => this.catchUp())));
    this.offs.push(this.ctx.onRoster(() => this.reader.forgetNames()));
    return this.enqueue(() => this.catchUp());
  }

  stop(): void {
    this.stopped = true;
    for (const off of this.offs.splice(0)) off();
    for (const timer of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
  }

  private enqueue(job: () => Promise<void>): Promise<void> {
    const next = this.queue.then(async () => {
      if (this.stopped) return;
      try {
        await job();
      } catch (err) {
        this.handlers.onError?.(err);
      }
    });
    this.queue = next;
    return next;
  }

  private async catchUp(): Promise<void> {
    await this.deliver(await fetchAfter(this.ctx, this.roomId, this.last, true));
  }

  private onEvent(event: ServerMessage): void {
    if (event.type !== "messages_added" || (event as MessagesAdded).room_id !== this.roomId) return;
    const added = (event as MessagesAdded).messages;
    void this.enqueue(async () => {
      let fresh = added.filter((m) => m.seq > this.last);
      if (fresh.length > 0 && fresh[0]!.seq > this.last + 1) {
        fresh = await fetchAfter(this.ctx, this.roomId, this.last); // something in between was missed (or expired)
      }
      await this.deliver(fresh);
    });
  }

  private async deliver(messages: readonly ChatMessage[]): Promise<void> {
    let handled = 0;
    for (const m of messages) {
      if (this.stopped) return;
      // A long backlog (or a flood) is opened in slices, letting the page handle input between them.
      if (++handled % YIELD_EVERY === 0) await new Promise((resolve) => setTimeout(resolve, 0));
      if (m.seq <= this.last) continue;
      const item = await this.reader.open(m);
      this.last = m.seq;
      if (item === null) continue;
      this.handlers.onMessage(item);
      if (item.visibleUntil !== null) this.schedule(item.seq, item.visibleUntil);
    }
  }

  private schedule(seq: number, until: number): void {
    // setTimeout caps at 2^31 − 1 ms; a later expiry is re-armed when that fires.
    const delay = Math.min(Math.max(0, until * 1000 - Date.now()), 2 ** 31 - 1);
    this.timers.set(seq, setTimeout(() => {
      this.timers.delete(seq);
      if (this.stopped) return;
      if (until * 1000 > Date.now() + 1000) this.schedule(seq, until);
      else this.handlers.onExpired?.(this.roomId, seq);
    }, delay));
  }
}

/** Sending, history and following for one membership. */
export class Chat {
  constructor(private readonly ctx: SpaceContext, private readonly rooms: Rooms) {}

  /**
   * Seals, signs and sends `text` (ttlSeconds 0 = the room's default lifetime); resolves with
   * the server's acknowledgement after its commit. Retries with the same client id after
   * `stale` (re-sync) and after a lost connection (once reconnected).
   */
  async send(roomId: string, text: string, ttlSeconds = 0, clientId: Uint8Array = newClientId()): Promise<MessageSent> {
    if (!Number.isSafeInteger(ttlSeconds) || ttlSeconds < 0 || ttlSeconds > MAX_TTL) {
      throw new UsageError("a message lifetime is 0 to 366 days");
    }
    if (clientId.length !== CLIENT_ID_LEN) throw new UsageError("a client id is 16 bytes");
    if (!text.trim()) throw new UsageError("the message is empty");
    let stale = 0;
    let lost = 0;
    for (;;) {
      try {
        return await this.sendOnce(roomId, text, ttlSeconds, clientId);
      } catch (err) {
        if (err instanceof ServerError && err.code === "stale" && ++stale < SEND_ATTEMPTS) {
          await this.ctx.sync(); // the epoch or generation moved on: new keys, seal again
          continue;
        }
        if (err instanceof Unreachable && this.ctx.connectionState() !== "closed" && ++lost < RECONNECT_RETRIES) {
          await this.online();
          continue;
        }
        throw err;
      }
    }
  }

  private async sendOnce(roomId: string, text: string, ttl: number, clientId: Uint8Array): Promise<MessageSent> {
    const roster = this.ctx.roster();
    const room = roster.rooms.get(roomId);
    if (room === undefined) throw new UsageError("there is no such room in this space");
    if (room.spec.kind === "conference") throw new UsageError("a call room has no messages");
    const generation = roomGeneration(roster, roomId);
    const key = await this.rooms.key(roomId, roster.epoch, generation);
    const header: MessageHeader = { spaceId: roster.spaceId, roomId, epoch: roster.epoch, sender: this.ctx.me.memberKey, clientId, ttl };
    const box = await sealMessage(
      { header, text, createdAt: Math.floor(Date.now() / 1000), head: roster.head.seq, headHash: roster.head.hash },
      this.ctx.me.signingSeed, key, generation,
    );
    if (box.length > MAX_CHAT_MESSAGE_BYTES) throw new UsageError("the message is too long");
    return this.ctx.request<MessageSent>({ type: "send_message", room_id: roomId, client_id: clientId, epoch: roster.epoch, ttl, box });
  }

  /** Resolves when the connection is online again. */
  private online(): Promise<void> {
    if (this.ctx.connectionState() === "online") return Promise.resolve();
    return new Promise((resolve) => {
      const off = this.ctx.onConnectionState((state) => {
        if (state === "online" || state === "closed") {
          off();
          resolve();
        }
      });
      if (this.ctx.connectionState() === "online") {
        off();
        resolve();
      }
    });
  }

  /** The room's messages after `since`, each shown or reported (expired ones are skipped). */
  async history(roomId: string, since = 0): Promise<ReadItem[]> {
    const reader = new RoomReader(this.ctx, this.rooms, roomId);
    const out: ReadItem[] = [];
    for (const m of await fetchAfter(this.ctx, roomId, since)) {
      const item = await reader.open(m);
      if (item !== null) out.push(item);
    }
    return out;
  }

  /** Follows a room: the backlog after `after`, then live messages; call `stop()` on the result. */
  async follow(roomId: string, handlers: FollowHandlers, after = 0): Promise<Follower> {
    const follower = new Follower(this.ctx, this.rooms, roomId, handlers, after);
    await follower.start();
    return follower;
  }
}
