/**
 * The call part of the bridge (core.ts delegates here): the camera and microphone of the
 * pre-join screen, the devices picked, and — once Join is pressed — the call client's
 * `CallView` snapshots into the store and its `CallIntents` to the screen. Nothing secret
 * enters the store: a CallView holds names, fingerprints, the verification code and tracks.
 */
import type { CallIntents, CallView } from "../call/topology.ts";
import type { SpaceClient } from "../client/space.ts";
import { UsageError } from "../client/context.ts";
import { CallClient, CallRefused } from "../call/call.ts";
import { callTopologies } from "../call/sfu.ts";
import { explain } from "./errors.ts";
import { DeviceError, deviceError, listDevices, LocalDevices, onDevicesChanged, speakerSelectable, type DeviceInfo, type DeviceLists } from "../call/devices.ts";
import { roomKey, type CallChoices, type CallScreenVM, type DeviceKind, type DeviceVM, type PreviewVM, type Store } from "./state.ts";

/** A call as the bridge drives it: the call client of web/src/call/call.ts with our devices. */
export interface CallSession {
  view(): CallView;
  onChange(listener: () => void): () => void;
  /** Join (or knock): resolves once seated, waiting in the lobby, or refused (see view()). */
  join(): Promise<void>;
  readonly intents: CallIntents;
  close(): Promise<void>;
}

/** How a call session is made for a room. */
export type StartCall = (
  client: SpaceClient,
  roomId: string,
  /** Our sources, already open (their `onChange` says when a device was switched). */
  local: LocalDevices,
  choices: CallChoices,
) => Promise<CallSession>;

/** Plain words for what went wrong in a call action (refusals and devices say it themselves). */
export function callProblem(error: unknown): string {
  if (error instanceof CallRefused || error instanceof DeviceError) return error.message;
  return explain(error);
}

/** The real call: CallClient over the space's connection, mesh or SFU media, our devices. */
export const startRealCall: StartCall = async (client, roomId, local, choices) => {
  const routes = callTopologies();
  if (choices.cameraOff) await local.setCamera(false);
  const call = new CallClient(client, roomId, {
    topologies: routes.topologies,
    media: local.media,
    startMuted: choices.muted,
    cameraOff: choices.cameraOff,
  });
  const offMedia = local.onChange((media) => void call.setLocalMedia(media).catch(() => undefined));
  // For the tests and the benchmark: counts only (key events received, the SFrame worker's
  // per-track frame/failure/time counters) — never key material. Kept after the call ends so a
  // test can read what a removed page received; the next call replaces it.
  (globalThis as { salonCallStats?: () => Promise<unknown> }).salonCallStats = async () => ({
    keyEvents: call.counters.keyMessages,
    tracks: (await routes.mediaKeys()?.counters().catch(() => null))?.tracks ?? null,
  });
  const intents: CallIntents = {
    setMuted: async (muted) => {
      if (!muted) await local.ensureMicrophone();
      await call.setMuted(muted);
    },
    setCamera: async (on) => {
      if (on) {
        await local.setCamera(true);
        await call.setCamera(true);
      } else {
        await call.setCamera(false);
        await local.setCamera(false);
      }
    },
    shareScreen: (on) => local.shareScreen(on),
    setHand: (up) => call.setHand(up),
    leave: () => call.leave(),
    admit: (m) => call.admit(m),
    deny: (m) => call.deny(m),
    mute: (m) => call.mute(m),
    muteAll: () => call.muteAll(),
    kick: (m, ban) => call.kick(m, ban),
    lock: (locked) => call.lock(locked),
    promote: (m) => call.promote(m),
    demote: (m) => call.demote(m),
    lowerHand: (m) => call.lowerHand(m),
    end: () => call.end(),
  };
  return {
    view: () => call.view(),
    onChange: (listener) => call.subscribe(() => listener()),
    join: () => call.join(),
    intents,
    close: async () => {
      offMedia();
      await call.close().catch(() => undefined);
      routes.close();
    },
  };
};

