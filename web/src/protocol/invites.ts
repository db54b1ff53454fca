/** Invite links (PROTOCOL.md §8): link format, derivations, seals and previews. */
import { CryptoError, base64urlDecode, base64urlEncode, ed25519PublicKey, hkdf, secretbox, secretboxOpen } from "./crypto.ts";
import { isValidId } from "./ids.ts";
import { INVITE_PREVIEW_LABEL, INVITE_SEAL_LABEL, INVITE_SIGN_LABEL } from "./labels.ts";
import { WireError, decodeStruct, encodeStruct, f, struct, type StructDef } from "./schema.ts";
import { INVITE_SEAL, type InviteSeal } from "./wire.ts";

export const SECRET_LEN = 32;

export class LinkError extends Error {
  override name = "LinkError";
}
export class SealError extends Error {
  override name = "SealError";
}

export interface InviteLink {
  /** scheme://host[:port][/prefix], no trailing "/". */
  readonly server: string;
  readonly inviteId: string;
  readonly secret: Uint8Array;
}

/** SERVER/join/<invite_id>#<base64url(secret)> (§8.1). */
export function formatInviteLink(link: InviteLink): string {
  return `${link.server}/join/${link.inviteId}#${base64urlEncode(link.secret)}`;
}

/**
 * Parse a link (§8.1): http(s) with a host; the path split at its last "/join/" (the part
 * before is the prefix, the part after a valid id); the fragment decodes to exactly 32 bytes.
 */
export function parseInviteLink(text: string): InviteLink {
  const match = /^(https?):\/\/([^/?#]+)([^?#]*)(?:\?[^#]*)?(?:#(.*))?$/i.exec(text.trim());
  if (match === null) throw new LinkError("not an invite link: expected http(s)://HOST/join/ID#SECRET");
  const [, scheme, netloc, path, fragment] = match;
  const at = path!.lastIndexOf("/join/");
  const inviteId = at < 0 ? "" : path!.slice(at + "/join/".length);
  if (at < 0 || !isValidId(inviteId)) throw new LinkError("not an invite link: the path must be /join/ID");
  if (fragment === undefined || fragment === "") throw new LinkError("the invite link is missing its secret (the part after #)");
  let secret: Uint8Array;
  try {
    secret = base64urlDecode(fragment);
  } catch {
    throw new LinkError("the invite link's secret is damaged");
  }
  if (secret.length !== SECRET_LEN) throw new LinkError("the invite link's secret is damaged (wrong length)");
  return { server: `${scheme!.toLowerCase()}://${netloc}${path!.slice(0, at)}`, inviteId, secret };
}

const context = (inviteId: string): Uint8Array => new TextEncoder().encode(inviteId);

/** invite_signing_seed = HKDF(secret, INVITE_SIGN_LABEL, utf8(invite_id)) (§8.2). */
export const inviteSigningSeed = (secret: Uint8Array, inviteId: string): Promise<Uint8Array> =>
  hkdf(secret, INVITE_SIGN_LABEL, context(inviteId));

/** invite_key: the Ed25519 public key of the signing seed. */
export const inviteKey = async (secret: Uint8Array, inviteId: string): Promise<Uint8Array> =>
  ed25519PublicKey(await inviteSigningSeed(secret, inviteId));

export const inviteSealKey = (secret: Uint8Array, inviteId: string): Promise<Uint8Array> =>
  hkdf(secret, INVITE_SEAL_LABEL, context(inviteId));

export const invitePreviewKey = (secret: Uint8Array, inviteId: string): Promise<Uint8Array> =>
  hkdf(secret, INVITE_PREVIEW_LABEL, context(inviteId));

export interface SealedSpaceKey { space_id: string; epoch: number; key: Uint8Array }
export interface InvitePreview { space_id: string; name: string; description: string; inviter: string }

export const SEALED_SPACE_KEY = struct("SealedSpaceKey", [f("space_id", "str"), f("epoch", "int"), f("key", "bytes")]);
export const INVITE_PREVIEW = struct("InvitePreview", [
  f("space_id", "str"), f("name", "str"), f("description", "str"), f("inviter", "str"),
]);

/** sealed = secretbox(seal_key, msgpack(SealedSpaceKey)) with the given 24-byte nonce (§8.3). */
export const sealSpaceKey = (sealKey: Uint8Array, value: SealedSpaceKey, nonce: Uint8Array): Promise<Uint8Array> =>
  secretbox(sealKey, encodeStruct(SEALED_SPACE_KEY, value), nonce);

/** preview = secretbox(preview_key, msgpack(InvitePreview)) with the given 24-byte nonce (§8.3). */
export const sealPreview = (previewKey: Uint8Array, value: InvitePreview, nonce: Uint8Array): Promise<Uint8Array> =>
  secretbox(previewKey, encodeStruct(INVITE_PREVIEW, value), nonce);

async function openStruct<T>(key: Uint8Array, box: Uint8Array, def: StructDef, what: string): Promise<T> {
  try {
    return decodeStruct<T>(def, await secretboxOpen(key, box));
  } catch (err) {
    if (err instanceof CryptoError || err instanceof WireError) throw new SealError(`the invite's ${what} does not open`);
    throw err;
  }
}

/**
 * Open `Joined.seal.sealed` (§8.4 step 1): it must open under `seal_key`, hold a 32-byte key,
 * and name `spaceId` (the space the link opened). The key is still only *pending* (§8.4 step 4).
 */
export async function openSeal(sealKey: Uint8Array, sealed: Uint8Array, spaceId: string): Promise<SealedSpaceKey> {
  const value = await openStruct<SealedSpaceKey>(sealKey, sealed, SEALED_SPACE_KEY, "seal");
  if (value.space_id !== spaceId) throw new SealError("the invite's seal is for another space");
  if (value.key.length !== 32) throw new SealError("the invite's seal holds no space key");
  return value;
}

/** Open `InviteOpened.preview` and require `preview.space_id == space_id` (`open_preview`, §8.4). */
export async function openPreview(previewKey: Uint8Array, preview: Uint8Array, spaceId: string): Promise<InvitePreview> {
  const value = await openStruct<InvitePreview>(previewKey, preview, INVITE_PREVIEW, "preview");
  if (value.space_id !== spaceId) throw new SealError("the invite's preview is for another space");
  return value;
}

/** msgpack(InviteSeal) (§8.3). */
export const encodeInviteSeal = (seal: InviteSeal): Uint8Array => encodeStruct(INVITE_SEAL, seal);
