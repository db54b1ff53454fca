/**
 * One WebSocket to a Salon server (PROTOCOL.md §5): the challenge and its origin check,
 * requests by id with a timeout, pushed events, and the error frames mapped to the
 * `ClientError` hierarchy.
 *
 * `Connection` is one socket, no retry (the invite and create flows use it unauthenticated).
 * `MemberSession` is a membership's session: it authenticates (purpose "member"), reconnects
 * with exponential back-off and jitter (0.5 s → 30 s), authenticates again, then fires its
 * reconnect listeners; a request made while it reconnects waits (bounded) instead of failing.
 * A removal (the server closes the session as "removed"/"banned"/"left", or refuses the
 * authentication because the key is no longer a member) is final: state "closed", `Removed`.
 */
import { challengeOriginMatches, signAuth } from "../protocol/auth.ts";
import { own } from "../protocol/crypto.ts";
import {
  type Challenge, type ClientMessage, type ErrorReply, type ServerMessage, type Welcome,
  decodeServerMessage, encodeClientMessage,
} from "../protocol/wire.ts";
import {
  ClientError, type ConnectionState, Removed, ServerError, Unreachable, UsageError, VerificationError, type WithoutId,
} from "./context.ts";

export const CONNECT_TIMEOUT_MS = 10_000;
export const REQUEST_TIMEOUT_MS = 30_000;
/** How long a request made while reconnecting waits for the session to be back. */
export const RECONNECT_WAIT_MS = 60_000;
export const BACKOFF_MIN_MS = 500;
export const BACKOFF_MAX_MS = 30_000;

/** The server URL as typed, checked: http(s)://host[:port][/prefix], no trailing "/". */
export function checkServerUrl(server: string): string {
  const text = server.trim().replace(/\/+$/, "");
  if (!/^https?:\/\/[^/?#\s]+(\/[^?#\s]*)?$/i.test(text)) {
    throw new UsageError(`${JSON.stringify(server)} is not a server URL like http://127.0.0.1:8080`);
  }
  return text;
}

/** ws(s)://netloc/prefix/ws for a server URL (§5). */
export function websocketUrl(server: string): string {
  const match = /^(https?):\/\/(.*)$/i.exec(checkServerUrl(server))!;
  return `${match[1]!.toLowerCase() === "https" ? "wss" : "ws"}://${match[2]}/ws`;
}

/**
 * The delay before reconnection attempt `attempt` (0 = the first retry): 0.5 s doubling up to
 * 30 s, each scaled by a jitter factor in [0.75, 1.25) and kept within [0.5 s, 30 s].
 */
export function backoffDelay(attempt: number, random: () => number = Math.random): number {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(attempt, 16));
  const jittered = base * (0.75 + 0.5 * random());
  return Math.round(Math.min(BACKOFF_MAX_MS, Math.max(BACKOFF_MIN_MS, jittered)));
}

/** An `Error` frame as a client error. */
export function errorFromReply(reply: ErrorReply): ServerError {
  return new ServerError(reply.code, reply.message);
}

/**
 * What a `session_closed` reason means for this membership: a `Removed` for "removed",
 * "banned" and "left" (final), else null (e.g. "shutdown": reconnect).
 */
export function removalOfClose(reason: string): Removed | null {
  if (reason === "banned") return new Removed("banned", "you were banned from this space");
  if (reason === "removed") return new Removed("kicked", "you were removed from this space");
  if (reason === "left") return new Removed("left", "you left this space");
  return null;
}

/**
 * Whether a refused `auth` means this key is no longer a member (final): the server answers
 * `unauthenticated` with "you are banned…", "you are no longer a member…" or "not a member…".
 */
export function removalOfAuthError(err: unknown): Removed | null {
  if (!(err instanceof ServerError) || err.code !== "unauthenticated") return null;
  if (/banned/i.test(err.message)) return new Removed("banned", "you were banned from this space");
  if (/not a member|no longer a member/i.test(err.message)) {
    return new Removed("kicked", "you are no longer a member of this space");
  }
  return null;
}

