/**
 * The seam between the web client's modules. `space.ts` implements `SpaceContext` for one
 * membership (one WebSocket, one identity); `rooms.ts`, `chat.ts` and `stories.ts` take it and
 * never reach around it. The UI (`ui/`) only reads their state and calls their intents.
 *
 * Error hierarchy (one root for the client): ClientError
 *   ├─ ServerError        the server answered `error` (code = protocol ErrorCode, message)
 *   ├─ Unreachable        no connection (will retry when the context is reconnecting)
 *   ├─ VerificationError  the server sent something the protocol rules refuse
 *   ├─ Removed            this membership was removed (kicked/banned) or left; `confirmed` only
 *   │                     when the verified signed chain shows it (else the server's word: "unconfirmed")
 *   └─ UsageError         the person asked for something impossible (bad input, no permission)
 */
import type { Envelope, ClientMessage, ServerMessage } from "../protocol/wire.ts";
import type { RecordBody } from "../protocol/recordtypes.ts";
import type { Roster } from "../protocol/roster.ts";
import type { HeldRoomKey } from "../keystore/vault.ts";

export class ClientError extends Error {
  override name = "ClientError";
}
export class ServerError extends ClientError {
  override name = "ServerError";
  constructor(readonly code: string, message: string) {
    super(message);
  }
}
export class Unreachable extends ClientError {
  override name = "Unreachable";
}
export class VerificationError extends ClientError {
  override name = "VerificationError";
}
/** "unconfirmed": the server says we are out (closed the session, refuses us) but the signed chain does not show it. */
export type RemovalKind = "kicked" | "banned" | "left" | "unconfirmed";

export class Removed extends ClientError {
  override name = "Removed";
  /** `confirmed`: proven by a record on the verified chain (or our own leave), not just the server's word. */
  constructor(readonly how: RemovalKind, message: string, readonly confirmed = false) {
    super(message);
  }
}
export class UsageError extends ClientError {
  override name = "UsageError";
}

/** Distributes `Omit` over a union, so a request can be written without its `id`. */
export type WithoutId<T> = T extends unknown ? Omit<T, "id"> : never;

export type ConnectionState = "connecting" | "online" | "reconnecting" | "closed";

export interface Me {
  readonly memberKey: Uint8Array;
  readonly signingSeed: Uint8Array;
  readonly boxSecret: Uint8Array;
  readonly boxKey: Uint8Array;
}

/** One membership, connected. Every method may throw a `ClientError`. */
export interface SpaceContext {
  readonly spaceId: string;
  readonly serverUrl: string;
  readonly me: Me;
  /** The verified roster as of the last sync (never null once the context is open). */
  roster(): Roster;
  /** Fetch and verify records after our head; resolves to the new roster. */
  sync(): Promise<Roster>;
  /** One request/answer over this membership's WebSocket; waits while reconnecting. */
  request<T extends ServerMessage>(message: WithoutId<ClientMessage>): Promise<T>;
  /** Pushed events (record_added, messages_added, …). Returns an unsubscribe function. */
  onEvent(listener: (event: ServerMessage) => void): () => void;
  /** Called after every (re)authentication, so followers can resubscribe and catch up. */
  onReconnect(listener: () => void): () => void;
  /** Called after every sync that changed the roster. */
  onRoster(listener: (roster: Roster) => void): () => void;
  connectionState(): ConnectionState;
  onConnectionState(listener: (state: ConnectionState) => void): () => void;
  /** The space key of `epoch` if we hold it. */
  spaceKey(epoch: number): Uint8Array | undefined;
  /** Room keys held (persisted in the membership's vault slot). */
  roomKeys(): readonly HeldRoomKey[];
  saveRoomKeys(keys: readonly HeldRoomKey[]): Promise<void>;
  /** Sign, chain on our head and append `bodies` (with envelopes); syncs and retries once on a
   * chain conflict. Resolves once the server has appended and our roster includes them. */
  append(bodies: readonly RecordBody[], envelopes?: readonly Envelope[]): Promise<Roster>;
}
