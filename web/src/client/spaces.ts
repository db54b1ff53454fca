/**
 * The app's memberships: the vault (IndexedDB in the page), the list the home screen shows
 * (from the vault alone: the space name is cached in each membership), one `SpaceClient` per
 * membership opened lazily, joining, leaving and forgetting. Each membership is its own
 * identity with its own WebSocket; nothing is shared between them.
 */
import { signAuth } from "../protocol/auth.ts";
import { randomBytes } from "../protocol/crypto.ts";
import { newMembership } from "../protocol/identities.ts";
import { newId } from "../protocol/ids.ts";
import { formatInviteLink, inviteKey, type InviteLink } from "../protocol/invites.ts";
import { deriveSpaceId, recordHash, signRecord, type Record, type RecordBody } from "../protocol/records.ts";
import { seal as secretboxSeal } from "../protocol/secretbox.ts";
import { encodeStruct } from "../protocol/schema.ts";
import type { Welcome } from "../protocol/wire.ts";
import { Vault, type SlotStore } from "../keystore/store.ts";
import { UsageError } from "./context.ts";
import { Connection, checkServerUrl } from "./session.ts";

import { Invitation, type JoinPreview, type JoinResult } from "./join.ts";
import { PROFILE_INFO, SPACE_INFO, SpaceClient, type SpaceClientOptions, makeInviteSeal } from "./space.ts";

export interface CreateOptions {
  /** The first invite link's uses and lifetime in seconds (the CLI's defaults: 25 uses, 7 days). */
  uses?: number;
  expiresIn?: number;
  creationToken?: string;
}

export interface Created {
  readonly slot: string;
  readonly spaceId: string;
  /** The first invite link (a member link), as `salon space create` makes. */
  readonly link: string;
  readonly client: SpaceClient;
}

/**
 * Create a space owned by a fresh identity (§5.3 `create_space`): genesis, name, the founder's
 * profile and a first invite with its seal, exactly as `salon space create` does.
 */
export async function createSpace(
  vault: Vault, server: string, name: string, displayName: string, options: CreateOptions = {},
  clientOptions: SpaceClientOptions = {},
): Promise<Created> {
  const url = checkServerUrl(server);
  const spaceName = name.trim();
  const display = displayName.trim();
  if (spaceName === "") throw new UsageError("the space needs a name");
  if (display === "") throw new UsageError("pick a display name first");
  const me = await newMembership();
  const genesis = { type: "genesis" as const, box_key: me.boxKey, nonce: randomBytes(16) };
  const spaceId = await deriveSpaceId(me.memberKey, genesis);
  const key = randomBytes(32);
  const link: InviteLink = { server: url, inviteId: newId(), secret: randomBytes(32) };
  const bodies: RecordBody[] = [
    genesis,
    { type: "meta", epoch: 0, box: await secretboxSeal(key, encodeStruct(SPACE_INFO, { name: spaceName, description: "" })) },
    { type: "profile", epoch: 0, box: await secretboxSeal(key, encodeStruct(PROFILE_INFO, { display_name: display, avatar: null })) },
    {
      type: "invite", invite_id: link.inviteId, invite_key: await inviteKey(link.secret, link.inviteId), role: "member",
      expires_at: Math.floor(Date.now() / 1000) + (options.expiresIn ?? 7 * 86_400), max_uses: options.uses ?? 25,
    },
  ];
  const records: Record[] = [];
  let prev: Uint8Array = new Uint8Array(32);
  for (const [seq, body] of bodies.entries()) {
    const record = await signRecord(me.signingSeed, {
      space_id: spaceId, seq, prev, author: me.memberKey, created_at: Math.floor(Date.now() / 1000), body,
    });
    records.push(record);
    prev = await recordHash(record);
  }
  const seal = await makeInviteSeal(link, 0, key, { space_id: spaceId, name: spaceName, description: "", inviter: display });
  const conn = await Connection.open(url, clientOptions);
  try {
    const signature = await signAuth(me.signingSeed, conn.origin, "create", spaceId, conn.nonce);
    await conn.request<Welcome>({ type: "create_space", records, seals: [seal], signature, creation_token: options.creationToken ?? "" });
  } finally {
    conn.close();
  }
  const slot = await vault.add({
    type: "membership", space_id: spaceId, server: url, display_name: display, signing_seed: me.signingSeed,
    box_secret: me.boxSecret, space_keys: [{ epoch: 0, key }], room_keys: [], head_seq: records.length - 1, head_hash: prev,
    name: spaceName, invite_secrets: [{ invite_id: link.inviteId, secret: link.secret }], pending_key: null,
  });
  const client = await SpaceClient.open(vault, slot, clientOptions);
  return { slot, spaceId, link: formatInviteLink(link), client };
}

