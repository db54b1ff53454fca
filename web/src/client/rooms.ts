/**
 * Rooms of a space and their keys (PROTOCOL.md §10; Python reference: client/rooms.py).
 *
 * A room is a signed `room` record whose name is secretboxed under the space key of its epoch.
 * Each room has one key per space epoch, committed to on the chain (`room_key` records) and
 * sealed to members in envelopes the server stores; in a "since-join" room the key moves one
 * generation forward on every join (members advance locally, a joiner is sealed the generation
 * of its join). An envelope is accepted only if its sender was a member during its epoch, it
 * opens, names this room and epoch, and carries the committed key; refusals are remembered for
 * the page's life and shown (a message "refused this room's key …").
 *
 * Key duty: while the page is open, `startKeyDuty()` seals every current room key this device
 * holds to the members who lack one, after each roster change and reconnection, so delivery
 * never waits on a terminal user (like `share_room_keys` on every CLI command).
 */
import { equal, fromHex, toHex } from "../protocol/bytes.ts";
import { randomBytes } from "../protocol/crypto.ts";
import { fingerprint } from "../protocol/identities.ts";
import { newId } from "../protocol/ids.ts";
import type { Room, RoomGrant, RoomKey, RecordBody } from "../protocol/recordtypes.ts";
import { advance, roomKeyCommit } from "../protocol/roomkeys.ts";
import {
  mayPost, memberDuring, memberGeneration, roomGeneration, roomKeyId, type Roster,
} from "../protocol/roster.ts";
import { decodeStruct, encodeStruct, f, struct } from "../protocol/schema.ts";
import { openEnvelope, sealKey } from "../protocol/sealed.ts";
import { open as secretboxOpen, seal as secretboxSeal } from "../protocol/secretbox.ts";
import type { Envelope, EnvelopeHolders, Envelopes, Appended, Done } from "../protocol/wire.ts";
import type { HeldRoomKey } from "../keystore/vault.ts";
import { ServerError, UsageError, VerificationError, type SpaceContext } from "./context.ts";
import { cleanName } from "./names.ts";

export type RoomKind = "chat" | "channel" | "conference";
export type HistoryMode = "since-join" | "shared";

/** No member holding this epoch's room key has shared it with this device (yet). */
export class RoomKeyUnavailable extends VerificationError {
  override name = "RoomKeyUnavailable";
}
/** The only envelopes for this key failed the checks (relabelled, from a non-member, not the committed key). */
export class RoomKeyRefused extends RoomKeyUnavailable {
  override name = "RoomKeyRefused";
}
/** A key does not match the commitment on the chain: someone made a second key. */
export class RoomKeyConflict extends VerificationError {
  override name = "RoomKeyConflict";
}

export const NOT_SHARED_YET =
  "no member has shared this room's current key with you yet; it arrives as soon as any member who holds it is online";
export const HISTORY_CLOSED = "sent before this member joined (the room's history is closed)";

const ROOM_NAME = struct("RoomName", [f("name", "str")]);
export const UNREADABLE_NAME = "(unreadable name)";

export interface RoomView {
  readonly roomId: string;
  readonly name: string;
  readonly kind: RoomKind;
  readonly history: HistoryMode;
  /** The room's default message lifetime in seconds (0 = kept). */
  readonly ttl: number;
  readonly spec: Room;
  /** Hex member keys granted publishing (channels). */
  readonly publishers: ReadonlySet<string>;
  /** Whether this membership may post here now (chat: every member; channel: moderators, owners, publishers). */
  readonly mayPost: boolean;
  readonly createdSeq: number;
}

export interface CreateRoomOptions {
  history?: HistoryMode;
  /** Default message lifetime in seconds (0 = kept). */
  ttl?: number;
  /** Channels: members (member keys) granted publishing in the same append. */
  publishers?: readonly Uint8Array[];
  lobby?: boolean;
  stage?: boolean;
  topology?: "auto" | "mesh" | "sfu";
}

const slotId = (roomId: string, epoch: number): string => `${roomId}/${epoch}`;
const hex = toHex;

export async function roomName(ctx: SpaceContext, spec: Room): Promise<string> {
  const key = ctx.spaceKey(spec.epoch);
  if (key === undefined) return UNREADABLE_NAME;
  try {
    return cleanName(decodeStruct<{ name: string }>(ROOM_NAME, await secretboxOpen(key, spec.name_box)).name) || UNREADABLE_NAME;
  } catch {
    return UNREADABLE_NAME;
  }
}

