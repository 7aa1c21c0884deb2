//! A bot that waits for you to finish speaking, then plays back what you said:
//! the shape of a voice agent (listen, detect the end of the turn, answer,
//! stop when interrupted), with no cloud service in the loop.
//!
//! ```text
//! cargo run --example wait_for_silence
//! ```
//!
//! Then open <http://localhost:7860/client/>, press **Connect**, say a sentence
//! and stop. About 0.6 s after you stop you hear your sentence played back, once.
//! Start talking while it plays and it stops at once (barge-in). A cough or a
//! click shorter than 0.3 s is ignored. The page's log shows the RTVI
//! `user-started-speaking` / `user-stopped-speaking` messages as they happen.
//!
//! Turn-taking comes from [`Vad`], a small energy-based voice-activity
//! detector with a hangover, written here in full. In a real agent the
//! utterance would go to speech recognition and a language model, and the
//! answer to speech synthesis; the transport calls stay the same.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use smallwebrtc::bots::rtvi::{BotAbout, Capabilities};
use smallwebrtc::bots::{echo, BotArgs};
use smallwebrtc::server::{Server, ServerConfig};
use smallwebrtc::transport::{
    InputFrame, OutputAudioRawFrame, SmallWebRtcTransport, TransportEvent, TransportParams,
};

/// How [`Vad`] decides what is speech and when a turn is over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadConfig {
    /// Samples per second of the audio pushed in (mono).
    pub sample_rate: u32,
    /// A chunk louder than this (RMS, in dB below full scale) counts as speech.
    /// -40 dBFS sits well above a quiet room through a browser's noise
    /// suppression (about -60) and well below normal speech (-30 to -15).
    pub threshold_dbfs: f32,
    /// Speech must last this long before it counts as a turn: shorter sounds
    /// (a click, a cough) are dropped.
    pub min_speech: Duration,
    /// The turn ends after this much continuous silence (the hangover); a
    /// shorter pause (between words) is part of the turn.
    pub hangover: Duration,
    /// A turn is cut off at this length, so memory stays bounded whatever the
    /// microphone picks up.
    pub max_utterance: Duration,
}

impl Default for VadConfig {
    /// 16 kHz (the transport's input rate), -40 dBFS, 300 ms of speech, 600 ms
    /// of silence, 30 s at most.
    fn default() -> Self {
        VadConfig {
            sample_rate: 16_000,
            threshold_dbfs: -40.0,
            min_speech: Duration::from_millis(300),
            hangover: Duration::from_millis(600),
            max_utterance: Duration::from_secs(30),
        }
    }
}

/// What one turn of the user sounded like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Utterance {
    /// Mono samples from the first loud chunk to the last one (the trailing
    /// silence is left out).
    pub samples: Vec<i16>,
    /// Samples per second.
    pub sample_rate: u32,
}

impl Utterance {
    /// How long it lasts.
    pub fn duration(&self) -> Duration {
        samples_duration(self.samples.len(), self.sample_rate)
    }
}

/// What [`Vad::push`] noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VadEvent {
    /// The user has been speaking for [`VadConfig::min_speech`]: a turn has
    /// begun (a bot that is talking should stop).
    SpeechStarted,
    /// The user has been silent for [`VadConfig::hangover`] (or the turn hit
    /// [`VadConfig::max_utterance`]): the turn is over, and this is what was said.
    SpeechEnded(Utterance),
}

#[derive(Debug)]
enum State {
    Quiet,
    Speaking {
        /// Everything since the first loud chunk, trailing silence included.
        buffer: Vec<i16>,
        /// `buffer[..voiced]` ends with the last loud chunk.
        voiced: usize,
        /// Whether `SpeechStarted` has been reported.
        confirmed: bool,
    },
}

/// An energy-based voice-activity detector with a hangover: it turns 20 ms
/// microphone frames into "a turn began" and "a turn ended, here it is".
///
/// Each chunk pushed is judged as a whole by its RMS level, so push chunks of
/// 10–30 ms (the transport's input frames are 20 ms). It only measures
/// loudness: steady noise above the threshold (a fan next to the microphone)
/// is speech to it, which is why real agents use a trained model (Pipecat's
/// Silero VAD). It is enough to show the turn-taking, and never panics.
///
/// A second of tone then silence is one turn of exactly that second (the
/// tests in `tests/bots.rs` check this and more):
///
/// ```ignore
/// let mut vad = Vad::new(VadConfig::default());
/// let tone = sine(440.0, 16_000, 16_000, 0.3); // 1 s of "speech"
/// let mut events = Vec::new();
/// for chunk in tone.chunks(320).chain(std::iter::repeat([0i16; 320].as_slice()).take(40)) {
///     events.extend(vad.push(chunk));
/// }
/// assert_eq!(events[0], VadEvent::SpeechStarted);
/// assert!(matches!(&events[1], VadEvent::SpeechEnded(u) if u.samples.len() == 16_000));
/// ```
#[derive(Debug)]
pub struct Vad {
    config: VadConfig,
    state: State,
}

impl Vad {
    /// A detector that has heard nothing yet.
    pub fn new(config: VadConfig) -> Vad {
        Vad {
            config,
            state: State::Quiet,
        }
    }

    /// Whether a turn is under way (including its trailing pause, and speech
    /// not yet long enough to be confirmed).
    pub fn is_speaking(&self) -> bool {
        matches!(self.state, State::Speaking { .. })
    }

