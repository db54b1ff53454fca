/** Small pieces of the call screens: their icons, a <video> / <audio> of a track, a device picker, words. */
import type { JSX } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import type { CallView, ParticipantView, Seat, TopologyName } from "../../call/topology.ts";
import { watchShown } from "../../call/view.ts";
import type { DeviceVM } from "../state.ts";

const PATHS = {
  mic: "M12 3a3 3 0 00-3 3v6a3 3 0 006 0V6a3 3 0 00-3-3zM5 11a7 7 0 0014 0M12 18v3",
  micOff: "M12 3a3 3 0 00-3 3v6a3 3 0 006 0V6a3 3 0 00-3-3zM5 11a7 7 0 0014 0M12 18v3M3 3l18 18",
  video: "M3 7h12v10H3zM15 10.5l6-3v9l-6-3",
  videoOff: "M3 7h12v10H3zM15 10.5l6-3v9l-6-3M3 3l18 18",
  screen: "M3 4h18v12H3zM8 20h8M12 16v4M12 13V7M9 10l3-3 3 3",
  hand: "M8 13V6a1.5 1.5 0 013 0v5M11 11V4.5a1.5 1.5 0 013 0V11M14 11V6a1.5 1.5 0 013 0v8a7 7 0 01-7 7h-.5a6 6 0 01-5-2.7L2.3 14a1.5 1.5 0 012.5-1.6L8 16",
  leave: "M3 14c5-4.7 13-4.7 18 0l-1.8 2.8-3.7-1.3v-2.6a10 10 0 00-7 0v2.6l-3.7 1.3z",
  people: "M9 11a4 4 0 100-8 4 4 0 000 8zM2 21v-1a6 6 0 0112 0v1M16 3.5a4 4 0 010 7.5M18 14a6 6 0 014 6v1",
  lock: "M6 11h12v10H6zM8 11V7a4 4 0 018 0v4",
  speaking: "M4 10v4h3l5 4V6L7 10zM15.5 9a4 4 0 010 6M18 6.5a8 8 0 010 11",
  close: "M6 6l12 12M18 6L6 18",
  more: "M5 12h.01M12 12h.01M19 12h.01",
  settings: "M4 6h10M18 6h2M4 12h4M12 12h8M4 18h12M20 18h0M14 4v4M8 10v4M16 16v4",
} as const;

export type CallIconName = keyof typeof PATHS;

export function CallIcon({ name, size = 22 }: { name: CallIconName; size?: number }): JSX.Element {
  return (
    <svg class="icon" width={size} height={size} viewBox="0 0 24 24" aria-hidden="true" focusable="false">
      <path d={PATHS[name]} fill="none" stroke="currentColor" stroke-width={name === "more" ? 3.5 : 2} stroke-linecap="round" stroke-linejoin="round" />
    </svg>
  );
}

/** A <video> of one track (or stream): never any sound (audio plays through RemoteAudio). */
export function TrackVideo(props: { track?: MediaStreamTrack | null; stream?: MediaStream | null; mirror?: boolean; label: string; fit?: "cover" | "contain" }): JSX.Element {
  const ref = useRef<HTMLVideoElement>(null);
  const source = props.stream ?? null;
  const track = props.track ?? null;
  useEffect(() => {
    const el = ref.current;
    if (el === null) return;
    const stream = track !== null ? new MediaStream([track]) : source !== null ? new MediaStream(source.getVideoTracks()) : null;
    el.srcObject = stream;
    if (stream !== null) el.play().catch(() => undefined);
  }, [track, source]);
  // How big this tile shows the track: the SFU sends a simulcast layer that fits (call/view.ts).
  useEffect(() => {
    const el = ref.current;
    if (el === null || track === null || typeof ResizeObserver === "undefined") return;
    return watchShown(el, track.id);
  }, [track]);
  return (
    <video
      ref={ref}
      class={`call-video${props.mirror ? " call-mirror" : ""}${props.fit === "contain" ? " call-video-contain" : ""}`}
      autoplay
      playsInline
      muted
      disablePictureInPicture
      aria-label={props.label}
    />
  );
}

