/**
 * The mesh topology in the browser (PROTOCOL.md §14.2; the reference is client/mesh.py): one
 * RTCPeerConnection per pair, DTLS-SRTP end to end. The SDP travels sealed and signed through
 * the `Signaller`, so the peer's DTLS fingerprint in it is the one the browser then checks.
 *
 * Each pair negotiates once: the participant with the lower member key offers (`Peer.offerer`),
 * with three `sendrecv` media sections in this order — audio (Opus), camera (VP8), screen (VP8)
 * — all BUNDLEd (max-bundle). No trickle: a description is sent once its candidates are
 * gathered (the CLI does the same). Sending starts and stops by `replaceTrack` (never a
 * renegotiation): muted means no track on the sender, so nothing leaves.
 *
 * Reconnection (`RetryPolicy`, ./retry.ts): when a pair fails, stays `disconnected` for a few
 * seconds (a network drop), an offer or answer cannot be used, or an attempt never connects, the
 * offerer makes a *fresh* RTCPeerConnection and offers again under a higher `attempt`, with a
 * jittered back-off, for up to 30 s; the answerer answers any higher attempt. (Not
 * `restartIce()`: the other end may be the CLI, and aiortc has no ICE restart.) The call, the
 * seat and the keys are untouched. A pair that was refused (its signalling failed verification)
 * stays down for good.
 */
import { RetryPolicy, transportState } from "./retry.ts";
import type {
  LinkState, LocalMedia, Peer, SignalKind, Topology, TopologyContext, TopologyName, TrackKind,
} from "./topology.ts";

export const GATHER_TIMEOUT_MS = 10_000;
/** How often a pair's health goes to its retry policy. */
export const SUPERVISE_MS = 500;
/** How often the pair's receivers are looked at, and how long a quiet one keeps its track. */
export const POLL_MS = 250;
export const IDLE_MS = 1_500;
/** `check_sdp` (§14.2). */
export const MAX_SDP_BYTES = 32_768;
export const MAX_CANDIDATES = 32;

const KINDS: readonly TrackKind[] = ["audio", "camera", "screen"];

/** Why `sdp` breaks the §14.2 bounds, or null. */
export function sdpProblem(sdp: string): string | null {
  if (new TextEncoder().encode(sdp).length > MAX_SDP_BYTES) return `the description is larger than ${MAX_SDP_BYTES} bytes`;
  if (sdp.split("a=candidate:").length - 1 > MAX_CANDIDATES) return `the description has more than ${MAX_CANDIDATES} candidates`;
  if (!sdp.includes("a=fingerprint:")) return "the description has no DTLS fingerprint";
  return null;
}

/** Only `mime` (plus its retransmissions for video) on `t`. */
export function preferCodec(t: RTCRtpTransceiver, kind: "audio" | "video", mime: string, rtx: boolean): void {
  if (!("setCodecPreferences" in t)) return;
  const codecs = RTCRtpReceiver.getCapabilities(kind)?.codecs ?? [];
  const wanted = codecs.filter((c) => c.mimeType.toLowerCase() === mime);
  const extra = rtx ? codecs.filter((c) => c.mimeType.toLowerCase() === `${kind}/rtx`) : [];
  if (wanted.length > 0) t.setCodecPreferences([...wanted, ...extra]);
}

