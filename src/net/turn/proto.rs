//! The TURN (RFC 8656) wire format a client needs: STUN messages with long-term
//! credentials (MESSAGE-INTEGRITY, FINGERPRINT), the TURN attributes, and
//! ChannelData framing, over datagrams and over a byte stream.
//!
//! Like [`crate::net::stun`], every parser takes untrusted bytes and returns `None`
//! on anything malformed; none of them panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;

use super::md5::md5;
use crate::net::stun::{self, MAGIC_COOKIE};

/// STUN header size.
pub const HEADER_LEN: usize = 20;
/// ChannelData header size (channel number, length).
pub const CHANNEL_HEADER_LEN: usize = 4;

/// TURN methods (RFC 8656 §17).
pub mod method {
    /// Allocate.
    pub const ALLOCATE: u16 = 0x003;
    /// Refresh.
    pub const REFRESH: u16 = 0x004;
    /// Send (indication).
    pub const SEND: u16 = 0x006;
    /// Data (indication).
    pub const DATA: u16 = 0x007;
    /// CreatePermission.
    pub const CREATE_PERMISSION: u16 = 0x008;
    /// ChannelBind.
    pub const CHANNEL_BIND: u16 = 0x009;
}

/// STUN/TURN attribute types used here.
pub mod attr {
    /// USERNAME.
    pub const USERNAME: u16 = 0x0006;
    /// MESSAGE-INTEGRITY (HMAC-SHA1).
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    /// ERROR-CODE.
    pub const ERROR_CODE: u16 = 0x0009;
    /// CHANNEL-NUMBER.
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    /// LIFETIME (seconds).
    pub const LIFETIME: u16 = 0x000D;
    /// XOR-PEER-ADDRESS.
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    /// DATA.
    pub const DATA: u16 = 0x0013;
    /// REALM.
    pub const REALM: u16 = 0x0014;
    /// NONCE.
    pub const NONCE: u16 = 0x0015;
    /// XOR-RELAYED-ADDRESS.
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    /// REQUESTED-ADDRESS-FAMILY (RFC 8656 §18.11).
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    /// REQUESTED-TRANSPORT.
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    /// XOR-MAPPED-ADDRESS.
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    /// SOFTWARE.
    pub const SOFTWARE: u16 = 0x8022;
    /// FINGERPRINT.
    pub const FINGERPRINT: u16 = 0x8028;
}

/// The class of a STUN message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A request.
    Request,
    /// An indication (no response).
    Indication,
    /// A success response.
    Success,
    /// An error response.
    Error,
}

/// The message type for `method` and `class` (RFC 8489 §5: class bits interleaved
/// with the method bits).
pub fn message_type(method: u16, class: Class) -> u16 {
    let c = match class {
        Class::Request => 0b00,
        Class::Indication => 0b01,
        Class::Success => 0b10,
        Class::Error => 0b11,
    };
    (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((c & 0b01) << 4)
        | ((c & 0b10) << 7)
}

/// Splits a message type into method and class.
pub fn split_type(t: u16) -> (u16, Class) {
    let method = (t & 0x000F) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0F80);
    let class = match ((t >> 4) & 1) | ((t >> 7) & 2) {
        0 => Class::Request,
        1 => Class::Indication,
        2 => Class::Success,
        _ => Class::Error,
    };
    (method, class)
}

/// The long-term credential key: MD5(username ":" realm ":" password) (RFC 8489 §9.2.2).
///
/// ```
/// use smallwebrtc::net::turn::proto::long_term_key;
/// // RFC 5769 §2.4: user "<U+30DE><U+30C8><U+30EA><U+30C3><U+30AF><U+30B9>", realm
/// // "example.org", password "TheMatrIX" (after SASLprep).
/// let key = long_term_key("マトリックス", "example.org", "TheMatrIX");
/// assert_eq!(key.len(), 16);
/// ```
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    md5(format!("{username}:{realm}:{password}").as_bytes())
}