/** The rooms, keys and key duty of one membership. */
export class Rooms {
  /** Why an envelope for (room, epoch) was refused this session (shown with its messages). */
  private readonly refused = new Map<string, string>();
  private readonly cache = new Map<string, Uint8Array>();
  private readonly names = new Map<string, string>();
  private duty: Promise<number> | null = null;
  private dutyAgain = false;

  constructor(readonly ctx: SpaceContext) {}

  // ---- the rooms view ----------------------------------------------------------------------

  /** Every room of the roster, names decrypted, sorted by name then id. */
  async list(): Promise<RoomView[]> {
    const roster = this.ctx.roster();
    const me = hex(this.ctx.me.memberKey);
    const views: RoomView[] = [];
    for (const [roomId, room] of roster.rooms) {
      const cacheKey = `${roomId}/${hex(room.spec.name_box)}`;
      let name = this.names.get(cacheKey);
      if (name === undefined) {
        name = await roomName(this.ctx, room.spec);
        if (name !== UNREADABLE_NAME) this.names.set(cacheKey, name);
      }
      views.push({
        roomId, name, kind: room.spec.kind, history: room.spec.history, ttl: room.spec.ttl, spec: room.spec,
        publishers: room.publishers, mayPost: mayPost(roster, roomId, me), createdSeq: room.createdSeq,
      });
    }
    return views.sort((a, b) => a.name.toLowerCase().localeCompare(b.name.toLowerCase()) || (a.roomId < b.roomId ? -1 : 1));
  }

  async get(roomId: string): Promise<RoomView> {
    const view = (await this.list()).find((v) => v.roomId === roomId);
    if (view === undefined) throw new UsageError("there is no such room in this space");
    return view;
  }

  /** Creates a room exactly as `salon room create` does: room record, commitments, envelopes. */
  async create(kind: RoomKind, name: string, options: CreateRoomOptions = {}): Promise<RoomView> {
    const clean = name.trim();
    if (!clean) throw new UsageError("the room needs a name");
    if ((await this.list()).some((v) => v.name.toLowerCase() === clean.toLowerCase())) {
      throw new UsageError(`there is already a room called "${clean}"`);
    }
    if ((options.publishers ?? []).length > 0 && kind !== "channel") throw new UsageError("only channels have publishers");
    const history: HistoryMode = kind === "conference" ? "shared" : (options.history ?? "since-join");
    const ttl = options.ttl ?? 0;
    if (!Number.isSafeInteger(ttl) || ttl < 0 || ttl > 366 * 86400) throw new UsageError("a message lifetime is 0 to 366 days");
    const roomId = newId();
    const roster = this.ctx.roster();
    const spaceKey = this.ctx.spaceKey(roster.epoch);
    if (spaceKey === undefined) throw new RoomKeyUnavailable("this device lacks the current space key; try again shortly");
    const base: HeldRoomKey = { room_id: roomId, epoch: roster.epoch, generation: 0, key: randomBytes(32) };
    const nameBox = await secretboxSeal(spaceKey, encodeStruct(ROOM_NAME, { name: clean }));
    const spec: Room = {
      type: "room", room_id: roomId, kind, epoch: roster.epoch, name_box: nameBox, lobby: options.lobby ?? false,
      stage: options.stage ?? false, topology: options.topology ?? "auto", ttl, history,
    };
    // The generations members need: 0, and in a since-join room each join generation of this epoch.
    const generations = new Set<number>([0]);
    if (history === "since-join") {
      for (const m of roster.members.values()) if (m.joinedSeq > roster.epochSeq) generations.add(m.joinGeneration);
    }
    const commits: RoomKey[] = [];
    for (const g of [...generations].sort((a, b) => a - b)) {
      const key = await advance(base.key, roster.spaceId, roomId, roster.epoch, 0, g);
      commits.push({ type: "room_key", room_id: roomId, epoch: roster.epoch, generation: g,
        commit: await roomKeyCommit(roster.spaceId, roomId, roster.epoch, g, key) });
    }
    const grants: RoomGrant[] = (options.publishers ?? []).map((member) => (
      { type: "room_grant", room_id: roomId, member, publisher: true }
    ));
    // Every current member's generation is 0 for a room created after its join (§10.5).
    const envelopes: Envelope[] = [];
    for (const [memberHex, member] of roster.members) {
      envelopes.push(await this.envelope(roster, roomId, member.boxKey, memberHex, base.key, 0));
    }
    await this.ctx.append([spec, ...commits, ...grants] as RecordBody[], envelopes);
    // Kept only once committed (an envelope to ourselves is on the server in any case).
    await this.remember(base);
    return this.get(roomId);
  }

