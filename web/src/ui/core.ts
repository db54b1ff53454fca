/**
 * The bridge from the client core (client/spaces.ts, space.ts, rooms.ts, chat.ts, stories.ts,
 * images.ts) to the UI store: it subscribes to the core's events, turns what they say into plain
 * view models, and carries out the UI's intents. Components never see a SpaceClient, a key or a
 * wire message; secrets (seeds, space and room keys, invite secrets) never enter the store.
 */
import { fromHex } from "../protocol/bytes.ts";
import { Removed, Unreachable, UsageError, VerificationError } from "../client/context.ts";
import { EMPTY_CHAIN, FAILS, REWROTE, WITHHELD } from "../protocol/sync.ts";
import { Spaces, type SpaceEntry } from "../client/spaces.ts";
import { mayModerate, rolesFor, type SpaceClient, type MemberView, type InviteView, type ReadingMark } from "../client/space.ts";
import { HISTORY_CLOSED, NOT_SHARED_YET, Rooms, type RoomView } from "../client/rooms.ts";
import { Chat, type Follower, type ReadItem } from "../client/chat.ts";
import { StoriesClient, type StoryView } from "../client/stories.ts";
import { prepareAvatar, prepareStoryImage } from "../client/images.ts";
import { WrongPassphrase } from "../keystore/vault.ts";
import type { Messages, MessagesAdded } from "../protocol/chat_wire.ts";
import type { CallIntents } from "../call/topology.ts";
import { CallBridge } from "./call_core.ts";
import type {
  CallChoices, DeviceKind, Connection, Intents, InviteOptions, InvitePreviewVM, MemberVM, MessageVM, RemovedHow, Role, RoomKind,
  RoomLiveVM, RoomVM, SpaceCardVM, SpaceVM, Store, StoryVM,
} from "./state.ts";

/** How often an open channel's stories are listed again (the server pushes no story events). */
const STORY_POLL_MS = 30_000;
/** How often a room waiting for its key checks whether a member has shared it. */
const KEY_POLL_MS = 4_000;
const WAITING_FOR_KEY = "Waiting for the room's key. It arrives as soon as a member who has it is online; messages appear then.";
/** How long to wait before opening a space again after the server could not be reached. */
const RETRY_OPEN_MS = 5_000;
/** At most this many messages that arrived while the page was closed are counted per room. */
const CATCH_UP_LIMIT = 200;
/** What the page says when the server's chain contradicts what this browser verified before. */
export const HISTORY_MISMATCH = "The server is showing this browser a history of this space that does not match what it " +
  "verified before, so nothing new from it is shown. The server may be misbehaving: ask another member whether they see the same.";

const jpegUrl = (bytes: Uint8Array): string => URL.createObjectURL(new Blob([bytes as Uint8Array<ArrayBuffer>], { type: "image/jpeg" }));

interface OpenRoom {
  readonly roomId: string;
  readonly kind: RoomKind;
  follower: Follower | null;
  items: MessageVM[];
  stories: StoryVM[];
  firstUnread: string | null;
  notice: string | null;
  loading: boolean;
  poll: ReturnType<typeof setInterval> | null;
  keyPoll: ReturnType<typeof setInterval> | null;
  closed: boolean;
  publishSoon?: boolean;
  publishedAt?: number;
}

/** The most messages a room keeps on the page (the oldest leave first; a flood cannot grow it). */
const MAX_SHOWN_MESSAGES = 1000;
/** Messages arriving within this many ms are rendered together. */
const PUBLISH_BATCH_MS = 50;

