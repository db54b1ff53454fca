// Drive Debian's firefox-esr (headless, WebDriver BiDi, puppeteer-core) for the Python browser
// tests (tests/browser_support.py: FirefoxPage). Playwright drives only its own Firefox build.
//
// Protocol: one JSON command per line on stdin, one JSON answer per line on stdout:
//   {"id": 1, "op": "goto", "url": "..."}              → {"id": 1, "ok": true, "value": ...}
//   ops: goto {url} · wait {selector, text?, timeout?} · fill {selector, value} · click {selector}
//        · evaluate {expression} (an expression; a Promise is awaited) · screenshot {path,
//        fullPage?} · viewport {width, height} · upload {selector, paths} (files into an
//        <input type=file>) · press {key} · log {} (console messages, page errors and CSP
//        violations so far) · url {} · close {}
//   a failure: {"id": 1, "ok": false, "error": "..."}
// The first line written is {"ready": true, "version": "<browser version>"}.
import puppeteer from "puppeteer-core";
import { createInterface } from "node:readline";

const executablePath = process.env.SALON_FIREFOX ?? "/usr/bin/firefox-esr";
const browser = await puppeteer.launch({
  browser: "firefox",
  executablePath,
  protocol: "webDriverBiDi",
  headless: true,
  extraPrefsFirefox: {
    "media.navigator.streams.fake": true, // fake camera and microphone
    "media.navigator.permission.disabled": true, // and no permission prompt
    "dom.webnotifications.enabled": false,
    // prefers-color-scheme for the page: 0 dark, 1 light (SALON_FIREFOX_THEME)
    "layout.css.prefers-color-scheme.content-override": process.env.SALON_FIREFOX_THEME === "dark" ? 0 : 1,
  },
});
const page = await browser.newPage();
const log = [];
page.on("console", (message) => log.push({ type: message.type(), text: message.text() }));
page.on("pageerror", (error) => log.push({ type: "pageerror", text: String(error) }));
// Before any page script: record CSP violations where the tests can read them.
await page.evaluateOnNewDocument(() => {
  window.__salonCspViolations = [];
  document.addEventListener("securitypolicyviolation", (event) => {
    window.__salonCspViolations.push(`${event.effectiveDirective} ${event.blockedURI}`);
  });
});

const write = (object) => process.stdout.write(`${JSON.stringify(object)}\n`);

async function run(command) {
  const timeout = command.timeout ?? 15000;
  switch (command.op) {
    case "goto":
      await page.goto(command.url, { waitUntil: "load", timeout });
      return null;
    case "wait":
      if (command.text === undefined) {
        await page.waitForSelector(command.selector, { timeout });
      } else {
        await page.waitForFunction(
          (selector, text) =>
            [...document.querySelectorAll(selector)].some((e) => (e.textContent ?? "").includes(text)),
          { timeout },
          command.selector,
          command.text,
        );
      }
      return null;
    case "fill":
      await page.locator(command.selector).setTimeout(timeout).fill(command.value);
      return null;
    case "click":
      await page.locator(command.selector).setTimeout(timeout).click();
      return null;
    case "upload": {
      const input = await page.waitForSelector(command.selector, { timeout });
      await input.uploadFile(...command.paths);
      return null;
    }
    case "press":
      await page.keyboard.press(command.key);
      return null;
    case "evaluate":
      return await page.evaluate(`(async () => (${command.expression}))()`);
    case "screenshot":
      await page.screenshot({ path: command.path, fullPage: command.fullPage ?? true });
      return null;
    case "viewport":
      await page.setViewport({ width: command.width, height: command.height });
      return null;
    case "log": {
      const csp = await page.evaluate(() => window.__salonCspViolations ?? []).catch(() => []);
      return { messages: log, csp };
    }
    case "url":
      return page.url();
    case "close":
      return null;
    default:
      throw new Error(`unknown op ${command.op}`);
  }
}

write({ ready: true, version: await browser.version() });
const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (line.trim() === "") continue;
  let command;
  try {
    command = JSON.parse(line);
  } catch {
    write({ id: null, ok: false, error: "not JSON" });
    continue;
  }
  try {
    write({ id: command.id, ok: true, value: (await run(command)) ?? null });
  } catch (error) {
    write({ id: command.id, ok: false, error: String(error?.message ?? error) });
  }
  if (command.op === "close") break;
}
// stdin closed or "close": end the browser, then exit (an open stdin would keep node alive).
await Promise.race([browser.close(), new Promise((resolve) => setTimeout(resolve, 5000))]);
process.exit(0);