interface OpenCall {
  readonly slot: string;
  readonly roomId: string;
  readonly local: LocalDevices;
  preview: PreviewVM;
  session: CallSession | null;
  off: (() => void)[];
  error: string | null;
  closed: boolean;
}

const EMPTY_PREVIEW: PreviewVM = {
  starting: true, stream: null, cameras: [], microphones: [], speakers: [], camera: "", microphone: "", speaker: "",
  canPickSpeaker: speakerSelectable(), cameraProblem: null, microphoneProblem: null,
};

const STILL = {
  camera: "You can still join: others will hear you but not see you.",
  microphone: "You can still join and listen: others won't hear you.",
} as const;

/** Plain words for a camera / microphone that can't be used (devices.ts says what and why). */
export function deviceProblem(error: unknown, what: "camera" | "microphone"): string {
  const problem = deviceError(error, what);
  return problem.problem === "missing" ? problem.message : `${problem.message} ${STILL[what]}`;
}

export class CallBridge {
  private readonly open = new Map<string, OpenCall>();
  /** How calls are made (the real call client; a seam for nothing else). */
  startCall: StartCall = startRealCall;

  constructor(private readonly store: Store, private readonly clientOf: (slot: string) => SpaceClient | null) {}

  private publish(call: OpenCall): void {
    if (call.closed) return;
    const vm: CallScreenVM = { preview: call.preview, view: call.session?.view() ?? null, error: call.error };
    this.store.setCall(call.slot, call.roomId, vm);
  }

  openCall(slot: string, roomId: string): void {
    const key = roomKey(slot, roomId);
    if (this.open.has(key)) return;
    const call: OpenCall = { slot, roomId, local: new LocalDevices(), preview: EMPTY_PREVIEW, session: null, off: [], error: null, closed: false };
    this.open.set(key, call);
    this.publish(call);
    call.off.push(onDevicesChanged(() => void this.listDevices(call)));
    // Closing the tab leaves the call (a signed leave, sent while the page can still send).
    const gone = (): void => this.closeCall(slot, roomId);
    addEventListener("pagehide", gone);
    call.off.push(() => removeEventListener("pagehide", gone));
    void this.startDevices(call);
  }

  closeCall(slot: string, roomId: string): void {
    const key = roomKey(slot, roomId);
    const call = this.open.get(key);
    if (call === undefined) return;
    this.open.delete(key);
    call.closed = true;
    for (const off of call.off.splice(0)) off();
    const session = call.session;
    call.session = null;
    if (session !== null) void session.close().catch(() => undefined);
    call.local.stop();
    this.store.setCall(slot, roomId, null);
  }

  private need(slot: string, roomId: string): OpenCall {
    const call = this.open.get(roomKey(slot, roomId));
    if (call === undefined) throw new UsageError("This call is not open. Open the call room again.");
    return call;
  }

  private stream(call: OpenCall): MediaStream | null {
    return call.local.camera === null ? null : new MediaStream([call.local.camera]);
  }

  /** Opens the microphone and the camera one after the other: one refused or busy leaves the other. */
  private async startDevices(call: OpenCall): Promise<void> {
    call.preview = { ...call.preview, starting: true };
    this.publish(call);
    let microphoneProblem: string | null = null;
    let cameraProblem: string | null = null;
    try {
      await call.local.start({ audio: true, camera: false });
    } catch (err) {
      microphoneProblem = deviceProblem(err, "microphone");
    }
    try {
      await call.local.start({ audio: false, camera: true });
    } catch (err) {
      cameraProblem = deviceProblem(err, "camera");
    }
    if (call.closed) {
      call.local.stop();
      return;
    }
    call.preview = { ...call.preview, starting: false, stream: this.stream(call), microphoneTrack: call.local.audio, microphoneProblem, cameraProblem };
    for (const track of [call.local.audio, call.local.camera]) track?.addEventListener("ended", () => this.lost(call, track));
    await this.listDevices(call);
  }