interface Live {
  readonly slot: string;
  readonly client: SpaceClient;
  readonly rooms: Rooms;
  readonly chat: Chat;
  readonly stories: StoriesClient;
  readonly offs: (() => void)[];
  members: MemberView[];
  invites: InviteView[];
  roomViews: RoomView[];
  name: string;
  description: string;
  unread: Map<string, number>;
  open: OpenRoom | null;
  refreshing: Promise<void> | null;
  refreshAgain: boolean;
  /** Rooms this session asked the server to push new messages of (for unread counts). */
  followed: Set<string>;
  /** The first refresh is done: before it the screen would show an empty space. */
  loaded: boolean;
  /** The stories opened in this membership (kept in its vault slot with the unread counts). */
  seen: Set<string>;
  /** The newest message seq counted per room (read or unread): what comes after is new. */
  lastSeq: Map<string, number>;
  /** HISTORY_MISMATCH once a sync refused the server's chain. */
  warning: string | null;
}

const kindOf = (kind: RoomView["kind"]): RoomKind => (kind === "conference" ? "call" : kind);

export class Bridge implements Intents {
  private spaces: Spaces | null = null;
  private entries: SpaceEntry[] = [];
  private readonly live = new Map<string, Live>();
  private readonly opening = new Map<string, Promise<Live | null>>();
  private readonly removed = new Map<string, RemovedHow>();
  private readonly photos = new Map<string, string>();
  private readonly pictures = new Map<string, string>();
  private readonly hiddenSince = new Map<string, number>();

  /** Settles once the vault was opened (or found locked). */
  started: Promise<void> = Promise.resolve();

  /** The call rooms on screen (camera preview, the call client once joined). */
  readonly calls: CallBridge;

  constructor(private readonly store: Store) {
    this.calls = new CallBridge(store, (slot) => this.live.get(slot)?.client ?? null);
  }

  // ---- start and unlock ------------------------------------------------------------------------

  async start(passphrase?: string): Promise<void> {
    try {
      this.spaces = await Spaces.open(passphrase === undefined ? {} : { passphrase });
    } catch (err) {
      if (err instanceof WrongPassphrase) {
        this.store.update((s) => ({ ...s, locked: true, ready: false }));
        if (passphrase !== undefined) throw new UsageError("That passphrase is not right. Try again.");
        return;
      }
      const text = typeof indexedDB === "undefined"
        ? "This browser does not let Salon keep your keys (private browsing may block it). Try a normal window."
        : "Salon could not open the keys it keeps in this browser. If you use private browsing, try a normal window.";
      this.store.update((s) => ({ ...s, startError: text }));
      return;
    }
    await this.reloadList();
    this.store.update((s) => ({ ...s, locked: false, ready: true }));
  }

  unlock(passphrase: string): Promise<void> {
    this.started = this.start(passphrase);
    return this.started;
  }

  private async reloadList(): Promise<void> {
    if (this.spaces === null) return;
    this.entries = await this.spaces.list();
    this.publishCards();
  }

  private publishCards(): void {
    const cards: SpaceCardVM[] = this.entries.map((entry) => {
      const live = this.live.get(entry.slot);
      let unread = live === undefined ? entry.unread : 0;
      for (const n of live?.unread.values() ?? []) unread += n;
      return {
        slot: entry.slot,
        name: live?.name || entry.name || "A space",
        unread,
        connection: live?.client.connectionState() ?? "closed",
        removed: this.removed.get(entry.slot) ?? null,
      };
    });
    this.store.update((s) => ({ ...s, spaces: cards }));
  }

  private requireSpaces(): Spaces {
    if (this.spaces === null) throw new UsageError("Salon has not finished opening. Try again in a moment.");
    return this.spaces;
  }

  // ---- joining ---------------------------------------------------------------------------------

  private linkOf(inviteId: string, secret: string): string {
    return `${location.origin}/join/${inviteId}#${secret}`;
  }

  async previewInvite(inviteId: string, secret: string): Promise<InvitePreviewVM> {
    await this.started;
    const preview = await this.requireSpaces().preview(this.linkOf(inviteId, secret));
    const role: Role = preview.role === "moderator" || preview.role === "owner" ? preview.role : "member";
    return { spaceName: preview.spaceName, description: preview.description, inviter: preview.inviter, role, expiresAt: preview.expiresAt * 1000 };
  }