/** One line of the home screen. */
export interface SpaceEntry {
  readonly slot: string;
  readonly spaceId: string;
  /** The space's name as last read ("" before the first sync could read it). */
  readonly name: string;
  readonly displayName: string;
  readonly server: string;
  /** Unread messages as last saved (see SpaceClient.saveReadingMarks). */
  readonly unread: number;
}

export interface SpacesOptions {
  /** Defaults to IndexedDB (keystore/idb.ts) with its device key. */
  store?: SlotStore;
  device?: CryptoKey;
  passphrase?: string;
  client?: SpaceClientOptions;
}

export class Spaces {
  private readonly clients = new Map<string, Promise<SpaceClient>>();

  private constructor(readonly vault: Vault, private readonly clientOptions: SpaceClientOptions) {}

  /** Open the vault (creating it on first use). A wrong or missing passphrase is `WrongPassphrase`. */
  static async open(options: SpacesOptions = {}): Promise<Spaces> {
    let store = options.store;
    let device = options.device;
    if (store === undefined || device === undefined) {
      const { openBrowserStore } = await import("../keystore/idb.ts");
      const browser = await openBrowserStore();
      store ??= browser.store;
      device ??= browser.device;
    }
    const vault = await Vault.open(store, device, options.passphrase === undefined ? {} : { passphrase: options.passphrase });
    return new Spaces(vault, options.client ?? {});
  }

  /** Every membership on this device, without connecting. */
  async list(): Promise<SpaceEntry[]> {
    return (await this.vault.list()).map(({ slot, membership: m }) => ({
      slot, spaceId: m.space_id, name: m.name ?? "", displayName: m.display_name, server: m.server,
      unread: (m.unread ?? []).reduce((sum, u) => sum + u.count, 0),
    }));
  }

  /** The open client of `slot`, connecting on first use (one per membership). */
  open(slot: string): Promise<SpaceClient> {
    let client = this.clients.get(slot);
    if (client === undefined) {
      client = SpaceClient.open(this.vault, slot, this.clientOptions);
      this.clients.set(slot, client);
      client.then(
        (c) => c.onRemoved(() => this.clients.get(slot) === client && this.clients.delete(slot)),
        () => this.clients.get(slot) === client && this.clients.delete(slot),
      );
    }
    return client;
  }

  /** Close one membership's connection (it stays on this device). */
  async close(slot: string): Promise<void> {
    const client = this.clients.get(slot);
    this.clients.delete(slot);
    if (client !== undefined) (await client.catch(() => null))?.close();
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.clients.keys()].map((slot) => this.close(slot)));
  }

  /** Parse a link (a bad one throws `JoinError("damaged")`). */
  invitation(link: string): Invitation {
    return Invitation.parse(link);
  }

  /** What the link's join screen shows. */
  preview(link: string): Promise<JoinPreview> {
    return this.invitation(link).preview();
  }

  /** Join through `link` as a new identity; the new membership is open and registered. */
  async join(link: string, displayName: string, avatar: Uint8Array | null = null): Promise<JoinResult> {
    const result = await this.invitation(link).join(this.vault, displayName, avatar, this.clientOptions);
    const opened = Promise.resolve(result.client);
    this.clients.set(result.slot, opened);
    result.client.onRemoved(() => this.clients.get(result.slot) === opened && this.clients.delete(result.slot));
    return result;
  }

  /** Create a space owned by a new identity of this device; it is open and registered. */
  async create(server: string, name: string, displayName: string, options: CreateOptions = {}): Promise<Created> {
    const created = await createSpace(this.vault, server, name, displayName, options, this.clientOptions);
    const opened = Promise.resolve(created.client);
    this.clients.set(created.slot, opened);
    created.client.onRemoved(() => this.clients.get(created.slot) === opened && this.clients.delete(created.slot));
    return created;
  }

  /** Leave the space and forget this identity. */
  async leave(slot: string): Promise<void> {
    const client = await this.open(slot);
    await client.leave();
    await this.forget(slot);
  }

  /** Remove a membership from this device (after leaving or being removed). Irreversible. */
  async forget(slot: string): Promise<void> {
    await this.close(slot);
    await this.vault.remove(slot);
  }
}


