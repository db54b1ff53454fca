/** Plain words for times, durations and fingerprints. Pure: tested in test/ui_format.test.ts. */

/** The disappearing-message choices of the composer's timer, in seconds (0 = off). */
export const TIMERS: readonly { readonly seconds: number; readonly label: string; readonly short: string }[] = [
  { seconds: 0, label: "Off", short: "" },
  { seconds: 5 * 60, label: "5 minutes", short: "5 min" },
  { seconds: 60 * 60, label: "1 hour", short: "1 h" },
  { seconds: 24 * 60 * 60, label: "1 day", short: "1 day" },
  { seconds: 7 * 24 * 60 * 60, label: "1 week", short: "1 week" },
];

const pad = (n: number): string => String(n).padStart(2, "0");

/** A lifetime in words: "5 minutes", "1 hour", "3 days", "90 seconds". */
export function duration(seconds: number): string {
  const known = TIMERS.find((t) => t.seconds === seconds && seconds > 0);
  if (known !== undefined) return known.label;
  const unit = (n: number, word: string): string => `${n} ${word}${n === 1 ? "" : "s"}`;
  if (seconds % 86_400 === 0) return unit(seconds / 86_400, "day");
  if (seconds % 3600 === 0) return unit(seconds / 3600, "hour");
  if (seconds % 60 === 0) return unit(seconds / 60, "minute");
  return unit(seconds, "second");
}

/** "14:05" in the person's own time zone. */
export function clock(ms: number): string {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** "Today", "Yesterday" or "Mon 3 Nov" (with the year when it is not this year). */
export function day(ms: number, now: number): string {
  const d = new Date(ms);
  const start = new Date(now);
  start.setHours(0, 0, 0, 0);
  const diff = Math.floor((start.getTime() - new Date(d).setHours(0, 0, 0, 0)) / 86_400_000 + 0.5);
  if (diff === 0) return "Today";
  if (diff === 1) return "Yesterday";
  const days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
  const months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  const base = `${days[d.getDay()]} ${d.getDate()} ${months[d.getMonth()]}`;
  return d.getFullYear() === new Date(now).getFullYear() ? base : `${base} ${d.getFullYear()}`;
}

/** How long until `until`, short: "45 s", "4 min", "3 h", "2 days"; "" once past. */
export function timeLeft(until: number, now: number): string {
  const s = Math.ceil((until - now) / 1000);
  if (s <= 0) return "";
  if (s < 60) return `${s} s`;
  const m = Math.ceil(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.round(s / 3600);
  if (h < 48) return `${h} h`;
  const d = Math.round(s / 86_400);
  return `${d} days`;
}

/** "in 3 days", "in 5 h", "expired". */
export function expiresIn(until: number, now: number): string {
  const left = timeLeft(until, now);
  return left === "" ? "expired" : `in ${left}`;
}

/** A fingerprint shown in groups of four: "a1b2 c3d4 e5f6 0718". */
export function groupFingerprint(fingerprint: string, groups = 4): string {
  const chunks = fingerprint.match(/.{1,4}/g) ?? [];
  return chunks.slice(0, groups).join(" ");
}

/** Initials for an avatar without a photo: "Ada Lovelace" → "AL", "bob" → "B". */
export function initials(name: string): string {
  // A "(a1b2 c3d4)" fingerprint beside a name that looks like another's is not part of it.
  const words = name.replace(/\s*\([0-9a-f]{4} [0-9a-f]{4}\)$/, "").trim().split(/\s+/).filter((w) => w !== "");
  const letters = words.slice(0, 2).map((w) => Array.from(w)[0]?.toUpperCase() ?? "");
  return letters.join("") || "?";
}

/** A stable hue (0–359) for a member's avatar, from their key. */
export function hue(key: string): number {
  let h = 0;
  for (let i = 0; i < key.length; i += 1) h = (h * 31 + key.charCodeAt(i)) % 360;
  return h;
}

export const ROLE_LABEL = { owner: "Owner", moderator: "Moderator", member: "Member" } as const;