  async join(inviteId: string, secret: string, name: string, photo: Blob | null): Promise<string> {
    await this.started;
    const spaces = this.requireSpaces();
    const avatar = photo === null ? null : (await prepareAvatar(photo)).jpeg;
    const result = await spaces.join(this.linkOf(inviteId, secret), name, avatar);
    await this.reloadList();
    await this.attach(result.slot, result.client);
    return result.slot;
  }

  // ---- a space ---------------------------------------------------------------------------------

  openSpace(slot: string): void {
    if (this.live.has(slot) || this.opening.has(slot) || this.removed.has(slot)) return;
    if (!this.entries.some((e) => e.slot === slot)) return;
    const opening = this.requireSpaces().open(slot).then(
      (client) => this.attach(slot, client),
      (err: unknown) => {
        if (err instanceof Removed) {
          this.markRemoved(slot, err.how);
        } else {
          const problem = err instanceof Unreachable ? "Can't reach the server. Trying again…"
            : err instanceof VerificationError ? `${HISTORY_MISMATCH} Trying again…` : "This space could not be opened. Trying again…";
          this.store.update((s) => ({ ...s, spaceErrors: { ...s.spaceErrors, [slot]: problem } }));
          setTimeout(() => this.openSpace(slot), RETRY_OPEN_MS);
        }
        return null;
      },
    ).finally(() => this.opening.delete(slot));
    this.opening.set(slot, opening);
  }

  private async attach(slot: string, client: SpaceClient): Promise<Live> {
    const existing = this.live.get(slot);
    if (existing !== undefined) return existing;
    const rooms = new Rooms(client);
    const live: Live = {
      slot, client, rooms, chat: new Chat(client, rooms), stories: new StoriesClient(client, rooms), offs: [],
      members: [], invites: [], roomViews: [], name: "", description: "", unread: new Map(), open: null,
      refreshing: null, refreshAgain: false, followed: new Set(), loaded: false, seen: new Set(), lastSeq: new Map(), warning: null,
    };
    const marks = client.readingMarks();
    for (const [roomId, { count, seq }] of marks.rooms) {
      if (count > 0) live.unread.set(roomId, count);
      if (seq >= 0) live.lastSeq.set(roomId, seq);
    }
    for (const id of marks.seen) live.seen.add(id);
    this.live.set(slot, live);
    this.store.update((s) => {
      const { [slot]: _gone, ...spaceErrors } = s.spaceErrors;
      return { ...s, spaceErrors };
    });
    live.offs.push(
      client.onRoster(() => void this.refresh(live)),
      client.onConnectionState(() => {
        this.publishSpace(live);
        this.publishCards();
      }),
      client.onRemoved((err) => this.markRemoved(slot, err.how)),
      client.onWarning((text) => {
        // A later sync found the server's history at odds with the verified one: say so plainly.
        if (![REWROTE, WITHHELD, EMPTY_CHAIN, FAILS].some((refusal) => text.startsWith(refusal))) return;
        live.warning = HISTORY_MISMATCH;
        this.publishSpace(live);
      }),
      client.onEvent((event) => {
        if (event.type !== "messages_added") return;
        const added = event as unknown as MessagesAdded;
        const me = client.me.memberKey;
        const theirs = added.messages.filter((m) => !sameBytes(m.sender, me)).length;
        const reading = live.open?.roomId === added.room_id && !document.hidden;
        const newest = Math.max(live.lastSeq.get(added.room_id) ?? -1, ...added.messages.map((m) => m.seq));
        live.lastSeq.set(added.room_id, newest);
        if (theirs === 0 || reading) void this.saveMarks(live);
        if (theirs > 0 && !reading) {
          live.unread.set(added.room_id, (live.unread.get(added.room_id) ?? 0) + theirs);
          // The count is shown once it is kept: a reload right after shows it again.
          void this.saveMarks(live).finally(() => {
            this.publishSpace(live);
            this.publishCards();
          });
        }
      }),
      rooms.startKeyDuty(),
      client.onReconnect(() => {
        live.followed.clear();
        void this.followAll(live);
      }),
    );
    if (client.removed() !== null) {
      this.markRemoved(slot, client.removed()!.how);
      return live;
    }
    await this.refresh(live);
    return live;
  }