  /** Grants or withdraws publishing in a channel (owners and moderators). */
  async setPublisher(roomId: string, member: Uint8Array, on: boolean): Promise<void> {
    const room = this.ctx.roster().rooms.get(roomId);
    if (room === undefined) throw new UsageError("there is no such room in this space");
    if (room.spec.kind !== "channel") throw new UsageError("only channels have publishers");
    await this.ctx.append([{ type: "room_grant", room_id: roomId, member, publisher: on }]);
  }

  // ---- room keys ---------------------------------------------------------------------------

  /** Why this device refused the key of (room, epoch), if it did. */
  refusal(roomId: string, epoch: number): string | undefined {
    return this.refused.get(slotId(roomId, epoch));
  }

  private held(roomId: string, epoch: number): HeldRoomKey | undefined {
    return this.ctx.roomKeys().find((k) => k.room_id === roomId && k.epoch === epoch);
  }

  /** Keeps the key of (room, epoch) (the context keeps the oldest generation per room and epoch). */
  private async remember(key: HeldRoomKey): Promise<void> {
    const old = this.held(key.room_id, key.epoch);
    if (old !== undefined && old.generation <= key.generation) return;
    await this.ctx.saveRoomKeys([key]);
  }

  private unavailable(roomId: string, epoch: number, why: string): RoomKeyUnavailable {
    const refused = this.refused.get(slotId(roomId, epoch));
    return refused === undefined ? new RoomKeyUnavailable(why) : new RoomKeyRefused(`refused this room's key for epoch ${epoch}: ${refused}`);
  }

  private async checkCommit(roster: Roster, roomId: string, epoch: number, generation: number, key: Uint8Array): Promise<void> {
    const id = roomKeyId(roomId, epoch, generation);
    const committed = roster.roomKeys.get(id);
    if (committed === undefined) return;
    if (!equal(await roomKeyCommit(roster.spaceId, roomId, epoch, generation, key), committed)) {
      const author = roster.roomKeyAuthors.get(id);
      const who = author === undefined ? "someone" : `member ${await fingerprint(fromHex(author))}`;
      throw new RoomKeyConflict(
        `room key conflict: ${who} committed a different key for this room (epoch ${epoch}, generation ${generation}) ` +
        "than the one this device holds; someone is trying to split the room",
      );
    }
  }

  /**
   * The room's key of (epoch, generation) (default: the current ones): held or derived,
   * fetched from envelopes, or made when nobody committed to one this epoch; always checked
   * against the chain's commitment. Throws RoomKeyUnavailable / RoomKeyRefused / RoomKeyConflict.
   */
  async key(roomId: string, epoch?: number, generation?: number): Promise<Uint8Array> {
    const roster = this.ctx.roster();
    const e = epoch ?? roster.epoch;
    const g = generation ?? roomGeneration(roster, roomId);
    const current = e === roster.epoch;
    const cached = this.cache.get(roomKeyId(roomId, e, g));
    if (cached !== undefined) return cached;
    if (this.held(roomId, e) === undefined) await this.fetchKeys(roomId);
    if (this.held(roomId, e) === undefined && current && this.ctx.roster().rooms.has(roomId)) {
      await this.makeKey(roomId);
      return this.key(roomId, e, generation);
    }
    const held = this.held(roomId, e);
    if (held === undefined) throw this.unavailable(roomId, e, "this device never received the key for those messages");
    if (g < held.generation) throw new RoomKeyUnavailable(HISTORY_CLOSED);
    const key = await advance(held.key, roster.spaceId, roomId, e, held.generation, g);
    await this.checkCommit(this.ctx.roster(), roomId, e, g, key);
    this.cache.set(roomKeyId(roomId, e, g), key);
    return key;
  }