fn sha1_hmac(key: &[u8], payloads: &[&[u8]]) -> [u8; 20] {
    static PROVIDER: OnceLock<&'static dyn str0m::crypto::Sha1HmacProvider> = OnceLock::new();
    let provider = PROVIDER.get_or_init(|| {
        str0m::config::CryptoProvider::get_default()
            .map(|p| p.sha1_hmac_provider)
            .unwrap_or_else(|| str0m::crypto::from_feature_flags().sha1_hmac_provider)
    });
    provider.sha1_hmac(key, payloads)
}

/// CRC-32 (ISO-HDLC, as in zlib), for FINGERPRINT.
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = 0xFFFF_FFFFu32;
    for b in data {
        crc = TABLE[((crc ^ u32::from(*b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc ^ 0xFFFF_FFFF
}

const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// Builds one STUN message attribute by attribute.
#[derive(Debug, Clone)]
pub struct MessageBuilder {
    buf: Vec<u8>,
    txid: [u8; 12],
}

impl MessageBuilder {
    /// A message of type `method`/`class` with transaction id `txid`.
    pub fn new(method: u16, class: Class, txid: [u8; 12]) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&message_type(method, class).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&txid);
        MessageBuilder { buf, txid }
    }

    /// Adds an attribute, padding its value to 4 bytes.
    pub fn attr(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(&kind.to_be_bytes());
        self.buf
            .extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(value);
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
        self
    }

    /// Adds a 32-bit attribute.
    pub fn attr_u32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.attr(kind, &value.to_be_bytes())
    }

    /// Adds an XOR-encoded address attribute (XOR-PEER-ADDRESS, ...).
    pub fn xor_address(&mut self, kind: u16, addr: SocketAddr) -> &mut Self {
        let value = encode_xor_address(addr, &self.txid);
        self.attr(kind, &value)
    }

    fn set_length(&mut self, body: usize) {
        let len = (body as u16).to_be_bytes();
        self.buf[2] = len[0];
        self.buf[3] = len[1];
    }

    /// Finishes the message: MESSAGE-INTEGRITY with `key` if given, then FINGERPRINT.
    pub fn finish(mut self, key: Option<&[u8]>, fingerprint: bool) -> Vec<u8> {
        if let Some(key) = key {
            // The length covers MESSAGE-INTEGRITY itself, not what follows it.
            let body = self.buf.len() - HEADER_LEN + 24;
            self.set_length(body);
            let mac = sha1_hmac(key, &[&self.buf]);
            self.attr(attr::MESSAGE_INTEGRITY, &mac);
        }
        if fingerprint {
            let body = self.buf.len() - HEADER_LEN + 8;
            self.set_length(body);
            let crc = crc32(&self.buf) ^ FINGERPRINT_XOR;
            self.attr_u32(attr::FINGERPRINT, crc);
        }
        let body = self.buf.len() - HEADER_LEN;
        self.set_length(body);
        self.buf
    }
}

/// Encodes an XOR-(MAPPED|PEER|RELAYED)-ADDRESS value.
pub fn encode_xor_address(addr: SocketAddr, txid: &[u8; 12]) -> Vec<u8> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let mut value = Vec::with_capacity(20);
    match addr.ip() {
        IpAddr::V4(ip) => {
            value.extend_from_slice(&[0, 0x01]);
            value.extend_from_slice(&port.to_be_bytes());
            value.extend(ip.octets().iter().zip(cookie).map(|(b, k)| b ^ k));
        }
        IpAddr::V6(ip) => {
            value.extend_from_slice(&[0, 0x02]);
            value.extend_from_slice(&port.to_be_bytes());
            let key = cookie.iter().chain(txid.iter());
            value.extend(ip.octets().iter().zip(key).map(|(b, k)| b ^ k));
        }
    }
    value
}

