// Test page driver for the official Pipecat web client
// (@pipecat-ai/client-js + @pipecat-ai/small-webrtc-transport). Everything that
// talks to the server (HTTP signalling, SDP, trickle, data channel, RTVI) is
// the official code; the only thing of ours is the media manager, built on
// getUserMedia, because the default one (daily-js) loads code from the internet.
import * as probe from "./probe.js";
import { PipecatClient } from "@pipecat-ai/client-js";
import { SmallWebRTCTransport } from "@pipecat-ai/small-webrtc-transport";

/** A MediaManager (the transport-lib interface) on navigator.mediaDevices. */
class GumMediaManager {
  constructor() {
    this._callbacks = {};
    this._micEnabled = true;
    this._camEnabled = false;
    // Like DailyMediaManager: the transport then offers the third (screen)
    // transceiver, as the prebuilt UI does.
    this._supportsScreenShare = true;
    this._stream = null;
  }
  setUserAudioCallback(cb) {
    this._userAudioCallback = cb;
  }
  setClientOptions(options, override = false) {
    if (this._options && !override) return;
    this._options = options;
    this._callbacks = options.callbacks ?? {};
    this._micEnabled = options.enableMic ?? true;
    this._camEnabled = options.enableCam ?? false;
  }
  async initialize() {
    if (this._stream) return;
    this._stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: this._camEnabled });
    const devices = await navigator.mediaDevices.enumerateDevices();
    const audio = this._stream.getAudioTracks()[0];
    const video = this._stream.getVideoTracks()[0];
    const dev = (track, kind) =>
      devices.find((d) => d.kind === kind && d.deviceId === track?.getSettings().deviceId) ??
      devices.find((d) => d.kind === kind);
    this._mic = audio ? dev(audio, "audioinput") : undefined;
    this._cam = video ? dev(video, "videoinput") : undefined;
    if (this._mic) this._callbacks.onMicUpdated?.(this._mic);
    if (this._cam) this._callbacks.onCamUpdated?.(this._cam);
    this._apply();
  }
  async connect() {
    await this.initialize();
  }
  async disconnect() {
    this._stream?.getTracks().forEach((t) => t.stop());
    this._stream = null;
  }
  _apply() {
    this._stream?.getAudioTracks().forEach((t) => (t.enabled = this._micEnabled));
    this._stream?.getVideoTracks().forEach((t) => (t.enabled = this._camEnabled));
  }
  async userStartedSpeaking() {}
  bufferBotAudio() {
    return undefined;
  }
  async getAllMics() {
    return (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "audioinput");
  }
  async getAllCams() {
    return (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "videoinput");
  }
  async getAllSpeakers() {
    return (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "audiooutput");
  }
  updateMic() {}
  updateCam() {}
  updateSpeaker() {}
  get selectedMic() {
    return this._mic ?? {};
  }
  get selectedCam() {
    return this._cam ?? {};
  }
  get selectedSpeaker() {
    return {};
  }
  enableMic(enable) {
    this._micEnabled = enable;
    this._apply();
  }
  enableCam(enable) {
    this._camEnabled = enable;
    this._apply();
  }
  enableScreenShare() {}
  get isCamEnabled() {
    return this._camEnabled;
  }
  get isMicEnabled() {
    return this._micEnabled;
  }
  get isSharingScreen() {
    return false;
  }
  get supportsScreenShare() {
    return this._supportsScreenShare;
  }
  tracks() {
    return {
      local: {
        audio: this._stream?.getAudioTracks()[0],
        video: this._stream?.getVideoTracks()[0],
      },
    };
  }
}

const T = {
  ...probe,
  client: null,
  transport: null,
  events: [],

  /** Connects the official client through POST {server}/start; resolves on bot-ready. */
  async connect({ server, enableCam = false, waitForICEGathering = true }) {
    const ev = (name, data) => T.events.push({ name, t: probe.now(), data });
    T.transport = new SmallWebRTCTransport({ mediaManager: new GumMediaManager(), waitForICEGathering });
    T.client = new PipecatClient({
      transport: T.transport,
      enableMic: true,
      enableCam,
      callbacks: {
        onTransportStateChanged: (s) => ev("transport-state", s),
        onConnected: () => ev("connected"),
        onDisconnected: () => ev("disconnected"),
        onBotConnected: (p) => ev("bot-connected", p?.id),
        onBotReady: (d) => ev("bot-ready", d),
        onBotDisconnected: () => ev("bot-disconnected"),
        onTrackStarted: (track, p) => {
          ev("track-started", { kind: track.kind, local: !!p?.local });
          // Play the bot's audio as an app would (Chromium's jitter buffer
          // only drains while the track is played).
          if (track.kind === "audio" && !p?.local) probe.play(track);
        },
        onError: (m) => ev("error", m),
        onServerMessage: (m) => ev("server-message", m),
      },
    });
    const start = probe.now();
    const botReady = await T.client.startBotAndConnect({
      endpoint: `${server}/start`,
      requestData: { createDailyRoom: false, enableDefaultIceServers: false, transport: "webrtc" },
    });
    const t = (name) => T.events.find((e) => e.name === name)?.t;
    const offer = probe.record.fetches.find((f) => f.method === "POST" && f.url.includes("/api/offer"));
    return {
      botReady,
      ms: {
        offerSent: offer?.t - start,
        answerMs: offer?.ms,
        connected: t("connected") - start,
        botReady: probe.now() - start,
      },
      state: T.client.state,
    };
  },

  remoteTrack(mid) {
    const tr = probe.currentPc()?.getTransceivers().find((x) => x.mid === mid);
    return tr?.receiver.track;
  },
  localAudioTrack() {
    return T.transport.tracks().local.audio;
  },
};
window.T = T;
