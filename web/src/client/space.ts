/**
 * One membership, connected (PROTOCOL.md §6–§9): `SpaceClient implements SpaceContext`.
 *
 * Opening authenticates a `MemberSession`, verifies the whole chain (protocol/sync.ts; the vault
 * keeps no roster, only the verified head, which the chain must still hold), collects the space
 * keys (§9.3) and persists head and keys in the membership's vault slot. A `record_added` event
 * or a reconnection syncs again. While open it does the key duties the CLI does: it completes a
 * pending rekey when this member may (§9.2), re-seals its own stale invite links (§8.3) and
 * publishes its missing profile (§8.4 step 5). Our own removal from the roster (or the server
 * closing the session as removed) ends it with `Removed`.
 */
import { equal, fromHex, toHex } from "../protocol/bytes.ts";
import { randomBytes } from "../protocol/crypto.ts";
import { boxKey as deriveBoxKey, fingerprint, memberKey as deriveMemberKey } from "../protocol/identities.ts";
import { newId } from "../protocol/ids.ts";
import {
  type InviteLink, type InvitePreview, formatInviteLink, inviteKey, invitePreviewKey, inviteSealKey, sealPreview,
  sealSpaceKey,
} from "../protocol/invites.ts";
import { JOIN_MISSING, takeInviteKey } from "../protocol/joinkey.ts";
import {
  type Head, RecordError, type RecordBody, type Role, type Record, signRecord,
} from "../protocol/records.ts";
import { type Roster, applyRecord, hashAt, mayRekey, needsRekey, rank } from "../protocol/roster.ts";
import { sealKey, openEnvelope } from "../protocol/sealed.ts";
import { open as secretboxOpen, seal as secretboxSeal } from "../protocol/secretbox.ts";
import { decodeStruct, encodeStruct, f, fd, optional, struct } from "../protocol/schema.ts";
import { syncChain, syncBase } from "../protocol/sync.ts";
import type {
  Appended, ClientMessage, Envelope, Envelopes, Invites, InviteSeal, Records, ServerMessage,
} from "../protocol/wire.ts";
import type { HeldRoomKey, Membership } from "../keystore/vault.ts";
import type { Vault } from "../keystore/store.ts";
import {
  ClientError, type ConnectionState, type Me, Removed, ServerError, type SpaceContext, Unreachable, UsageError,
  VerificationError, type WithoutId,
} from "./context.ts";
import { cleanName, memberLabels } from "./names.ts";
import { Listeners, type MemberAuth, MemberSession, type SessionOptions } from "./session.ts";

/** One room's reading mark: messages not read yet, and the newest message seq counted. */
export interface ReadingMark { readonly count: number; readonly seq: number }

/** How many opened stories a membership remembers (stories last a day; this is plenty). */
const MAX_SEEN_STORIES = 500;

export const SPACE_SCOPE = "space";
export const APPEND_RETRIES = 5;

// ---- the encrypted payloads of §6.4 ----

export interface SpaceInfo { name: string; description: string }
export interface ProfileInfo { display_name: string; avatar: Uint8Array | null }
export const SPACE_INFO = struct("SpaceInfo", [f("name", "str"), fd("description", "str", "")]);
export const PROFILE_INFO = struct("ProfileInfo", [f("display_name", "str"), fd("avatar", optional("bytes"), null)]);

export const NO_PROFILE = "(no profile)";
export const UNREADABLE_PROFILE = "(unreadable profile)";

/** What the UI shows of a member. */
export interface MemberView {
  readonly key: Uint8Array;
  /** Hex member key (the roster's map key). */
  readonly id: string;
  readonly displayName: string;
  /** JPEG bytes, or null. */
  readonly avatar: Uint8Array | null;
  readonly role: Role;
  readonly fingerprint: string;
  readonly me: boolean;
}

export interface InviteView {
  readonly inviteId: string;
  readonly role: string;
  /** Unix seconds. */
  readonly expiresAt: number;
  readonly maxUses: number;
  readonly usesLeft: number;
  readonly revoked: boolean;
  readonly expired: boolean;
  /** The link itself, known only on the device of the identity that made it (else null). */
  readonly link: string | null;
}

const nowSeconds = (): number => Math.floor(Date.now() / 1000);

/** How many pushed records are kept to check a claimed removal with. */
export const PUSHED_KEPT = 64;

/** A removal the verified chain shows (or our own leave). */
export function removal(how: "kicked" | "banned" | "left"): Removed {
  const text = how === "banned" ? "you were banned from this space" : how === "left" ? "you left this space" :
    "you are no longer a member of this space";
  return new Removed(how, text, true);
}

/** The server says we are out, but nothing on the verified chain shows it. */
export function unconfirmed(claim: "removed" | "banned" = "removed"): Removed {
  return new Removed("unconfirmed", `the server no longer lets this device in (it says you were ${claim}); ` +
    "this device could not confirm that from the space's signed history");
}

/** Open a payload box under the space key of its epoch; null if we lack the key or it does not open. */
async function openBox<T>(key: Uint8Array | undefined, box: Uint8Array, def: typeof SPACE_INFO): Promise<T | null> {
  if (key === undefined) return null;
  try {
    return decodeStruct<T>(def, await secretboxOpen(key, box));
  } catch {
    return null;
  }
}

