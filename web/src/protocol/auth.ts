/** Authentication (PROTOCOL.md §5.1–5.3): the challenge's origin check and auth statements. */
import { concat } from "./bytes.ts";
import { ed25519Sign, ed25519Verify } from "./crypto.ts";
import { AUTH_DOMAIN } from "./labels.ts";
import { encode } from "./msgpack.ts";

export type AuthPurpose = "create" | "member" | "invite";

/** auth_statement = AUTH_DOMAIN || msgpack([origin, purpose, subject, nonce]) (§5.2). */
export function authStatement(origin: string, purpose: AuthPurpose, subject: string, nonce: Uint8Array): Uint8Array {
  return concat(AUTH_DOMAIN, encode([origin, purpose, subject, nonce]));
}

/** Ed25519(seed, auth_statement(...)): the `signature` of create_space/auth/join_space, or an invite signature. */
export function signAuth(
  seed: Uint8Array, origin: string, purpose: AuthPurpose, subject: string, nonce: Uint8Array,
): Promise<Uint8Array> {
  return ed25519Sign(seed, authStatement(origin, purpose, subject, nonce));
}

export function verifyAuth(
  publicKey: Uint8Array, signature: Uint8Array, origin: string, purpose: AuthPurpose, subject: string, nonce: Uint8Array,
): Promise<boolean> {
  return ed25519Verify(publicKey, authStatement(origin, purpose, subject, nonce), signature);
}

/**
 * `scheme://netloc` of the server URL the client dialled (§5.1), taken as written (like
 * Python's urlsplit: no lowercasing, no default-port removal), without path, query or fragment.
 */
export function dialledOrigin(serverUrl: string): string {
  const match = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)/.exec(serverUrl);
  if (match === null || match[2] === "") throw new Error(`not a server URL: ${serverUrl}`);
  return `${match[1]!.toLowerCase()}://${match[2]}`;
}

/** The client refuses a challenge whose origin is not the server it dialled (§5.1). */
export function challengeOriginMatches(challengeOrigin: string, serverUrl: string): boolean {
  return challengeOrigin === dialledOrigin(serverUrl);
}