  /** Re-reads what the space screen shows (after every roster change); coalesced. */
  private refresh(live: Live): Promise<void> {
    if (live.refreshing !== null) {
      live.refreshAgain = true;
      return live.refreshing;
    }
    live.refreshing = (async () => {
      do {
        live.refreshAgain = false;
        try {
          const info = await live.client.info();
          live.name = info.name;
          live.description = info.description;
          live.members = await live.client.members();
          live.roomViews = await live.rooms.list();
          live.invites = live.client.mayInvite() ? await live.client.listInvites() : [];
          live.loaded = true;
        } catch (err) {
          if (err instanceof Removed) {
            this.markRemoved(live.slot, err.how);
            return;
          }
          // Unreachable while reconnecting: the reconnection's sync refreshes again.
        }
        this.publishSpace(live);
        this.publishCards();
        void this.followAll(live);
      } while (live.refreshAgain);
    })().finally(() => {
      live.refreshing = null;
    });
    return live.refreshing;
  }

  /** Asks the server to push every chat and channel's new messages to this session, so rooms
   * not being read can count what is unread; what others sent since the newest seq counted
   * (while this page was closed) is counted now (only the envelopes' senders are read). */
  private async followAll(live: Live): Promise<void> {
    let changed = false;
    const me = live.client.me.memberKey;
    for (const room of live.roomViews) {
      if (room.kind === "conference" || live.followed.has(room.roomId)) continue;
      live.followed.add(room.roomId);
      const after = live.lastSeq.get(room.roomId);
      try {
        const got = await live.client.request<Messages>({
          type: "fetch_messages", room_id: room.roomId, after: after ?? Number.MAX_SAFE_INTEGER, limit: after === undefined ? 1 : CATCH_UP_LIMIT, follow: true,
        });
        const newest = Math.max(got.last_seq, ...got.messages.map((m) => m.seq));
        if (after !== undefined && live.open?.roomId !== room.roomId) {
          const theirs = got.messages.filter((m) => m.seq > after && !sameBytes(m.sender, me)).length;
          if (theirs > 0) live.unread.set(room.roomId, (live.unread.get(room.roomId) ?? 0) + theirs);
        }
        if (newest > (live.lastSeq.get(room.roomId) ?? -1)) {
          live.lastSeq.set(room.roomId, newest);
          changed = true;
        }
      } catch {
        live.followed.delete(room.roomId);
      }
    }
    if (changed) {
      await this.saveMarks(live);
      this.publishSpace(live);
      this.publishCards();
    }
  }

  private photo(avatar: Uint8Array | null): string | null {
    if (avatar === null) return null;
    // Keyed by every byte (an avatar is at most ~13 KB): a member must not be able to craft a
    // picture whose key matches another member's, so that one of them shows the other's photo.
    const key = hexOf(avatar);
    let url = this.photos.get(key);
    if (url === undefined) {
      url = jpegUrl(avatar);
      this.photos.set(key, url);
    }
    return url;
  }

  private memberVM(live: Live, view: MemberView): MemberVM {
    const roster = live.client.roster();
    const me = live.client.me.memberKey;
    const meHex = hexOf(me);
    return {
      key: view.id, name: view.displayName, role: view.role, fingerprint: view.fingerprint, me: view.me, photo: this.photo(view.avatar),
      manageable: mayModerate(roster, meHex, view.id), roles: rolesFor(roster, meHex, view.id),
    };
  }

