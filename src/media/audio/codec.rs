//! Opus decoding and encoding over libopus (the `opus` crate, which builds a bundled libopus).
//!
//! libopus runs natively at 8, 12, 16, 24 and 48 kHz. Those rates are used straight; any other
//! rate runs libopus at the smallest native rate above it (48 kHz at most) and converts with the
//! windowed-sinc [`Resampler`]. Running at the next native rate up loses nothing: Opus never
//! codes content above half its internal rate, and a 22 050 Hz stream has none above 11 025 Hz,
//! below 24 kHz's 12 kHz.

use opus::{Application, Bitrate, Channels};

use super::{check_channels, check_frame_rate, AudioError, Resampler, OPUS_NATIVE_RATES};

/// The longest Opus packet: 120 ms.
const MAX_PACKET_MS: u32 = 120;
/// A guard against absurd input before it reaches libopus: no UDP datagram, and so no RTP
/// payload, is larger (the largest unpadded Opus packet, 48 frames of 1275 bytes, fits too).
const MAX_PACKET_BYTES: usize = 65_536;
/// libopus's recommended output buffer for one packet.
const MAX_ENCODED_BYTES: usize = 4000;

/// The rate libopus runs at for a stream at `rate`.
fn codec_rate(rate: u32) -> u32 {
    OPUS_NATIVE_RATES
        .iter()
        .copied()
        .find(|&native| native >= rate)
        .unwrap_or(48_000)
}

fn opus_channels(channels: usize) -> Channels {
    if channels == 2 {
        Channels::Stereo
    } else {
        Channels::Mono
    }
}

fn check_packet(packet: &[u8]) -> Result<(), AudioError> {
    if packet.is_empty() {
        Err(AudioError::EmptyPacket)
    } else if packet.len() > MAX_PACKET_BYTES {
        Err(AudioError::PacketTooLarge(packet.len()))
    } else {
        Ok(())
    }
}

/// Whether an Opus packet carries in-band FEC (SILK LBRR data) for the packet before it, so
/// [`OpusDecoder::decode_fec`] can recover that packet rather than conceal it.
///
/// Read straight from the bitstream (RFC 6716 §4.2.3): in SILK and hybrid packets the first
/// frame starts with the VAD flags and the LBRR flag of the mid channel, then of the side
/// channel when stereo, coded with uniform probability, so they are the top bits of the frame's
/// first byte. CELT-only packets never carry FEC. Invalid packets give `false`.
///
/// ```
/// use smallwebrtc::media::audio::packet_has_fec;
/// assert!(!packet_has_fec(&[]));
/// assert!(!packet_has_fec(&[0xfc, 0xff, 0xfe])); // CELT-only
/// assert!(packet_has_fec(&[0x08, 0b0100_0000])); // SILK 20 ms mono, LBRR flag set
/// assert!(!packet_has_fec(&[0x08, 0b1000_0000])); // SILK 20 ms mono, only VAD set
/// ```
pub fn packet_has_fec(packet: &[u8]) -> bool {
    if check_packet(packet).is_err() {
        return false;
    }
    let Ok(parsed) = opus::packet::parse(packet) else {
        return false;
    };
    let config = parsed.toc >> 3;
    let frame_ms = match config {
        // SILK-only: 10, 20, 40, 60 ms.
        0..=11 => [10, 20, 40, 60][usize::from(config & 3)],
        // Hybrid: 10, 20 ms.
        12..=15 => [10, 20][usize::from(config & 1)],
        // CELT-only.
        _ => return false,
    };
    let Some(&first_byte) = parsed.frames.first().and_then(|frame| frame.first()) else {
        return false;
    };
    let silk_frames: u32 = (frame_ms / 20).max(1);
    let stereo = parsed.toc & 0x04 != 0;
    // Bits counted from the most significant: `silk_frames` VAD flags, then the LBRR flag.
    let bit = |index: u32| (first_byte >> (7 - index)) & 1 == 1;
    bit(silk_frames) || (stereo && bit(2 * silk_frames + 1))
}