/** Sort as the CLI does: owners, moderators, members; then by name, then fingerprint. */
export function sortMembers(views: MemberView[]): MemberView[] {
  const order: { [R in Role]: number } = { owner: 0, moderator: 1, member: 2 };
  return views.sort((a, b) =>
    order[a.role] - order[b.role] ||
    a.displayName.toLowerCase().localeCompare(b.displayName.toLowerCase()) ||
    a.fingerprint.localeCompare(b.fingerprint));
}

/**
 * Live invites a member may have seen while in the space (§8.5): multi-use links and the
 * links that member made.
 */
export function linksKnownTo(r: Roster, member: string, now: number = nowSeconds()): string[] {
  const out: string[] = [];
  for (const [id, invite] of r.invites) {
    if (r.revoked.has(id) || invite.expires_at <= now) continue;
    if ((r.inviteUses.get(id) ?? 0) >= invite.max_uses) continue;
    if (invite.max_uses > 1 || r.inviteAuthors.get(id) === member) out.push(id);
  }
  return out;
}

/** An invite seal (§8.3): the space key of `epoch` under the link's seal key, and its preview. */
export async function makeInviteSeal(link: InviteLink, epoch: number, key: Uint8Array, preview: InvitePreview): Promise<InviteSeal> {
  return {
    invite_id: link.inviteId,
    epoch,
    sealed: await sealSpaceKey(await inviteSealKey(link.secret, link.inviteId), { space_id: preview.space_id, epoch, key }, randomBytes(24)),
    preview: await sealPreview(await invitePreviewKey(link.secret, link.inviteId), preview, randomBytes(24)),
  };
}

/** Owners and moderators create, list and revoke invites (§7 "invite"). */
export function mayInvite(r: Roster, me: string): boolean {
  const role = r.members.get(me)?.role;
  return role !== undefined && rank(role) >= rank("moderator");
}

/**
 * Whether `me` may change a member's role or remove it (§7 "role", "remove": outrank the
 * target, never oneself); without a target, whether `me` moderates at all.
 */
export function mayModerate(r: Roster, me: string, target?: string): boolean {
  const role = r.members.get(me)?.role;
  if (role === undefined || rank(role) < rank("moderator")) return false;
  if (target === undefined) return true;
  const other = r.members.get(target);
  return other !== undefined && target !== me && rank(role) > rank(other.role);
}

/** The roles `me` may give `target`: none unless it may moderate it; at most its own rank. */
export function rolesFor(r: Roster, me: string, target: string): Role[] {
  if (!mayModerate(r, me, target)) return [];
  const mine = rank(r.members.get(me)!.role);
  const current = r.members.get(target)!.role;
  return (["member", "moderator", "owner"] as const).filter((role) => rank(role) <= mine && role !== current);
}

/** Whether we should append a rekey (§9.2 `_should_rekey`) given the keys we hold. */
export function shouldRekey(r: Roster, me: string, held: ReadonlyMap<number, Uint8Array>): boolean {
  return mayRekey(r, me) && (needsRekey(r) || !held.has(r.epoch)) && [...held.keys()].some((e) => e <= r.epoch);
}

/** The epochs we want envelopes for (§9.3 step 1). */
export function wantedEpochs(r: Roster, held: ReadonlyMap<number, Uint8Array>): number[] {
  const wanted: number[] = [];
  let epoch = r.epoch;
  while (!held.has(epoch) && r.rekeys.has(epoch) && !wanted.includes(epoch)) {
    wanted.push(epoch);
    epoch = r.rekeys.get(epoch)!.prev_epoch;
  }
  return wanted;
}

interface AppendPlan {
  bodies: (r: Roster) => RecordBody[] | Promise<RecordBody[]>;
  seals?: (r: Roster) => Promise<InviteSeal[]>;
  envelopes?: (r: Roster) => readonly Envelope[];
  retries?: number;
  resync?: boolean;
}

export interface SpaceClientOptions extends SessionOptions {
  /** Things skipped as bad (a bad rekey, a refused invite key), once each. */
  onWarning?: (text: string) => void;
  /** The avatar (JPEG) of the profile a new member publishes on its first sync (join.ts). */
  profileAvatar?: Uint8Array | null;
}

export class SpaceClient implements SpaceContext {
  readonly spaceId: string;
  readonly serverUrl: string;
  readonly me: Me;
  private readonly meHex: string;
  private rosterValue: Roster | null = null;
  private readonly keys = new Map<number, Uint8Array>();
  private readonly bad = new Set<number>();
  private readonly warningList: string[] = [];
  private removedError: Removed | null = null;
  private keyRefusal: string | null = null;
  private readonly rosterListeners = new Listeners<Roster>();
  private readonly reconnectListeners = new Listeners<void>();
  private readonly removedListeners = new Listeners<Removed>();
  private readonly warningListeners = new Listeners<string>();
  private readonly views = new Map<string, { box: Uint8Array; info: ProfileInfo | null }>();
  private infoCache: { box: Uint8Array; info: SpaceInfo | null } | null = null;
  private lock: Promise<unknown> = Promise.resolve();
  private running: Promise<Roster> | null = null;
  private queued: Promise<Roster> | null = null;
  private dutiesRunning = false;
  private profileAvatar: Uint8Array | null = null;
  private leaving = false;
  private saving: Promise<void> = Promise.resolve();
  /** Records the server pushed (`record_added`), kept to check a claimed removal against. */
  private readonly pushed: Record[] = [];