  private publishSpace(live: Live): void {
    if (!live.loaded && !this.removed.has(live.slot)) return;
    const members = live.members.map((m) => this.memberVM(live, m));
    const me = members.find((m) => m.me) ?? {
      key: hexOf(live.client.me.memberKey), name: live.client.displayName(), role: live.client.myRole() ?? "member", fingerprint: "",
      me: true, photo: null, manageable: false, roles: [],
    };
    const rooms: RoomVM[] = live.roomViews.map((r) => ({
      id: r.roomId, name: r.name, kind: kindOf(r.kind), unread: live.open?.roomId === r.roomId ? 0 : (live.unread.get(r.roomId) ?? 0), canPost: r.mayPost,
      lifetime: r.ttl, publishers: [...r.publishers], stage: r.spec.stage,
    }));
    const state = live.client.connectionState();
    const space: SpaceVM = {
      slot: live.slot,
      name: live.name || this.entries.find((e) => e.slot === live.slot)?.name || "A space",
      description: live.description,
      connection: state as Connection,
      removed: this.removed.get(live.slot) ?? null,
      me,
      rooms,
      members,
      invites: live.invites
        .filter((i) => !i.revoked && !i.expired && i.usesLeft > 0)
        .map((i) => ({ id: i.inviteId, role: i.role === "moderator" ? "moderator" : "member", maxUses: i.maxUses, uses: i.maxUses - i.usesLeft, expiresAt: i.expiresAt * 1000, revoked: i.revoked })),
      passphrase: this.spaces?.vault.hasPassphrase ?? null,
      warning: live.warning,
    };
    this.store.setSpace(space);
  }

  private markRemoved(slot: string, how: RemovedHow): void {
    this.removed.set(slot, how);
    const live = this.live.get(slot);
    if (live !== undefined) {
      this.closeRoom(live);
      this.publishSpace(live);
    } else {
      const entry = this.entries.find((e) => e.slot === slot);
      this.store.setSpace({
        slot, name: entry?.name || "this space", description: "", connection: "closed", removed: how,
        me: { key: "", name: entry?.displayName ?? "", role: "member", fingerprint: "", me: true, photo: null, manageable: false, roles: [] },
        rooms: [], members: [], invites: [], passphrase: null,
      });
    }
    this.publishCards();
  }

  /** Keep the reading marks (unread counts, stories opened) in the membership's vault slot. */
  private async saveMarks(live: Live): Promise<void> {
    if (this.live.get(live.slot) !== live || this.removed.has(live.slot)) return;
    const rooms = new Map<string, ReadingMark>();
    for (const roomId of new Set([...live.unread.keys(), ...live.lastSeq.keys()])) {
      rooms.set(roomId, { count: live.unread.get(roomId) ?? 0, seq: live.lastSeq.get(roomId) ?? -1 });
    }
    await live.client.saveReadingMarks(rooms, [...live.seen]).catch(() => undefined);
  }

  private need(slot: string): Live {
    const live = this.live.get(slot);
    if (live === undefined) throw new UsageError("This space is still opening. Try again in a moment.");
    return live;
  }

  // ---- a room ----------------------------------------------------------------------------------

