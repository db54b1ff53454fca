// Runs the media test page's scenarios in Firefox ESR (puppeteer-core over WebDriver BiDi,
// fake camera and microphone) and prints one JSON line: the outcome of each scenario.
// Usage: node test/browser/firefox_media.mjs URL SCENARIOS_JSON [FIREFOX]
import puppeteer from "puppeteer-core";

const [url, scenariosJson, firefox = "/usr/bin/firefox-esr"] = process.argv.slice(2);
if (url === undefined || scenariosJson === undefined) {
  console.error("usage: node test/browser/firefox_media.mjs URL SCENARIOS_JSON [FIREFOX]");
  process.exit(2);
}
const browser = await puppeteer.launch({
  browser: "firefox",
  executablePath: firefox,
  headless: true,
  protocol: "webDriverBiDi",
  extraPrefsFirefox: {
    "media.navigator.streams.fake": true,
    "media.navigator.permission.disabled": true,
    "media.autoplay.default": 0,
    "media.autoplay.block-webaudio": false,
    "media.autoplay.blocking_policy": 0,
    "media.autoplay.enabled.user-gestures-needed": false,
  },
});
try {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url);
  await page.waitForFunction(() => window.mediaTest?.ready === true, { timeout: 20000 });
  const results = [];
  for (const scenario of JSON.parse(scenariosJson)) {
    results.push(await page.evaluate((s) => window.mediaTest.loopback(s), scenario));
  }
  const ua = await browser.version();
  console.log(JSON.stringify({ browser: ua, errors, results }));
} finally {
  await browser.close();
}
