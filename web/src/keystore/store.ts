/**
 * The key store over a small storage seam: `SlotStore` is all the I/O (IndexedDB in the page,
 * `MemorySlotStore` in tests). Each membership lives in its own slot under a random slot id, so
 * no stored record or name is shared between two spaces; the one other slot, "vault", holds only
 * the passphrase salt and a check value.
 */
import { base64urlEncode, randomBytes } from "../protocol/crypto.ts";
import { decodeStruct, encodeStruct } from "../protocol/schema.ts";
import {
  type Membership, type VaultKeys, type VaultMeta, SALT_BYTES, VaultCorrupt, VaultMetaDef, WrongPassphrase,
  decodeMembership, encodeMembership, openSlot, passphraseKey, sealSlot,
} from "./vault.ts";

export interface SlotStore {
  get(slot: string): Promise<Uint8Array | undefined>;
  put(slot: string, bytes: Uint8Array): Promise<void>;
  delete(slot: string): Promise<void>;
  list(): Promise<string[]>;
}

export class MemorySlotStore implements SlotStore {
  readonly slots = new Map<string, Uint8Array>();
  async get(slot: string): Promise<Uint8Array | undefined> {
    return this.slots.get(slot)?.slice();
  }
  async put(slot: string, bytes: Uint8Array): Promise<void> {
    this.slots.set(slot, bytes.slice());
  }
  async delete(slot: string): Promise<void> {
    this.slots.delete(slot);
  }
  async list(): Promise<string[]> {
    return [...this.slots.keys()];
  }
}

export const META_SLOT = "vault";
const MEMBERSHIP_PREFIX = "m.";
const CHECK = new Uint8Array(0);

export const isMembershipSlot = (slot: string): boolean => slot.startsWith(MEMBERSHIP_PREFIX);

export interface OpenOptions {
  /** Required to open a vault that has one; sets one when the vault is created. */
  passphrase?: string;
}

export class Vault {
  private constructor(private readonly store: SlotStore, private readonly keys: VaultKeys) {}

  /** Open the vault in `store`, creating it if the store is empty. A vault with a passphrase
   * opened without the right one (or one without a passphrase opened with one) is
   * `WrongPassphrase`; a missing or altered vault record beside memberships is `VaultCorrupt`. */
  static async open(store: SlotStore, device: CryptoKey, options: OpenOptions = {}): Promise<Vault> {
    const sealed = await store.get(META_SLOT);
    if (sealed === undefined) {
      if ((await store.list()).length > 0) throw new VaultCorrupt("memberships without a vault record");
      return Vault.create(store, device, options.passphrase);
    }
    const meta = decodeMeta(await openSlot({ device, passphrase: null }, META_SLOT, sealed));
    if (meta.salt === null) {
      if (meta.check !== null) throw new VaultCorrupt("bad vault record");
      if (options.passphrase !== undefined) throw new WrongPassphrase("this vault has no passphrase");
      return new Vault(store, { device, passphrase: null });
    }
    if (meta.check === null) throw new VaultCorrupt("bad vault record");
    if (options.passphrase === undefined) throw new WrongPassphrase("this vault needs its passphrase");
    const keys = { device, passphrase: await passphraseKey(options.passphrase, meta.salt) };
    // The check is sealed like any slot, under the META_SLOT name with a distinct suffix.
    await openSlot(keys, `${META_SLOT}#check`, meta.check);
    return new Vault(store, keys);
  }

  private static async create(store: SlotStore, device: CryptoKey, passphrase: string | undefined): Promise<Vault> {
    let keys: VaultKeys = { device, passphrase: null };
    let meta: VaultMeta = { type: "vault", salt: null, check: null };
    if (passphrase !== undefined) {
      const salt = randomBytes(SALT_BYTES);
      keys = { device, passphrase: await passphraseKey(passphrase, salt) };
      meta = { type: "vault", salt, check: await sealSlot(keys, `${META_SLOT}#check`, CHECK) };
    }
    await store.put(META_SLOT, await sealSlot({ device, passphrase: null }, META_SLOT, encodeStruct(VaultMetaDef, meta)));
    return new Vault(store, keys);
  }

  /** Every membership, with the slot it lives in. */
  async list(): Promise<{ slot: string; membership: Membership }[]> {
    const out: { slot: string; membership: Membership }[] = [];
    for (const slot of (await this.store.list()).filter(isMembershipSlot).sort()) {
      out.push({ slot, membership: await this.get(slot) });
    }
    return out;
  }

  async get(slot: string): Promise<Membership> {
    const sealed = await this.store.get(slot);
    if (sealed === undefined || !isMembershipSlot(slot)) throw new RangeError(`no membership in slot ${slot}`);
    return decodeMembership(await openSlot(this.keys, slot, sealed));
  }

  /** Store a new membership in a fresh random slot; returns the slot. */
  async add(membership: Membership): Promise<string> {
    let slot: string;
    do slot = MEMBERSHIP_PREFIX + base64urlEncode(randomBytes(16));
    while ((await this.store.get(slot)) !== undefined);
    await this.write(slot, membership);
    return slot;
  }

  async update(slot: string, membership: Membership): Promise<void> {
    if (!isMembershipSlot(slot) || (await this.store.get(slot)) === undefined) throw new RangeError(`no membership in slot ${slot}`);
    await this.write(slot, membership);
  }

  async remove(slot: string): Promise<void> {
    if (!isMembershipSlot(slot)) throw new RangeError(`not a membership slot: ${slot}`);
    await this.store.delete(slot);
  }

  private async write(slot: string, membership: Membership): Promise<void> {
    await this.store.put(slot, await sealSlot(this.keys, slot, encodeMembership(membership)));
  }
}

function decodeMeta(bytes: Uint8Array): VaultMeta {
  try {
    return decodeStruct<VaultMeta>(VaultMetaDef, bytes);
  } catch {
    throw new VaultCorrupt("bad vault record");
  }
}
