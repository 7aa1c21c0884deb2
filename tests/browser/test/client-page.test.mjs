// 2. The server's own /client/ page in headless Chromium, used like a person
//    would: open it, click Connect, see it connected, hear the bot (the
//    microphone tone echoed back), send a message; a screenshot is saved.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { launchChromium, serverUrl, report, artifactPath, REPO, EXPECT_VIDEO, EXPECT_RENEGOTIATE, TONE_HZ } from "../lib/harness.mjs";

describe("the /client/ page in Chromium", { timeout: 90_000 }, () => {
  let b, ok;
  const server = serverUrl();

  before(async () => {
    b = await launchChromium({ viewport: { width: 1280, height: 900 } });
    // Watch what the page sends on its data channel (the page itself is untouched).
    await b.page.addInitScript(() => {
      window.__sent = [];
      const send = RTCDataChannel.prototype.send;
      RTCDataChannel.prototype.send = function (data) {
        window.__sent.push({ label: this.label, data: String(data), t: Date.now() });
        return send.call(this, data);
      };
    });
    if (process.env.CLIENT_PAGE_FROM_SOURCE === "1") {
      // For working on the page without rebuilding the server: serve
      // src/http/client_page.html in place of the embedded copy.
      await b.page.route(`${server}/client/`, (route) =>
        route.fulfill({ status: 200, contentType: "text/html; charset=utf-8", body: readFileSync(join(REPO, "src/http/client_page.html")) }),
      );
    }
  });

  after(async () => {
    if (b) {
      if (process.env.VERBOSE || !ok) console.log(b.log.slice(-30).join("\n"));
      assert.deepEqual(b.blocked, [], "the page asked for non-loopback URLs");
      await b.close();
    }
  });

  it("is served at /client/ with no external loads", async () => {
    const requests = [];
    b.page.on("request", (r) => requests.push(r.url()));
    // "/" redirects to /client/ (a routed page is only seen when asked for directly).
    const response = await b.page.goto(process.env.CLIENT_PAGE_FROM_SOURCE === "1" ? `${server}/client/` : `${server}/`);
    assert.equal(new URL(b.page.url()).pathname, "/client/");
    assert.equal(response.status(), 200);
    assert.match(response.headers()["content-type"], /text\/html/);
    await b.page.getByRole("button", { name: "Connect" }).waitFor();
    assert.deepEqual(requests.filter((u) => !u.startsWith(server)), []);
  });

  it("connects when Connect is clicked, and shows it", async () => {
    const clicked = Date.now();
    await b.page.getByRole("button", { name: "Connect" }).click();
    await b.page.locator('#status[data-state="ready"]').waitFor({ timeout: 10_000 });
    const ms = Date.now() - clicked;
    assert.match(await b.page.locator("#status").innerText(), /Connected/);
    await b.page.getByRole("button", { name: "Disconnect" }).waitFor();
    assert.equal(await b.page.locator("#pc-state").innerText(), "connected");
    assert.equal(await b.page.locator("#dc-state").innerText(), "open");
    assert.match(await b.page.locator("#bot-info").innerText(), /RTVI 2\./);
    assert.match(await b.page.locator("#log").innerText(), /bot-ready/);
    report("client-page connect", { clickToBotReadyMs: ms });
    ok = true;
  });

  it("speaks the protocol on its data channel: trackStatus, client-ready, pings", async () => {
    await b.page.waitForFunction(() => window.__sent.filter((m) => m.data.startsWith("ping: ")).length >= 1, null, { timeout: 3000 });
    const sent = await b.page.evaluate(() => window.__sent);
    assert.ok(sent.every((m) => m.label === "chat"));
    const json = sent.filter((m) => !m.data.startsWith("ping")).map((m) => JSON.parse(m.data));
    const status = json.filter((m) => m.type === "signalling").map((m) => [m.message.type, m.message.receiver_index, m.message.enabled]);
    assert.deepEqual(status.slice(0, 3), [["trackStatus", 0, true], ["trackStatus", 1, false], ["trackStatus", 2, false]]);
    const ready = json.find((m) => m.type === "client-ready");
    assert.equal(ready.label, "rtvi-ai");
    assert.match(ready.data.version, /^2\./);
    assert.match(sent.find((m) => m.data.startsWith("ping")).data, /^ping: \d{13}$/);
  });

  it("plays the bot's audio (the echoed microphone tone)", async () => {
    const r = await b.page.evaluate(async () => {
      const el = document.getElementById("bot-audio");
      const track = el.srcObject.getAudioTracks()[0];
      const start = performance.now();
      while (track.muted && performance.now() - start < 5000) await new Promise((r) => setTimeout(r, 20));
      // Measure independently of the page's own meter.
      const ac = new AudioContext();
      await ac.resume();
      const src = ac.createMediaStreamSource(new MediaStream([track]));
      const an = ac.createAnalyser();
      an.fftSize = 8192;
      an.smoothingTimeConstant = 0;
      src.connect(an);
      await new Promise((r) => setTimeout(r, 1500));
      const time = new Float32Array(an.fftSize);
      an.getFloatTimeDomainData(time);
      let sum = 0;
      for (const x of time) sum += x * x;
      const freq = new Float32Array(an.frequencyBinCount);
      an.getFloatFrequencyData(freq);
      let best = 1;
      for (let i = 2; i < freq.length; i++) if (freq[i] > freq[best]) best = i;
      return {
        paused: el.paused,
        rms: Math.sqrt(sum / time.length),
        peakHz: (best * ac.sampleRate) / an.fftSize,
        binHz: ac.sampleRate / an.fftSize,
        meter: Number(document.getElementById("bot-level").dataset.level),
      };
    });
    report("client-page audio", r);
    assert.equal(r.paused, false, "the bot's <audio> element is playing");
    // The page asks for echo cancellation and gain control: Chromium's AGC
    // settles the tone at an RMS of about 0.03 (silence is below 0.001).
    assert.ok(r.rms > 0.01, `the bot's audio is silent (rms ${r.rms})`);
    assert.ok(Math.abs(r.peakHz - TONE_HZ) < 2 * r.binHz, `the bot's audio peaks at ${r.peakHz} Hz, not ${TONE_HZ} Hz`);
    assert.ok(r.meter > 0.005, `the page's bot audio meter shows ${r.meter}`);
  });

  it("shows live stats: round-trip time, codec, bitrate, loss", async () => {
    await b.page.waitForFunction(() => /kbps/.test(document.querySelector('#stats tr[data-stream="Bot audio"]')?.innerText || ""), null, { timeout: 5000 });
    const row = (name) => b.page.locator(`#stats tr[data-stream="${name}"] td`).allInnerTexts();
    const botAudio = await row("Bot audio");
    const mic = await row("Microphone");
    const rtt = await b.page.locator("#rtt").innerText();
    report("client-page stats", { rtt, botAudio, mic });
    assert.match(rtt, /^\d+(\.\d+)? ms$/);
    assert.match(botAudio[1], /opus/i);
    assert.match(botAudio[2], /\d+ kbps/);
    assert.match(botAudio[3], /^\d+\.\d %/);
    assert.ok(parseFloat(botAudio[3]) < 5, `bot audio loss ${botAudio[3]}`);
    assert.match(mic[1], /opus/i);
    assert.match(mic[2], /\d+ kbps/);
  });

  it("sends a message and logs the reply", async () => {
    await b.page.getByRole("textbox", { name: "Message" }).fill("hello from the page");
    await b.page.getByRole("button", { name: "Send" }).click();
    await b.page.locator("#log li.in", { hasText: "server-response" }).filter({ hasText: "hello from the page" }).waitFor({ timeout: 5000 });
    await b.page.getByLabel("Send as").selectOption("raw");
    await b.page.getByRole("textbox", { name: "Message" }).fill('{"type":"note","text":"raw app message"}');
    await b.page.getByRole("button", { name: "Send" }).click();
    await b.page.locator("#log li.in", { hasText: '"raw app message"' }).waitFor({ timeout: 5000 });
  });

  const lastStatus = (index) =>
    b.page.evaluate((index) => {
      const m = window.__sent.map((m) => m.data).filter((d) => d.includes('"trackStatus"')).map((d) => JSON.parse(d).message).filter((m) => m.receiver_index === index);
      return m.at(-1)?.enabled;
    }, index);

  it("mutes and unmutes the microphone (trackStatus; the echo goes quiet and comes back)", async () => {
    const level = () => b.page.evaluate(() => Number(document.getElementById("bot-level").dataset.level));
    await b.page.getByRole("button", { name: "Microphone on" }).click();
    await b.page.getByRole("button", { name: "Microphone off" }).waitFor();
    assert.equal(await lastStatus(0), false);
    await b.page.waitForFunction(() => Number(document.getElementById("bot-level").dataset.level) < 0.003, null, { timeout: 5000 });
    await b.page.getByRole("button", { name: "Microphone off" }).click();
    await b.page.getByRole("button", { name: "Microphone on" }).waitFor();
    assert.equal(await lastStatus(0), true);
    await b.page.waitForFunction(() => Number(document.getElementById("bot-level").dataset.level) > 0.005, null, { timeout: 5000 });
    assert.ok((await level()) > 0.005);
  });

  it("shares the screen (trackStatus, sent on the third transceiver)", async (t) => {
    await b.page.getByRole("button", { name: "Share screen" }).click();
    try {
      await b.page.getByRole("button", { name: "Stop sharing" }).waitFor({ timeout: 5000 });
    } catch {
      t.skip("headless Chromium gave no screen to share");
      return;
    }
    assert.equal(await lastStatus(2), true);
    await b.page.waitForFunction(() => /kbps/.test(document.querySelector('#stats tr[data-stream="Screen"]')?.innerText || ""), null, { timeout: 5000 });
    await b.page.getByRole("button", { name: "Stop sharing" }).click();
    await b.page.getByRole("button", { name: "Share screen" }).waitFor();
    assert.equal(await lastStatus(2), false);
  });

  it("turns the camera on and off, sending trackStatus", async () => {
    await b.page.getByRole("button", { name: "Camera off" }).click();
    await b.page.getByRole("button", { name: "Camera on" }).waitFor();
    await b.page.waitForFunction(() => document.getElementById("local-video").videoWidth > 0, null, { timeout: 5000 });
    await b.page.waitForFunction(() => /kbps/.test(document.querySelector('#stats tr[data-stream="Camera"]')?.innerText || ""), null, { timeout: 5000 });
    assert.equal(await lastStatus(1), true);
    if (EXPECT_VIDEO) {
      await b.page.locator("#bot-tile.live").waitFor({ timeout: 10_000 });
      const v = await b.page.evaluate(() => {
        const el = document.getElementById("bot-video");
        return { w: el.videoWidth, h: el.videoHeight };
      });
      report("client-page bot video", v);
      assert.ok(v.w > 0 && v.h > 0);
    }
  });

  it("looks connected (screenshot)", async () => {
    await b.page.getByLabel("Send as").selectOption("client-message");
    await b.page.waitForTimeout(1200); // a fresh stats tick
    const file = artifactPath("client-page.png");
    await b.page.screenshot({ path: file, fullPage: true });
    console.log(`# screenshot: ${file}`);
    if (process.env.DOCS_SCREENSHOT === "1") {
      const docs = join(REPO, "docs", "client-page.png");
      mkdirSync(dirname(docs), { recursive: true });
      await b.page.screenshot({ path: docs, fullPage: true });
      console.log(`# screenshot for the README: ${docs}`);
    }
    await b.page.setViewportSize({ width: 390, height: 844 });
    const phone = artifactPath("client-page-phone.png");
    await b.page.screenshot({ path: phone, fullPage: true });
    console.log(`# screenshot (phone width): ${phone}`);
    await b.page.setViewportSize({ width: 1280, height: 900 });
  });

  it("renegotiates when the bot asks", async (t) => {
    await b.page.getByLabel("Send as").selectOption("raw");
    await b.page.getByRole("textbox", { name: "Message" }).fill('{"label":"rtvi-ai","type":"client-message","data":{"t":"renegotiate"}}');
    const offers = [];
    const onRequest = (r) => r.method() === "POST" && r.url().endsWith("/api/offer") && offers.push(JSON.parse(r.postData()));
    b.page.on("request", onRequest);
    const answered = b.page
      .waitForResponse((r) => r.request().method() === "POST" && r.url().endsWith("/api/offer"), { timeout: 8000 })
      .catch(() => null);
    await b.page.getByRole("button", { name: "Send" }).click();
    try {
      await b.page.locator("#log li", { hasText: "The bot asked to renegotiate" }).waitFor({ timeout: EXPECT_RENEGOTIATE ? 5000 : 3000 });
    } catch {
      b.page.off("request", onRequest);
      assert.ok(!EXPECT_RENEGOTIATE, "no renegotiate request came after the trigger");
      t.skip("skipped: trigger missing (the echo bot does not yet call ask_to_renegotiate() on client-message t=renegotiate)");
      return;
    }
    const answer = await answered;
    assert.ok(answer, "the re-offer got no answer");
    assert.equal(answer.status(), 200);
    b.page.off("request", onRequest);
    // Audio still flows on the renegotiated connection. Chromium's fake microphone beeps,
    // so the echo is loud only part of the time: wait for a loud moment, not a fixed time.
    await b.page.waitForFunction(() => Number(document.getElementById("bot-level").dataset.level) > 0.005, null, { timeout: 5000 });
    await b.page.waitForFunction(
      () => /[1-9]\d* kbps/.test(document.querySelector('#stats tr[data-stream="Bot audio"]')?.innerText || ""),
      null,
      { timeout: 5000 },
    );
    assert.equal(offers.length, 1);
    assert.equal(offers[0].restart_pc, false);
    assert.ok(offers[0].pc_id, "the re-offer names the pc_id");
    assert.equal(await b.page.locator("#status").getAttribute("data-state"), "ready");
    assert.equal(await b.page.locator("#pc-state").innerText(), "connected");
    await b.page.getByLabel("Send as").selectOption("client-message");
    await b.page.getByRole("textbox", { name: "Message" }).fill("after renegotiation");
    await b.page.getByRole("button", { name: "Send" }).click();
    await b.page.locator("#log li.in", { hasText: "server-response" }).filter({ hasText: "after renegotiation" }).waitFor({ timeout: 5000 });
  });

  it("turns the camera off again", async () => {
    await b.page.getByRole("button", { name: "Camera on" }).click();
    await b.page.getByRole("button", { name: "Camera off" }).waitFor();
    assert.equal(await lastStatus(1), false);
  });

  it("disconnects when Disconnect is clicked", async () => {
    await b.page.getByRole("button", { name: "Disconnect" }).click();
    await b.page.locator('#status[data-state="disconnected"]').waitFor({ timeout: 5000 });
    await b.page.getByRole("button", { name: "Connect" }).waitFor();
  });

  it("connects again without a reload", async () => {
    await b.page.getByRole("button", { name: "Connect" }).click();
    await b.page.locator('#status[data-state="ready"]').waitFor({ timeout: 10_000 });
    await b.page.waitForFunction(() => Number(document.getElementById("bot-level").dataset.level) > 0.005, null, { timeout: 5000 });
    await b.page.getByRole("button", { name: "Disconnect" }).click();
    await b.page.locator('#status[data-state="disconnected"]').waitFor({ timeout: 5000 });
  });
});