  /** Makes the current epoch's key if nobody committed to one; else explains whom we wait for. */
  private async makeKey(roomId: string): Promise<void> {
    const roster = this.ctx.roster();
    const slot = slotId(roomId, roster.epoch);
    if (!roster.roomKeyMakers.has(slot)) {
      const base: HeldRoomKey = { room_id: roomId, epoch: roster.epoch, generation: 0, key: randomBytes(32) };
      const { commits, envelopes } = await this.sealTo(roster, roomId, base, [...roster.members.keys()]);
      try {
        await this.ctx.append(commits, envelopes);
      } catch (err) {
        if (!(err instanceof ServerError) || !["conflict", "forbidden", "invalid_message"].includes(err.code)) throw err;
        await this.ctx.sync(); // someone else made it, or the epoch moved on: use theirs
        await this.fetchKeys(roomId);
        if (this.ctx.roster().epoch !== roster.epoch) throw new RoomKeyUnavailable("the space's key epoch moved on; try again");
        if (this.held(roomId, roster.epoch) !== undefined) return;
        throw this.unavailable(roomId, roster.epoch, NOT_SHARED_YET);
      }
      await this.remember(base); // only once committed: a key the chain disowns is never kept
      return;
    }
    const committers = new Set<string>();
    for (const [id, author] of roster.roomKeyAuthors) {
      if (id.startsWith(`${slot}/`)) committers.add(await fingerprint(fromHex(author)));
    }
    throw this.unavailable(roomId, roster.epoch,
      `${NOT_SHARED_YET} (the key was made by member ${[...committers].sort().join(", ")}; if it never comes, ` +
      "that member may be withholding it, and removing them makes a new key)");
  }

  /** Opens the envelopes sealed to us for epochs we lack (noting why any were refused). */
  async fetchKeys(roomId: string): Promise<void> {
    const mine = this.ctx.roomKeys().filter((k) => k.room_id === roomId);
    const minEpoch = mine.length ? Math.min(...mine.map((k) => k.epoch)) : 0;
    const reply = await this.ctx.request<Envelopes>({ type: "get_envelopes", scope: roomId, min_epoch: minEpoch });
    let roster = this.ctx.roster();
    let synced = false;
    for (const envelope of reply.envelopes) {
      if (this.held(roomId, envelope.epoch) !== undefined || !equal(envelope.recipient, this.ctx.me.memberKey)) continue;
      try {
        let opened: HeldRoomKey;
        try {
          opened = await this.openRoomEnvelope(roster, roomId, envelope);
        } catch (err) {
          if (!(err instanceof VerificationError) || synced) throw err;
          // The envelope may be newer than our view of the chain (its commitment or its sender's
          // join appended since we last synced; with several server instances, easily): judge it
          // again on the chain as it is now, once.
          synced = true;
          await this.ctx.sync();
          roster = this.ctx.roster();
          opened = await this.openRoomEnvelope(roster, roomId, envelope);
        }
        await this.remember(opened);
        this.refused.delete(slotId(roomId, envelope.epoch));
      } catch (err) {
        if (!(err instanceof VerificationError)) throw err;
        const sender = await fingerprint(envelope.sender);
        const why = err.message.includes(sender) ? err.message : `${err.message} (sealed by ${sender})`;
        this.refused.set(slotId(roomId, envelope.epoch), why);
        if (envelope.epoch === roster.epoch) {
          // Free our slot so a member holding the committed key seals it to us again.
          await this.ctx.request<Done>({ type: "drop_envelope", scope: roomId, epoch: envelope.epoch });
        }
      }
    }
  }

  private async openRoomEnvelope(roster: Roster, roomId: string, envelope: Envelope): Promise<HeldRoomKey> {
    const senderHex = hex(envelope.sender);
    const senderBox = roster.boxKeys.get(senderHex);
    if (senderBox === undefined || !memberDuring(roster, senderHex, envelope.epoch)) {
      throw new VerificationError("a room key envelope comes from someone who was not a member in its epoch");
    }
    let sealed;
    try {
      sealed = await openEnvelope(envelope, roster.spaceId, roomId, this.ctx.me.boxSecret, senderBox);
    } catch (err) {
      throw new VerificationError(`a room key envelope does not open: ${(err as Error).message}`);
    }
    const committed = roster.roomKeys.get(roomKeyId(roomId, envelope.epoch, sealed.generation));
    if (committed === undefined) throw new VerificationError("a room key envelope carries a key nobody committed to");
    if (!equal(await roomKeyCommit(roster.spaceId, roomId, envelope.epoch, sealed.generation, sealed.key), committed)) {
      throw new RoomKeyConflict(
        `a room key envelope carries a different key than the one committed to on the chain (sealed by ${await fingerprint(envelope.sender)})`,
      );
    }
    return { room_id: roomId, epoch: envelope.epoch, generation: sealed.generation, key: sealed.key };
  }

  private async envelope(
    roster: Roster, roomId: string, boxKey: Uint8Array, recipientHex: string, key: Uint8Array, generation: number,
  ): Promise<Envelope> {
    const box = await sealKey(this.ctx.me.boxSecret, boxKey, { spaceId: roster.spaceId, scope: roomId, epoch: roster.epoch, generation, key });
    return { scope: roomId, epoch: roster.epoch, recipient: fromHex(recipientHex), sender: this.ctx.me.memberKey, box };
  }