  private constructor(
    private readonly vault: Vault,
    readonly slot: string,
    private readonly m: Membership,
    private readonly session: MemberSession,
    me: Me,
  ) {
    this.spaceId = m.space_id;
    this.serverUrl = m.server;
    this.me = me;
    this.meHex = toHex(me.memberKey);
    for (const held of m.space_keys) this.keys.set(held.epoch, held.key);
    session.onEvent((event) => {
      if (event.type === "record_added") {
        this.pushed.push(event.record);
        if (this.pushed.length > PUSHED_KEPT) this.pushed.shift();
        this.sync().catch((err) => this.backgroundError(err));
      }
    });
    session.onReconnect(() => {
      // Catch up on the chain first, then let followers resubscribe (even if the sync failed:
      // their own requests will say why).
      this.sync()
        .catch((err) => this.backgroundError(err))
        .finally(() => {
          if (this.removedError === null) this.reconnectListeners.emit();
        });
    });
    // The server ending the session as "removed" is only its word: believed once the signed
    // chain shows it (the remove record it pushed just before), else "unconfirmed".
    session.onRemoved((claim) => void this.confirmRemoval(claim));
  }

  /** Connect, authenticate and verify the membership in `slot`; runs the key duties once. */
  static async open(vault: Vault, slot: string, options: SpaceClientOptions = {}): Promise<SpaceClient> {
    const m = await vault.get(slot);
    if (m.removed === "kicked" || m.removed === "banned" || m.removed === "left") {
      throw removal(m.removed); // verified before: final, nothing to ask the server
    }
    const memberKey = await deriveMemberKey(m.signing_seed);
    const boxKey = await deriveBoxKey(m.box_secret);
    const me: Me = { memberKey, signingSeed: m.signing_seed, boxSecret: m.box_secret, boxKey };
    const auth: MemberAuth = { spaceId: m.space_id, memberKey, signingSeed: m.signing_seed };
    let session: MemberSession;
    try {
      session = await MemberSession.open(m.server, auth, options);
    } catch (err) {
      // A refused authentication is the server's word; without the chain we cannot check it.
      if (err instanceof Removed) throw unconfirmed();
      throw err;
    }
    const client = new SpaceClient(vault, slot, m, session, me);
    client.profileAvatar = options.profileAvatar ?? null;
    if (options.onWarning !== undefined) client.onWarning(options.onWarning);
    try {
      await client.sync();
    } catch (err) {
      if (!(err instanceof Removed)) session.close();
      throw err;
    }
    return client;
  }

  // ---- SpaceContext ----

  roster(): Roster {
    if (this.rosterValue === null) throw new VerificationError("the roster has not been verified yet");
    return this.rosterValue;
  }

  /** Verify what is new, collect keys, then do the key duties (rekey, stale seals, profile). */
  sync(): Promise<Roster> {
    if (this.queued !== null) return this.queued;
    if (this.running === null) {
      this.running = this.syncAndDuties().finally(() => {
        this.running = null;
      });
      return this.running;
    }
    const queued = this.running.catch(() => undefined).then(() => {
      this.queued = null;
      return this.sync();
    });
    this.queued = queued;
    return queued;
  }

  request<T extends ServerMessage>(message: WithoutId<ClientMessage>): Promise<T> {
    if (this.removedError !== null) return Promise.reject(this.removedError);
    // The session's own `Removed` is the server's word; what we concluded replaces it.
    return this.session.request<T>(message).catch((err: unknown) => {
      throw err instanceof Removed ? (this.removedError ?? unconfirmed()) : err;
    });
  }

  onEvent(listener: (event: ServerMessage) => void): () => void {
    return this.session.onEvent(listener);
  }

  onReconnect(listener: () => void): () => void {
    return this.reconnectListeners.add(listener);
  }

  onRoster(listener: (roster: Roster) => void): () => void {
    return this.rosterListeners.add(listener);
  }

  connectionState(): ConnectionState {
    return this.session.state();
  }

  onConnectionState(listener: (state: ConnectionState) => void): () => void {
    return this.session.onState(listener);
  }

  spaceKey(epoch: number): Uint8Array | undefined {
    return this.keys.get(epoch);
  }

  roomKeys(): readonly HeldRoomKey[] {
    return this.m.room_keys;
  }

  /** Merge room keys into the membership (keeping the oldest generation per room and epoch) and persist. */
  async saveRoomKeys(keys: readonly HeldRoomKey[]): Promise<void> {
    for (const k of keys) {
      const i = this.m.room_keys.findIndex((h) => h.room_id === k.room_id && h.epoch === k.epoch);
      if (i < 0) this.m.room_keys.push(k);
      else if (k.generation < this.m.room_keys[i]!.generation) this.m.room_keys[i] = k;
    }
    await this.persist();
  }

  /** This person's reading marks here (per room: unread count and newest seq counted; stories
   * opened), as last saved. */
  readingMarks(): { rooms: ReadonlyMap<string, ReadingMark>; seen: readonly string[] } {
    return { rooms: new Map((this.m.unread ?? []).map((u) => [u.room_id, { count: u.count, seq: u.seq }])), seen: [...(this.m.seen_stories ?? [])] };
  }

  /** Keep the reading marks in the membership's vault slot (never anywhere else), so a reload keeps them. */
  async saveReadingMarks(rooms: ReadonlyMap<string, ReadingMark>, seen: readonly string[]): Promise<void> {
    this.m.unread = [...rooms].map(([room_id, { count, seq }]) => ({ room_id, count, seq }));
    this.m.seen_stories = seen.slice(-MAX_SEEN_STORIES);
    await this.persist();
  }