  openRoom(slot: string, roomId: string | null): void {
    const live = this.live.get(slot);
    if (live === undefined) {
      if (roomId !== null) {
        // The space is still opening: open the room once it is there.
        void this.opening.get(slot)?.then((opened) => opened !== null && this.openRoom(slot, roomId));
      }
      return;
    }
    if (live.open?.roomId === roomId) return;
    this.closeRoom(live);
    if (roomId === null) return;
    const view = live.roomViews.find((r) => r.roomId === roomId);
    if (view === undefined || view.kind === "conference") return;
    const unread = live.unread.get(roomId) ?? 0;
    if (live.unread.delete(roomId)) void this.saveMarks(live);
    const open: OpenRoom = {
      roomId, kind: kindOf(view.kind), follower: null, items: [], stories: [], firstUnread: null, notice: null,
      loading: true, poll: null, keyPoll: null, closed: false,
    };
    live.open = open;
    this.publishRoom(live, open);
    this.publishSpace(live);
    this.publishCards();
    let backlog = true;
    live.chat
      .follow(roomId, {
        onMessage: (item) => {
          if (open.closed) return;
          const earlier = item.kind === "unreadable" && backlog && item.reason.includes("never received the key");
          if (item.kind === "unreadable" && (earlier || item.reason === HISTORY_CLOSED || /before (this member|you) joined/.test(item.reason))) {
            // A room whose history starts at each member's join: say it once, not per message.
            open.notice = "Earlier messages stay private to the people who were here before you joined.";
            this.publishRoom(live, open);
            return;
          }
          if (item.kind === "unreadable" && item.reason.startsWith(NOT_SHARED_YET)) {
            this.waitForKey(live, open);
            return;
          }
          if (item.kind !== "shown") console.debug(`salon: message ${item.seq} ${item.kind}: ${item.reason}`);
          const vm = this.messageVM(item);
          const kept = open.items.length >= MAX_SHOWN_MESSAGES ? open.items.slice(1 - MAX_SHOWN_MESSAGES) : open.items;
          open.items = [...kept.filter((m) => m.id !== vm.id), vm];
          if (!backlog && open.firstUnread === null && !vm.mine && document.hidden) open.firstUnread = vm.id;
          this.publishRoomSoon(live, open);
        },
        onExpired: (_room, seq) => {
          if (open.closed) return;
          open.items = open.items.filter((m) => m.id !== String(seq));
          this.publishRoomSoon(live, open);
        },
        onError: () => undefined,
      })
      .then(
        (follower) => {
          if (open.closed) {
            follower.stop();
            return;
          }
          open.follower = follower;
          backlog = false;
          open.loading = false;
          if (unread > 0) {
            const theirs = open.items.filter((m) => !m.mine);
            open.firstUnread = theirs[Math.max(0, theirs.length - unread)]?.id ?? null;
          }
          this.publishRoom(live, open);
        },
        (err: unknown) => {
          open.loading = false;
          open.notice = err instanceof Removed ? null : "Messages could not be loaded right now. They will appear when the connection is back.";
          this.publishRoom(live, open);
        },
      );
    if (open.kind === "channel") {
      void this.loadStories(live, open);
      open.poll = setInterval(() => void this.loadStories(live, open), STORY_POLL_MS);
    }
  }

  private closeRoom(live: Live): void {
    const open = live.open;
    if (open === null) return;
    open.closed = true;
    open.follower?.stop();
    if (open.poll !== null) clearInterval(open.poll);
    if (open.keyPoll !== null) clearInterval(open.keyPoll);
    live.open = null;
  }

  /** No member has shared the room's key with us yet: say so, and reopen the room once it came. */
  private waitForKey(live: Live, open: OpenRoom): void {
    open.notice = WAITING_FOR_KEY;
    this.publishRoom(live, open);
    if (open.keyPoll !== null) return;
    let checking = false;
    open.keyPoll = setInterval(() => {
      if (checking || open.closed) return;
      checking = true;
      live.rooms.key(open.roomId).then(
        () => {
          if (open.closed || live.open !== open) return;
          this.closeRoom(live);
          this.openRoom(live.slot, open.roomId);
        },
        () => undefined,
      ).finally(() => {
        checking = false;
      });
    }, KEY_POLL_MS);
  }

  private messageVM(item: ReadItem): MessageVM {
    if (item.kind === "shown") {
      return {
        id: String(item.seq), authorKey: item.senderHex, authorName: item.senderName, mine: item.mine, text: item.text,
        at: item.sentAt * 1000, expiresAt: item.visibleUntil === null ? null : item.visibleUntil * 1000, pending: false, hidden: false,
      };
    }
    return {
      id: String(item.seq), authorKey: item.senderHex, authorName: "", mine: false, text: item.summary, at: item.sentAt * 1000,
      expiresAt: item.visibleUntil === null ? null : item.visibleUntil * 1000, pending: false, hidden: true,
    };
  }

