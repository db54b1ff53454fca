/**
 * The UI's store: plain view models that components render, and the intents they send. The
 * client core (spaces, rooms, chat, stories) feeds the store through a `Core` (see core.ts);
 * components never touch the core, keys or the wire. Nothing secret is ever put here: members
 * appear by their public key's fingerprint, never by a seed or a room key.
 */
import { useEffect, useState } from "preact/hooks";
import type { CallIntents, CallView } from "../call/topology.ts";

export type Role = "owner" | "moderator" | "member";
export type RoomKind = "chat" | "channel" | "call";
export type Connection = "connecting" | "online" | "reconnecting" | "closed";
/** "unconfirmed": the server refuses us, but the space's signed history does not show a removal. */
export type RemovedHow = "kicked" | "banned" | "left" | "unconfirmed";

export interface SpaceCardVM {
  readonly slot: string;
  readonly name: string;
  readonly unread: number;
  readonly connection: Connection;
  readonly removed: RemovedHow | null;
}

export interface RoomVM {
  readonly id: string;
  readonly name: string;
  readonly kind: RoomKind;
  readonly unread: number;
  /** May I post here (chat: any member; channel: publishers only). */
  readonly canPost: boolean;
  /** The room's own message lifetime in seconds (0 = messages stay unless the sender sets one). */
  readonly lifetime: number;
  /** Channels: the members (hex keys) allowed to post besides owners and moderators. */
  readonly publishers: readonly string[];
  /** Calls: a stage, where hosts choose who speaks (the others listen). */
  readonly stage?: boolean;
}

export interface MemberVM {
  /** The member's public key in hex: an address for intents, never shown. */
  readonly key: string;
  readonly name: string;
  readonly role: Role;
  /** A short, human-comparable digest of the member's public key. */
  readonly fingerprint: string;
  readonly me: boolean;
  /** An object URL of the member's photo, or null. */
  readonly photo: string | null;
  /** May I change this member's role or remove them (outrank them, not me). */
  readonly manageable: boolean;
  /** The roles I may give this member (excluding the current one). */
  readonly roles: readonly Role[];
}

export interface InviteVM {
  readonly id: string;
  readonly role: Role;
  readonly maxUses: number;
  readonly uses: number;
  /** Milliseconds since the epoch. */
  readonly expiresAt: number;
  readonly revoked: boolean;
}

export interface SpaceVM {
  readonly slot: string;
  readonly name: string;
  readonly description: string;
  readonly connection: Connection;
  readonly removed: RemovedHow | null;
  readonly me: MemberVM;
  readonly rooms: readonly RoomVM[];
  readonly members: readonly MemberVM[];
  readonly invites: readonly InviteVM[];
  /** Whether this browser's key store asks for a passphrase (null: cannot be changed here). */
  readonly passphrase: boolean | null;
  /** The server showed a history that does not match the verified one (a fork, a rollback). */
  readonly warning?: string | null;
}

export interface MessageVM {
  readonly id: string;
  readonly authorKey: string;
  readonly authorName: string;
  readonly mine: boolean;
  readonly text: string;
  /** Milliseconds since the epoch. */
  readonly at: number;
  /** When it disappears (ms), or null when it stays. */
  readonly expiresAt: number | null;
  /** Still on its way to the server. */
  readonly pending: boolean;
  /** A message that cannot be shown (no key here, or a failed check): `text` says so plainly. */
  readonly hidden: boolean;
}

export interface StoryVM {
  readonly id: string;
  readonly authorKey: string;
  readonly authorName: string;
  readonly caption: string;
  readonly at: number;
  readonly expiresAt: number;
  readonly seen: boolean;
  /** An object URL of the decrypted thumbnail, or null while it loads. */
  readonly thumb: string | null;
}

export interface RoomLiveVM {
  readonly loading: boolean;
  readonly messages: readonly MessageVM[];
  readonly stories: readonly StoryVM[];
  /** The first message that arrived while the room was not being read, or null. */
  readonly firstUnread: string | null;
  /** A message (already in plain words) about the room, e.g. keys not yet shared with us. */
  readonly notice: string | null;
}

export interface InvitePreviewVM {
  readonly spaceName: string;
  readonly description: string;
  readonly inviter: string;
  readonly role: Role;
  readonly expiresAt: number;
}

export interface AppState {
  /** The list of spaces on this browser has been read. */
  readonly ready: boolean;
  /** Why the key store cannot be opened (in plain words), or null. */
  readonly startError: string | null;
  /** This browser's key store is locked by a passphrase and waits for it. */
  readonly locked: boolean;
  readonly spaces: readonly SpaceCardVM[];
  readonly space: Readonly<Record<string, SpaceVM>>;
  /** Why a space could not be opened yet (plain words; it is retried), by slot. */
  readonly spaceErrors: Readonly<Record<string, string>>;
  /** Keyed by `${slot}/${roomId}`. */
  readonly rooms: Readonly<Record<string, RoomLiveVM>>;
  /** Call rooms on screen, keyed by `${slot}/${roomId}` (see CallScreenVM). */
  readonly calls: Readonly<Record<string, CallScreenVM>>;
}

// ---- calls ---------------------------------------------------------------------------------

export type DeviceKind = "camera" | "microphone" | "speaker";

export interface DeviceVM {
  /** The browser's device id (opaque, per site). */
  readonly id: string;
  readonly label: string;
}