/** Waits until `pc` gathered its candidates (no trickle), at most `ms`. */
export function gathered(pc: RTCPeerConnection, ms = GATHER_TIMEOUT_MS): Promise<void> {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = (): void => {
      if (pc.iceGatheringState === "complete") done();
    };
    const timer = setTimeout(done, ms);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

/**
 * The description to send: without TCP candidates (the CLI has no ICE-TCP) and at most
 * MAX_CANDIDATES of them. Relay-only: it must hold a relay candidate.
 */
export function outgoingSdp(sdp: string, relayOnly: boolean): string {
  let count = 0;
  const lines = sdp.split("\r\n").filter((line) => {
    if (!line.startsWith("a=candidate:")) return true;
    if (/ tcp /i.test(line)) return false;
    return ++count <= MAX_CANDIDATES;
  });
  const out = lines.join("\r\n");
  if (relayOnly && !out.includes(" typ relay")) {
    throw new Error("relay-only: no relay candidate (the TURN server refused our credentials or did not answer)");
  }
  return out;
}

export function rtcConfiguration(ctx: TopologyContext): RTCConfiguration {
  return {
    iceServers: ctx.iceServers,
    iceTransportPolicy: ctx.relayOnly ? "relay" : "all",
    bundlePolicy: "max-bundle",
    rtcpMuxPolicy: "require",
  };
}

interface Sending {
  audio: boolean;
  camera: boolean;
  screen: boolean;
}

class MeshLink {
  state: LinkState = "waiting";
  /** Offerer: our latest offer; answerer: the latest offer answered. */
  attempt = 0;
  policy = new RetryPolicy();
  pc: RTCPeerConnection | null = null;
  /** audio, camera, screen (the pair's three sections, in order) once they exist. */
  transceivers: RTCRtpTransceiver[] = [];
  /** The tracks shown to the sink (media is arriving on them). */
  readonly remote = new Map<TrackKind, MediaStreamTrack>();
  /** Every remote track of the pair (one per section, whether the peer sends on it or not). */
  readonly #incoming = new Map<TrackKind, MediaStreamTrack>();
  /** Per kind: frames decoded (video) or packets received (audio) when last looked, and when it last grew. */
  readonly #progress = new Map<TrackKind, { count: number; at: number }>();
  #poll: ReturnType<typeof setInterval> | null = null;
  #supervisor: ReturnType<typeof setInterval> | null = null;
  #ended = false;

  constructor(readonly mesh: MeshTopology, readonly peer: Peer) {}

  start(): void {
    this.#newPc();
    this.#poll = setInterval(() => void this.#watch().catch(() => {}), POLL_MS);
    this.#supervisor = setInterval(() => this.#supervise(), SUPERVISE_MS);
    if (this.peer.offerer) void this.#guard(this.#offer());
  }

  /** Feed the retry policy the pair's health; restart (offerer) or give up on its word. */
  #supervise(): void {
    if (this.#ended) return;
    const pc = this.pc;
    const before = this.policy.reconnects;
    this.policy.observe(pc === null ? "failed" : transportState(pc.connectionState));
    if (this.policy.reconnects > before) {
      this.mesh.ctx.sink.onReconnected?.(this.peer.memberHex, this.policy.recoveredMs ?? 0);
    }
    const decision = this.policy.poll();
    if (decision === "give-up") {
      if (this.#supervisor !== null) clearInterval(this.#supervisor);
      const what = this.policy.everConnected ? "gave up reconnecting" : "no connection";
      this.#set("failed", `${what} to ${this.peer.label} after ${this.policy.giveUpAfterMs / 1000} s of trying`);
    } else if (decision === "retry") {
      if (!this.policy.everConnected && this.policy.retries === 1) {
        const what = this.peer.offerer ? "no answer" : "no verified offer";
        this.#set("failed", `${what} from ${this.peer.label} within ${this.policy.connectDeadlineMs / 1000} s`);
      }
      if (this.peer.offerer) {
        this.#set("connecting", this.policy.everConnected ? "reconnecting" : "retrying");
        void this.#guard(this.#restart());
      }
    }
  }

  async #guard(work: Promise<void>): Promise<void> {
    try {
      await work;
    } catch (err) {
      this.#set("failed", err instanceof Error ? err.message : String(err));
    }
  }

  #newPc(): void {
    const pc = new RTCPeerConnection(rtcConfiguration(this.mesh.ctx));
    this.pc = pc;
    this.transceivers = [];
    if (this.peer.offerer) {
      // Both sides' sections in this order: the second video is each side's screen (§14.2).
      const audio = pc.addTransceiver("audio", { direction: "sendrecv" });
      const camera = pc.addTransceiver("video", { direction: "sendrecv" });
      const screen = pc.addTransceiver("video", { direction: "sendrecv" });
      this.#adopt([audio, camera, screen]);
    }
    pc.ontrack = (e) => {
      if (pc !== this.pc) return;
      const kind = KINDS[pc.getTransceivers().indexOf(e.transceiver)];
      if (kind !== undefined) this.#incoming.set(kind, e.track);
    };
    pc.onconnectionstatechange = () => {
      if (pc !== this.pc) return;
      if (pc.connectionState === "connected") {
        this.#set("connected");
      } else if (pc.connectionState === "failed") {
        this.#set("failed", `the connection to ${this.peer.label} failed (ICE or DTLS)`);
      }
    };
  }

  /**
   * A section shows a track only while media arrives on it (a peer with its camera off or no
   * screen shared sends nothing there; a remote track's mute events are not reliable for it):
   * the receivers' stats are read every POLL_MS.
   */
  async #watch(): Promise<void> {
    const pc = this.pc;
    if (pc === null || pc.connectionState !== "connected") return;
    // Per receiver (not by mid: not every browser names the mid in its stats).
    const counts = new Map<TrackKind, number>();
    await Promise.all(
      pc.getTransceivers().map(async (t, i) => {
        const kind = KINDS[i];
        if (kind === undefined) return;
        (await t.receiver.getStats()).forEach((r: { type: string; packetsReceived?: number; framesDecoded?: number }) => {
          if (r.type === "inbound-rtp") counts.set(kind, kind === "audio" ? (r.packetsReceived ?? 0) : (r.framesDecoded ?? 0));
        });
      }),
    );
    if (pc !== this.pc) return;
    const now = Date.now();
    for (const kind of KINDS) {
      const count = counts.get(kind) ?? 0;
      const last = this.#progress.get(kind) ?? { count: 0, at: 0 };
      const track = this.#incoming.get(kind);
      if (count > last.count && track !== undefined) {
        this.#progress.set(kind, { count, at: now });
        if (this.remote.get(kind) !== track) {
          this.remote.set(kind, track);
          this.mesh.ctx.sink.onTrack(this.peer.memberHex, kind, track);
        }
      } else if (this.remote.has(kind) && now - last.at > IDLE_MS) {
        this.remote.delete(kind);
        this.mesh.ctx.sink.onTrack(this.peer.memberHex, kind, null);
      }
    }
  }

  #adopt(transceivers: RTCRtpTransceiver[]): void {
    const [audio, camera, screen] = transceivers;
    if (audio === undefined || camera === undefined || screen === undefined) throw new Error("three sections needed");
    preferCodec(audio, "audio", "audio/opus", false);
    preferCodec(camera, "video", "video/vp8", true);
    preferCodec(screen, "video", "video/vp8", true);
    this.transceivers = [audio, camera, screen];
    void this.applySending();
  }

  async #restart(): Promise<void> {
    if (this.#ended) return;
    this.#dropPc();
    this.#newPc();
    await this.#offer();
  }

  #dropPc(): void {
    const pc = this.pc;
    this.pc = null;
    this.transceivers = [];
    this.#incoming.clear();
    this.#progress.clear();
    for (const kind of [...this.remote.keys()]) {
      this.remote.delete(kind);
      this.mesh.ctx.sink.onTrack(this.peer.memberHex, kind, null);
    }
    pc?.close();
  }

  async close(state: LinkState = "closed", detail = ""): Promise<void> {
    if (this.#supervisor !== null) clearInterval(this.#supervisor);
    if (this.#poll !== null) clearInterval(this.#poll);
    this.#dropPc();
    this.#set(state, detail);
    this.#ended = true;
  }

  #set(state: LinkState, detail = ""): void {
    if (this.state === state || this.#ended) return;
    this.state = state;
    this.mesh.ctx.sink.onLink(this.peer.memberHex, state, detail === "" ? undefined : detail);
  }

  // -- negotiation -------------------------------------------------------------------------

  async #describe(pc: RTCPeerConnection): Promise<Uint8Array> {
    await gathered(pc);
    const local = pc.localDescription;
    if (local === null) throw new Error("no local description");
    return new TextEncoder().encode(outgoingSdp(local.sdp, this.mesh.ctx.relayOnly));
  }

  async #offer(): Promise<void> {
    const pc = this.pc;
    if (pc === null) return;
    this.attempt++;
    const attempt = this.attempt;
    this.policy.attemptStarted();
    await pc.setLocalDescription();
    const sdp = await this.#describe(pc);
    if (pc !== this.pc) return;
    this.#set("connecting");
    await this.mesh.ctx.signaller.send(this.peer, "offer", sdp, attempt);
  }

  async onSignal(kind: SignalKind, payload: Uint8Array, attempt: number): Promise<void> {
    if (this.#ended || this.state === "refused") return;
    const sdp = new TextDecoder().decode(payload);
    const problem = sdpProblem(sdp);
    if (problem !== null) {
      await this.refuse(`${kind} from ${this.peer.label}: ${problem}`);
      return;
    }
    if (kind === "offer") {
      if (this.peer.offerer) await this.refuse(`${this.peer.label} sent an offer where we make the offer`);
      else if (attempt > this.attempt) {
        // anything else is a replay of an old offer
        this.attempt = attempt;
        if (this.policy.gaveUp) {
          // They kept trying longer than we did: watch the pair again.
          this.policy = new RetryPolicy();
          this.#supervisor = setInterval(() => this.#supervise(), SUPERVISE_MS);
        }
        await this.#guard(this.#answer(sdp, attempt));
      }
    } else if (kind === "answer") {
      const pc = this.pc;
      if (!this.peer.offerer || pc === null) await this.refuse(`${this.peer.label} sent an answer we did not ask for`);
      else if (attempt === this.attempt && pc.signalingState === "have-local-offer") {
        try {
          await pc.setRemoteDescription({ type: "answer", sdp });
        } catch (err) {
          // Verified, so theirs: a transport problem, retried like a failed connection.
          this.#set("failed", `unusable answer from ${this.peer.label}: ${err instanceof Error ? err.message : err}`);
          this.#dropPc();
        }
      }
    }
  }

  async #answer(sdp: string, attempt: number): Promise<void> {
    if (this.pc === null || this.pc.remoteDescription !== null) {
      this.#dropPc(); // the offerer restarted: start over
      this.#newPc();
    }
    const pc = this.pc as RTCPeerConnection;
    this.policy.attemptStarted();
    try {
      await pc.setRemoteDescription({ type: "offer", sdp });
      const ts = pc.getTransceivers();
      const kinds = ts.map((t) => t.receiver.track.kind).join(",");
      if (kinds !== "audio,video,video") throw new Error(`sections ${kinds}, not audio, camera, screen`);
      for (const t of ts) t.direction = "sendrecv";
      this.#adopt(ts);
      await pc.setLocalDescription();
    } catch (err) {
      // Verified, so theirs: a transport problem; the offerer retries.
      this.#set("failed", `unusable offer from ${this.peer.label}: ${err instanceof Error ? err.message : err}`);
      this.#dropPc();
      return;
    }
    const answer = await this.#describe(pc);
    if (pc !== this.pc) return;
    this.#set("connecting");
    await this.mesh.ctx.signaller.send(this.peer, "answer", answer, attempt);
  }

  async refuse(reason: string): Promise<void> {
    await this.close("refused", reason);
  }

  // -- media -------------------------------------------------------------------------------

  async applySending(): Promise<void> {
    const { media, sending } = this.mesh;
    const sources: Array<MediaStreamTrack | null> = [media.audio, media.camera, media.screen];
    const allowed = [sending.audio, sending.camera, sending.screen];
    await Promise.all(
      this.transceivers.map(async (t, i) => {
        const source = sources[i] ?? null;
        const want = allowed[i] === true && source !== null && source.readyState === "live" ? source : null;
        if (t.sender.track !== want) await t.sender.replaceTrack(want);
      }),
    );
  }
}