  /**
   * Publish the room once the current burst of messages is handled (a flood or a long backlog
   * renders a few times, not once per message, so the page stays responsive).
   */
  private publishRoomSoon(live: Live, open: OpenRoom): void {
    if (open.publishSoon) return;
    const wait = (open.publishedAt ?? 0) + PUBLISH_BATCH_MS - Date.now();
    if (wait <= 0) {
      // The first message after a quiet moment is shown at once (no added latency).
      open.publishedAt = Date.now();
      this.publishRoom(live, open);
      return;
    }
    open.publishSoon = true;
    setTimeout(() => {
      open.publishSoon = false;
      open.publishedAt = Date.now();
      if (!open.closed) this.publishRoom(live, open);
    }, wait);
  }

  private publishRoom(live: Live, open: OpenRoom): void {
    const vm: RoomLiveVM = { loading: open.loading, messages: open.items, stories: open.stories, firstUnread: open.firstUnread, notice: open.notice };
    this.store.setRoom(live.slot, open.roomId, vm);
  }

  private async loadStories(live: Live, open: OpenRoom): Promise<void> {
    let listed: StoryView[];
    try {
      listed = (await live.stories.list(open.roomId)).stories;
    } catch {
      return;
    }
    if (open.closed) return;
    const byId = new Map(open.stories.map((s) => [s.id, s]));
    open.stories = listed.map((s) => byId.get(s.storyId) ?? {
      id: s.storyId, authorKey: s.senderHex, authorName: s.author, caption: s.caption, at: s.postedAt * 1000,
      expiresAt: s.visibleUntil * 1000, seen: live.seen.has(s.storyId) || s.mine, thumb: null,
    });
    this.publishRoom(live, open);
    for (const story of open.stories) {
      if (story.thumb !== null) continue;
      try {
        const { bytes } = await live.stories.view(story.id, "thumb");
        if (open.closed) return;
        open.stories = open.stories.map((s) => (s.id === story.id ? { ...s, thumb: jpegUrl(bytes) } : s));
        this.publishRoom(live, open);
      } catch {
        // An expired or unverifiable story keeps its initials; the viewer says why.
      }
    }
  }

  async send(slot: string, roomId: string, text: string, ttlSeconds: number): Promise<void> {
    await this.need(slot).chat.send(roomId, text, ttlSeconds);
  }

  async postStory(slot: string, roomId: string, photo: Blob, caption: string): Promise<void> {
    const live = this.need(slot);
    const picture = await prepareStoryImage(photo);
    await live.stories.post(roomId, picture, caption);
    if (live.open?.roomId === roomId) await this.loadStories(live, live.open);
  }

  async storyPicture(slot: string, _roomId: string, storyId: string): Promise<string> {
    const known = this.pictures.get(storyId);
    if (known !== undefined) return known;
    const { bytes } = await this.need(slot).stories.view(storyId, "image");
    const url = jpegUrl(bytes);
    this.pictures.set(storyId, url);
    return url;
  }

  markStorySeen(slot: string, roomId: string, storyId: string): void {
    const live = this.live.get(slot);
    if (live !== undefined && !live.seen.has(storyId)) {
      live.seen.add(storyId);
      void this.saveMarks(live);
    }
    const open = live?.open;
    if (live === undefined || open === null || open === undefined || open.roomId !== roomId) return;
    open.stories = open.stories.map((s) => (s.id === storyId ? { ...s, seen: true } : s));
    this.publishRoom(live, open);
  }

  // ---- moderation, invites, profile ------------------------------------------------------------