  /** Envelopes of the current epoch's key for `recipients` (hex), each at max(its join generation,
   * the generation held), and the commitments still missing for them (§10.5). */
  private async sealTo(
    roster: Roster, roomId: string, held: HeldRoomKey, recipients: readonly string[],
  ): Promise<{ commits: RoomKey[]; envelopes: Envelope[] }> {
    const commits = new Map<number, RoomKey>();
    const envelopes: Envelope[] = [];
    for (const recipient of recipients) {
      const member = roster.members.get(recipient);
      if (member === undefined) continue;
      const generation = Math.max(memberGeneration(roster, roomId, recipient), held.generation);
      const key = await advance(held.key, roster.spaceId, roomId, roster.epoch, held.generation, generation);
      const commit = await roomKeyCommit(roster.spaceId, roomId, roster.epoch, generation, key);
      const committed = roster.roomKeys.get(roomKeyId(roomId, roster.epoch, generation));
      if (committed === undefined) {
        commits.set(generation, { type: "room_key", room_id: roomId, epoch: roster.epoch, generation, commit });
      } else if (!equal(committed, commit)) continue; // never spread a key the chain disowns
      envelopes.push(await this.envelope(roster, roomId, member.boxKey, recipient, key, generation));
    }
    return { commits: [...commits.keys()].sort((a, b) => a - b).map((g) => commits.get(g)!), envelopes };
  }

  // ---- key duty ----------------------------------------------------------------------------

  /** Seals each current room key this device holds to members who lack one; returns envelopes sent. */
  async shareKeys(): Promise<number> {
    const roster = this.ctx.roster();
    if (!roster.members.has(hex(this.ctx.me.memberKey))) return 0;
    const commits: RoomKey[] = [];
    const envelopes: Envelope[] = [];
    for (const [roomId, room] of roster.rooms) {
      if (room.spec.kind === "conference") continue;
      if (this.held(roomId, roster.epoch) === undefined) await this.fetchKeys(roomId);
      const mine = this.held(roomId, roster.epoch);
      if (mine === undefined) continue;
      const holders = await this.ctx.request<EnvelopeHolders>({ type: "get_envelope_holders", scope: roomId, epoch: roster.epoch });
      const have = new Set(holders.recipients.map(hex));
      const missing = [...roster.members.keys()].filter((k) => !have.has(k));
      if (missing.length === 0) continue;
      try {
        await this.checkCommit(roster, roomId, roster.epoch, mine.generation, mine.key);
      } catch (err) {
        if (err instanceof RoomKeyConflict) continue; // never spread a key the chain disowns
        throw err;
      }
      const sealed = await this.sealTo(roster, roomId, mine, missing);
      commits.push(...sealed.commits);
      envelopes.push(...sealed.envelopes);
    }
    if (envelopes.length === 0) return 0;
    try {
      if (commits.length > 0) await this.ctx.append(commits, envelopes);
      else await this.ctx.request<Appended>({ type: "append", records: [], envelopes, seals: [] });
    } catch (err) {
      if (err instanceof ServerError && ["conflict", "forbidden", "invalid_message"].includes(err.code)) return 0;
      throw err; // the chain moved on while we sealed; the next run catches up
    }
    return envelopes.length;
  }

  /** Runs `shareKeys` now, serialised: a call while one runs makes it run once more after. */
  runKeyDuty(): Promise<number> {
    if (this.duty !== null) {
      this.dutyAgain = true;
      return this.duty;
    }
    const run = async (): Promise<number> => {
      let sent = 0;
      do {
        this.dutyAgain = false;
        sent += await this.shareKeys();
      } while (this.dutyAgain);
      return sent;
    };
    this.duty = run().finally(() => {
      this.duty = null;
    });
    return this.duty;
  }

  /**
   * The page's key duty: share room keys now, after every roster change and every
   * reconnection. Errors are passed to `onError` (default: ignored — the next change retries).
   * Returns a stop function.
   */
  startKeyDuty(onError: (err: unknown) => void = () => {}): () => void {
    const kick = (): void => {
      this.cache.clear();
      this.runKeyDuty().catch(onError);
    };
    const offRoster = this.ctx.onRoster(kick);
    const offReconnect = this.ctx.onReconnect(kick);
    kick();
    return () => {
      offRoster();
      offReconnect();
    };
  }
}