  append(bodies: readonly RecordBody[], envelopes?: readonly Envelope[]): Promise<Roster> {
    return this.appendPlan({
      bodies: () => [...bodies],
      ...(envelopes === undefined ? {} : { envelopes: () => envelopes }),
      retries: 2,
    });
  }

  // ---- views ----

  /** Things skipped as bad this session (each once). */
  warnings(): readonly string[] {
    return this.warningList;
  }

  onWarning(listener: (text: string) => void): () => void {
    return this.warningListeners.add(listener);
  }

  /** Once, when this membership ends (kicked, banned, left). */
  onRemoved(listener: (err: Removed) => void): () => void {
    return this.removedListeners.add(listener);
  }

  removed(): Removed | null {
    return this.removedError;
  }

  /** Why the space key our joining invite carried was refused (§8.4 steps 3–4), else null. */
  inviteKeyRefusal(): string | null {
    return this.keyRefusal;
  }

  /** The space's name and description (its meta box); the space id as the name while unreadable. */
  async info(): Promise<SpaceInfo> {
    const meta = this.roster().meta;
    if (meta === null) return { name: this.spaceId, description: "" };
    if (this.infoCache === null || this.infoCache.box !== meta.box) {
      const info = await openBox<SpaceInfo>(this.keys.get(meta.epoch), meta.box, SPACE_INFO);
      this.infoCache = { box: meta.box, info: info === null ? null : { ...info, name: cleanName(info.name) } };
    }
    return this.infoCache.info ?? { name: this.m.name ?? "", description: "" };
  }

  /** A member's (or a departed member's last) profile; placeholders when missing or unreadable. */
  async profile(key: Uint8Array | string): Promise<ProfileInfo> {
    const id = typeof key === "string" ? key : toHex(key);
    const profile = this.roster().profiles.get(id);
    if (profile === undefined) return { display_name: NO_PROFILE, avatar: null };
    let cached = this.views.get(id);
    if (cached === undefined || cached.box !== profile.box || cached.info === null) {
      cached = { box: profile.box, info: await openBox<ProfileInfo>(this.keys.get(profile.epoch), profile.box, PROFILE_INFO) };
      this.views.set(id, cached);
    }
    return cached.info ?? { display_name: UNREADABLE_PROFILE, avatar: null };
  }

  /** Current members, sorted like `salon members`. */
  async members(): Promise<MemberView[]> {
    const r = this.roster();
    const views: MemberView[] = [];
    const profiles = new Map<string, ProfileInfo>();
    for (const id of r.members.keys()) profiles.set(id, await this.profile(id));
    const labels = await memberLabels(r, new Map([...profiles].map(([id, p]) => [id, p.display_name])));
    for (const [id, member] of r.members) {
      const p = profiles.get(id)!;
      views.push({
        key: fromHex(id), id, displayName: labels.get(id) ?? NO_PROFILE, avatar: p.avatar ?? null, role: member.role,
        fingerprint: await fingerprint(fromHex(id)), me: id === this.meHex,
      });
    }
    return sortMembers(views);
  }

  myRole(): Role | null {
    return this.roster().members.get(this.meHex)?.role ?? null;
  }

  /** Owners and moderators create, list and revoke invites. */
  mayInvite(): boolean {
    return mayInvite(this.roster(), this.meHex);
  }

  /** Whether we may change `target`'s role or remove it (any member if no target is given). */
  mayModerate(target?: Uint8Array | string): boolean {
    return mayModerate(this.roster(), this.meHex, target === undefined ? undefined : typeof target === "string" ? target : toHex(target));
  }

  /** The roles we may give `target` (§7 "role": above none of ours, not the target's own). */
  rolesFor(target: Uint8Array | string): Role[] {
    return rolesFor(this.roster(), this.meHex, typeof target === "string" ? target : toHex(target));
  }

  /** The display name this identity uses here. */
  displayName(): string {
    return this.m.display_name;
  }

  // ---- intents ----

  /** Make an invite link (§8): an `invite` record plus its seal and preview. Returns the link text. */
  async createInvite(uses: number, expiresIn: number, role: Exclude<Role, "owner">): Promise<string> {
    if (!Number.isSafeInteger(uses) || uses < 1) throw new UsageError("an invite needs at least one use");
    if (!Number.isSafeInteger(expiresIn) || expiresIn < 1) throw new UsageError("an invite needs a time to live");
    if (!this.mayInvite()) throw new UsageError("only owners and moderators can create invites");
    const my = this.myRole()!;
    if (rank(role) > rank(my)) throw new UsageError(`a ${my} cannot invite a ${role}`);
    const link: InviteLink = { server: this.m.server, inviteId: newId(), secret: randomBytes(32) };
    const body: RecordBody = {
      type: "invite", invite_id: link.inviteId, invite_key: await inviteKey(link.secret, link.inviteId), role,
      expires_at: nowSeconds() + expiresIn, max_uses: uses,
    };
    // Kept before the append, like the CLI: the link can be shown (and re-sealed) later.
    this.m.invite_secrets = [...(this.m.invite_secrets ?? []), { invite_id: link.inviteId, secret: link.secret }];
    await this.persist();
    await this.appendPlan({
      bodies: () => [body],
      seals: async (r) => {
        const key = this.keys.get(r.epoch);
        if (key === undefined) throw new UsageError("this device does not hold the space's current key yet");
        return [await this.sealInvite(link, r.epoch, key)];
      },
    });
    return formatInviteLink(link);
  }

