/**
 * The app's memberships: the vault (IndexedDB in the page), the list the home screen shows
 * (from the vault alone: the space name is cached in each membership), one `SpaceClient` per
 * membership opened lazily, joining, leaving and forgetting. Each membership is its own
 * identity with its own WebSocket; nothing is shared between them.
 */
import { Vault, type SlotStore } from "../keystore/store.ts";

import { Invitation, type JoinPreview, type JoinResult } from "./join.ts";
import { SpaceClient, type SpaceClientOptions } from "./space.ts";

/** One line of the home screen. */
export interface SpaceEntry {
  readonly slot: string;
  readonly spaceId: string;
  /** The space's name as last read ("" before the first sync could read it). */
  readonly name: string;
  readonly displayName: string;
  readonly server: string;
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


