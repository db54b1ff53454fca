/** The app shell: picks the screen of the current route. */
import { createContext, type JSX } from "preact";
import { useContext, useEffect, useState } from "preact/hooks";
import { currentRoute, onRoute, startRouter, type Route } from "./router.ts";
import type { Intents, Store } from "./state.ts";
import { useStore } from "./state.ts";
import { JoinScreen } from "./screens/join.tsx";
import { HomeScreen } from "./screens/home.tsx";
import { SpaceScreen } from "./screens/space.tsx";
import { Link } from "./components.tsx";
import { UnlockScreen } from "./screens/unlock.tsx";

export interface AppEnv {
  readonly store: Store;
  readonly intents: Intents;
}

const Env = createContext<AppEnv | null>(null);

export function useEnv(): AppEnv {
  const env = useContext(Env);
  if (env === null) throw new Error("the app's environment is missing");
  return env;
}

const TITLES: Record<Route["name"], string> = {
  home: "Your spaces", join: "Join a space", space: "Space", room: "Room", members: "Members",
  invite: "Invite people", settings: "Settings", missing: "Not found",
};

export function App({ env }: { env: AppEnv }): JSX.Element {
  const [route, setRoute] = useState<Route>(currentRoute);
  useEffect(() => {
    startRouter();
    return onRoute(setRoute);
  }, []);
  useEffect(() => {
    document.title = `${TITLES[route.name]} · Salon`;
  }, [route]);
  return (
    <Env.Provider value={env}>
      <Screen route={route} />
    </Env.Provider>
  );
}

function Screen({ route }: { route: Route }): JSX.Element {
  const { store } = useEnv();
  const { ready, locked, startError } = useStore(store, (s) => s);
  if (route.name === "join") return <JoinScreen inviteId={route.inviteId} />;
  if (startError !== null) return <Message title="Salon can't start here" text={startError} />;
  if (locked) return <UnlockScreen />;
  if (!ready) return <Message title="Opening Salon…" text="Reading your spaces from this browser." busy />;
  switch (route.name) {
    case "home": return <HomeScreen />;
    case "missing": return <Message title="There is nothing here" text="This address does not lead to a screen of Salon." home />;
    default: return <SpaceScreen route={route} />;
  }
}

export function Message(props: { title: string; text: string; busy?: boolean; home?: boolean }): JSX.Element {
  return (
    <main class="centered" aria-busy={props.busy}>
      <div class="card narrow">
        <h1>{props.title}</h1>
        <p class="muted">{props.text}</p>
        {props.home ? <p><Link href="/" class="button button-primary">Go to your spaces</Link></p> : null}
      </div>
    </main>
  );
}