type Listener<T> = (value: T) => void;

class Listeners<T> {
  private readonly set = new Set<Listener<T>>();
  add(listener: Listener<T>): () => void {
    this.set.add(listener);
    return () => this.set.delete(listener);
  }
  emit(value: T): void {
    for (const listener of [...this.set]) {
      try {
        listener(value);
      } catch (err) {
        console.error("salon: a listener failed", err);
      }
    }
  }
}

export { Listeners };

interface Pending {
  resolve(message: ServerMessage): void;
  reject(err: ClientError): void;
  timer: ReturnType<typeof setTimeout>;
}

export interface ConnectionOptions {
  connectTimeoutMs?: number;
  requestTimeoutMs?: number;
}

/** One WebSocket after its challenge: requests by id, events, close. No reconnection. */
export class Connection {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly events = new Listeners<ServerMessage>();
  private readonly closes = new Listeners<ClientError>();
  private closedWith: ClientError | null = null;
  /** The reason of a `session_closed` the server sent, if any. */
  closedReason: string | null = null;

  private constructor(
    readonly server: string,
    private readonly ws: WebSocket,
    readonly challenge: Challenge,
    private readonly requestTimeoutMs: number,
  ) {
    ws.onmessage = (ev: MessageEvent) => this.onFrame(ev.data);
    ws.onclose = () => this.fail(this.lostError());
    ws.onerror = () => undefined;
  }

  /** Dial `server`, read the challenge and check its origin (§5.1). */
  static async open(server: string, options: ConnectionOptions = {}): Promise<Connection> {
    const url = checkServerUrl(server);
    const timeout = options.connectTimeoutMs ?? CONNECT_TIMEOUT_MS;
    let ws: WebSocket;
    try {
      ws = new WebSocket(websocketUrl(url));
    } catch (err) {
      throw new Unreachable(`cannot reach the server at ${url}: ${(err as Error).message}`);
    }
    ws.binaryType = "arraybuffer";
    const first = await new Promise<ServerMessage>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Unreachable(`the server at ${url} did not answer in time`));
        ws.close();
      }, timeout);
      const done = (): void => {
        clearTimeout(timer);
        ws.onmessage = null;
        ws.onclose = null;
        ws.onerror = null;
      };
      ws.onerror = () => undefined;
      ws.onclose = () => {
        done();
        reject(new Unreachable(`cannot reach the server at ${url}`));
      };
      ws.onmessage = (ev: MessageEvent) => {
        done();
        try {
          resolve(decodeFrame(ev.data));
        } catch {
          reject(new Unreachable(`${url} is not a Salon server`));
          ws.close();
        }
      };
    });
    try {
      if (first.type === "error") throw errorFromReply(first); // refused before a session (§5)
      if (first.type !== "challenge") throw new Unreachable(`${url} did not start with a challenge`);
      if (!challengeOriginMatches(first.origin, url)) {
        throw new VerificationError(
          `the server calls itself ${first.origin}, not the address dialled; use the address from your invite link`,
        );
      }
    } catch (err) {
      ws.close();
      throw err;
    }
    return new Connection(url, ws, first, options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS);
  }

  get nonce(): Uint8Array {
    return this.challenge.nonce;
  }

  /** The origin string the server sent, to sign statements with (§5.1). */
  get origin(): string {
    return this.challenge.origin;
  }

  get closed(): boolean {
    return this.closedWith !== null;
  }

  /** Send a request (an id is assigned) and wait for its reply; an `error` reply throws `ServerError`. */
  request<T extends ServerMessage>(message: WithoutId<ClientMessage>): Promise<T> {
    if (this.closedWith !== null) return Promise.reject(this.closedWith);
    const id = this.nextId++;
    const frame = encodeClientMessage({ ...message, id } as ClientMessage);
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Unreachable(`the server at ${this.server} did not answer in time`));
      }, this.requestTimeoutMs);
      this.pending.set(id, {
        resolve: (reply) => (reply.type === "error" ? reject(errorFromReply(reply)) : resolve(reply as T)),
        reject,
        timer,
      });
      try {
        this.ws.send(own(frame));
      } catch {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(this.lostError());
      }
    });
  }

  onEvent(listener: Listener<ServerMessage>): () => void {
    return this.events.add(listener);
  }

  /** Called once when the socket ends (with what pending requests were rejected with). */
  onClose(listener: Listener<ClientError>): () => void {
    return this.closes.add(listener);
  }

  close(): void {
    this.fail(new Unreachable("the connection was closed"));
  }

  private lostError(): ClientError {
    if (this.closedReason !== null) {
      return removalOfClose(this.closedReason) ??
        new Unreachable(`the server ended the session: ${this.closedReason}`);
    }
    return new Unreachable(`the connection to ${this.server} was lost`);
  }

  private fail(err: ClientError): void {
    if (this.closedWith !== null) return;
    this.closedWith = err;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(err);
    }
    this.ws.onmessage = null;
    this.ws.onclose = null;
    try {
      this.ws.close();
    } catch {
      // already closing
    }
    this.closes.emit(err);
  }

  private onFrame(data: unknown): void {
    let message: ServerMessage;
    try {
      message = decodeFrame(data);
    } catch {
      return; // a newer server's event we do not know: ignore it
    }
    const id = "id" in message ? message.id : null;
    const waiting = typeof id === "number" ? this.pending.get(id) : undefined;
    if (waiting !== undefined) {
      clearTimeout(waiting.timer);
      this.pending.delete(id as number);
      waiting.resolve(message);
      return;
    }
    if (message.type === "session_closed") {
      this.closedReason = message.reason;
      this.events.emit(message);
      this.fail(this.lostError());
      return;
    }
    this.events.emit(message);
  }
}

