// Shared by the browser tests: the server under test, a static server for the
// test pages, a tone WAV for Chromium's fake microphone, and browser launchers
// that keep every request on loopback.
import { createServer } from "node:http";
import { mkdtempSync, readFileSync, writeFileSync, existsSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, extname, normalize } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = dirname(dirname(fileURLToPath(import.meta.url))); // tests/browser
export const REPO = dirname(dirname(ROOT)); // the checkout
export const ARTIFACTS = process.env.ARTIFACTS_DIR || join(REPO, "artifacts");
// The echo bot returns the camera; set EXPECT_VIDEO=0 to skip the video checks.
export const EXPECT_VIDEO = process.env.EXPECT_VIDEO !== "0";
// The echo bot asks for renegotiation on client-message t="renegotiate"; set 0 to skip.
export const EXPECT_RENEGOTIATE = process.env.EXPECT_RENEGOTIATE !== "0";
export const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
export const FIREFOX = process.env.FIREFOX_BIN || "/usr/bin/firefox-esr";
/** The tone on Chromium's fake microphone. */
export const TONE_HZ = 660;

/** The server under test (run.sh starts it and exports SMALLWEBRTC_URL). */
export function serverUrl() {
  const url = process.env.SMALLWEBRTC_URL;
  if (!url) throw new Error("SMALLWEBRTC_URL is not set: run the tests with tests/browser/run.sh");
  return url.replace(/\/$/, "");
}

/** Prints one line of a test's measurements, easy to grep from run.sh's output. */
export function report(name, data) {
  console.log(`# ${name}: ${JSON.stringify(data)}`);
}

export function artifactPath(name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  return join(ARTIFACTS, name);
}

const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".map": "application/json" };

/**
 * Serves pages/ and dist/ on a loopback port of its own, so the test pages
 * talk to the server cross-origin (CORS), like a client app on its own dev
 * server. Returns {url, close}.
 */
export async function startPageServer() {
  const server = createServer((req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname));
    const file = path.startsWith("/dist/") ? join(ROOT, path) : join(ROOT, "pages", path);
    if (!file.startsWith(ROOT) || !existsSync(file)) {
      res.writeHead(404).end("not found");
      return;
    }
    res.writeHead(200, { "content-type": TYPES[extname(file)] || "application/octet-stream", "cache-control": "no-store" });
    res.end(readFileSync(file));
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((r) => server.close(r)) };
}

/** A mono 16-bit 48 kHz WAV of a sine at `hz` (Chromium loops it). */
export function writeToneWav(path, hz = TONE_HZ, seconds = 2, amplitude = 0.4) {
  const rate = 48000;
  const n = rate * seconds;
  const buf = Buffer.alloc(44 + n * 2);
  buf.write("RIFF", 0);
  buf.writeUInt32LE(36 + n * 2, 4);
  buf.write("WAVE", 8);
  buf.write("fmt ", 12);
  buf.writeUInt32LE(16, 16);
  buf.writeUInt16LE(1, 20); // PCM
  buf.writeUInt16LE(1, 22); // mono
  buf.writeUInt32LE(rate, 24);
  buf.writeUInt32LE(rate * 2, 28);
  buf.writeUInt16LE(2, 32);
  buf.writeUInt16LE(16, 34);
  buf.write("data", 36);
  buf.writeUInt32LE(n * 2, 40);
  // A whole number of cycles in the file, so the loop has no click.
  const f = Math.round(hz * seconds) / seconds;
  for (let i = 0; i < n; i++) buf.writeInt16LE(Math.round(amplitude * 32767 * Math.sin((2 * Math.PI * f * i) / rate)), 44 + i * 2);
  writeFileSync(path, buf);
  return path;
}

function isLoopback(url) {
  let u;
  try {
    u = new URL(url);
  } catch {
    return false;
  }
  if (u.protocol === "data:" || u.protocol === "blob:" || u.protocol === "about:") return true;
  return ["127.0.0.1", "localhost", "[::1]"].includes(u.hostname) || /^127\./.test(u.hostname);
}

/**
 * Headless Chromium (Debian's) driven by playwright-core, with fake media
 * devices and a tone on the fake microphone. Any request to a non-loopback
 * host is aborted and recorded in `blocked`.
 */
