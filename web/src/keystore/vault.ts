/**
 * The browser key store's crypto core (issue 9, "Keys in the browser"): a membership record is
 * encoded with schema.ts and sealed with AES-GCM under a non-extractable device `CryptoKey`, and,
 * when the user set one, first under a key derived from a passphrase (Argon2id). Pure functions
 * over bytes and keys; storage is store.ts.
 *
 * A sealed slot is   0x01 || iv(12) || AES-GCM(device key, iv, inner, ad("device", slot))
 * where inner is     the encoded record                                   (no passphrase), or
 *                    iv(12) || AES-GCM(passphrase key, iv, record, ad("passphrase", slot)).
 * ad(layer, slot) = utf8("salon/web-vault/v1/" + layer) || 0x00 || utf8(slot): a record moved
 * to another slot does not open. The device layer is outermost, so any change to stored bytes
 * fails there (`VaultCorrupt`); the passphrase layer can then only fail for a wrong passphrase
 * (`WrongPassphrase`). Every seal draws a fresh 12-byte IV.
 */
import { concat, utf8 } from "../protocol/bytes.ts";
import { argon2id, own, randomBytes } from "../protocol/crypto.ts";
import { decodeStruct, encodeStruct, f, fd, list, optional, ref, struct } from "../protocol/schema.ts";

export class VaultCorrupt extends Error {
  override name = "VaultCorrupt";
}

export class WrongPassphrase extends Error {
  override name = "WrongPassphrase";
}

export const FORMAT = 0x01;
export const IV_BYTES = 12;
export const SALT_BYTES = 16;

export interface HeldSpaceKey { epoch: number; key: Uint8Array }
export interface HeldRoomKey { room_id: string; epoch: number; generation: number; key: Uint8Array }
/** The secret of an invite link this identity made, so it can show the link again and re-seal it (§8.3). */
export interface HeldInviteSecret { invite_id: string; secret: Uint8Array }
/** The space key a joining invite carried, pending until a verified chain shows it (§8.4 step 2). */
export interface PendingInviteKeyHeld { space_id: string; epoch: number; key: Uint8Array; join_seq: number; join_hash: Uint8Array }

/** One per-space identity. Nothing in it names or links any other membership. */
export interface Membership {
  type: "membership";
  space_id: string;
  server: string;
  display_name: string;
  signing_seed: Uint8Array;
  box_secret: Uint8Array;
  space_keys: HeldSpaceKey[];
  /** A room key per (room, epoch) at the oldest generation held (later ones are derived, §10.4). */
  room_keys: HeldRoomKey[];
  /** The last verified chain head (-1 and empty before the first sync), to detect a fork (§6.6). */
  head_seq: number;
  head_hash: Uint8Array;
  /** The space's name as last read (so a home screen needs no connection); "" until known. */
  name?: string;
  invite_secrets?: HeldInviteSecret[];
  pending_key?: PendingInviteKeyHeld | null;
  /** What this person has not read yet, per room, and the last message seq counted (so a
   * reload keeps the counts and what arrived meanwhile is counted too). */
  unread?: HeldUnread[];
  /** The stories this person has opened (so a reload keeps their rings off); newest last. */
  seen_stories?: string[];
  /** Our removal as the verified chain showed it ("kicked", "banned", "left"); "" while a member. */
  removed?: string;
}

/** Unread messages in one room of this membership, and the newest message seq already counted. */
export interface HeldUnread { room_id: string; count: number; seq: number }

const SpaceKeyDef = struct("HeldSpaceKey", [f("epoch", "int"), f("key", "bytes")], { arrayLike: true });
const RoomKeyDef = struct("HeldRoomKey", [f("room_id", "str"), f("epoch", "int"), f("generation", "int"), f("key", "bytes")], {
  arrayLike: true,
});
const InviteSecretDef = struct("HeldInviteSecret", [f("invite_id", "str"), f("secret", "bytes")], { arrayLike: true });
const PendingKeyDef = struct("PendingInviteKey", [f("space_id", "str"), f("epoch", "int"), f("key", "bytes"), f("join_seq", "int"),
  f("join_hash", "bytes")], {
  arrayLike: true,
});
const UnreadDef = struct("HeldUnread", [f("room_id", "str"), f("count", "int"), fd("seq", "int", -1)], { arrayLike: true });
export const MembershipDef = struct("Membership", [
  f("space_id", "str"),
  f("server", "str"),
  f("display_name", "str"),
  f("signing_seed", "bytes"),
  f("box_secret", "bytes"),
  fd("space_keys", list(ref(SpaceKeyDef)), []),
  fd("room_keys", list(ref(RoomKeyDef)), []),
  fd("head_seq", "int", -1),
  fd("head_hash", "bytes", new Uint8Array(0)),
  fd("name", "str", ""),
  fd("invite_secrets", list(ref(InviteSecretDef)), []),
  fd("pending_key", optional(ref(PendingKeyDef)), null),
  fd("unread", list(ref(UnreadDef)), []),
  fd("seen_stories", list("str"), []),
  fd("removed", "str", ""),
], { tag: "membership" });