function decodeFrame(data: unknown): ServerMessage {
  if (!(data instanceof ArrayBuffer)) throw new Error("not a binary frame");
  return decodeServerMessage(new Uint8Array(data));
}

export interface MemberAuth {
  readonly spaceId: string;
  readonly memberKey: Uint8Array;
  readonly signingSeed: Uint8Array;
}

export interface SessionOptions extends ConnectionOptions {
  /** Bound on how long a request waits for a reconnection. */
  reconnectWaitMs?: number;
  /** For tests: the random source of the back-off jitter. */
  random?: () => number;
}

/** Authenticate a connection as a member (§5.3); a refusal meaning removal is `Removed`. */
export async function authenticate(conn: Connection, auth: MemberAuth): Promise<Welcome> {
  const signature = await signAuth(auth.signingSeed, conn.origin, "member", auth.spaceId, conn.nonce);
  try {
    return await conn.request<Welcome>({ type: "auth", space_id: auth.spaceId, member_key: auth.memberKey, signature });
  } catch (err) {
    throw removalOfAuthError(err) ?? err;
  }
}

/**
 * A membership's session: one WebSocket, authenticated, kept open (reconnecting) until
 * `close()` or a removal. Use `MemberSession.open`.
 */
export class MemberSession {
  private conn: Connection | null = null;
  private stateValue: ConnectionState = "connecting";
  private finalError: ClientError | null = null;
  private attempt = 0;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private waiters = new Set<{ resolve(): void; reject(err: ClientError): void }>();
  private readonly events = new Listeners<ServerMessage>();
  private readonly reconnects = new Listeners<void>();
  private readonly states = new Listeners<ConnectionState>();
  private readonly removals = new Listeners<Removed>();

  private constructor(readonly server: string, private readonly auth: MemberAuth, private readonly options: SessionOptions) {}