export async function launchChromium({ viewport = { width: 1280, height: 900 }, tone = TONE_HZ } = {}) {
  const { chromium } = await import("playwright-core");
  const dir = mkdtempSync(join(tmpdir(), "swrtc-chromium-"));
  const wav = writeToneWav(join(dir, "tone.wav"), tone);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--allow-loopback-in-peer-connection",
      "--disable-features=WebRtcHideLocalIpsWithMdns",
      "--use-fake-ui-for-media-stream",
      "--use-fake-device-for-media-stream",
      `--use-file-for-fake-audio-capture=${wav}`,
      "--autoplay-policy=no-user-gesture-required",
      "--auto-accept-this-tab-capture",
      "--auto-select-desktop-capture-source=Entire screen",
    ],
  });
  const context = await browser.newContext({ viewport, permissions: ["microphone", "camera"] });
  const blocked = [];
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (isLoopback(url)) return route.continue();
    blocked.push(url);
    return route.abort("blockedbyclient");
  });
  const page = await context.newPage();
  const log = [];
  page.on("console", (m) => log.push(`[${m.type()}] ${m.text()}`));
  page.on("pageerror", (e) => log.push(`[pageerror] ${e.message}`));
  return {
    browser,
    context,
    page,
    blocked,
    log,
    version: browser.version(),
    async close() {
      await browser.close().catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Firefox prefs: fake media, loopback ICE, and every background service quiet. */
export const FIREFOX_PREFS = {
  // Required for WebRTC here (see shared/docs/browser-testing.md).
  "media.navigator.streams.fake": true,
  "media.navigator.permission.disabled": true,
  "media.navigator.permission.fake": true,
  "media.peerconnection.ice.loopback": true,
  "media.autoplay.default": 0,
  "media.autoplay.block-webaudio": false,
  // Quiet: nothing but the test page may make a request.
  "app.update.enabled": false,
  "app.update.auto": false,
  "app.normandy.enabled": false,
  "app.normandy.api_url": "",
  "app.shield.optoutstudies.enabled": false,
  "browser.safebrowsing.malware.enabled": false,
  "browser.safebrowsing.phishing.enabled": false,
  "browser.safebrowsing.downloads.enabled": false,
  "browser.safebrowsing.blockedURIs.enabled": false,
  "browser.safebrowsing.provider.mozilla.updateURL": "",
  "browser.safebrowsing.provider.google4.updateURL": "",
  "browser.region.network.url": "",
  "browser.region.update.enabled": false,
  "browser.search.geoip.url": "",
  "browser.search.update": false,
  "browser.newtabpage.enabled": false,
  "browser.startup.homepage_override.mstone": "ignore",
  "browser.aboutHomeSnippets.updateUrl": "",
  "browser.ping-centre.telemetry": false,
  "datareporting.healthreport.uploadEnabled": false,
  "datareporting.policy.dataSubmissionEnabled": false,
  "toolkit.telemetry.enabled": false,
  "toolkit.telemetry.unified": false,
  "toolkit.telemetry.server": "http://127.0.0.1:1",
  "network.captive-portal-service.enabled": false,
  "network.connectivity-service.enabled": false,
  "network.dns.disablePrefetch": true,
  "network.prefetch-next": false,
  "network.trr.mode": 5,
  "services.settings.server": "http://127.0.0.1:1",
  "extensions.update.enabled": false,
  "extensions.getAddons.cache.enabled": false,
  "extensions.blocklist.enabled": false,
  "geo.provider.network.url": "",
  "identity.fxaccounts.enabled": false,
  "messaging-system.rsexperimentloader.enabled": false,
  "dom.push.connection.enabled": false,
  "media.gmp-manager.url": "http://127.0.0.1:1",
  "media.gmp-gmpopenh264.autoupdate": false,
  "media.gmp-widevinecdm.enabled": false,
  "security.OCSP.enabled": 0,
  "security.remote_settings.crlite_filters.enabled": false,
  "browser.contentblocking.report.lockwise.enabled": false,
};

/**
 * Headless Firefox ESR (Debian's) driven by puppeteer-core over WebDriver BiDi.
 * Page requests to non-loopback hosts are aborted and recorded in `blocked`.
 */
export async function launchFirefox() {
  const { default: puppeteer } = await import("puppeteer-core");
  const browser = await puppeteer.launch({
    browser: "firefox",
    executablePath: FIREFOX,
    headless: true,
    protocol: "webDriverBiDi",
    extraPrefsFirefox: FIREFOX_PREFS,
  });
  const page = await browser.newPage();
  const blocked = [];
  const log = [];
  page.on("console", (m) => log.push(`[${m.type()}] ${m.text()}`));
  page.on("pageerror", (e) => log.push(`[pageerror] ${e.message}`));
  let intercepting = false;
  try {
    await page.setRequestInterception(true);
    intercepting = true;
    page.on("request", (req) => {
      if (req.isInterceptResolutionHandled()) return;
      if (isLoopback(req.url())) req.continue();
      else {
        blocked.push(req.url());
        req.abort();
      }
    });
  } catch (e) {
    log.push(`[harness] request interception unavailable: ${e.message}`);
  }
  return {
    browser,
    page,
    blocked,
    log,
    intercepting,
    version: await browser.version(),
    async close() {
      await browser.close().catch(() => {});
    },
  };
}
