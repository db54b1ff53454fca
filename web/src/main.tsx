// PLACEHOLDER entry (helper "webserve"), replaced by helper "webui"'s main.tsx on merge.
import { selfCheck } from "./selfcheck.ts";

const root = document.getElementById("app");
if (root !== null) root.textContent = "Salon";
void selfCheck();