/** The vault's own record: whether a passphrase is set (its salt), a check sealed under it, and
 * the generation of the keys (a random tag, new at every passphrase change; empty at first). */
export interface VaultMeta { type: "vault"; salt: Uint8Array | null; check: Uint8Array | null; generation?: Uint8Array }
export const VaultMetaDef = struct("VaultMeta", [f("salt", optional("bytes")), f("check", optional("bytes")),
  fd("generation", "bytes", new Uint8Array(0))], { tag: "vault" });

export function encodeMembership(m: Membership): Uint8Array {
  if (m.signing_seed.length !== 32 || m.box_secret.length !== 32) throw new RangeError("a seed and a box secret are 32 bytes");
  return encodeStruct(MembershipDef, m);
}

export function decodeMembership(bytes: Uint8Array): Membership {
  try {
    return decodeStruct<Membership>(MembershipDef, bytes);
  } catch {
    throw new VaultCorrupt("the record is not a membership");
  }
}

const subtle = (): SubtleCrypto => globalThis.crypto.subtle;

/** A fresh AES-256-GCM device key that no script can read out (`extractable: false`). */
export async function generateDeviceKey(): Promise<CryptoKey> {
  return subtle().generateKey({ name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
}

/** The passphrase layer's key: Argon2id(utf8(NFC passphrase), salt), INTERACTIVE limits, non-extractable. */
export async function passphraseKey(passphrase: string, salt: Uint8Array): Promise<CryptoKey> {
  const raw = await argon2id(utf8(passphrase.normalize("NFC")), salt);
  try {
    return await subtle().importKey("raw", own(raw), "AES-GCM", false, ["encrypt", "decrypt"]);
  } finally {
    raw.fill(0);
  }
}

export function associatedData(layer: "device" | "passphrase", slot: string): Uint8Array {
  return concat(utf8(`salon/web-vault/v1/${layer}`), new Uint8Array([0]), utf8(slot));
}

/** iv(12) || AES-GCM(key, iv, plaintext, ad) with a fresh random IV. */
export async function gcmSeal(key: CryptoKey, plaintext: Uint8Array, ad: Uint8Array): Promise<Uint8Array> {
  const iv = randomBytes(IV_BYTES);
  const ct = await subtle().encrypt({ name: "AES-GCM", iv: own(iv), additionalData: own(ad) }, key, own(plaintext));
  return concat(iv, new Uint8Array(ct));
}

/** Open iv || ciphertext; `undefined` if it does not authenticate (the caller names the error). */
export async function gcmOpen(key: CryptoKey, sealed: Uint8Array, ad: Uint8Array): Promise<Uint8Array | undefined> {
  if (sealed.length < IV_BYTES + 16) return undefined;
  try {
    const pt = await subtle().decrypt(
      { name: "AES-GCM", iv: own(sealed.subarray(0, IV_BYTES)), additionalData: own(ad) }, key, own(sealed.subarray(IV_BYTES)),
    );
    return new Uint8Array(pt);
  } catch {
    return undefined;
  }
}

export interface VaultKeys {
  readonly device: CryptoKey;
  /** Set iff the vault has a passphrase. */
  readonly passphrase: CryptoKey | null;
}

/** Seal `plaintext` for `slot`: under the passphrase key (if any), then under the device key. */
export async function sealSlot(keys: VaultKeys, slot: string, plaintext: Uint8Array): Promise<Uint8Array> {
  const inner = keys.passphrase === null ? plaintext : await gcmSeal(keys.passphrase, plaintext, associatedData("passphrase", slot));
  return concat(new Uint8Array([FORMAT]), await gcmSeal(keys.device, inner, associatedData("device", slot)));
}

/** Open what `sealSlot` made for this very slot: `VaultCorrupt` if the stored bytes were changed
 * or moved, `WrongPassphrase` if only the passphrase layer refuses. */
export async function openSlot(keys: VaultKeys, slot: string, sealed: Uint8Array): Promise<Uint8Array> {
  if (sealed[0] !== FORMAT) throw new VaultCorrupt(`slot ${slot} is not a vault record`);
  const inner = await gcmOpen(keys.device, sealed.subarray(1), associatedData("device", slot));
  if (inner === undefined) throw new VaultCorrupt(`slot ${slot} does not open under this device key`);
  if (keys.passphrase === null) return inner;
  const plain = await gcmOpen(keys.passphrase, inner, associatedData("passphrase", slot));
  if (plain === undefined) throw new WrongPassphrase("wrong passphrase");
  return plain;
}
