/** Home (`/`): the spaces kept in this browser, as cards. */
import type { JSX } from "preact";
import { useEffect } from "preact/hooks";
import { useEnv } from "../app.tsx";
import { useStore } from "../state.ts";
import { Link, Private } from "../components.tsx";

export function HomeScreen(): JSX.Element {
  const { store, intents } = useEnv();
  const spaces = useStore(store, (s) => s.spaces);
  // By name (the vault lists memberships by their random slot ids: an order that means nothing).
  const cards = [...spaces].sort((a, b) => a.name.localeCompare(b.name) || a.slot.localeCompare(b.slot));
  const slots = spaces.map((space) => space.slot).join(" ");
  useEffect(() => {
    // Connect every space, so its card shows what is unread.
    for (const slot of slots.split(" ")) if (slot !== "") intents.openSpace(slot);
  }, [slots]);
  return (
    <main class="page home">
      <header class="page-header">
        <h1>Your spaces</h1>
        <Private />
      </header>
      {spaces.length === 0 ? (
        <div class="card empty">
          <h2>No spaces yet</h2>
          <p>A space is a private place for a group: chats, channels and calls that only its members can read.</p>
          <p><strong>Open an invitation link to join a space.</strong> Someone in the space can send you one.</p>
        </div>
      ) : (
        <ul class="space-cards" role="list">
          {cards.map((space) => (
            <li key={space.slot}>
              <Link href={`/space/${space.slot}`} class="space-card">
                <span class="space-card-name"><bdi>{space.name || "Unnamed space"}</bdi></span>
                {space.removed !== null ? (
                  <span class="muted small">{space.removed === "left" ? "You left" : space.removed === "unconfirmed" ? "You can't get in anymore" : "You were removed"}</span>
                ) : space.unread > 0 ? (
                  <span class="badge" aria-label={`${space.unread} unread`}>{space.unread > 99 ? "99+" : space.unread}</span>
                ) : null}
              </Link>
            </li>
          ))}
        </ul>
      )}
      <p class="muted small home-note">Each space has its own identity: no one in one space can tell who you are in another.</p>
    </main>
  );
}
