// 5. The official Pipecat web client in headless Firefox ESR, driven by
//    puppeteer-core over WebDriver BiDi: connects, exchanges audio, and its
//    empty-string end-of-candidates PATCHes are accepted.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { launchFirefox, startPageServer, serverUrl, report } from "../lib/harness.mjs";

describe("official client in Firefox", { timeout: 90_000 }, () => {
  let b, pages, ok;
  const server = serverUrl();

  before(async () => {
    pages = await startPageServer();
    b = await launchFirefox();
    await b.page.goto(`${pages.url}/official.html`);
    await b.page.waitForFunction(() => !!window.T);
  });

  after(async () => {
    if (b) {
      if (process.env.VERBOSE || !ok) {
        const state = await b.page.evaluate(() => ({
          events: T.events.map((e) => `${e.t} ${e.name}`),
          fetches: T.record.fetches.map((f) => `${f.t} ${f.method} ${f.url} -> ${f.status} ${f.method === "PATCH" ? f.body : ""}`),
          pc: T.currentPc()?.__events.map((e) => `${e.t} ${e.ev} ${e.value}`),
        })).catch((e) => String(e));
        console.log(JSON.stringify({ log: b.log.slice(-30), state }, null, 1));
      }
      assert.deepEqual(b.blocked, [], "the page asked for non-loopback URLs");
      await b.page.evaluate(() => T.client?.disconnect()).catch(() => {});
      await b.close();
    }
    await pages?.close();
  });

  it("connect() resolves with bot-ready", async () => {
    // No waiting for ICE gathering: candidates, and Firefox's empty
    // end-of-candidates, arrive by PATCH.
    const r = await b.page.evaluate((server) => T.connect({ server, waitForICEGathering: false }), server);
    report("official-firefox connect", { firefox: b.version, interception: b.intercepting, ...r.ms, botVersion: r.botReady.version });
    assert.equal(r.state, "ready");
    ok = true;
  });

  it("sends an empty end-of-candidates PATCH, and the server accepts it", async () => {
    const patches = await b.page.evaluate(async () => {
      const empty = (f) => f.method === "PATCH" && f.status && JSON.parse(f.body).candidates.some((c) => c.candidate === "");
      await T.waitFor(() => T.record.fetches.some(empty), 5000, "a PATCH with an empty candidate");
      return T.record.fetches.filter((f) => f.method === "PATCH").map((f) => ({ status: f.status, response: f.response, body: JSON.parse(f.body) }));
    });
    const all = patches.flatMap((p) => p.body.candidates);
    const ends = all.filter((c) => c.candidate === "");
    report("official-firefox trickle", { patches: patches.length, candidates: all.length, endOfCandidates: ends.map((c) => c.sdp_mid) });
    assert.ok(ends.length >= 1);
    for (const p of patches) {
      assert.equal(p.status, 200, `PATCH ${JSON.stringify(p.body)} -> ${p.status} ${p.response}`);
      assert.deepEqual(JSON.parse(p.response), { status: "success" });
    }
  });

  it("answers an RTVI client request and echoes an app message", async () => {
    const r = await b.page.evaluate(async () => {
      const d = await T.client.sendClientRequest("echo-test", { firefox: true }, 5000);
      const nonce = Math.random().toString(36).slice(2);
      const since = T.now();
      T.transport.sendMessage({ type: "app-test", nonce });
      const echo = await T.waitFor(() => T.received(since).find((m) => m.nonce === nonce), 5000, "the echoed app message");
      return { d, echo };
    });
    assert.deepEqual(r.d, { firefox: true });
    assert.equal(r.echo.type, "app-test");
  });

  it("exchanges audio (Firefox's fake microphone tone comes back)", { timeout: 20_000 }, async () => {
    const r = await b.page.evaluate(async () => {
      const track = T.remoteTrack("0");
      await T.waitFor(() => !track.muted, 5000, "the bot's audio to start");
      const local = await T.analyseAudio(T.localAudioTrack(), 1000);
      const a = await T.analyseAudio(track, 2000);
      const stats = await T.rtpStats(T.currentPc());
      return { local, a, stats };
    });
    const out = r.stats.outbound.find((s) => s.kind === "audio");
    const inb = r.stats.inbound.find((s) => s.kind === "audio");
    report("official-firefox audio", { localPeakHz: r.local.peakHz, ...r.a, sent: out?.packetsSent, received: inb?.packetsReceived, codec: inb?.codec });
    assert.ok(out.packetsSent > 10, "microphone audio is sent");
    assert.ok(inb.packetsReceived > 10, "bot audio is received");
    assert.ok(r.a.rmsMax > 0.01, `remote audio is silent: rms ${r.a.rmsMax}`);
    assert.ok(r.local.peakHz && Math.abs(r.a.peakHz - r.local.peakHz) < 3 * r.a.binHz, `remote audio peaks at ${r.a.peakHz} Hz, the microphone at ${r.local.peakHz} Hz`);
  });
});
