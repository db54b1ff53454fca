/**
 * Routes of the app, on the History API: every screen has its own address, the back button
 * works and a reload lands on the same screen. The invite secret (the fragment of a join link)
 * is taken out of the address bar before anything renders: see `takeInviteSecret`.
 */
export type Route =
  | { readonly name: "home" }
  | { readonly name: "join"; readonly inviteId: string }
  | { readonly name: "space"; readonly slot: string }
  | { readonly name: "room"; readonly slot: string; readonly roomId: string }
  | { readonly name: "members"; readonly slot: string }
  | { readonly name: "invite"; readonly slot: string }
  | { readonly name: "settings"; readonly slot: string }
  | { readonly name: "missing"; readonly path: string };

const SEGMENT = /^[A-Za-z0-9_-]{1,64}$/;

/** The route of a path (no query, no fragment). Unknown paths are "missing", never thrown. */
export function parseRoute(path: string): Route {
  const parts = path.split("/").filter((part) => part !== "");
  const ok = parts.every((part) => SEGMENT.test(part));
  if (parts.length === 0) return { name: "home" };
  if (!ok) return { name: "missing", path };
  const [first, slot, third, roomId] = parts;
  if (first === "join" && parts.length === 2 && slot !== undefined) return { name: "join", inviteId: slot };
  if (first !== "space" || slot === undefined) return { name: "missing", path };
  if (parts.length === 2) return { name: "space", slot };
  if (parts.length === 3 && (third === "members" || third === "invite" || third === "settings")) {
    return { name: third, slot };
  }
  if (parts.length === 4 && third === "room" && roomId !== undefined) return { name: "room", slot, roomId };
  return { name: "missing", path };
}

export function routePath(route: Route): string {
  switch (route.name) {
    case "home": return "/";
    case "join": return `/join/${route.inviteId}`;
    case "space": return `/space/${route.slot}`;
    case "room": return `/space/${route.slot}/room/${route.roomId}`;
    case "members":
    case "invite":
    case "settings": return `/space/${route.slot}/${route.name}`;
    case "missing": return route.path;
  }
}

type Listener = (route: Route) => void;
const listeners = new Set<Listener>();

export function currentRoute(): Route {
  return parseRoute(location.pathname);
}

export function navigate(path: string, options: { replace?: boolean } = {}): void {
  if (options.replace) history.replaceState(null, "", path);
  else if (path !== location.pathname) history.pushState(null, "", path);
  const route = currentRoute();
  for (const listener of listeners) listener(route);
  window.scrollTo(0, 0);
}

export function onRoute(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

let started = false;
export function startRouter(): void {
  if (started) return;
  started = true;
  window.addEventListener("popstate", () => {
    const route = currentRoute();
    for (const listener of listeners) listener(route);
  });
}

/**
 * The invite secret from a `/join/<id>#<secret>` address, removed from the address bar and
 * from this history entry at once (replaceState), so it is never shown, bookmarked, synced or
 * sent in a Referer. Returns "" when there is none (a reload after joining, a pasted id).
 */
export function takeInviteSecret(): string {
  const fragment = location.hash.startsWith("#") ? location.hash.slice(1) : "";
  if (fragment !== "" || location.href.includes("#")) {
    history.replaceState(history.state, "", location.pathname + location.search);
  }
  return fragment;
}
