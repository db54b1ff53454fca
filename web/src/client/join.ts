/**
 * Joining through an invite link (PROTOCOL.md §8): `Invitation.parse(link)`, then `preview()`
 * (OpenInvite signed with the invite key: the space's name, description and who invites) and
 * `join(vault, displayName, avatar?)` (JoinSpace; the seal's key stays pending until the verified
 * chain shows our join and the key, §8.4; the membership is stored; the profile is published).
 *
 * Every failure a person can hit is a `JoinError` whose `kind` names it and whose message can
 * be shown as it is. The secret never leaves this module except into the vault-free derivations.
 */
import { signAuth } from "../protocol/auth.ts";
import { ed25519Sign } from "../protocol/crypto.ts";
import { newMembership } from "../protocol/identities.ts";
import {
  type InviteLink, LinkError, SealError, inviteSealKey, invitePreviewKey, inviteSigningSeed, openPreview, openSeal,
  parseInviteLink,
} from "../protocol/invites.ts";
import { joinStatement, recordHash, signRecord, type Record } from "../protocol/records.ts";
import type { InviteOpened, Joined } from "../protocol/wire.ts";
import type { Membership } from "../keystore/vault.ts";
import type { Vault } from "../keystore/store.ts";
import { ClientError, Removed, ServerError, Unreachable, VerificationError } from "./context.ts";
import { cleanName } from "./names.ts";
import { Connection, type ConnectionOptions } from "./session.ts";
import { SpaceClient, type SpaceClientOptions } from "./space.ts";

export const JOIN_RETRIES = 5;

export type JoinErrorKind =
  | "damaged" // not a link, a damaged secret, or a secret that does not match the link
  | "not_found" // the server knows no such invite
  | "expired"
  | "revoked"
  | "used_up"
  | "stale" // the link's seal predates the space's current key: its maker must open the space
  | "already_member"
  | "banned"
  | "rate_limited"
  | "unreachable"
  | "key_refused" // joined, but the invite's space key does not fit the chain (§8.4 step 4)
  | "failed"; // anything else (the message says what)

export const JOIN_MESSAGES: { readonly [K in JoinErrorKind]: string } = {
  damaged: "This invite link is damaged. Copy the whole link, including the part after #, and try again.",
  not_found: "This invite link does not exist on this server. Check that you have the whole link.",
  expired: "This invite link has expired. Ask for a new one.",
  revoked: "This invite link was revoked. Ask for a new one.",
  used_up: "This invite link has been used as many times as it allows. Ask for a new one.",
  stale: "This invite link is out of date (the space changed its keys since it was made). " +
    "Ask the person who invited you to open the space once, or for a new link.",
  already_member: "You are already in this space.",
  banned: "You are banned from this space.",
  rate_limited: "Too many attempts. Wait a minute and try again.",
  unreachable: "Cannot reach the server. Check your connection and try again.",
  key_refused: "You joined, but the invite carried a space key that this space's chain does not hold, so you can " +
    "read nothing until an owner or moderator rekeys.",
  failed: "Joining failed.",
};

export class JoinError extends ClientError {
  override name = "JoinError";
  constructor(readonly kind: JoinErrorKind, message: string = JOIN_MESSAGES[kind], readonly detail = "") {
    super(message);
  }
}

/** The join error a failure of the open/join exchange means. */
export function joinErrorOf(err: unknown): JoinError {
  if (err instanceof JoinError) return err;
  if (err instanceof LinkError || err instanceof SealError) return new JoinError("damaged", JOIN_MESSAGES.damaged, err.message);
  if (err instanceof ServerError) {
    switch (err.code) {
      case "expired":
      case "revoked":
      case "used_up":
      case "stale":
      case "not_found":
      case "rate_limited":
        return new JoinError(err.code, JOIN_MESSAGES[err.code], err.message);
      case "unauthenticated":
        // "the invite signature does not match this link": the secret is not this link's.
        return new JoinError("damaged", JOIN_MESSAGES.damaged, err.message);
      case "forbidden":
      case "banned":
        if (/banned/i.test(err.message) || err.code === "banned") return new JoinError("banned", JOIN_MESSAGES.banned, err.message);
        return new JoinError("failed", `Joining failed: ${err.message}`, err.message);
      default:
        return new JoinError("failed", `Joining failed: ${err.message}`, err.message);
    }
  }
  if (err instanceof Removed) return new JoinError("banned", JOIN_MESSAGES.banned, err.message);
  if (err instanceof Unreachable) return new JoinError("unreachable", JOIN_MESSAGES.unreachable, err.message);
  if (err instanceof VerificationError) return new JoinError("failed", `Joining failed: ${err.message}`, err.message);
  if (err instanceof ClientError) return new JoinError("failed", `Joining failed: ${err.message}`, err.message);
  throw err;
}

/** What the join screen shows (as far as the protocol reveals before joining). */
export interface JoinPreview {
  readonly spaceId: string;
  readonly spaceName: string;
  readonly description: string;
  /** The display name of the member who made the link's seal. */
  readonly inviter: string;
  /** The role a joiner gets. */
  readonly role: string;
  /** Unix seconds. */
  readonly expiresAt: number;
}

export interface JoinResult {
  readonly slot: string;
  readonly spaceId: string;
  readonly spaceName: string;
  /** The new membership, open. */
  readonly client: SpaceClient;
}

export class Invitation {
  private constructor(readonly link: InviteLink) {}

  /** Parse a link (`http(s)://HOST/join/<id>#<secret>`); a bad one is `JoinError("damaged")`. */
  static parse(text: string): Invitation {
    try {
      return new Invitation(parseInviteLink(text));
    } catch (err) {
      throw joinErrorOf(err);
    }
  }

