/**
 * When to make a media link again (sans-I/O; the reference is client/call/retry.py): one policy
 * for every mesh pair and the SFU link.
 *
 * A "restart" is a fresh RTCPeerConnection offered again under a higher `attempt` (PROTOCOL.md
 * §15): the answerer (a mesh peer, or the SFU through `sfuOffer`) drops the old connection and
 * answers the new one. It works the same whichever end is a browser or the CLI (aiortc has no
 * ICE restart). Nothing about the media keys changes: the same `MediaKeys` worker, whose
 * counters never restart under a key.
 *
 * A link is in trouble when it is `failed`, `disconnected` for longer than `disconnectedGraceMs`
 * (a browser says so within seconds of losing its path), or an attempt did not connect within its
 * deadline (`connectDeadlineMs` for the first, `retryDeadlineMs` for a retry). From the moment the
 * trouble starts (the outage), retries follow a jittered exponential back-off until the link
 * connects again — `recoveredMs` then holds how long the outage lasted — or the outage has lasted
 * `giveUpAfterMs` (long enough to ride out a ≥ 10 s network drop), when `poll()` says "give-up"
 * once.
 */

export type TransportState = "connecting" | "connected" | "disconnected" | "failed";
export type Decision = "retry" | "give-up" | null;

export const CONNECT_DEADLINE_MS = 20_000;
export const RETRY_DEADLINE_MS = 6_000;
export const DISCONNECTED_GRACE_MS = 4_000;
export const GIVE_UP_AFTER_MS = 30_000;
export const FIRST_DELAY_MS = 500;
export const MAX_DELAY_MS = 4_000;

export interface RetryOptions {
  connectDeadlineMs?: number;
  retryDeadlineMs?: number;
  disconnectedGraceMs?: number;
  giveUpAfterMs?: number;
  firstDelayMs?: number;
  maxDelayMs?: number;
  random?: () => number;
}

/** Maps a browser connection state onto the policy's. */
export function transportState(state: RTCPeerConnectionState): TransportState {
  if (state === "connected") return "connected";
  if (state === "disconnected") return "disconnected";
  if (state === "failed" || state === "closed") return "failed";
  return "connecting";
}

export class RetryPolicy {
  readonly connectDeadlineMs: number;
  readonly retryDeadlineMs: number;
  readonly disconnectedGraceMs: number;
  readonly giveUpAfterMs: number;
  readonly #first: number;
  readonly #max: number;
  readonly #random: () => number;
  #nominal: number;
  state: TransportState = "connecting";
  /** Fresh connections the policy asked for, over the link's life. */
  retries = 0;
  /** Times a fresh connection replaced one that had been connected. */
  reconnects = 0;
  gaveUp = false;
  everConnected = false;
  /** The last outage's length, once it ended. */
  recoveredMs: number | null = null;
  outageStarted: number | null = null;
  #attemptAt: number;
  #since: number;
  #retryAt: number | null = null;
  #fresh = false;

  constructor(readonly clock: () => number = Date.now, options: RetryOptions = {}) {
    this.connectDeadlineMs = options.connectDeadlineMs ?? CONNECT_DEADLINE_MS;
    this.retryDeadlineMs = options.retryDeadlineMs ?? RETRY_DEADLINE_MS;
    this.disconnectedGraceMs = options.disconnectedGraceMs ?? DISCONNECTED_GRACE_MS;
    this.giveUpAfterMs = options.giveUpAfterMs ?? GIVE_UP_AFTER_MS;
    this.#first = options.firstDelayMs ?? FIRST_DELAY_MS;
    this.#max = options.maxDelayMs ?? MAX_DELAY_MS;
    this.#random = options.random ?? Math.random;
    this.#nominal = this.#first;
    this.#attemptAt = clock();
    this.#since = this.#attemptAt;
  }

  /** The next back-off delay, drawn from [nominal/2, nominal] ("equal jitter"). */
  #nextDelay(): number {
    const nominal = this.#nominal;
    this.#nominal = Math.min(this.#nominal * 2, this.#max);
    return nominal / 2 + (nominal / 2) * this.#random();
  }

  /** A fresh attempt (our offer, or our answer to a new offer) began now. */
  attemptStarted(): void {
    const now = this.clock();
    this.#attemptAt = now;
    this.#retryAt = null;
    this.#fresh = this.everConnected;
    if (this.state !== "connecting") {
      this.state = "connecting";
      this.#since = now;
    }
  }

  /** The transport's state now (repeat freely: only changes count). */
  observe(state: TransportState): void {
    if (state === this.state) return;
    const now = this.clock();
    this.state = state;
    this.#since = now;
    if (state !== "connected") return;
    this.everConnected = true;
    if (this.#fresh) this.reconnects++;
    if (this.outageStarted !== null || this.#fresh) this.recoveredMs = now - (this.outageStarted ?? this.#attemptAt);
    this.#fresh = false;
    this.outageStarted = null;
    this.#retryAt = null;
    this.#nominal = this.#first;
  }

  inTrouble(): boolean {
    const now = this.clock();
    if (this.state === "failed") return true;
    if (this.state === "disconnected") return now - this.#since >= this.disconnectedGraceMs;
    if (this.state === "connecting") {
      return now - this.#attemptAt >= (this.retries > 0 ? this.retryDeadlineMs : this.connectDeadlineMs);
    }
    return false;
  }

  /** What to do now: "retry" (then call attemptStarted), "give-up" (once), or null. */
  poll(): Decision {
    if (this.gaveUp || !this.inTrouble()) return null;
    const now = this.clock();
    if (this.outageStarted === null) {
      this.outageStarted = this.state === "disconnected" ? this.#since : now;
      this.recoveredMs = null;
    }
    if (now - this.outageStarted >= this.giveUpAfterMs) {
      this.gaveUp = true;
      return "give-up";
    }
    if (this.#retryAt === null) this.#retryAt = now + this.#nextDelay();
    if (now < this.#retryAt) return null;
    this.#retryAt = null;
    this.retries++;
    return "retry";
  }
}