  /**
   * The space's invites (owners and moderators), with the link when this device made it. Read
   * from the verified chain (invite, join and revoke records), not from the server's list: a
   * server must not hide a live link from the people who would revoke it, nor call it used up.
   */
  async listInvites(): Promise<InviteView[]> {
    if (this.removedError !== null) throw this.removedError;
    if (!this.mayInvite()) throw new UsageError("only owners and moderators can see the invites");
    const r = this.roster();
    const now = nowSeconds();
    return [...r.invites.values()].map((invite) => {
      const secret = this.secretOf(invite.invite_id);
      return {
        inviteId: invite.invite_id, role: invite.role, expiresAt: invite.expires_at, maxUses: invite.max_uses,
        usesLeft: Math.max(0, invite.max_uses - (r.inviteUses.get(invite.invite_id) ?? 0)),
        revoked: r.revoked.has(invite.invite_id), expired: invite.expires_at <= now,
        link: secret === undefined ? null : formatInviteLink({ server: this.m.server, inviteId: invite.invite_id, secret }),
      };
    });
  }

  async revokeInvite(inviteId: string): Promise<void> {
    const r = this.roster();
    if (!r.invites.has(inviteId)) throw new UsageError(`no invite ${inviteId} in this space`);
    if (r.revoked.has(inviteId)) throw new UsageError(`invite ${inviteId} is already revoked`);
    await this.appendPlan({ bodies: () => [{ type: "invite_revoke", invite_id: inviteId }] });
  }

  async setRole(member: Uint8Array, role: Role): Promise<void> {
    this.requireMember(member);
    await this.appendPlan({ bodies: () => [{ type: "role", member, role }] });
  }

  /**
   * Remove a member (the same append rekeys, §9.2). A ban also revokes, unless `keepLinks`, the
   * live links the banned member may know (§8.5). Returns the revoked invite ids.
   */
  async kick(member: Uint8Array, options: { ban?: boolean; keepLinks?: boolean } = {}): Promise<string[]> {
    this.requireMember(member);
    const ban = options.ban ?? false;
    let revoked: string[] = [];
    await this.appendPlan({
      bodies: (r) => {
        revoked = !ban || options.keepLinks === true ? [] : linksKnownTo(r, toHex(member));
        return [{ type: "remove", member, ban }, ...revoked.map((id) => ({ type: "invite_revoke" as const, invite_id: id }))];
      },
    });
    return revoked;
  }

  /** Leave the space (the server ends the session; the caller forgets the membership). */
  async leave(): Promise<void> {
    this.leaving = true;
    try {
      await this.appendPlan({ bodies: () => [{ type: "leave" }], resync: false });
    } catch (err) {
      if (err instanceof Removed) {
        // The server ended the session ("left") before its reply arrived.
      } else if (err instanceof Unreachable) {
        // The connection dropped with the reply (the server closes it right after a leave):
        // the session reconnects, and a refused authentication proves we are gone.
        try {
          await this.session.request({ type: "get_records", after: this.m.head_seq });
        } catch (again) {
          if (!(again instanceof Removed)) throw err;
          this.markRemoved(removal("left"));
          return;
        }
        this.leaving = false;
        throw err;
      } else {
        this.leaving = false;
        throw err;
      }
    }
    this.markRemoved(removal("left"));
  }

  /** Publish a new profile: display name and avatar (JPEG bytes, or null for none). */
  async setProfile(displayName: string, avatar: Uint8Array | null): Promise<void> {
    const name = displayName.trim();
    if (name === "") throw new UsageError("a display name cannot be empty");
    await this.publishProfile({ display_name: name, avatar });
    this.m.display_name = name;
    await this.persist();
  }

  /** While reconnecting, try at once (e.g. on the browser's "online" event or a "Retry" button). */
  reconnectNow(): void {
    this.session.reconnectNow();
  }

  /** Close the connection (the membership stays in the vault). */
  close(): void {
    this.session.close();
  }

  // ---- internals ----

  private requireMember(member: Uint8Array): void {
    if (!this.roster().members.has(toHex(member))) throw new UsageError("no such member in this space");
  }

  private secretOf(inviteId: string): Uint8Array | undefined {
    return (this.m.invite_secrets ?? []).find((s) => s.invite_id === inviteId)?.secret;
  }

  private warn(text: string): void {
    if (this.warningList.includes(text)) return;
    this.warningList.push(text);
    this.warningListeners.emit(text);
  }

  private backgroundError(err: unknown): void {
    if (err instanceof Removed) return; // reported through onRemoved
    if (err instanceof ClientError) this.warn(err.message);
    else console.error("salon: background sync failed", err);
  }

  private markRemoved(removalErr: Removed): void {
    if (this.removedError !== null) return;
    const err = this.leaving ? removal("left") : removalErr;
    this.removedError = err;
    this.session.removed(err);
    this.removedListeners.emit(err);
  }

  /** Run `task` alone (syncs and appends take turns on the roster). */
  private exclusive<T>(task: () => Promise<T>): Promise<T> {
    const run = this.lock.then(task, task);
    this.lock = run.catch(() => undefined);
    return run;
  }