  /** Connect and authenticate once; a failure here is thrown (no retry loop before the first success). */
  static async open(server: string, auth: MemberAuth, options: SessionOptions = {}): Promise<MemberSession> {
    const session = new MemberSession(checkServerUrl(server), auth, options);
    const conn = await Connection.open(session.server, options);
    try {
      await authenticate(conn, auth);
    } catch (err) {
      conn.close();
      throw err;
    }
    session.adopt(conn);
    session.setState("online");
    return session;
  }

  state(): ConnectionState {
    return this.stateValue;
  }

  /** Why the session is closed for good (a `Removed`, or `close()`), else null. */
  closedError(): ClientError | null {
    return this.finalError;
  }

  onState(listener: Listener<ConnectionState>): () => void {
    return this.states.add(listener);
  }

  onEvent(listener: Listener<ServerMessage>): () => void {
    return this.events.add(listener);
  }

  /** After every re-authentication (not the first). */
  onReconnect(listener: () => void): () => void {
    return this.reconnects.add(listener);
  }

  /** Once, when the server ends this membership (kicked, banned, left). */
  onRemoved(listener: Listener<Removed>): () => void {
    return this.removals.add(listener);
  }

  /** One request; waits (at most `reconnectWaitMs`) while reconnecting; `Removed` once removed. */
  async request<T extends ServerMessage>(message: WithoutId<ClientMessage>): Promise<T> {
    await this.whenOnline();
    return this.conn!.request<T>(message);
  }

  /** End the session for good (no more reconnection). */
  close(): void {
    this.finish(new Unreachable("this space was closed"));
  }

  /** End it as removed (the space client saw our removal on the chain). */
  removed(err: Removed): void {
    if (this.finalError !== null) return;
    this.finish(err);
    this.removals.emit(err);
  }

  private whenOnline(): Promise<void> {
    if (this.finalError !== null) return Promise.reject(this.finalError);
    if (this.stateValue === "online" && this.conn !== null && !this.conn.closed) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const waiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (err: ClientError) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new Unreachable(`cannot reach the server at ${this.server}; still trying`));
      }, this.options.reconnectWaitMs ?? RECONNECT_WAIT_MS);
      this.waiters.add(waiter);
    });
  }

  private adopt(conn: Connection): void {
    this.conn = conn;
    conn.onEvent((message) => this.events.emit(message));
    conn.onClose((err) => {
      if (this.conn !== conn || this.finalError !== null) return;
      if (err instanceof Removed) {
        this.removed(err);
        return;
      }
      this.scheduleReconnect();
    });
  }

  private setState(state: ConnectionState): void {
    if (this.stateValue === state) return;
    this.stateValue = state;
    if (state === "online") {
      for (const w of [...this.waiters]) w.resolve();
      this.waiters.clear();
    }
    this.states.emit(state);
  }

  private scheduleReconnect(): void {
    if (this.finalError !== null) return;
    this.setState("reconnecting");
    const delay = backoffDelay(this.attempt++, this.options.random);
    this.retryTimer = setTimeout(() => void this.reconnect(), delay);
  }

  private async reconnect(): Promise<void> {
    this.retryTimer = null;
    if (this.finalError !== null) return;
    let conn: Connection;
    try {
      conn = await Connection.open(this.server, this.options);
    } catch {
      this.scheduleReconnect();
      return;
    }
    if (this.finalError !== null) {
      conn.close();
      return;
    }
    try {
      await authenticate(conn, this.auth);
    } catch (err) {
      conn.close();
      if (err instanceof Removed) this.removed(err);
      else this.scheduleReconnect();
      return;
    }
    if (this.finalError !== null) {
      conn.close();
      return;
    }
    this.attempt = 0;
    this.adopt(conn);
    this.setState("online");
    this.reconnects.emit();
  }

  private finish(err: ClientError): void {
    if (this.finalError !== null) return;
    this.finalError = err;
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    for (const w of [...this.waiters]) w.reject(err);
    this.waiters.clear();
    const conn = this.conn;
    this.conn = null;
    conn?.close();
    this.setState("closed");
  }
}