  /** A device went away (unplugged, taken by the system): say so, keep the call. */
  private lost(call: OpenCall, track: MediaStreamTrack): void {
    if (call.closed) return;
    if (call.local.audio === track) {
      call.preview = { ...call.preview, microphoneProblem: "Your microphone stopped (it may have been unplugged). Pick another one or press Try again." };
    } else if (call.local.camera === track) {
      call.preview = { ...call.preview, cameraProblem: "Your camera stopped (it may have been unplugged). Pick another one or press Try again." };
    } else {
      return;
    }
    this.publish(call);
  }

  private async listDevices(call: OpenCall): Promise<void> {
    let lists: DeviceLists = { cameras: [], microphones: [], speakers: [] };
    try {
      lists = await listDevices();
    } catch {
      // No list: the pickers stay empty and the defaults are used.
    }
    if (call.closed) return;
    const vm = (list: readonly DeviceInfo[]): DeviceVM[] => list.filter((d) => d.id !== "").map((d) => ({ id: d.id, label: d.label }));
    const cameras = vm(lists.cameras);
    const microphones = vm(lists.microphones);
    const speakers = vm(lists.speakers);
    // The picker shows what is used: the device of the open track, else the browser's first.
    const shown = (list: DeviceVM[], id: string | undefined): string => (list.some((d) => d.id === id) ? id! : (list[0]?.id ?? ""));
    call.preview = {
      ...call.preview,
      cameras,
      microphones,
      speakers,
      camera: shown(cameras, call.local.camera?.getSettings().deviceId ?? call.local.cameraId),
      microphone: shown(microphones, call.local.audio?.getSettings().deviceId ?? call.local.microphoneId),
      speaker: shown(speakers, call.local.speakerId),
    };
    this.publish(call);
  }

  async retryDevices(slot: string, roomId: string): Promise<void> {
    await this.startDevices(this.need(slot, roomId));
  }

  async pickDevice(slot: string, roomId: string, kind: DeviceKind, id: string): Promise<void> {
    const call = this.need(slot, roomId);
    if (kind === "speaker") {
      call.local.speakerId = id;
      call.preview = { ...call.preview, speaker: id };
      this.publish(call);
      return;
    }
    let problem: string | null = null;
    try {
      if (kind === "camera") {
        call.local.cameraId = id;
        if (call.local.camera === null) await call.local.start({ audio: false, camera: true });
        else await call.local.useCamera(id);
      } else {
        call.local.microphoneId = id;
        if (call.local.audio === null) await call.local.start({ audio: true, camera: false });
        else await call.local.useMicrophone(id);
      }
    } catch (err) {
      problem = deviceProblem(err, kind);
    }
    if (call.closed) return;
    const track = kind === "camera" ? call.local.camera : call.local.audio;
    track?.addEventListener("ended", () => this.lost(call, track));
    call.preview = {
      ...call.preview,
      stream: this.stream(call),
      microphoneTrack: call.local.audio,
      ...(kind === "camera" ? { camera: id, cameraProblem: problem } : { microphone: id, microphoneProblem: problem }),
    };
    this.publish(call);
  }

  async joinCall(slot: string, roomId: string, choices: CallChoices): Promise<void> {
    const call = this.need(slot, roomId);
    const client = this.clientOf(slot);
    if (client === null) throw new UsageError("This space is still opening. Try again in a moment.");
    if (call.session !== null) return;
    call.error = null;
    const session = await this.startCall(client, roomId, call.local, choices);
    if (call.closed) {
      await session.close();
      return;
    }
    call.session = session;
    call.off.push(session.onChange(() => this.publish(call)));
    this.publish(call);
    await session.join();
  }

  callIntents(slot: string, roomId: string): CallIntents | null {
    return this.open.get(roomKey(slot, roomId))?.session?.intents ?? null;
  }
}