  async createRoom(slot: string, name: string, kind: RoomKind): Promise<string> {
    const live = this.need(slot);
    const view = await live.rooms.create(kind === "call" ? "conference" : kind, name);
    await this.refresh(live);
    return view.roomId;
  }

  async setRole(slot: string, memberKey: string, role: Role): Promise<void> {
    const live = this.need(slot);
    await live.client.setRole(fromHex(memberKey), role);
    await this.refresh(live);
  }

  async remove(slot: string, memberKey: string, ban: boolean): Promise<void> {
    const live = this.need(slot);
    await live.client.kick(fromHex(memberKey), { ban });
    await this.refresh(live);
  }

  async setPublisher(slot: string, roomId: string, memberKey: string, on: boolean): Promise<void> {
    const live = this.need(slot);
    await live.rooms.setPublisher(roomId, fromHex(memberKey), on);
    await this.refresh(live);
  }

  async createInvite(slot: string, options: InviteOptions): Promise<string> {
    const live = this.need(slot);
    const role = options.role === "moderator" ? "moderator" : "member";
    const link = await live.client.createInvite(options.uses, options.expiresIn, role);
    await this.refresh(live);
    return link;
  }

  async revokeInvite(slot: string, inviteId: string): Promise<void> {
    const live = this.need(slot);
    await live.client.revokeInvite(inviteId);
    await this.refresh(live);
  }

  async setProfile(slot: string, name: string, photo: Blob | null | undefined): Promise<void> {
    const live = this.need(slot);
    let avatar: Uint8Array | null;
    if (photo === undefined) avatar = (await live.client.profile(live.client.me.memberKey)).avatar;
    else avatar = photo === null ? null : (await prepareAvatar(photo)).jpeg;
    await live.client.setProfile(name, avatar);
    await this.refresh(live);
    await this.reloadList();
  }

  async setPassphrase(next: string | null, current: string | null): Promise<void> {
    const spaces = this.requireSpaces();
    try {
      await spaces.vault.setPassphrase(next, current ?? undefined);
    } catch (err) {
      if (err instanceof WrongPassphrase) throw new UsageError("The current passphrase is not right. Nothing was changed.");
      throw err;
    }
    for (const live of this.live.values()) this.publishSpace(live);
  }

  async leave(slot: string): Promise<void> {
    const live = this.live.get(slot);
    if (live !== undefined) {
      this.closeRoom(live);
      for (const off of live.offs.splice(0)) off();
      this.live.delete(slot);
    }
    if (this.removed.has(slot)) await this.requireSpaces().forget(slot);
    else await this.requireSpaces().leave(slot);
    this.removed.delete(slot);
    this.store.update((s) => {
      const { [slot]: _gone, ...space } = s.space;
      return { ...s, space };
    });
    await this.reloadList();
  }

  // ---- calls (call_core.ts) --------------------------------------------------------------------

  openCall(slot: string, roomId: string): void {
    this.calls.openCall(slot, roomId);
  }

  closeCall(slot: string, roomId: string): void {
    this.calls.closeCall(slot, roomId);
  }

  pickDevice(slot: string, roomId: string, kind: DeviceKind, id: string): Promise<void> {
    return this.calls.pickDevice(slot, roomId, kind, id);
  }

  retryDevices(slot: string, roomId: string): Promise<void> {
    return this.calls.retryDevices(slot, roomId);
  }

  joinCall(slot: string, roomId: string, choices: CallChoices): Promise<void> {
    return this.calls.joinCall(slot, roomId, choices);
  }

  callIntents(slot: string, roomId: string): CallIntents | null {
    return this.calls.callIntents(slot, roomId);
  }
}

const hexOf = (bytes: Uint8Array): string => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i += 1) if (a[i] !== b[i]) return false;
  return true;
}

/** Starts the core behind the store; returns the intents the components send. */
export function startCore(store: Store): Intents {
  const bridge = new Bridge(store);
  bridge.started = bridge.start();
  return bridge;
}