/// An Opus decoder producing interleaved PCM s16 at any supported rate, mono or stereo.
///
/// At 8, 12, 16, 24 or 48 kHz it decodes straight at that rate; at other rates it decodes at the
/// next native rate up and resamples (with a small constant latency, so output lengths then vary
/// by a sample or so per packet — use an [`InputChunker`](super::InputChunker) for exact
/// frames).
///
/// ```
/// use smallwebrtc::media::audio::{OpusDecoder, OpusEncoder};
///
/// let mut encoder = OpusEncoder::new(16_000, 1)?;
/// let mut decoder = OpusDecoder::new(16_000, 1)?;
/// let packet = encoder.encode(&[0; 320])?;
/// assert_eq!(decoder.decode(&packet)?.len(), 320);
/// assert_eq!(decoder.conceal_frame()?.len(), 320); // a lost packet
/// # Ok::<(), smallwebrtc::media::audio::AudioError>(())
/// ```
pub struct OpusDecoder {
    decoder: opus::Decoder,
    sample_rate: u32,
    codec_rate: u32,
    channels: usize,
    resampler: Option<Resampler>,
    /// Decoded samples at the codec rate: room for 120 ms.
    decoded: Vec<i16>,
    /// Resampled output, when resampling.
    output: Vec<i16>,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder")
            .field("sample_rate", &self.sample_rate)
            .field("codec_rate", &self.codec_rate)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl OpusDecoder {
    /// A decoder whose output is `channels` interleaved channels at `sample_rate` Hz.
    ///
    /// # Errors
    ///
    /// [`AudioError::UnsupportedSampleRate`] (8000..=192000 Hz, a multiple of 50 Hz),
    /// [`AudioError::UnsupportedChannels`] (1 or 2), or [`AudioError::Opus`].
    pub fn new(sample_rate: u32, channels: usize) -> Result<Self, AudioError> {
        let sample_rate = check_frame_rate(sample_rate)?;
        let channels = check_channels(channels)?;
        let codec_rate = codec_rate(sample_rate);
        let decoder = opus::Decoder::new(codec_rate, opus_channels(channels))?;
        let resampler = if codec_rate == sample_rate {
            None
        } else {
            Some(Resampler::new(codec_rate, sample_rate, channels)?)
        };
        Ok(OpusDecoder {
            decoder,
            sample_rate,
            codec_rate,
            channels,
            resampler,
            decoded: vec![0; (codec_rate * MAX_PACKET_MS / 1000) as usize * channels],
            output: Vec::new(),
        })
    }

    /// The output sample rate.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// The rate libopus decodes at: the output rate when it is native, else the next native
    /// rate up.
    pub fn codec_rate(&self) -> u32 {
        self.codec_rate
    }

    /// The number of interleaved output channels.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Samples per channel in 20 ms of output (320 at 16 kHz).
    pub fn frame_samples(&self) -> usize {
        (self.sample_rate / 50) as usize
    }

    /// Decodes one packet (any Opus duration, 2.5 to 120 ms) to interleaved samples.
    ///
    /// # Errors
    ///
    /// [`AudioError::EmptyPacket`] (a lost packet is [`conceal`](OpusDecoder::conceal)ed
    /// instead), [`AudioError::PacketTooLarge`], [`AudioError::InvalidPacket`] or
    /// [`AudioError::Opus`] for a corrupt packet.
    pub fn decode(&mut self, packet: &[u8]) -> Result<&[i16], AudioError> {
        check_packet(packet)?;
        let samples = opus::packet::get_nb_samples(packet, self.codec_rate)
            .map_err(|_| AudioError::InvalidPacket("cannot read the packet's duration"))?;
        if samples > (self.codec_rate * MAX_PACKET_MS / 1000) as usize {
            return Err(AudioError::InvalidPacket("longer than 120 ms"));
        }
        let n = self.decoder.decode(packet, &mut self.decoded, false)?;
        self.finish(n)
    }

    /// Packet-loss concealment: synthesises `samples` samples per channel at the output rate to
    /// stand in for lost audio, keeping the stream's cadence. `samples` must be a whole number of
    /// 2.5 ms steps (40 at 16 kHz), at most 120 ms; see also
    /// [`conceal_frame`](OpusDecoder::conceal_frame).
    ///
    /// # Errors
    ///
    /// [`AudioError::InvalidConcealLength`], or [`AudioError::Opus`].
    pub fn conceal(&mut self, samples: usize) -> Result<&[i16], AudioError> {
        let codec_samples = self.conceal_codec_samples(samples)?;
        let n = self.decoder.decode(
            &[],
            &mut self.decoded[..codec_samples * self.channels],
            false,
        )?;
        self.finish(n)
    }

    /// Conceals one lost 20 ms frame ([`frame_samples`](OpusDecoder::frame_samples) samples per
    /// channel).
    ///
    /// # Errors
    ///
    /// [`AudioError::Opus`].
    pub fn conceal_frame(&mut self) -> Result<&[i16], AudioError> {
        self.conceal(self.frame_samples())
    }

    /// Recovers the packet lost just before `next_packet` from the in-band FEC that
    /// `next_packet` carries, returning one frame of the next packet's frame duration. When
    /// `next_packet` has no FEC (see [`packet_has_fec`]) libopus conceals instead, so the
    /// cadence is kept either way. Afterwards decode `next_packet` itself with
    /// [`decode`](OpusDecoder::decode) as usual.
    ///
    /// # Errors
    ///
    /// As for [`decode`](OpusDecoder::decode).
    pub fn decode_fec(&mut self, next_packet: &[u8]) -> Result<&[i16], AudioError> {
        check_packet(next_packet)?;
        let frame = opus::packet::get_samples_per_frame(next_packet, self.codec_rate)
            .map_err(|_| AudioError::InvalidPacket("cannot read the frame duration"))?;
        if frame == 0 || frame > self.decoded.len() / self.channels {
            return Err(AudioError::InvalidPacket("unusable frame duration"));
        }
        let n = self.decoder.decode(
            next_packet,
            &mut self.decoded[..frame * self.channels],
            true,
        )?;
        self.finish(n)
    }

    /// Resets the decoder (and resampler) to a freshly built state, for a new stream.
    ///
    /// # Errors
    ///
    /// [`AudioError::Opus`].
    pub fn reset(&mut self) -> Result<(), AudioError> {
        self.decoder.reset_state()?;
        if let Some(resampler) = &mut self.resampler {
            resampler.reset();
        }
        Ok(())
    }

    /// Converts a concealment length at the output rate into one at the codec rate.
    fn conceal_codec_samples(&self, samples: usize) -> Result<usize, AudioError> {
        let invalid = AudioError::InvalidConcealLength(samples);
        let scaled = (samples as u64)
            .checked_mul(u64::from(self.codec_rate))
            .ok_or(invalid.clone())?;
        let rate = u64::from(self.sample_rate);
        let step = u64::from(self.codec_rate / 400); // 2.5 ms
        let max = u64::from(self.codec_rate * MAX_PACKET_MS / 1000);
        if samples == 0 || scaled % rate != 0 {
            return Err(invalid);
        }
        let codec_samples = scaled / rate;
        if codec_samples % step != 0 || codec_samples > max {
            return Err(invalid);
        }
        Ok(codec_samples as usize)
    }

    /// Returns the `n` decoded samples per channel, resampled if needed.
    fn finish(&mut self, n: usize) -> Result<&[i16], AudioError> {
        let len = (n * self.channels).min(self.decoded.len());
        match &mut self.resampler {
            None => Ok(&self.decoded[..len]),
            Some(resampler) => {
                self.output.clear();
                resampler.process(&self.decoded[..len], &mut self.output)?;
                Ok(&self.output)
            }
        }
    }
}

/// An Opus encoder (VOIP application) taking exactly 20 ms of interleaved PCM s16 per call and
/// returning one packet, at any supported rate, mono or stereo.
///
/// At 8, 12, 16, 24 or 48 kHz it encodes straight at that rate; at other rates it resamples to
/// the next native rate up first (with a constant look-ahead delay of under a millisecond, so
/// every call still yields exactly one 20 ms packet). DTX is off, so a packet comes out for every
/// frame, silence included. The RTP clock of the packets is always 48 kHz: 960 ticks each.
///
/// ```
/// use smallwebrtc::media::audio::{sine, OpusEncoder};
///
/// let mut encoder = OpusEncoder::new(24_000, 1)?;
/// encoder.set_bitrate(32_000)?;
/// encoder.set_inband_fec(true)?;
/// let packet = encoder.encode(&sine(440.0, 24_000, 480, 0.3))?;
/// assert!(!packet.is_empty() && packet.len() < 200);
/// # Ok::<(), smallwebrtc::media::audio::AudioError>(())
/// ```
pub struct OpusEncoder {
    encoder: opus::Encoder,
    sample_rate: u32,
    codec_rate: u32,
    channels: usize,
    resampler: Option<Resampler>,
    /// Resampled audio at the codec rate waiting to be encoded.
    pending: Vec<i16>,
    packet: Vec<u8>,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder")
            .field("sample_rate", &self.sample_rate)
            .field("codec_rate", &self.codec_rate)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl OpusEncoder {
    /// An encoder for `channels` interleaved channels at `sample_rate` Hz, VOIP application,
    /// DTX off, libopus's default bitrate.
    ///
    /// # Errors
    ///
    /// [`AudioError::UnsupportedSampleRate`] (8000..=192000 Hz, a multiple of 50 Hz),
    /// [`AudioError::UnsupportedChannels`] (1 or 2), or [`AudioError::Opus`].
    pub fn new(sample_rate: u32, channels: usize) -> Result<Self, AudioError> {
        let sample_rate = check_frame_rate(sample_rate)?;
        let channels = check_channels(channels)?;
        let codec_rate = codec_rate(sample_rate);
        let mut encoder =
            opus::Encoder::new(codec_rate, opus_channels(channels), Application::Voip)?;
        encoder.set_dtx(false)?;
        let resampler = if codec_rate == sample_rate {
            None
        } else {
            Some(Resampler::new(sample_rate, codec_rate, channels)?)
        };
        let mut this = OpusEncoder {
            encoder,
            sample_rate,
            codec_rate,
            channels,
            resampler,
            pending: Vec::new(),
            packet: vec![0; MAX_ENCODED_BYTES],
        };
        this.prime();
        Ok(this)
    }

    /// The input sample rate.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// The rate libopus encodes at.
    pub fn codec_rate(&self) -> u32 {
        self.codec_rate
    }

    /// The number of interleaved input channels.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Samples per channel in the 20 ms frame each [`encode`](OpusEncoder::encode) takes.
    pub fn frame_samples(&self) -> usize {
        (self.sample_rate / 50) as usize
    }

    /// Encodes exactly 20 ms of interleaved samples
    /// ([`frame_samples`](OpusEncoder::frame_samples) × channels) into one Opus packet.
    ///
    /// # Errors
    ///
    /// [`AudioError::WrongFrameLength`] for any other length, or [`AudioError::Opus`].
    pub fn encode(&mut self, pcm: &[i16]) -> Result<Vec<u8>, AudioError> {
        let expected = self.frame_samples() * self.channels;
        if pcm.len() != expected {
            return Err(AudioError::WrongFrameLength {
                expected,
                actual: pcm.len(),
            });
        }
        let len = match &mut self.resampler {
            None => self.encoder.encode(pcm, &mut self.packet)?,
            Some(resampler) => {
                resampler.process(pcm, &mut self.pending)?;
                let frame = (self.codec_rate / 50) as usize * self.channels;
                if self.pending.len() < frame {
                    // Cannot happen given the priming; pad rather than fail if it ever did.
                    let missing = frame - self.pending.len();
                    self.pending.splice(0..0, std::iter::repeat_n(0, missing));
                }
                let len = self
                    .encoder
                    .encode(&self.pending[..frame], &mut self.packet)?;
                self.pending.drain(..frame);
                len
            }
        };
        Ok(self.packet[..len.min(self.packet.len())].to_vec())
    }

    /// Sets the target bitrate in bits per second (500..=512000).
    ///
    /// # Errors
    ///
    /// [`AudioError::InvalidBitrate`] or [`AudioError::Opus`].
    pub fn set_bitrate(&mut self, bits_per_second: u32) -> Result<(), AudioError> {
        if !(500..=512_000).contains(&bits_per_second) {
            return Err(AudioError::InvalidBitrate(bits_per_second));
        }
        let bits = i32::try_from(bits_per_second)
            .map_err(|_| AudioError::InvalidBitrate(bits_per_second))?;
        self.encoder.set_bitrate(Bitrate::Bits(bits))?;
        Ok(())
    }

    /// Lets libopus choose the bitrate (its default).
    ///
    /// # Errors
    ///
    /// [`AudioError::Opus`].
    pub fn set_auto_bitrate(&mut self) -> Result<(), AudioError> {
        self.encoder.set_bitrate(Bitrate::Auto)?;
        Ok(())
    }

    /// Turns discontinuous transmission on or off (off by default: one packet per frame).
    ///
    /// # Errors
    ///
    /// [`AudioError::Opus`].
    pub fn set_dtx(&mut self, enabled: bool) -> Result<(), AudioError> {
        self.encoder.set_dtx(enabled)?;
        Ok(())
    }

    /// Turns in-band FEC on or off. It only takes effect with a non-zero
    /// [`set_packet_loss_perc`](OpusEncoder::set_packet_loss_perc) and a bitrate high enough
    /// for SILK to spare bits for it.
    ///
    /// # Errors
    ///
    /// [`AudioError::Opus`].
    pub fn set_inband_fec(&mut self, enabled: bool) -> Result<(), AudioError> {
        self.encoder.set_inband_fec(enabled)?;
        Ok(())
    }

    /// Tells the encoder the expected packet loss, in percent (0..=100).
    ///
    /// # Errors
    ///
    /// [`AudioError::InvalidPacketLoss`] or [`AudioError::Opus`].
    pub fn set_packet_loss_perc(&mut self, percent: u8) -> Result<(), AudioError> {
        if percent > 100 {
            return Err(AudioError::InvalidPacketLoss(percent));
        }
        self.encoder.set_packet_loss_perc(i32::from(percent))?;
        Ok(())
    }

    /// Sets the computational complexity (0..=10; libopus's default is 9 or 10).
    ///
    /// # Errors
    ///
    /// [`AudioError::InvalidComplexity`] or [`AudioError::Opus`].
    pub fn set_complexity(&mut self, complexity: u8) -> Result<(), AudioError> {
        if complexity > 10 {
            return Err(AudioError::InvalidComplexity(complexity));
        }
        self.encoder.set_complexity(i32::from(complexity))?;
        Ok(())
    }

    /// Resets the encoder (and resampler) to a freshly built state, keeping its settings.
    ///
    /// # Errors
    ///
    /// [`AudioError::Opus`].
    pub fn reset(&mut self) -> Result<(), AudioError> {
        self.encoder.reset_state()?;
        if let Some(resampler) = &mut self.resampler {
            resampler.reset();
        }
        self.prime();
        Ok(())
    }

    /// Pre-fills the resampled buffer with the resampler's output latency in zeros, so that
    /// every 20 ms input yields at least 20 ms at the codec rate.
    fn prime(&mut self) {
        self.pending.clear();
        if let Some(resampler) = &self.resampler {
            let lead = resampler.latency_output_frames() + 1;
            self.pending.resize(lead * self.channels, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{dominant_frequency, sine, tone_level_db, InputChunker};
    use super::*;

    /// Encodes `tone` in 20 ms frames at `enc_rate`, decodes at `dec_rate`, rechunks.
    fn round_trip(tone: &[i16], enc_rate: u32, dec_rate: u32) -> Vec<i16> {
        let mut encoder = OpusEncoder::new(enc_rate, 1).unwrap();
        let mut decoder = OpusDecoder::new(dec_rate, 1).unwrap();
        let mut chunker = InputChunker::new(dec_rate, 1).unwrap();
        let mut out = Vec::new();
        for frame in tone.chunks_exact(encoder.frame_samples()) {
            let packet = encoder.encode(frame).unwrap();
            chunker.push(decoder.decode(&packet).unwrap()).unwrap();
            while let Some(f) = chunker.pop() {
                assert_eq!(f.samples.len(), (dec_rate / 50) as usize);
                out.extend_from_slice(&f.samples);
            }
        }
        out
    }

    #[test]
    fn tone_survives_encode_and_decode_at_16k() {
        for &enc_rate in &[16_000u32, 48_000] {
            let tone = sine(440.0, enc_rate, enc_rate as usize, 0.3);
            let decoded = round_trip(&tone, enc_rate, 16_000);
            assert!(decoded.len() >= 15_600, "{enc_rate}: {}", decoded.len());
            let settled = &decoded[1_600..]; // past the codec's start-up
            let f = dominant_frequency(settled, 16_000);
            assert!((f - 440.0).abs() <= 5.0, "encoded at {enc_rate}: {f} Hz");
            let level = tone_level_db(settled, 16_000, 440.0);
            assert!(level > -14.0, "encoded at {enc_rate}: {level} dBFS");
        }
    }

    #[test]
    fn non_native_rates_resample_on_both_sides() {
        for &(enc_rate, dec_rate) in &[
            (22_050u32, 16_000u32),
            (44_100, 44_100),
            (16_000, 22_050),
            (32_000, 32_000),
            (96_000, 8_000),
        ] {
            let tone = sine(440.0, enc_rate, enc_rate as usize, 0.3);
            let decoded = round_trip(&tone, enc_rate, dec_rate);
            let expected = dec_rate as usize;
            assert!(
                decoded.len() + 2 * (dec_rate as usize / 50) >= expected,
                "{enc_rate}->{dec_rate}: {}",
                decoded.len()
            );
            let f = dominant_frequency(&decoded[decoded.len() / 10..], dec_rate);
            assert!((f - 440.0).abs() <= 5.0, "{enc_rate}->{dec_rate}: {f} Hz");
        }
    }

    #[test]
    fn stereo_round_trip_keeps_channels() {
        let left = sine(440.0, 48_000, 48_000, 0.3);
        let right = sine(1_000.0, 48_000, 48_000, 0.3);
        let interleaved: Vec<i16> = left
            .iter()
            .zip(&right)
            .flat_map(|(&l, &r)| [l, r])
            .collect();
        let mut encoder = OpusEncoder::new(48_000, 2).unwrap();
        encoder.set_bitrate(96_000).unwrap();
        let mut decoder = OpusDecoder::new(24_000, 2).unwrap();
        let mut out = Vec::new();
        for frame in interleaved.chunks_exact(1_920) {
            let packet = encoder.encode(frame).unwrap();
            let pcm = decoder.decode(&packet).unwrap();
            assert_eq!(pcm.len(), 960);
            out.extend_from_slice(pcm);
        }
        let l: Vec<i16> = out.iter().step_by(2).copied().collect();
        let r: Vec<i16> = out.iter().skip(1).step_by(2).copied().collect();
        assert!((dominant_frequency(&l[2_400..], 24_000) - 440.0).abs() < 5.0);
        assert!((dominant_frequency(&r[2_400..], 24_000) - 1_000.0).abs() < 5.0);
        // A mono stream decodes to stereo by duplication.
        let mut mono_encoder = OpusEncoder::new(16_000, 1).unwrap();
        let packet = mono_encoder.encode(&sine(440.0, 16_000, 320, 0.3)).unwrap();
        assert_eq!(decoder.decode(&packet).unwrap().len(), 960);
    }

    #[test]
    fn plc_keeps_a_20ms_cadence() {
        let mut encoder = OpusEncoder::new(16_000, 1).unwrap();
        let mut decoder = OpusDecoder::new(16_000, 1).unwrap();
        let tone = sine(440.0, 16_000, 16_000, 0.3);
        let mut total = 0;
        for (i, frame) in tone.chunks_exact(320).enumerate() {
            let packet = encoder.encode(frame).unwrap();
            let pcm = if i % 5 == 3 {
                decoder.conceal_frame().unwrap().to_vec()
            } else {
                decoder.decode(&packet).unwrap().to_vec()
            };
            assert_eq!(pcm.len(), 320, "frame {i}");
            total += pcm.len();
        }
        assert_eq!(total, 16_000);
        // The concealed audio carries on the tone rather than going silent at once.
        let concealed = decoder.conceal_frame().unwrap().to_vec();
        let peak = concealed
            .iter()
            .map(|s| s.unsigned_abs())
            .max()
            .unwrap_or(0);
        let f = dominant_frequency(&concealed, 16_000);
        assert!(
            peak > 1_000 && (f - 440.0).abs() < 100.0,
            "peak {peak}, {f} Hz"
        );
        // Other lengths: whole 2.5 ms steps only, up to 120 ms.
        assert_eq!(decoder.conceal(40).unwrap().len(), 40);
        assert_eq!(decoder.conceal(1_920).unwrap().len(), 1_920);
        for bad in [0usize, 7, 330, 1_960, usize::MAX] {
            assert_eq!(
                decoder.conceal(bad).unwrap_err(),
                AudioError::InvalidConcealLength(bad)
            );
        }
        // Concealment right at the start, before any packet, works too.
        let mut fresh = OpusDecoder::new(48_000, 2).unwrap();
        assert_eq!(fresh.conceal_frame().unwrap().len(), 1_920);
        // Resampled output: 20 ms at 22 050 Hz is 441 samples, near enough after the latency.
        let mut odd = OpusDecoder::new(22_050, 1).unwrap();
        assert_eq!(odd.codec_rate(), 24_000);
        let mut sum = 0;
        for _ in 0..10 {
            sum += odd.conceal_frame().unwrap().len();
        }
        assert!((4_360..=4_410).contains(&sum), "{sum}");
        assert!(odd.conceal(40).is_err());
    }

    /// A signal that changes at the lost frame, so concealment (which extrapolates the past)
    /// cannot guess it but FEC (which carries it) can.
    fn switching_signal() -> Vec<i16> {
        let mut signal = sine(300.0, 16_000, 16_000, 0.3);
        for (i, s) in sine(1_100.0, 16_000, 16_000, 0.3).into_iter().enumerate() {
            if (i / 320) % 6 >= 3 {
                signal[i] = s;
            }
        }
        signal
    }

    /// The energy of `x − truth` relative to that of `truth`, in dB.
    fn error_db(truth: &[i16], x: &[i16]) -> f64 {
        let error: f64 = truth
            .iter()
            .zip(x)
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum();
        let energy: f64 = truth.iter().map(|&a| f64::from(a).powi(2)).sum();
        10.0 * (error / energy).log10()
    }

    #[test]
    fn fec_recovers_a_lost_packet() {
        let mut encoder = OpusEncoder::new(16_000, 1).unwrap();
        encoder.set_bitrate(32_000).unwrap();
        encoder.set_inband_fec(true).unwrap();
        encoder.set_packet_loss_perc(20).unwrap();
        let signal = switching_signal();
        let packets: Vec<Vec<u8>> = signal
            .chunks_exact(320)
            .map(|frame| encoder.encode(frame).unwrap())
            .collect();
        let with_fec = packets.iter().filter(|p| packet_has_fec(p)).count();
        assert!(
            with_fec > packets.len() / 2,
            "{with_fec} of {}",
            packets.len()
        );

        let mut trials = 0;
        // Lose frame `lost`: each is the first of a 1 100 Hz stretch (frames 9, 15, 21 ...).
        for lost in (9..48).step_by(6) {
            if !packet_has_fec(&packets[lost + 1]) {
                continue;
            }
            trials += 1;
            let mut reference = OpusDecoder::new(16_000, 1).unwrap();
            let mut fec = OpusDecoder::new(16_000, 1).unwrap();
            let mut plc = OpusDecoder::new(16_000, 1).unwrap();
            for packet in &packets[..lost] {
                reference.decode(packet).unwrap();
                fec.decode(packet).unwrap();
                plc.decode(packet).unwrap();
            }
            let truth = reference.decode(&packets[lost]).unwrap().to_vec();
            let recovered = fec.decode_fec(&packets[lost + 1]).unwrap().to_vec();
            let concealed = plc.conceal_frame().unwrap().to_vec();
            assert_eq!(recovered.len(), 320);
            assert_eq!(concealed.len(), 320);
            // The decoder carries on normally afterwards.
            assert_eq!(fec.decode(&packets[lost + 1]).unwrap().len(), 320);
            // Measured: FEC comes within about −11 to −23 dB of the truth, while concealment,
            // which cannot know the tone changed, is off by about 0 dB (as much as the signal).
            let fec_error = error_db(&truth, &recovered);
            let plc_error = error_db(&truth, &concealed);
            assert!(fec_error < -8.0, "lost {lost}: FEC error {fec_error:.1} dB");
            assert!(
                fec_error < plc_error - 6.0,
                "lost {lost}: FEC {fec_error:.1} dB vs PLC {plc_error:.1} dB"
            );
            let level = tone_level_db(&recovered[80..], 16_000, 1_100.0);
            assert!(
                level > -15.0,
                "lost {lost}: recovered 1 100 Hz at {level} dBFS"
            );
        }
        assert!(trials >= 5, "only {trials} lost packets had FEC after them");
    }

    #[test]
    fn fec_without_fec_data_conceals() {
        let mut encoder = OpusEncoder::new(16_000, 1).unwrap();
        let mut decoder = OpusDecoder::new(16_000, 1).unwrap();
        let tone = sine(440.0, 16_000, 3_200, 0.3);
        let packets: Vec<Vec<u8>> = tone
            .chunks_exact(320)
            .map(|f| encoder.encode(f).unwrap())
            .collect();
        assert!(packets.iter().all(|p| !packet_has_fec(p)));
        decoder.decode(&packets[0]).unwrap();
        assert_eq!(decoder.decode_fec(&packets[2]).unwrap().len(), 320);
        assert_eq!(decoder.decode(&packets[2]).unwrap().len(), 320);
    }

    #[test]
    fn bad_packets_are_errors_not_panics() {
        let mut decoder = OpusDecoder::new(16_000, 1).unwrap();
        assert_eq!(decoder.decode(&[]).unwrap_err(), AudioError::EmptyPacket);
        assert_eq!(
            decoder.decode_fec(&[]).unwrap_err(),
            AudioError::EmptyPacket
        );
        let huge = vec![0u8; 100_000];
        assert_eq!(
            decoder.decode(&huge).unwrap_err(),
            AudioError::PacketTooLarge(100_000)
        );
        // Code 3 packet claiming 63 frames of 60 ms: far beyond 120 ms.
        assert!(decoder.decode(&[0x1b, 0x3f, 0, 0, 0]).is_err());
        // Every short byte pattern either decodes or errors.
        let mut state = 0x1234_5678u32;
        for len in 1..64 {
            for _ in 0..50 {
                let packet: Vec<u8> = (0..len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 17;
                        state ^= state << 5;
                        state as u8
                    })
                    .collect();
                let _ = decoder.decode(&packet);
                let _ = decoder.decode_fec(&packet);
                let _ = packet_has_fec(&packet);
            }
        }
        // Still usable afterwards.
        decoder.reset().unwrap();
        let mut encoder = OpusEncoder::new(16_000, 1).unwrap();
        let packet = encoder.encode(&[0; 320]).unwrap();
        assert_eq!(decoder.decode(&packet).unwrap().len(), 320);
    }

    #[test]
    fn constructor_and_setting_errors() {
        assert_eq!(
            OpusDecoder::new(11_025, 1).unwrap_err(),
            AudioError::UnsupportedSampleRate(11_025)
        );
        assert_eq!(
            OpusEncoder::new(16_000, 0).unwrap_err(),
            AudioError::UnsupportedChannels(0)
        );
        let mut encoder = OpusEncoder::new(24_000, 1).unwrap();
        assert_eq!(
            encoder.encode(&[0; 479]).unwrap_err(),
            AudioError::WrongFrameLength {
                expected: 480,
                actual: 479
            }
        );
        assert_eq!(
            encoder.set_bitrate(10).unwrap_err(),
            AudioError::InvalidBitrate(10)
        );
        assert_eq!(
            encoder.set_packet_loss_perc(101).unwrap_err(),
            AudioError::InvalidPacketLoss(101)
        );
        assert_eq!(
            encoder.set_complexity(11).unwrap_err(),
            AudioError::InvalidComplexity(11)
        );
        encoder.set_bitrate(24_000).unwrap();
        encoder.set_auto_bitrate().unwrap();
        encoder.set_complexity(5).unwrap();
        encoder.set_dtx(true).unwrap();
        encoder.set_dtx(false).unwrap();
        encoder.reset().unwrap();
        assert_eq!(encoder.codec_rate(), 24_000);
        assert_eq!(OpusEncoder::new(44_100, 1).unwrap().codec_rate(), 48_000);
        assert_eq!(OpusEncoder::new(22_050, 1).unwrap().codec_rate(), 24_000);
        assert_eq!(OpusEncoder::new(96_000, 1).unwrap().codec_rate(), 48_000);
        assert!(format!("{encoder:?}").contains("24000"));
    }

    #[test]
    fn dtx_off_means_a_packet_per_silent_frame() {
        let mut encoder = OpusEncoder::new(24_000, 1).unwrap();
        for _ in 0..100 {
            let packet = encoder.encode(&[0; 480]).unwrap();
            // DTX would send 1-2 byte packets (or none); without it each frame is coded.
            assert!(!packet.is_empty());
        }
        let mut resampling = OpusEncoder::new(22_050, 1).unwrap();
        for _ in 0..200 {
            assert!(!resampling.encode(&[0; 441]).unwrap().is_empty());
        }
    }

    #[test]
    fn fec_flag_reader_handles_stereo_and_long_frames() {
        // SILK 60 ms mono (config 3): 3 VAD bits, then LBRR at bit index 3.
        assert!(packet_has_fec(&[0x18, 0b0001_0000]));
        assert!(!packet_has_fec(&[0x18, 0b1110_0000]));
        // SILK 20 ms stereo (config 1, s=1): mid VAD, mid LBRR, side VAD, side LBRR.
        assert!(packet_has_fec(&[0x0c, 0b0001_0000]));
        assert!(packet_has_fec(&[0x0c, 0b0100_0000]));
        assert!(!packet_has_fec(&[0x0c, 0b1010_0000]));
        // Hybrid 20 ms (config 13).
        assert!(packet_has_fec(&[0x68, 0b0100_0000]));
        // DTX-like empty first frame.
        assert!(!packet_has_fec(&[0x08]));
    }
}