  private async syncAndDuties(): Promise<Roster> {
    const r = await this.exclusive(() => this.refresh());
    if (!this.dutiesRunning) {
      this.dutiesRunning = true;
      try {
        await this.duties(r);
      } catch (err) {
        // A duty that fails now (rate limited, a lost connection) is tried on the next sync;
        // it never makes the sync, or opening the space, fail.
        if (err instanceof Removed || !(err instanceof ClientError)) throw err;
        this.warn(`a key duty could not be done yet: ${err.message}`);
      } finally {
        this.dutiesRunning = false;
      }
    }
    return this.roster();
  }

  /** §6.6 + §8.4 step 4 + §9.3: verify what is new, take a pending invite key, collect keys, persist. */
  private async refresh(): Promise<Roster> {
    if (this.removedError !== null) throw this.removedError;
    const remembered: Head = { seq: this.m.head_seq, hash: this.m.head_hash };
    const base = this.rosterValue ?? syncBase(this.spaceId, null, remembered);
    const step = await syncChain(this.spaceId, base, remembered, (after) =>
      this.request<Records>({ type: "get_records", after }));
    if (step.outcome !== "done") throw new VerificationError(step.reason);
    const r = step.roster;
    const changed = this.rosterValue === null || this.rosterValue.head.seq !== r.head.seq;
    this.rosterValue = r;
    await this.takePendingKey(r);
    await this.collectSpaceKeys(r);
    if (r.head.seq >= this.m.head_seq) {
      this.m.head_seq = r.head.seq;
      this.m.head_hash = r.head.hash;
    }
    const name = (await this.info()).name;
    if (r.meta !== null && name !== "") this.m.name = name;
    const out = this.removalIn(r);
    if (out !== null) this.m.removed = out.how;
    await this.persist();
    if (changed) this.rosterListeners.emit(r);
    if (out !== null) {
      this.markRemoved(out);
      throw out;
    }
    return r;
  }

  /** Our removal as roster `r` shows it (confirmed), or null while we are a member. */
  private removalIn(r: Roster): Removed | null {
    if (r.members.has(this.meHex)) return null;
    if (this.leaving) return removal("left");
    return removal(r.departed.get(this.meHex) === true ? "banned" : "kicked");
  }

  /**
   * The server says we are out (closed the session as removed/banned, or refused us): believe
   * it only if the records it pushed extend our verified chain to a roster without us.
   */
  private async confirmRemoval(claim: Removed): Promise<void> {
    if (this.removedError !== null) return;
    if (this.leaving) {
      this.markRemoved(removal("left"));
      return;
    }
    let r = this.rosterValue;
    if (r !== null) {
      for (const record of [...this.pushed].sort((a, b) => a.seq - b.seq)) {
        if (record.seq !== r.head.seq + 1) continue;
        try {
          r = await applyRecord(r, record);
        } catch {
          break; // not a record of this chain (forged, or a fork): proves nothing
        }
      }
    }
    if (this.removedError !== null) return;
    const out = r === null ? null : this.removalIn(r);
    if (out === null || r === null) {
      this.markRemoved(unconfirmed(claim.how === "banned" ? "banned" : "removed"));
      return;
    }
    this.rosterValue = r;
    if (r.head.seq >= this.m.head_seq) {
      this.m.head_seq = r.head.seq;
      this.m.head_hash = r.head.hash;
    }
    this.m.removed = out.how;
    await this.persist().catch(() => undefined); // kept before it is announced: a reload knows it
    this.markRemoved(out);
    this.rosterListeners.emit(r);
  }

  private async takePendingKey(r: Roster): Promise<void> {
    const pending = this.m.pending_key;
    if (pending === undefined || pending === null) return;
    this.m.pending_key = null; // decided once
    // §8.4 step 3: the verified chain must hold our join at its seq (a fresh join is within
    // the roster's hash window; an older one unproven here is refused like a missing one).
    const kept = hashAt(r, pending.join_seq);
    if (pending.join_seq > r.head.seq || kept === undefined || !equal(kept, pending.join_hash)) {
      this.keyRefusal = JOIN_MISSING;
      this.warn(JOIN_MISSING);
      return;
    }
    const decision = await takeInviteKey(r, {
      sealed: { space_id: pending.space_id, epoch: pending.epoch, key: pending.key }, join_seq: pending.join_seq,
    });
    if (decision.accepted) {
      if (!this.keys.has(decision.epoch)) this.keys.set(decision.epoch, decision.key);
    } else {
      this.keyRefusal = decision.reason;
      this.warn(decision.reason);
    }
  }

  private async collectSpaceKeys(r: Roster): Promise<void> {
    const wanted = wantedEpochs(r, this.keys);
    if (wanted.length > 0 && r.members.has(this.meHex)) {
      const reply = await this.request<Envelopes>({ type: "get_envelopes", scope: SPACE_SCOPE, min_epoch: Math.min(...wanted) });
      const envelopes = [...reply.envelopes].sort((a, b) => a.epoch - b.epoch);
      for (const e of envelopes) if (wanted.includes(e.epoch)) await this.openSpaceEnvelope(r, e);
      if (!this.keys.has(r.epoch) && !this.bad.has(r.epoch) && r.rekeys.has(r.epoch)) {
        this.badRekey(r, r.epoch, "was not sealed to us");
      }
    }
    for (const start of [...this.keys.keys()].sort((a, b) => b - a)) {
      let epoch = start;
      for (;;) {
        const rekey = r.rekeys.get(epoch);
        if (rekey === undefined || this.keys.has(rekey.prev_epoch)) break;
        try {
          this.keys.set(rekey.prev_epoch, await secretboxOpen(this.keys.get(epoch)!, rekey.prev_box));
        } catch {
          this.badRekey(r, epoch, "does not carry the previous key");
          break;
        }
        epoch = rekey.prev_epoch;
      }
    }
  }

