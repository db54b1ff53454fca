/**
 * The web app's entry. Order matters: the invite secret is taken out of the address bar
 * before anything else runs or renders, then the store and the client core start.
 */
import { render } from "preact";
import "./ui/styles.css";
import { currentRoute, takeInviteSecret } from "./ui/router.ts";
import { holdInviteSecret } from "./ui/screens/join.tsx";
import { App } from "./ui/app.tsx";
import { Store } from "./ui/state.ts";
import { startCore } from "./ui/core.ts";

const secret = takeInviteSecret();
const route = currentRoute();
if (route.name === "join") holdInviteSecret(route.inviteId, secret);
// A join link opened in a tab already showing its address (only the part after # differs) does
// not load the page again: load it, so the secret is taken and used exactly as on a first load.
addEventListener("hashchange", () => {
  if (location.hash.length > 1 && currentRoute().name === "join") location.reload();
});

const store = new Store();
const intents = startCore(store);
const root = document.getElementById("app");
if (root !== null) {
  root.textContent = "";
  render(<App env={{ store, intents }} />, root);
}