/** The camera and microphone before joining (and the devices in use once in the call). */
export interface PreviewVM {
  /** Asking the browser for the camera and microphone. */
  readonly starting: boolean;
  /** The local camera (shown mirrored); null when it could not be opened. */
  readonly stream: MediaStream | null;
  /** The microphone (for the level meter; never played back), or null. */
  readonly microphoneTrack?: MediaStreamTrack | null;
  readonly cameras: readonly DeviceVM[];
  readonly microphones: readonly DeviceVM[];
  readonly speakers: readonly DeviceVM[];
  /** The chosen devices' ids ("" = the system's default). */
  readonly camera: string;
  readonly microphone: string;
  readonly speaker: string;
  /** This browser can send sound to a chosen speaker (HTMLMediaElement.setSinkId). */
  readonly canPickSpeaker: boolean;
  /** Plain words when the camera / microphone can't be used (denied, busy, none), or null. */
  readonly cameraProblem: string | null;
  readonly microphoneProblem: string | null;
}

export interface CallChoices {
  readonly muted: boolean;
  readonly cameraOff: boolean;
}

export interface CallScreenVM {
  readonly preview: PreviewVM;
  /** The call as the call client sees it; null before Join was pressed. */
  readonly view: CallView | null;
  /** Why joining (or the last action) failed, in plain words, or null. */
  readonly error: string | null;
}

export const roomKey = (slot: string, roomId: string): string => `${slot}/${roomId}`;

export interface InviteOptions {
  readonly uses: number;
  /** Seconds from now. */
  readonly expiresIn: number;
  readonly role: Role;
}

/** What the UI asks of the client core. Every method may reject with a ClientError. */
export interface Intents {
  unlock(passphrase: string): Promise<void>;
  /** Opens the invite (nothing is recorded, no use is taken): the join screen's preview. */
  previewInvite(inviteId: string, secret: string): Promise<InvitePreviewVM>;
  /** Joins; resolves to the new space's slot. */
  join(inviteId: string, secret: string, name: string, photo: Blob | null): Promise<string>;
  /** The screen of `slot` is shown (connect, sync, follow). */
  openSpace(slot: string): void;
  /** A room is shown (subscribe, load history, mark read) or hidden (null). */
  openRoom(slot: string, roomId: string | null): void;
  send(slot: string, roomId: string, text: string, ttlSeconds: number): Promise<void>;
  postStory(slot: string, roomId: string, photo: Blob, caption: string): Promise<void>;
  /** An object URL of the full-size story picture. */
  storyPicture(slot: string, roomId: string, storyId: string): Promise<string>;
  markStorySeen(slot: string, roomId: string, storyId: string): void;
  createRoom(slot: string, name: string, kind: RoomKind): Promise<string>;
  setRole(slot: string, memberKey: string, role: Role): Promise<void>;
  remove(slot: string, memberKey: string, ban: boolean): Promise<void>;
  /** Channels: let a member post there, or stop them. */
  setPublisher(slot: string, roomId: string, memberKey: string, on: boolean): Promise<void>;
  /** Resolves to the full link to hand over (it holds the secret: shown once, never stored). */
  createInvite(slot: string, options: InviteOptions): Promise<string>;
  revokeInvite(slot: string, inviteId: string): Promise<void>;
  setProfile(slot: string, name: string, photo: Blob | null | undefined): Promise<void>;
  /** Set, change or remove (null) the passphrase of this browser's key store; `current` is
   * required when it has one. */
  setPassphrase(next: string | null, current: string | null): Promise<void>;
  leave(slot: string): Promise<void>;

  // ---- calls (screens/call*.tsx) ----
  /** A call room is shown: open the camera and microphone for the preview. */
  openCall(slot: string, roomId: string): void;
  /** The call room is no longer shown: leave the call if in it, release the devices. */
  closeCall(slot: string, roomId: string): void;
  /** Use another camera, microphone or speaker (before or during the call). */
  pickDevice(slot: string, roomId: string, kind: DeviceKind, id: string): Promise<void>;
  /** Ask the browser again for the camera and microphone (after a refusal or a busy device). */
  retryDevices(slot: string, roomId: string): Promise<void>;
  joinCall(slot: string, roomId: string, choices: CallChoices): Promise<void>;
  /** What can be done in the call once joined (null before). */
  callIntents(slot: string, roomId: string): CallIntents | null;
}

type Listener = () => void;

export class Store {
  #state: AppState = { ready: false, startError: null, locked: false, spaces: [], space: {}, spaceErrors: {}, rooms: {}, calls: {} };
  readonly #listeners = new Set<Listener>();

  get state(): AppState {
    return this.#state;
  }

  update(change: (state: AppState) => AppState): void {
    const next = change(this.#state);
    if (next === this.#state) return;
    this.#state = next;
    for (const listener of this.#listeners) listener();
  }

  setSpace(space: SpaceVM): void {
    this.update((s) => ({ ...s, space: { ...s.space, [space.slot]: space } }));
  }

  setRoom(slot: string, roomId: string, room: RoomLiveVM): void {
    this.update((s) => ({ ...s, rooms: { ...s.rooms, [roomKey(slot, roomId)]: room } }));
  }

  setCall(slot: string, roomId: string, call: CallScreenVM | null): void {
    this.update((s) => {
      const key = roomKey(slot, roomId);
      if (call !== null) return { ...s, calls: { ...s.calls, [key]: call } };
      const { [key]: _gone, ...calls } = s.calls;
      return { ...s, calls };
    });
  }

  subscribe(listener: Listener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
}

/** Re-renders the calling component on every store change; `select` picks its view model. */
export function useStore<T>(store: Store, select: (state: AppState) => T): T {
  const [, setTick] = useState(0);
  useEffect(() => store.subscribe(() => setTick((n) => n + 1)), [store]);
  return select(store.state);
}