  private async openSpaceEnvelope(r: Roster, e: Envelope): Promise<void> {
    const epoch = e.epoch;
    const rekey = r.rekeys.get(epoch);
    if (rekey === undefined || this.keys.has(epoch) || !equal(e.recipient, this.me.memberKey)) return;
    const author = r.rekeyAuthors.get(epoch)!;
    if (toHex(e.sender) !== author) {
      this.badRekey(r, epoch, "came with an envelope from someone else");
      return;
    }
    const senderBox = r.boxKeys.get(author);
    let key: Uint8Array;
    try {
      if (senderBox === undefined) throw new Error("no box key");
      const sealed = await openEnvelope(e, this.spaceId, SPACE_SCOPE, this.me.boxSecret, senderBox);
      if (sealed.generation !== 0) {
        this.badRekey(r, epoch, "claims a key generation");
        return;
      }
      key = sealed.key;
    } catch (err) {
      this.badRekey(r, epoch, `was sealed to us so that it does not open (${(err as Error).message})`);
      return;
    }
    const previous = this.keys.get(rekey.prev_epoch);
    if (previous !== undefined) {
      let inner: Uint8Array | null = null;
      try {
        inner = await secretboxOpen(key, rekey.prev_box);
      } catch {
        inner = null;
      }
      if (inner === null || !equal(inner, previous)) {
        this.badRekey(r, epoch, "does not match its rekey record");
        return;
      }
    }
    this.keys.set(epoch, key);
  }

  private badRekey(r: Roster, epoch: number, why: string): void {
    this.bad.add(epoch);
    const author = r.rekeyAuthors.get(epoch) ?? "";
    void fingerprint(fromHex(author)).then((fp) =>
      this.warn(`the space key of epoch ${epoch} (rekey by ${fp}) ${why}; skipped it until an owner or moderator rekeys`));
  }

  /** The CLI's duties on sync: complete a rekey, refresh stale invite seals, publish a missing profile. */
  private async duties(r: Roster): Promise<void> {
    if (shouldRekey(r, this.meHex, this.keys)) {
      await this.appendPlan({ bodies: () => [] });
    } else {
      await this.refreshStaleInvites(r);
    }
    const now = this.roster();
    const heldBelow = [...this.keys.keys()].some((e) => e <= now.epoch);
    if (now.members.has(this.meHex) && !now.profiles.has(this.meHex) && this.m.display_name !== "" && heldBelow) {
      await this.publishProfile({ display_name: this.m.display_name, avatar: this.profileAvatar });
    }
  }

  private async refreshStaleInvites(r: Roster): Promise<void> {
    const role = r.members.get(this.meHex)?.role;
    const key = this.keys.get(r.epoch);
    if (role === undefined || role === "member" || key === undefined) return;
    const live = await this.resealInvites(r, r.epoch, key);
    if (live.length === 0) return;
    const reply = await this.request<Invites>({ type: "list_invites" });
    const stale = new Set(reply.invites.filter((s) => s.seal_epoch >= 0 && s.seal_epoch < r.epoch).map((s) => s.invite_id));
    const seals = live.filter((s) => stale.has(s.invite_id));
    if (seals.length > 0) await this.request({ type: "put_seals", seals });
  }

  private async invitePreview(): Promise<InvitePreview> {
    let info: SpaceInfo = { name: "", description: "" };
    const meta = this.rosterValue?.meta ?? null;
    if (meta !== null) info = (await openBox<SpaceInfo>(this.keys.get(meta.epoch), meta.box, SPACE_INFO)) ?? info;
    return { space_id: this.spaceId, name: info.name, description: info.description, inviter: this.m.display_name };
  }

  private async sealInvite(link: InviteLink, epoch: number, key: Uint8Array, preview?: InvitePreview): Promise<InviteSeal> {
    return makeInviteSeal(link, epoch, key, preview ?? (await this.invitePreview()));
  }

  /** Fresh seals under `key` for our live invites (those whose secret this device holds). */
  private async resealInvites(r: Roster, epoch: number, key: Uint8Array): Promise<InviteSeal[]> {
    const out: InviteSeal[] = [];
    const preview = await this.invitePreview();
    const now = nowSeconds();
    for (const { invite_id: id, secret } of this.m.invite_secrets ?? []) {
      const invite = r.invites.get(id);
      if (invite === undefined || r.revoked.has(id) || invite.expires_at <= now) continue;
      if ((r.inviteUses.get(id) ?? 0) >= invite.max_uses) continue;
      out.push(await this.sealInvite({ server: this.m.server, inviteId: id, secret }, epoch, key, preview));
    }
    return out;
  }

  private async publishProfile(info: ProfileInfo): Promise<void> {
    await this.appendPlan({
      bodies: async (r) => {
        const held = [...this.keys.keys()].filter((e) => e <= r.epoch);
        if (held.length === 0) throw new UsageError("this device does not hold a space key yet");
        const epoch = Math.max(...held);
        return [{ type: "profile", epoch, box: await secretboxSeal(this.keys.get(epoch)!, encodeStruct(PROFILE_INFO, info)) }];
      },
    });
  }

