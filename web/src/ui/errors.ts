/**
 * Every error a person can hit, in plain words with what to do. Components show `explain(error)`;
 * nothing technical (codes, ids, stack traces) reaches the screen.
 */
import { RoomKeyUnavailable } from "../client/rooms.ts";
import { ClientError, Removed, ServerError, Unreachable, UsageError, VerificationError } from "../client/context.ts";

export type Situation = "join" | "action";

export function explain(error: unknown, situation: Situation = "action"): string {
  // The technical reason goes to the developer console only (the core's messages hold no secrets).
  if (error instanceof Error) console.debug(`salon: ${error.name}: ${error.message}`);
  if (error instanceof ServerError) {
    switch (error.code) {
      case "expired": return "This invitation has expired. Ask for a new link.";
      case "revoked": return "This invitation was cancelled. Ask for a new link.";
      case "used_up": return "This invitation has already been used as many times as it allows. Ask for a new link.";
      case "not_found":
        return situation === "join"
          ? "This invitation does not exist on this server. Check that you opened the whole link, or ask for a new one."
          : "That is no longer there.";
      case "forbidden": return "You don't have permission to do that in this space.";
      case "unauthenticated": return "This space no longer accepts you. You may have been removed.";
      case "rate_limited": return "Too many tries in a short time. Wait a minute and try again.";
      case "too_large": return "That is too large to send.";
      case "stale": return "The space changed while this was being sent. Try again.";
      case "unavailable": return "The server cannot do this right now. Try again in a moment.";
      default: return "The server could not do this. Try again in a moment.";
    }
  }
  if (error instanceof Unreachable) return "Can't reach the server. We'll keep trying.";
  if (error instanceof Removed) {
    if (error.how === "banned") return "You were removed from this space and can't come back with a new link.";
    if (error.how === "left") return "You left this space.";
    if (error.how === "unconfirmed") return "The server no longer lets you into this space, and says you were removed. Your space's own history does not show that yet.";
    return "You were removed from this space.";
  }
  if (error instanceof RoomKeyUnavailable) {
    return "You can't write here yet: no member has shared this room's key with you. It arrives as soon as one of them is online.";
  }
  if (error instanceof VerificationError) {
    return situation === "join"
      ? "This link is damaged or the space could not be checked. Ask for a new link."
      : "Something from the server did not check out, so it was not shown.";
  }
  if (error instanceof UsageError) return error.message;
  if (error instanceof ClientError) return error.message;
  if (error instanceof DOMException && error.name === "QuotaExceededError") {
    return "This browser has no room left to keep your keys.";
  }
  return "Something went wrong. Try again.";
}