export class MeshTopology implements Topology {
  readonly name: TopologyName = "mesh";
  media: LocalMedia;
  sending: Sending = { audio: false, camera: false, screen: false };
  readonly #links = new Map<string, MeshLink>();

  constructor(readonly ctx: TopologyContext) {
    this.media = { ...ctx.media };
  }

  /** The link state of `memberHex`'s pair, if any (tests, status). */
  linkState(memberHex: string): LinkState | null {
    return this.#links.get(memberHex)?.state ?? null;
  }

  /** The pair's RTCPeerConnection (tests read its stats). */
  connection(memberHex: string): RTCPeerConnection | null {
    return this.#links.get(memberHex)?.pc ?? null;
  }

  async setPeers(peers: ReadonlyMap<string, Peer>): Promise<void> {
    for (const [hex, link] of [...this.#links]) {
      const peer = peers.get(hex);
      if (peer === undefined || !sameBytes(peer.link, link.peer.link)) {
        this.#links.delete(hex);
        await link.close();
      }
    }
    for (const [hex, peer] of peers) {
      if (!this.#links.has(hex)) {
        const link = new MeshLink(this, peer);
        this.#links.set(hex, link);
        link.start();
      }
    }
  }

  async onSignal(peer: Peer, kind: SignalKind, payload: Uint8Array, attempt: number): Promise<void> {
    const link = this.#links.get(peer.memberHex);
    if (link !== undefined && sameBytes(link.peer.link, peer.link) && (kind === "offer" || kind === "answer")) {
      await link.onSignal(kind, payload, attempt);
    }
  }

  async refuse(memberHex: string, reason: string): Promise<void> {
    await this.#links.get(memberHex)?.refuse(reason);
  }

  setSending(sending: Sending): void {
    this.sending = { ...sending };
    for (const link of this.#links.values()) void link.applySending();
  }

  async setMedia(media: LocalMedia): Promise<void> {
    this.media = { ...media };
    await Promise.all([...this.#links.values()].map((link) => link.applySending()));
  }

  async close(): Promise<void> {
    const links = [...this.#links.values()];
    this.#links.clear();
    await Promise.all(links.map((link) => link.close()));
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

export const meshTopology = (ctx: TopologyContext): Topology => new MeshTopology(ctx);