  get server(): string {
    return this.link.server;
  }

  get inviteId(): string {
    return this.link.inviteId;
  }

  /** Open the link (nothing recorded, no use consumed) and read its preview. */
  async preview(options: ConnectionOptions = {}): Promise<JoinPreview> {
    let conn: Connection | null = null;
    try {
      conn = await Connection.open(this.link.server, options);
      const opened = await this.open(conn, await this.inviteSignature(conn));
      return await this.readPreview(opened);
    } catch (err) {
      throw joinErrorOf(err);
    } finally {
      conn?.close();
    }
  }

  /**
   * Join with a fresh identity: stores the membership in `vault` (once the join is on the
   * chain, even if what follows fails), opens it and publishes the profile.
   */
  async join(
    vault: Vault, displayName: string, avatar: Uint8Array | null = null, options: SpaceClientOptions = {},
  ): Promise<JoinResult> {
    const name = displayName.trim();
    if (name === "") throw new JoinError("failed", "Pick a display name first.");
    const identity = await newMembership();
    let conn: Connection | null = null;
    let slot: string;
    let spaceId: string;
    let spaceName: string;
    try {
      conn = await Connection.open(this.link.server, options);
      const inviteSig = await this.inviteSignature(conn);
      const signingSeed = await inviteSigningSeed(this.link.secret, this.link.inviteId);
      let joined: Joined | null = null;
      let record: Record | null = null;
      let preview: JoinPreview | null = null;
      for (let attempt = 0; attempt < JOIN_RETRIES && joined === null; attempt++) {
        const opened = await this.open(conn, inviteSig);
        preview = await this.readPreview(opened);
        for (const { membership } of await vault.list()) {
          // A membership whose removal the chain showed is over: coming back with a new link is allowed.
          if (membership.space_id === opened.space_id && (membership.removed ?? "") === "") {
            throw new JoinError("already_member", `You are already in ${preview.spaceName || "this space"} as ${membership.display_name}.`);
          }
        }
        const statement = joinStatement(opened.space_id, identity.memberKey, identity.boxKey, this.link.inviteId);
        record = await signRecord(identity.signingSeed, {
          space_id: opened.space_id, seq: opened.head_seq + 1, prev: opened.head_hash, author: identity.memberKey,
          created_at: Math.floor(Date.now() / 1000),
          body: { type: "join", invite_id: this.link.inviteId, box_key: identity.boxKey, invite_sig: await ed25519Sign(signingSeed, statement) },
        });
        const memberSig = await signAuth(identity.signingSeed, conn.origin, "member", opened.space_id, conn.nonce);
        try {
          joined = await conn.request<Joined>({
            type: "join_space", invite_id: this.link.inviteId, invite_signature: inviteSig, record, signature: memberSig,
          });
        } catch (err) {
          if (err instanceof ServerError && err.code === "conflict") continue; // the head moved: open again
          throw err;
        }
      }
      if (joined === null || record === null || preview === null) {
        throw new JoinError("failed", "The space is changing too fast; try again.");
      }
      spaceId = preview.spaceId;
      spaceName = preview.spaceName;
      let sealed;
      try {
        sealed = await openSeal(await inviteSealKey(this.link.secret, this.link.inviteId), joined.seal.sealed, spaceId);
      } catch (err) {
        throw new JoinError("key_refused", JOIN_MESSAGES.key_refused, (err as Error).message);
      }
      if (joined.space_id !== spaceId) throw new JoinError("key_refused", JOIN_MESSAGES.key_refused, "another space");
      const membership: Membership = {
        type: "membership", space_id: spaceId, server: this.link.server, display_name: name,
        signing_seed: identity.signingSeed, box_secret: identity.boxSecret, space_keys: [], room_keys: [],
        head_seq: -1, head_hash: new Uint8Array(0), name: spaceName, invite_secrets: [],
        pending_key: { space_id: sealed.space_id, epoch: sealed.epoch, key: sealed.key, join_seq: record.seq, join_hash: await recordHash(record) },
      };
      // The join is on the chain: keep the identity even if what follows fails.
      slot = await vault.add(membership);
    } catch (err) {
      throw joinErrorOf(err);
    } finally {
      conn?.close();
    }
    let client: SpaceClient;
    try {
      client = await SpaceClient.open(vault, slot, { ...options, profileAvatar: avatar });
    } catch (err) {
      throw joinErrorOf(err);
    }
    const refusal = client.inviteKeyRefusal();
    if (refusal !== null) {
      client.close();
      throw new JoinError("key_refused", JOIN_MESSAGES.key_refused, refusal);
    }
    return { slot, spaceId, spaceName: (await client.info()).name || spaceName, client };
  }

  private async inviteSignature(conn: Connection): Promise<Uint8Array> {
    const seed = await inviteSigningSeed(this.link.secret, this.link.inviteId);
    return signAuth(seed, conn.origin, "invite", this.link.inviteId, conn.nonce);
  }

  private open(conn: Connection, signature: Uint8Array): Promise<InviteOpened> {
    return conn.request<InviteOpened>({ type: "open_invite", invite_id: this.link.inviteId, signature });
  }

  private async readPreview(opened: InviteOpened): Promise<JoinPreview> {
    const p = await openPreview(await invitePreviewKey(this.link.secret, this.link.inviteId), opened.preview, opened.space_id);
    return {
      spaceId: opened.space_id, spaceName: cleanName(p.name), description: p.description, inviter: cleanName(p.inviter), role: opened.role,
      expiresAt: opened.expires_at,
    };
  }
}
