/** Identities (PROTOCOL.md §4): a membership's member key, box key and fingerprint. */
import { concat, toHex } from "./bytes.ts";
import { ed25519PublicKey, randomBytes, sha256, x25519PublicKey } from "./crypto.ts";
import { FINGERPRINT_DOMAIN } from "./labels.ts";

/** member_key: the Ed25519 public key of the 32-byte signing seed. */
export const memberKey = (signingSeed: Uint8Array): Promise<Uint8Array> => ed25519PublicKey(signingSeed);

/** box_key: the X25519 public key of the 32-byte box secret. */
export const boxKey = (boxSecret: Uint8Array): Promise<Uint8Array> => x25519PublicKey(boxSecret);

/** fingerprint(member_key) = hex(SHA-256(FINGERPRINT_DOMAIN || member_key))[:16]. */
export async function fingerprint(memberKey: Uint8Array): Promise<string> {
  return toHex(await sha256(concat(FINGERPRINT_DOMAIN, memberKey))).slice(0, 16);
}

export interface Membership {
  signingSeed: Uint8Array;
  memberKey: Uint8Array;
  boxSecret: Uint8Array;
  boxKey: Uint8Array;
}

/** A fresh membership (§4): random signing seed and box secret. */
export async function newMembership(random: (n: number) => Uint8Array = randomBytes): Promise<Membership> {
  const signingSeed = random(32);
  const boxSecret = random(32);
  return { signingSeed, memberKey: await memberKey(signingSeed), boxSecret, boxKey: await boxKey(boxSecret) };
}

export { randomBytes };