/// Decodes an XOR-encoded address value.
pub fn decode_xor_address(value: &[u8], txid: &[u8; 12]) -> Option<SocketAddr> {
    let family = *value.get(1)?;
    let port = u16::from_be_bytes([*value.get(2)?, *value.get(3)?]) ^ (MAGIC_COOKIE >> 16) as u16;
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let ip = match family {
        0x01 => {
            let raw: [u8; 4] = value.get(4..8)?.try_into().ok()?;
            let mut octets = [0u8; 4];
            for (i, o) in octets.iter_mut().enumerate() {
                *o = raw[i] ^ cookie[i];
            }
            IpAddr::V4(Ipv4Addr::from(octets))
        }
        0x02 => {
            let raw: [u8; 16] = value.get(4..20)?.try_into().ok()?;
            let mut octets = [0u8; 16];
            for (i, o) in octets.iter_mut().enumerate() {
                let k = if i < 4 { cookie[i] } else { txid[i - 4] };
                *o = raw[i] ^ k;
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// A parsed STUN message: its header and the attributes with their offsets.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    /// The whole message (exactly header + declared length).
    pub raw: &'a [u8],
    /// The method.
    pub method: u16,
    /// The class.
    pub class: Class,
    /// The transaction id.
    pub txid: [u8; 12],
    attrs: Vec<(u16, usize, &'a [u8])>,
}

impl<'a> Message<'a> {
    /// Parses a STUN message; `None` if it is not STUN or is malformed. Bytes
    /// beyond the declared length are ignored.
    pub fn parse(packet: &'a [u8]) -> Option<Message<'a>> {
        if !stun::is_stun(packet) {
            return None;
        }
        let length = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
        if !length.is_multiple_of(4) {
            return None;
        }
        let raw = packet.get(..HEADER_LEN + length)?;
        let (method, class) = split_type(u16::from_be_bytes([raw[0], raw[1]]));
        let txid: [u8; 12] = raw.get(8..HEADER_LEN)?.try_into().ok()?;
        let mut attrs = Vec::with_capacity(8);
        let mut at = HEADER_LEN;
        while at + 4 <= raw.len() {
            let kind = u16::from_be_bytes([raw[at], raw[at + 1]]);
            let len = usize::from(u16::from_be_bytes([raw[at + 2], raw[at + 3]]));
            let value = raw.get(at + 4..at + 4 + len)?;
            attrs.push((kind, at, value));
            at += 4 + len.div_ceil(4) * 4;
        }
        Some(Message {
            raw,
            method,
            class,
            txid,
            attrs,
        })
    }

    /// The first attribute of type `kind`.
    pub fn get(&self, kind: u16) -> Option<&'a [u8]> {
        self.attrs
            .iter()
            .find(|(k, _, _)| *k == kind)
            .map(|(_, _, v)| *v)
    }

    /// A UTF-8 attribute (REALM, NONCE, ...).
    pub fn get_str(&self, kind: u16) -> Option<&'a str> {
        std::str::from_utf8(self.get(kind)?).ok()
    }

    /// A 32-bit attribute (LIFETIME).
    pub fn get_u32(&self, kind: u16) -> Option<u32> {
        let v = self.get(kind)?;
        Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
    }

    /// An XOR-encoded address attribute.
    pub fn get_xor_address(&self, kind: u16) -> Option<SocketAddr> {
        decode_xor_address(self.get(kind)?, &self.txid)
    }

    /// ERROR-CODE as (code, reason).
    pub fn error_code(&self) -> Option<(u16, &'a str)> {
        let v = self.get(attr::ERROR_CODE)?;
        let class = u16::from(*v.get(2)? & 0x07);
        let number = u16::from(*v.get(3)?);
        let reason = std::str::from_utf8(v.get(4..)?).unwrap_or("");
        Some((class * 100 + number, reason))
    }

    /// Whether the message carries MESSAGE-INTEGRITY.
    pub fn has_integrity(&self) -> bool {
        self.get(attr::MESSAGE_INTEGRITY).is_some()
    }

    /// Checks MESSAGE-INTEGRITY against `key`; false if absent or wrong.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        let Some(&(_, offset, value)) = self
            .attrs
            .iter()
            .find(|(k, _, _)| *k == attr::MESSAGE_INTEGRITY)
        else {
            return false;
        };
        if value.len() != 20 {
            return false;
        }
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&self.raw[..HEADER_LEN]);
        let len = ((offset - HEADER_LEN + 24) as u16).to_be_bytes();
        header[2] = len[0];
        header[3] = len[1];
        let mac = sha1_hmac(key, &[&header, &self.raw[HEADER_LEN..offset]]);
        // Not secret-dependent timing in any way that matters here (the MAC is of a
        // response to our own request), but compare fully anyway.
        mac.iter().zip(value).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    /// Checks FINGERPRINT if present (true when absent).
    pub fn fingerprint_ok(&self) -> bool {
        let Some(&(_, offset, value)) = self.attrs.iter().find(|(k, _, _)| *k == attr::FINGERPRINT)
        else {
            return true;
        };
        let Ok(bytes) = <[u8; 4]>::try_from(value) else {
            return false;
        };
        crc32(&self.raw[..offset]) ^ FINGERPRINT_XOR == u32::from_be_bytes(bytes)
    }
}

/// Whether a datagram is ChannelData (first two bits 01: channel 0x4000..=0x7FFF).
pub fn is_channel_data(packet: &[u8]) -> bool {
    packet.len() >= CHANNEL_HEADER_LEN && (0x40..=0x7F).contains(&packet[0])
}

/// Parses ChannelData: (channel number, application data). Trailing padding is ignored.
pub fn parse_channel_data(packet: &[u8]) -> Option<(u16, &[u8])> {
    if !is_channel_data(packet) {
        return None;
    }
    let channel = u16::from_be_bytes([packet[0], packet[1]]);
    let len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    Some((
        channel,
        packet.get(CHANNEL_HEADER_LEN..CHANNEL_HEADER_LEN + len)?,
    ))
}

/// Writes a ChannelData message for `data` on `channel` into `out`, padded to a
/// multiple of 4 when `pad` (required over TCP and TLS, RFC 8656 §12.5).
pub fn write_channel_data(out: &mut Vec<u8>, channel: u16, data: &[u8], pad: bool) {
    out.reserve(CHANNEL_HEADER_LEN + data.len() + 3);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
    if pad {
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
}

/// Splits a byte stream from a TURN server over TCP or TLS into whole STUN and
/// ChannelData messages (RFC 8656 §12.5 framing: a STUN header tells its
/// length; ChannelData is padded to 4 bytes).
#[derive(Debug, Default)]
pub struct StreamFramer {
    buf: Vec<u8>,
}

/// The largest frame accepted from a stream (a STUN or ChannelData length is 16 bits).
const MAX_FRAME: usize = HEADER_LEN + 0xFFFF + 3;

impl StreamFramer {
    /// An empty framer.
    pub fn new() -> Self {
        StreamFramer::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, if one is buffered. `Err(())` when the stream is not
    /// TURN framing at all (the connection should be closed).
    #[allow(clippy::result_unit_err)]
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, ()> {
        if self.buf.len() < CHANNEL_HEADER_LEN {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]]));
        let total = match self.buf[0] >> 6 {
            0b00 => HEADER_LEN + len,
            0b01 => CHANNEL_HEADER_LEN + len.div_ceil(4) * 4,
            _ => return Err(()),
        };
        debug_assert!(total <= MAX_FRAME);
        if self.buf.len() < total {
            return Ok(None);
        }
        let rest = self.buf.split_off(total);
        Ok(Some(std::mem::replace(&mut self.buf, rest)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn message_types() {
        assert_eq!(message_type(method::ALLOCATE, Class::Request), 0x0003);
        assert_eq!(message_type(method::ALLOCATE, Class::Success), 0x0103);
        assert_eq!(message_type(method::ALLOCATE, Class::Error), 0x0113);
        assert_eq!(message_type(method::SEND, Class::Indication), 0x0016);
        assert_eq!(message_type(method::DATA, Class::Indication), 0x0017);
        assert_eq!(message_type(method::CHANNEL_BIND, Class::Success), 0x0109);
        assert_eq!(
            message_type(0x0001, Class::Success),
            stun::BINDING_SUCCESS_RESPONSE
        );
        for m in 0..0x1000u16 {
            for c in [
                Class::Request,
                Class::Indication,
                Class::Success,
                Class::Error,
            ] {
                assert_eq!(split_type(message_type(m, c)), (m, c));
            }
        }
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    /// RFC 5769 §2.1: a sample request with short-term credentials (the MAC key is
    /// the password), SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME, MI, FINGERPRINT.
    #[test]
    fn rfc5769_sample_request_verifies() {
        let packet = hex("00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
             80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
             00 24 00 04 6e 00 01 ff 80 29 00 08 93 2f f9 b1 51 26 3b 36
             00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20 00 08 00 14
             9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
             80 28 00 04 e5 7a 3b cf");
        let msg = Message::parse(&packet).unwrap();
        assert_eq!(msg.method, 0x001);
        assert_eq!(msg.class, Class::Request);
        assert!(msg.fingerprint_ok());
        assert!(msg.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBt"));
        assert!(!msg.verify_integrity(b"wrong"));

        // Rebuilding it attribute by attribute gives the same bytes.
        let mut b = MessageBuilder::new(0x001, Class::Request, msg.txid);
        b.attr(attr::SOFTWARE, b"STUN test client")
            .attr(0x0024, &hex("6e0001ff"))
            .attr(0x8029, &hex("932ff9b151263b36"))
            .attr(attr::USERNAME, b"evtj:h6vY");
        let built = b.finish(Some(b"VOkJxbRl1RmTxUk/WvJxBt"), true);
        // The sample pads USERNAME with spaces where we pad with zeros, so the
        // bytes agree up to that padding, and both verify.
        assert_eq!(built.len(), packet.len());
        assert_eq!(&built[..73], &packet[..73]);
        let reparsed = Message::parse(&built).unwrap();
        assert!(reparsed.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBt"));
        assert!(reparsed.fingerprint_ok());
    }

    /// RFC 5769 §2.4: a request with long-term credentials.
    #[test]
    fn rfc5769_long_term_request_verifies() {
        let packet = hex("00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
             00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3
             82 b9 00 00 00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36
             4f 4c 33 34 6f 4c 39 46 53 54 76 79 36 34 73 41 00 14 00 0b
             65 78 61 6d 70 6c 65 2e 6f 72 67 00 00 08 00 14 f6 70 24 65
             6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66");
        let msg = Message::parse(&packet).unwrap();
        assert_eq!(msg.get_str(attr::REALM), Some("example.org"));
        assert_eq!(msg.get_str(attr::USERNAME), Some("マトリックス"));
        let key = long_term_key("マトリックス", "example.org", "TheMatrIX");
        assert!(msg.verify_integrity(&key));
        assert!(!msg.verify_integrity(&long_term_key("マトリックス", "example.org", "x")));
    }

    #[test]
    fn xor_addresses_round_trip() {
        let txid = [9u8; 12];
        for addr in ["192.0.2.1:32853", "[2001:db8::1234]:9", "127.0.0.1:0"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let v = encode_xor_address(addr, &txid);
            assert_eq!(decode_xor_address(&v, &txid), Some(addr));
        }
        // RFC 5769 §2.2 vector.
        let addr: SocketAddr = "192.0.2.1:32853".parse().unwrap();
        assert_eq!(
            encode_xor_address(addr, &txid),
            vec![0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43]
        );
        assert_eq!(decode_xor_address(&[0, 3, 0, 0, 1, 2, 3, 4], &txid), None);
        assert_eq!(decode_xor_address(&[0, 1, 0], &txid), None);
    }

    #[test]
    fn error_codes_and_attributes() {
        let txid = [1u8; 12];
        let mut b = MessageBuilder::new(method::ALLOCATE, Class::Error, txid);
        b.attr(attr::ERROR_CODE, &[0, 0, 4, 1, b'U', b'n', b'a', b'u'])
            .attr(attr::REALM, b"realm")
            .attr(attr::NONCE, b"abcdef")
            .attr_u32(attr::LIFETIME, 600);
        let bytes = b.finish(None, true);
        let msg = Message::parse(&bytes).unwrap();
        assert_eq!(msg.method, method::ALLOCATE);
        assert_eq!(msg.class, Class::Error);
        assert_eq!(msg.error_code(), Some((401, "Unau")));
        assert_eq!(msg.get_str(attr::NONCE), Some("abcdef"));
        assert_eq!(msg.get_u32(attr::LIFETIME), Some(600));
        assert!(msg.fingerprint_ok());
        assert!(!msg.has_integrity());
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(!Message::parse(&bad).unwrap().fingerprint_ok());
    }

    #[test]
    fn channel_data() {
        let mut out = Vec::new();
        write_channel_data(&mut out, 0x4001, b"hello", true);
        assert_eq!(out.len(), 12);
        assert!(is_channel_data(&out));
        assert_eq!(parse_channel_data(&out), Some((0x4001, &b"hello"[..])));
        let mut unpadded = Vec::new();
        write_channel_data(&mut unpadded, 0x7FFF, b"hello", false);
        assert_eq!(unpadded.len(), 9);
        assert_eq!(parse_channel_data(&unpadded), Some((0x7FFF, &b"hello"[..])));
        assert_eq!(parse_channel_data(&unpadded[..8]), None);
        assert!(!is_channel_data(&[0x80, 0, 0, 0]));
        assert!(!is_channel_data(&stun::binding_request([0; 12])));
    }

    #[test]
    fn stream_framing() {
        let mut stream = Vec::new();
        let stun_msg =
            MessageBuilder::new(method::ALLOCATE, Class::Success, [3; 12]).finish(None, true);
        stream.extend_from_slice(&stun_msg);
        write_channel_data(&mut stream, 0x4000, b"abc", true);
        write_channel_data(&mut stream, 0x4000, b"", true);
        stream.extend_from_slice(&stun_msg);
        // Fed one byte at a time, the frames come out whole.
        let mut framer = StreamFramer::new();
        let mut frames = Vec::new();
        for b in &stream {
            framer.push(std::slice::from_ref(b));
            while let Some(f) = framer.next_frame().unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames.len(), 4);
        assert_eq!(frames[0], stun_msg);
        assert_eq!(parse_channel_data(&frames[1]), Some((0x4000, &b"abc"[..])));
        assert_eq!(frames[1].len(), 8);
        assert_eq!(parse_channel_data(&frames[2]), Some((0x4000, &b""[..])));
        assert_eq!(frames[3], stun_msg);
        let mut junk = StreamFramer::new();
        junk.push(&[0x80, 0, 0, 0, 0]);
        assert!(junk.next_frame().is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let mut state: u32 = 0xdead_beef;
        for _ in 0..5000 {
            let mut packet =
                MessageBuilder::new(method::DATA, Class::Indication, [7; 12]).finish(None, false);
            let extra = (state % 48) as usize;
            for _ in 0..extra {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                packet.push((state >> 24) as u8);
            }
            let len = ((state >> 8) % 64) as u16 & !3;
            packet[2..4].copy_from_slice(&len.to_be_bytes());
            if let Some(msg) = Message::parse(&packet) {
                let _ = msg.error_code();
                let _ = msg.get_xor_address(attr::XOR_PEER_ADDRESS);
                let _ = msg.get_u32(attr::LIFETIME);
                let _ = msg.verify_integrity(b"k");
                let _ = msg.fingerprint_ok();
            }
            let _ = parse_channel_data(&packet[(state % 8) as usize..]);
        }
    }
}
