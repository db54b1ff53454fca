/**
 * The key store over a small storage seam: `SlotStore` is all the I/O (IndexedDB in the page,
 * `MemorySlotStore` in tests). Each membership lives in its own slot under a random slot id, so
 * no stored record or name is shared between two spaces; the one other slot, "vault", holds only
 * the passphrase salt, a check value and the keys' generation (plus, for a moment during a
 * passphrase change, staged copies of the memberships: see `Vault.setPassphrase`).
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
const CHECK_SLOT = `${META_SLOT}#check`;
/** Records re-sealed during a passphrase change wait in `n.<generation>.<slot>` (see setPassphrase). */
const STAGING_PREFIX = "n.";
const GENERATION_BYTES = 12;

export const isMembershipSlot = (slot: string): boolean => slot.startsWith(MEMBERSHIP_PREFIX);

export interface OpenOptions {
  /** Required to open a vault that has one; sets one when the vault is created. */
  passphrase?: string;
}

export class Vault {
  /** Every operation takes its turn: a passphrase change never interleaves with a write. */
  private turn: Promise<unknown> = Promise.resolve();

  private constructor(private readonly store: SlotStore, private keys: VaultKeys, private generation: Uint8Array) {}

  /** Open the vault in `store`, creating it if the store is empty. A vault with a passphrase
   * opened without the right one (or one without a passphrase opened with one) is
   * `WrongPassphrase`; a missing or altered vault record beside memberships is `VaultCorrupt`.
   * A passphrase change that was cut short is finished (or undone) here, see `setPassphrase`. */
  static async open(store: SlotStore, device: CryptoKey, options: OpenOptions = {}): Promise<Vault> {
    const sealed = await store.get(META_SLOT);
    if (sealed === undefined) {
      if ((await store.list()).some(isMembershipSlot)) throw new VaultCorrupt("memberships without a vault record");
      return Vault.create(store, device, options.passphrase);
    }
    const meta = decodeMeta(await openSlot({ device, passphrase: null }, META_SLOT, sealed));
    const generation = meta.generation ?? new Uint8Array(0);
    if (meta.salt === null) {
      if (meta.check !== null) throw new VaultCorrupt("bad vault record");
      if (options.passphrase !== undefined) throw new WrongPassphrase("this vault has no passphrase");
      return Vault.recovered(store, { device, passphrase: null }, generation);
    }
    if (meta.check === null) throw new VaultCorrupt("bad vault record");
    if (options.passphrase === undefined) throw new WrongPassphrase("this vault needs its passphrase");
    const keys = { device, passphrase: await passphraseKey(options.passphrase, meta.salt) };
    // The check is sealed like any slot, under the META_SLOT name with a distinct suffix.
    await openSlot(keys, CHECK_SLOT, meta.check);
    return Vault.recovered(store, keys, generation);
  }

  private static async create(store: SlotStore, device: CryptoKey, passphrase: string | undefined): Promise<Vault> {
    const generation = randomBytes(GENERATION_BYTES);
    const { keys, meta } = await newKeys(device, passphrase ?? null, generation);
    await store.put(META_SLOT, await sealSlot({ device, passphrase: null }, META_SLOT, encodeStruct(VaultMetaDef, meta)));
    return Vault.recovered(store, keys, generation);
  }

  /** Finish a passphrase change cut short: records staged for the current generation replace
   * their slot (the switch happened); any other staged record is dropped (it did not). */
  private static async recovered(store: SlotStore, keys: VaultKeys, generation: Uint8Array): Promise<Vault> {
    const current = stagingPrefix(generation);
    for (const slot of (await store.list()).filter((s) => s.startsWith(STAGING_PREFIX)).sort()) {
      if (slot.startsWith(current)) {
        const target = slot.slice(current.length);
        const bytes = await store.get(slot);
        if (isMembershipSlot(target) && bytes !== undefined) await store.put(target, bytes);
      }
      await store.delete(slot);
    }
    return new Vault(store, keys, generation);
  }

  /** Whether opening this vault asks for a passphrase. */
  get hasPassphrase(): boolean {
    return this.keys.passphrase !== null;
  }