  /**
   * Sign and chain `bodies` on our head, add the rekey a departure needs (with one space envelope
   * per member and fresh invite seals), append; on `conflict` sync and try again.
   */
  private appendPlan(plan: AppendPlan): Promise<Roster> {
    return this.exclusive(() => this.appendLocked(plan));
  }

  private async appendLocked(plan: AppendPlan): Promise<Roster> {
    const retries = plan.retries ?? APPEND_RETRIES;
    for (let attempt = 0; attempt < retries; attempt++) {
      if (this.removedError !== null) throw this.removedError;
      const roster = this.roster();
      const bodies = await plan.bodies(roster);
      let scratch = roster;
      const records: Record[] = [];
      const sign = async (body: RecordBody): Promise<void> => {
        const record = await signRecord(this.me.signingSeed, {
          space_id: this.spaceId, seq: scratch.head.seq + 1, prev: scratch.head.hash, author: this.me.memberKey,
          created_at: nowSeconds(), body,
        });
        try {
          scratch = await applyRecord(scratch, record);
        } catch (err) {
          // The refusal the server would answer, made here.
          if (err instanceof RecordError) throw new ServerError(err.code, err.message);
          throw err;
        }
        records.push(record);
      };
      for (const body of bodies) await sign(body);
      const envelopes: Envelope[] = [];
      let newKey: { epoch: number; key: Uint8Array } | null = null;
      if (shouldRekey(scratch, this.meHex, this.keys)) {
        const epoch = scratch.epoch + 1;
        const key = randomBytes(32);
        const prevEpoch = Math.max(...[...this.keys.keys()].filter((e) => e <= scratch.epoch));
        await sign({ type: "rekey", epoch, prev_epoch: prevEpoch, prev_box: await secretboxSeal(key, this.keys.get(prevEpoch)!) });
        for (const [id, member] of scratch.members) {
          envelopes.push({
            scope: SPACE_SCOPE, epoch, recipient: fromHex(id), sender: this.me.memberKey,
            box: await sealKey(this.me.boxSecret, member.boxKey, { spaceId: this.spaceId, scope: SPACE_SCOPE, epoch, generation: 0, key }),
          });
        }
        newKey = { epoch, key };
      }
      if (plan.envelopes !== undefined) envelopes.push(...plan.envelopes(scratch));
      const seals = new Map<string, InviteSeal>();
      for (const s of plan.seals !== undefined ? await plan.seals(scratch) : []) seals.set(s.invite_id, s);
      if (newKey !== null) for (const s of await this.resealInvites(scratch, newKey.epoch, newKey.key)) seals.set(s.invite_id, s);
      if (records.length === 0 && envelopes.length === 0 && seals.size === 0) return roster;
      try {
        await this.request<Appended>({ type: "append", records, envelopes, seals: [...seals.values()] });
      } catch (err) {
        if (err instanceof ServerError && err.code === "conflict") {
          await this.refresh();
          continue;
        }
        throw err;
      }
      if (newKey !== null) this.keys.set(newKey.epoch, newKey.key);
      if (plan.resync === false) return scratch;
      return this.refresh();
    }
    throw new ServerError("conflict", "the space is changing too fast; try again");
  }

  /**
   * Write keys, head, name and invite secrets to the vault slot (writes take turns). What is
   * stored is merged in first, as the CLI's keystore does, so another tab of the app with the
   * same membership open loses nothing: keys and invite secrets are united, the oldest room-key
   * generation kept, the newer head kept.
   */
  private persist(): Promise<void> {
    const run = this.saving.then(async () => {
      let stored: Membership | null = null;
      try {
        stored = await this.vault.get(this.slot);
      } catch {
        stored = null;
      }
      // A slot that is gone (the membership was forgotten after leaving) is not written again.
      if (stored === null) return;
      this.merge(stored);
      this.m.space_keys = [...this.keys].sort(([a], [b]) => a - b).map(([epoch, key]) => ({ epoch, key }));
      await this.vault.update(this.slot, { ...this.m, space_keys: [...this.m.space_keys], room_keys: [...this.m.room_keys] });
    });
    this.saving = run.catch(() => undefined);
    return run;
  }

  private merge(stored: Membership): void {
    if (stored.space_id !== this.m.space_id || !equal(stored.signing_seed, this.m.signing_seed)) return;
    for (const { epoch, key } of stored.space_keys) if (!this.keys.has(epoch) && !this.bad.has(epoch)) this.keys.set(epoch, key);
    for (const k of stored.room_keys) {
      const i = this.m.room_keys.findIndex((h) => h.room_id === k.room_id && h.epoch === k.epoch);
      if (i < 0) this.m.room_keys.push(k);
      else if (k.generation < this.m.room_keys[i]!.generation) this.m.room_keys[i] = k;
    }
    const secrets = this.m.invite_secrets ?? [];
    for (const held of stored.invite_secrets ?? []) {
      if (!secrets.some((s) => s.invite_id === held.invite_id)) secrets.push(held);
    }
    this.m.invite_secrets = secrets;
    if (stored.head_seq > this.m.head_seq) {
      this.m.head_seq = stored.head_seq;
      this.m.head_hash = stored.head_hash;
    }
    if (stored.pending_key === null || stored.pending_key === undefined) this.m.pending_key = null;
    const removedThere = stored.removed ?? "";
    if (removedThere !== "") this.m.removed = removedThere; // a verified removal stays (another tab saw it)
  }
}