    /// Takes the next chunk of mono samples; returns what it marks, if anything.
    pub fn push(&mut self, chunk: &[i16]) -> Option<VadEvent> {
        if chunk.is_empty() {
            return None;
        }
        let loud = level_dbfs(chunk) > self.config.threshold_dbfs;
        let rate = self.config.sample_rate;
        match &mut self.state {
            State::Quiet if !loud => None,
            State::Quiet => {
                self.state = State::Speaking {
                    buffer: chunk.to_vec(),
                    voiced: chunk.len(),
                    confirmed: false,
                };
                self.confirm()
            }
            State::Speaking { buffer, voiced, .. } => {
                buffer.extend_from_slice(chunk);
                if loud {
                    *voiced = buffer.len();
                    if samples_duration(buffer.len(), rate) >= self.config.max_utterance {
                        return self.finish();
                    }
                    return self.confirm();
                }
                let silence = samples_duration(buffer.len() - *voiced, rate);
                if silence >= self.config.hangover {
                    return self.finish();
                }
                None
            }
        }
    }

    /// Reports `SpeechStarted` once the speech so far is long enough.
    fn confirm(&mut self) -> Option<VadEvent> {
        let State::Speaking {
            voiced, confirmed, ..
        } = &mut self.state
        else {
            return None;
        };
        if *confirmed || samples_duration(*voiced, self.config.sample_rate) < self.config.min_speech
        {
            return None;
        }
        *confirmed = true;
        Some(VadEvent::SpeechStarted)
    }

    /// Ends the turn: the utterance if it was confirmed speech, nothing if it
    /// was too short to count.
    fn finish(&mut self) -> Option<VadEvent> {
        let State::Speaking {
            mut buffer,
            voiced,
            confirmed,
        } = std::mem::replace(&mut self.state, State::Quiet)
        else {
            return None;
        };
        if !confirmed {
            return None;
        }
        buffer.truncate(voiced);
        Some(VadEvent::SpeechEnded(Utterance {
            samples: buffer,
            sample_rate: self.config.sample_rate,
        }))
    }
}

/// The RMS level of `samples` in dB below full scale: 0 for a full-scale
/// square wave, about -3 for a full-scale sine, `-inf` for digital silence.
pub fn level_dbfs(samples: &[i16]) -> f32 {
    if samples.is_empty() {
        return f32::NEG_INFINITY;
    }
    let energy: f64 = samples.iter().map(|&s| f64::from(s).powi(2)).sum();
    let rms = (energy / samples.len() as f64).sqrt() / f64::from(i16::MAX);
    (20.0 * rms.log10()) as f32
}

fn samples_duration(samples: usize, sample_rate: u32) -> Duration {
    Duration::from_secs_f64(samples as f64 / f64::from(sample_rate.max(1)))
}

/// An RTVI message with no data, such as `user-started-speaking`, which the
/// official client turns into its `onUserStartedSpeaking` callback.
fn rtvi(kind: &str) -> serde_json::Value {
    json!({"label": "rtvi-ai", "type": kind})
}

/// One session: listen, wait for the end of the turn, play it back.
pub async fn wait_for_silence_bot(args: BotArgs) {
    let connection = args.connection.clone();
    let config = VadConfig::default();
    let transport = match SmallWebRtcTransport::new(
        args.connection,
        TransportParams {
            audio_in_enabled: true,
            audio_in_sample_rate: config.sample_rate,
            audio_out_enabled: true,
            audio_out_sample_rate: config.sample_rate,
            ..TransportParams::default()
        },
    ) {
        Ok(transport) => transport,
        Err(e) => return eprintln!("cannot start the transport: {e}"),
    };
    let (mut input, output, mut events) =
        (transport.input(), transport.output(), transport.events());
    let mut vad = Vad::new(config);
    // Announced in `bot-ready`: this bot hears and speaks, but has no video.
    let about = BotAbout {
        capabilities: Capabilities {
            audio_in: true,
            audio_out: true,
            ..Capabilities::default()
        },
        ..BotAbout::default()
    };
    loop {
        tokio::select! {
            frame = input.recv() => match frame {
                Some(InputFrame::Audio(audio)) => match vad.push(&audio.samples()) {
                    Some(VadEvent::SpeechStarted) => {
                        // Barge-in: the user talks over the bot, so the bot stops.
                        output.interrupt();
                        output.send_message(&rtvi("user-started-speaking"));
                    }
                    Some(VadEvent::SpeechEnded(utterance)) => {
                        output.send_message(&rtvi("user-stopped-speaking"));
                        // Queued, not awaited: the loop keeps listening while it
                        // plays, so that an interruption is heard.
                        let reply = OutputAudioRawFrame::from_samples(
                            &utterance.samples,
                            utterance.sample_rate,
                        );
                        if let Err(e) = output.write_audio(reply) {
                            eprintln!("cannot play the utterance back: {e}");
                        }
                    }
                    None => {}
                },
                Some(_) => {}
                None => return,
            },
            event = events.recv() => match event {
                Some(TransportEvent::AppMessage { message, .. }) => {
                    echo::answer(&connection, &message, &about)
                }
                Some(TransportEvent::ClientClosed) | None => return,
                Some(_) => {}
            },
        }
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let server = Server::bind(ServerConfig {
        bot: Arc::new(wait_for_silence_bot),
        ..ServerConfig::default()
    })
    .await?;
    println!(
        "open http://{}/client/, connect, say something and stop",
        server.http_addr()
    );
    server
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