  /**
   * Set, change (`next` a string) or remove (`next` null) the passphrase. A vault that has one
   * asks for it first (`current`; a wrong one is `WrongPassphrase` and changes nothing).
   *
   * Every membership is re-sealed under the new keys without a moment where a crash loses one:
   * 1. each record is sealed under the new keys (for its own slot id) and written beside it, in
   *    a staging slot named by the new generation — the old records and the vault record are
   *    untouched, so a crash here leaves the old passphrase working (the next open drops the
   *    staged copies);
   * 2. the vault record (new salt, check and generation) is written: one write, the switch;
   * 3. each staged record is copied over its slot, then the staged copy deleted — a crash here is
   *    finished by the next open (with the new passphrase), which copies what is still staged.
   */
  setPassphrase(next: string | null, current?: string): Promise<void> {
    return this.exclusive(async () => {
      if (this.keys.passphrase !== null) {
        if (current === undefined) throw new WrongPassphrase("the current passphrase is needed");
        const meta = decodeMeta(await openSlot({ device: this.keys.device, passphrase: null }, META_SLOT, await this.required(META_SLOT)));
        if (meta.salt === null || meta.check === null) throw new VaultCorrupt("bad vault record");
        await openSlot({ device: this.keys.device, passphrase: await passphraseKey(current, meta.salt) }, CHECK_SLOT, meta.check);
      }
      if (next !== null && next === "") throw new RangeError("an empty passphrase");
      await this.current();
      const generation = randomBytes(GENERATION_BYTES);
      const { keys, meta } = await newKeys(this.keys.device, next, generation);
      const staging = stagingPrefix(generation);
      const slots = (await this.store.list()).filter(isMembershipSlot).sort();
      for (const slot of slots) {
        const plain = await openSlot(this.keys, slot, await this.required(slot));
        await this.store.put(staging + slot, await sealSlot(keys, slot, plain));
      }
      await this.store.put(META_SLOT, await sealSlot({ device: keys.device, passphrase: null }, META_SLOT, encodeStruct(VaultMetaDef, meta)));
      this.keys = keys;
      this.generation = generation;
      for (const slot of slots) {
        await this.store.put(slot, await this.required(staging + slot));
        await this.store.delete(staging + slot);
      }
    });
  }

  /** Every membership, with the slot it lives in. */
  list(): Promise<{ slot: string; membership: Membership }[]> {
    return this.exclusive(async () => {
      const out: { slot: string; membership: Membership }[] = [];
      for (const slot of (await this.store.list()).filter(isMembershipSlot).sort()) {
        out.push({ slot, membership: await this.read(slot) });
      }
      return out;
    });
  }

  get(slot: string): Promise<Membership> {
    return this.exclusive(() => this.read(slot));
  }

  /** Store a new membership in a fresh random slot; returns the slot. */
  add(membership: Membership): Promise<string> {
    return this.exclusive(async () => {
      let slot: string;
      do slot = MEMBERSHIP_PREFIX + base64urlEncode(randomBytes(16));
      while ((await this.store.get(slot)) !== undefined);
      await this.write(slot, membership);
      return slot;
    });
  }

  update(slot: string, membership: Membership): Promise<void> {
    return this.exclusive(async () => {
      if (!isMembershipSlot(slot) || (await this.store.get(slot)) === undefined) throw new RangeError(`no membership in slot ${slot}`);
      await this.write(slot, membership);
    });
  }

  remove(slot: string): Promise<void> {
    return this.exclusive(async () => {
      if (!isMembershipSlot(slot)) throw new RangeError(`not a membership slot: ${slot}`);
      await this.store.delete(slot);
    });
  }

  private exclusive<T>(run: () => Promise<T>): Promise<T> {
    const result = this.turn.then(run);
    this.turn = result.catch(() => undefined);
    return result;
  }

  private async required(slot: string): Promise<Uint8Array> {
    const sealed = await this.store.get(slot);
    if (sealed === undefined) throw new VaultCorrupt(`slot ${slot} is missing`);
    return sealed;
  }

  private async read(slot: string): Promise<Membership> {
    const sealed = await this.store.get(slot);
    if (sealed === undefined || !isMembershipSlot(slot)) throw new RangeError(`no membership in slot ${slot}`);
    return decodeMembership(await openSlot(this.keys, slot, sealed));
  }

  private async write(slot: string, membership: Membership): Promise<void> {
    await this.current();
    await this.store.put(slot, await sealSlot(this.keys, slot, encodeMembership(membership)));
  }

  /** Refuse to write under keys another tab has replaced (its passphrase change would make the
   * record unreadable): `WrongPassphrase`, so the page asks for the passphrase again. */
  private async current(): Promise<void> {
    const sealed = await this.required(META_SLOT);
    const meta = decodeMeta(await openSlot({ device: this.keys.device, passphrase: null }, META_SLOT, sealed));
    const stored = meta.generation ?? new Uint8Array(0);
    if (stored.length !== this.generation.length || stored.some((b, i) => b !== this.generation[i])) {
      throw new WrongPassphrase("the passphrase of this browser was changed elsewhere");
    }
  }
}

/** The keys and vault record of a generation, with or without a passphrase. */
async function newKeys(device: CryptoKey, passphrase: string | null, generation: Uint8Array): Promise<{ keys: VaultKeys; meta: VaultMeta }> {
  if (passphrase === null) return { keys: { device, passphrase: null }, meta: { type: "vault", salt: null, check: null, generation } };
  const salt = randomBytes(SALT_BYTES);
  const keys = { device, passphrase: await passphraseKey(passphrase, salt) };
  return { keys, meta: { type: "vault", salt, check: await sealSlot(keys, CHECK_SLOT, CHECK), generation } };
}

const stagingPrefix = (generation: Uint8Array): string => `${STAGING_PREFIX}${base64urlEncode(generation)}.`;

function decodeMeta(bytes: Uint8Array): VaultMeta {
  try {
    return decodeStruct<VaultMeta>(VaultMetaDef, bytes);
  } catch {
    throw new VaultCorrupt("bad vault record");
  }
}