/** A participant's sound, on the speaker picked (where the browser lets us pick one). */
export function RemoteAudio({ track, speaker, name }: { track: MediaStreamTrack; speaker: string; name: string }): JSX.Element {
  const ref = useRef<HTMLAudioElement>(null);
  useEffect(() => {
    const el = ref.current;
    if (el === null) return;
    el.srcObject = new MediaStream([track]);
    el.play().catch(() => undefined);
  }, [track]);
  useEffect(() => {
    const el = ref.current as (HTMLAudioElement & { setSinkId?: (id: string) => Promise<void> }) | null;
    if (el === null || el.setSinkId === undefined) return;
    el.setSinkId(speaker).catch(() => undefined);
  }, [speaker, track]);
  return <audio ref={ref} autoplay class="visually-hidden" data-testid="call-audio" data-name={name} />;
}

export const SEAT_WORDS: Record<Seat, string> = { host: "Host", speaker: "Speaker", listener: "Listener", lobby: "Waiting to join" };

/** Where the media goes, in plain words (UX.md: never "SFU"). */
export function topologyWords(topology: TopologyName | null): string {
  if (topology === "sfu") return "The call moved to the server to handle more people — still end-to-end encrypted.";
  if (topology === "mesh") return "Everyone is connected directly to each other — end-to-end encrypted.";
  return "Connecting…";
}

export function countWords(n: number): string {
  return n === 1 ? "1 person" : `${n} people`;
}

/** Why someone's microphone is off: a host's signed mute ("Muted by Bob") or their own choice. */
export function micWords(p: ParticipantView): string {
  return p.mutedBy !== null ? `Muted by ${p.mutedBy}` : "Microphone off";
}

/** What a screen reader says about a tile. */
export function tileLabel(p: ParticipantView): string {
  const parts = [p.me ? `${p.name} (you)` : p.name];
  if (p.seat === "host") parts.push("host");
  if (p.speaking) parts.push("speaking");
  if (p.muted) parts.push(micWords(p).toLowerCase());
  if (p.cameraOff) parts.push("camera off");
  if (p.hand) parts.push("hand raised");
  return parts.join(", ");
}

/** The participants shown: everyone admitted, me included (I am in `participants`). */
export function inCall(view: CallView): readonly ParticipantView[] {
  return view.participants.filter((p) => p.seat !== "lobby");
}

export function DevicePicker(props: { label: string; none: string; devices: readonly DeviceVM[]; value: string; onPick: (id: string) => void }): JSX.Element {
  const empty = props.devices.length === 0;
  return (
    <label class="field">
      <span>{props.label}</span>
      <select value={props.value} disabled={empty} onChange={(e) => props.onPick(e.currentTarget.value)}>
        {empty ? <option value="">{props.none}</option> : null}
        {props.devices.map((d) => <option key={d.id} value={d.id}>{d.label}</option>)}
      </select>
    </label>
  );
}

/** How loud the microphone is now: a <meter> (no style needed), so a person sees it works. */
export function MicMeter({ track }: { track: MediaStreamTrack }): JSX.Element {
  const [level, setLevel] = useState(0);
  useEffect(() => {
    const ctx = new AudioContext();
    const analyser = ctx.createAnalyser();
    ctx.createMediaStreamSource(new MediaStream([track])).connect(analyser);
    void ctx.resume().catch(() => undefined);
    const samples = new Float32Array(analyser.fftSize);
    const timer = setInterval(() => {
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const x of samples) sum += x * x;
      setLevel(Math.min(1, Math.sqrt(sum / samples.length) * 4));
    }, 120);
    return () => {
      clearInterval(timer);
      void ctx.close().catch(() => undefined);
    };
  }, [track]);
  return (
    <label class="mic-meter">
      <span class="small muted">Microphone level</span>
      <meter min={0} max={1} low={0.05} value={level} data-testid="mic-meter" />
    </label>
  );
}
