//! A minimal STUN (RFC 5389) codec: just what the UDP demultiplexer needs to route a
//! datagram (is it STUN, whose ufrag is it for) and what server-reflexive gathering needs
//! (a Binding request, and the mapped address from the success response).
//!
//! Every function takes untrusted bytes and returns `None`/`false` on anything malformed;
//! none of them panics.
//!
//! ```
//! use smallwebrtc::net::stun;
//!
//! let txid = stun::new_transaction_id();
//! let request = stun::binding_request(txid);
//! assert!(stun::is_stun(&request));
//! assert_eq!(stun::message_type(&request), Some(stun::BINDING_REQUEST));
//! assert_eq!(stun::transaction_id(&request), Some(txid));
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The fixed magic cookie at bytes 4..8 of every RFC 5389 message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;

/// Message type of a Binding request.
pub const BINDING_REQUEST: u16 = 0x0001;

/// Message type of a Binding success response.
pub const BINDING_SUCCESS_RESPONSE: u16 = 0x0101;

/// Size of the STUN header: type, length, cookie, transaction id.
const HEADER_LEN: usize = 20;

const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
const ATTR_USERNAME: u16 = 0x0006;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;

const FAMILY_IPV4: u8 = 0x01;
const FAMILY_IPV6: u8 = 0x02;

/// Whether a datagram looks like STUN (RFC 7983 demultiplexing): first byte 0..=3, at least
/// 20 bytes, and the magic cookie at bytes 4..8.
///
/// ```
/// use smallwebrtc::net::stun::{binding_request, is_stun};
///
/// assert!(is_stun(&binding_request([7; 12])));
/// assert!(!is_stun(&[22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])); // DTLS
/// ```
pub fn is_stun(packet: &[u8]) -> bool {
    packet.len() >= HEADER_LEN
        && packet.first().is_some_and(|b| *b <= 3)
        && packet.get(4..8) == Some(&MAGIC_COOKIE.to_be_bytes()[..])
}

/// The message type (method and class) of a STUN message, e.g. [`BINDING_REQUEST`].
pub fn message_type(packet: &[u8]) -> Option<u16> {
    if !is_stun(packet) {
        return None;
    }
    read_u16(packet, 0)
}

/// The 96-bit transaction id of a STUN message (bytes 8..20).
pub fn transaction_id(packet: &[u8]) -> Option<[u8; 12]> {
    if !is_stun(packet) {
        return None;
    }
    packet.get(8..HEADER_LEN)?.try_into().ok()
}

/// The value of the USERNAME attribute (0x0006) of a STUN message, if it has one.
pub fn username(packet: &[u8]) -> Option<&[u8]> {
    attributes(packet)?
        .find(|(kind, _)| *kind == ATTR_USERNAME)
        .map(|(_, value)| value)
}

/// The part of the USERNAME attribute before the first `:`.
///
/// ICE connectivity checks carry `USERNAME = <receiver's ufrag>:<sender's ufrag>`, so for a
/// Binding request sent to us this is **our** ufrag, which identifies the session. Returns
/// `None` if there is no USERNAME, it is not UTF-8, it has no `:`, or the part before it is
/// empty.
///
/// ```
/// use smallwebrtc::net::stun::local_ufrag;
///
/// // A Binding request whose only attribute is USERNAME "abcd:wxyz".
/// let mut packet = vec![0x00, 0x01, 0x00, 0x10, 0x21, 0x12, 0xa4, 0x42];
/// packet.extend_from_slice(&[1; 12]);
/// packet.extend_from_slice(&[0x00, 0x06, 0x00, 0x09]);
/// packet.extend_from_slice(b"abcd:wxyz\0\0\0");
/// assert_eq!(local_ufrag(&packet), Some("abcd"));
/// ```
pub fn local_ufrag(packet: &[u8]) -> Option<&str> {
    let username = std::str::from_utf8(username(packet)?).ok()?;
    let (ufrag, _) = username.split_once(':')?;
    (!ufrag.is_empty()).then_some(ufrag)
}

/// A Binding request with the given transaction id and no attributes (enough for public
/// STUN servers and coturn).
pub fn binding_request(transaction_id: [u8; 12]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(HEADER_LEN);
    packet.extend_from_slice(&BINDING_REQUEST.to_be_bytes());
    packet.extend_from_slice(&0u16.to_be_bytes());
    packet.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    packet.extend_from_slice(&transaction_id);
    packet
}

/// A fresh random transaction id.
pub fn new_transaction_id() -> [u8; 12] {
    rand::random()
}

/// For a Binding success response (0x0101): its transaction id and the mapped address, taken
/// from XOR-MAPPED-ADDRESS (0x0020, IPv4 or IPv6) or, failing that, MAPPED-ADDRESS (0x0001).
///
/// Returns `None` for any other message, or if neither attribute holds a valid address.
pub fn parse_binding_success(packet: &[u8]) -> Option<([u8; 12], SocketAddr)> {
    if message_type(packet)? != BINDING_SUCCESS_RESPONSE {
        return None;
    }
    let txid = transaction_id(packet)?;
    let xor = attributes(packet)?
        .filter(|(kind, _)| *kind == ATTR_XOR_MAPPED_ADDRESS)
        .find_map(|(_, value)| decode_address(value, Some(&txid)));
    let addr = match xor {
        Some(addr) => addr,
        None => attributes(packet)?
            .filter(|(kind, _)| *kind == ATTR_MAPPED_ADDRESS)
            .find_map(|(_, value)| decode_address(value, None))?,
    };
    Some((txid, addr))
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let pair = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([*pair.first()?, *pair.get(1)?]))
}

/// The attributes of a STUN message as `(type, value)` pairs, within the length declared
/// in the header. `None` if the packet is not STUN or is shorter than declared.
fn attributes(packet: &[u8]) -> Option<Attributes<'_>> {
    if !is_stun(packet) {
        return None;
    }
    let length = usize::from(read_u16(packet, 2)?);
    let body = packet.get(HEADER_LEN..HEADER_LEN.checked_add(length)?)?;
    Some(Attributes { rest: body })
}

struct Attributes<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Attributes<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let kind = read_u16(self.rest, 0)?;
        let length = usize::from(read_u16(self.rest, 2)?);
        let Some(value) = self.rest.get(4..4 + length) else {
            self.rest = &[];
            return None;
        };
        // Values are padded to a multiple of 4; a missing final pad ends the walk cleanly.
        let padded = 4 + length.div_ceil(4) * 4;
        self.rest = self.rest.get(padded..).unwrap_or(&[]);
        Some((kind, value))
    }
}

/// Decodes a (XOR-)MAPPED-ADDRESS value; `txid` given means XOR-encoded.
fn decode_address(value: &[u8], txid: Option<&[u8; 12]>) -> Option<SocketAddr> {
    let family = *value.get(1)?;
    let mut port = read_u16(value, 2)?;
    let cookie = MAGIC_COOKIE.to_be_bytes();
    if txid.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let ip = match family {
        FAMILY_IPV4 => {
            let mut octets: [u8; 4] = value.get(4..8)?.try_into().ok()?;
            if txid.is_some() {
                for (octet, key) in octets.iter_mut().zip(cookie) {
                    *octet ^= key;
                }
            }
            IpAddr::V4(Ipv4Addr::from(octets))
        }
        FAMILY_IPV6 => {
            let mut octets: [u8; 16] = value.get(4..20)?.try_into().ok()?;
            if let Some(txid) = txid {
                let key = cookie.iter().chain(txid.iter());
                for (octet, key) in octets.iter_mut().zip(key) {
                    *octet ^= key;
                }
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TXID: [u8; 12] = [
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ];

    /// Builds a STUN message from attributes, padding each value to 4 bytes.
    fn message(kind: u16, txid: [u8; 12], attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (attr, value) in attrs {
            body.extend_from_slice(&attr.to_be_bytes());
            body.extend_from_slice(&(value.len() as u16).to_be_bytes());
            body.extend_from_slice(value);
            while body.len() % 4 != 0 {
                body.push(0);
            }
        }
        let mut packet = Vec::new();
        packet.extend_from_slice(&kind.to_be_bytes());
        packet.extend_from_slice(&(body.len() as u16).to_be_bytes());
        packet.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        packet.extend_from_slice(&txid);
        packet.extend_from_slice(&body);
        packet
    }

    /// Encodes an address value, XORed with cookie/txid when `xor` is set.
    fn address_value(addr: SocketAddr, txid: [u8; 12], xor: bool) -> Vec<u8> {
        let mut key = MAGIC_COOKIE.to_be_bytes().to_vec();
        key.extend_from_slice(&txid);
        let mask = |bytes: &[u8]| -> Vec<u8> {
            if xor {
                bytes.iter().zip(&key).map(|(b, k)| b ^ k).collect()
            } else {
                bytes.to_vec()
            }
        };
        let (family, ip) = match addr.ip() {
            IpAddr::V4(ip) => (FAMILY_IPV4, ip.octets().to_vec()),
            IpAddr::V6(ip) => (FAMILY_IPV6, ip.octets().to_vec()),
        };
        let mut value = vec![0, family];
        value.extend(mask(&addr.port().to_be_bytes()));
        value.extend(mask(&ip));
        value
    }

    #[test]
    fn binding_request_layout() {
        let packet = binding_request(TXID);
        assert_eq!(packet.len(), 20);
        assert_eq!(
            &packet[..8],
            &[0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42]
        );
        assert_eq!(&packet[8..], &TXID);
        assert!(is_stun(&packet));
        assert_eq!(message_type(&packet), Some(BINDING_REQUEST));
        assert_eq!(transaction_id(&packet), Some(TXID));
        assert_eq!(username(&packet), None);
        assert_eq!(parse_binding_success(&packet), None);
    }

    #[test]
    fn transaction_ids_are_random() {
        assert_ne!(new_transaction_id(), new_transaction_id());
    }

    #[test]
    fn is_stun_demux() {
        let packet = binding_request(TXID);
        assert!(!is_stun(&packet[..19]));
        let mut other = packet.clone();
        other[0] = 4;
        assert!(!is_stun(&other));
        other[0] = 3;
        assert!(is_stun(&other));
        let mut wrong_cookie = packet.clone();
        wrong_cookie[7] ^= 1;
        assert!(!is_stun(&wrong_cookie));
        // DTLS (20..=63) and RTP/RTCP (128..=191) first bytes.
        let mut dtls = packet.clone();
        dtls[0] = 22;
        assert!(!is_stun(&dtls));
        let mut rtp = packet;
        rtp[0] = 0x80;
        assert!(!is_stun(&rtp));
        assert!(!is_stun(&[]));
        assert_eq!(message_type(&[0; 4]), None);
        assert_eq!(transaction_id(&[0; 19]), None);
    }

    #[test]
    fn username_with_padding() {
        // 9-byte username (3 pad bytes) followed by another attribute.
        let packet = message(
            BINDING_REQUEST,
            TXID,
            &[
                (0x0024, &[0x6e, 0x00, 0x01, 0xff]), // PRIORITY
                (ATTR_USERNAME, b"abcd:wxyz"),
                (0x8029, &[1, 2, 3, 4, 5, 6, 7, 8]), // ICE-CONTROLLED
            ],
        );
        assert_eq!(packet.len() % 4, 0);
        assert_eq!(username(&packet), Some(&b"abcd:wxyz"[..]));
        assert_eq!(local_ufrag(&packet), Some("abcd"));

        for (name, expected_ufrag) in [
            (&b"ab:"[..], Some("ab")),
            (b"x:y:z", Some("x")),
            (b":remote", None),
            (b"nocolon", None),
            (b"\xff\xfe:x", None),
            (b"", None),
        ] {
            let packet = message(BINDING_REQUEST, TXID, &[(ATTR_USERNAME, name)]);
            assert_eq!(username(&packet), Some(name));
            assert_eq!(local_ufrag(&packet), expected_ufrag, "{name:?}");
        }
    }

    #[test]
    fn username_respects_declared_length() {
        let mut packet = message(BINDING_REQUEST, TXID, &[(ATTR_USERNAME, b"abcd:wxyz")]);
        // Declared length too long for the datagram: not parsed.
        packet[3] += 4;
        assert_eq!(username(&packet), None);
        // Declared length 0: attributes beyond it are ignored.
        packet[2] = 0;
        packet[3] = 0;
        assert_eq!(username(&packet), None);
        // Attribute length running past the body.
        let mut packet = message(BINDING_REQUEST, TXID, &[(ATTR_USERNAME, b"abcd:wxyz")]);
        packet[23] = 200;
        assert_eq!(username(&packet), None);
    }

    #[test]
    fn final_attribute_without_padding() {
        let mut packet = message(BINDING_REQUEST, TXID, &[(ATTR_USERNAME, b"abcd:w")]);
        packet.truncate(packet.len() - 2);
        let body_len = (packet.len() - 20) as u16;
        packet[2..4].copy_from_slice(&body_len.to_be_bytes());
        assert_eq!(local_ufrag(&packet), Some("abcd"));
    }

    #[test]
    fn xor_mapped_ipv4() {
        let addr: SocketAddr = "192.0.2.1:32853".parse().unwrap();
        let value = address_value(addr, TXID, true);
        // RFC 5769 §2.2 test vector: port 32853 -> 0xa147, 192.0.2.1 -> e1 12 a6 43.
        assert_eq!(value, vec![0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43]);
        let packet = message(
            BINDING_SUCCESS_RESPONSE,
            TXID,
            &[(0x8022, b"test vector "), (ATTR_XOR_MAPPED_ADDRESS, &value)],
        );
        assert_eq!(parse_binding_success(&packet), Some((TXID, addr)));
    }

    #[test]
    fn xor_mapped_ipv6() {
        let addr: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
            .parse()
            .unwrap();
        let value = address_value(addr, TXID, true);
        // RFC 5769 §2.3 test vector.
        assert_eq!(
            value,
            vec![
                0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa, 0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25,
                0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9
            ]
        );
        let packet = message(
            BINDING_SUCCESS_RESPONSE,
            TXID,
            &[(ATTR_XOR_MAPPED_ADDRESS, &value)],
        );
        assert_eq!(parse_binding_success(&packet), Some((TXID, addr)));
    }

    #[test]
    fn mapped_address_fallback() {
        let addr: SocketAddr = "203.0.113.7:4242".parse().unwrap();
        let plain = address_value(addr, TXID, false);
        let packet = message(
            BINDING_SUCCESS_RESPONSE,
            TXID,
            &[(ATTR_MAPPED_ADDRESS, &plain)],
        );
        assert_eq!(parse_binding_success(&packet), Some((TXID, addr)));

        let v6: SocketAddr = "[2001:db8::7]:9".parse().unwrap();
        let packet = message(
            BINDING_SUCCESS_RESPONSE,
            TXID,
            &[(ATTR_MAPPED_ADDRESS, &address_value(v6, TXID, false))],
        );
        assert_eq!(parse_binding_success(&packet), Some((TXID, v6)));
    }

    #[test]
    fn xor_mapped_preferred_over_mapped() {
        let xor: SocketAddr = "198.51.100.1:1000".parse().unwrap();
        let mapped: SocketAddr = "10.0.0.1:2000".parse().unwrap();
        let packet = message(
            BINDING_SUCCESS_RESPONSE,
            TXID,
            &[
                (ATTR_MAPPED_ADDRESS, &address_value(mapped, TXID, false)),
                (ATTR_XOR_MAPPED_ADDRESS, &address_value(xor, TXID, true)),
            ],
        );
        assert_eq!(parse_binding_success(&packet), Some((TXID, xor)));

        // A malformed XOR-MAPPED-ADDRESS falls back to MAPPED-ADDRESS.
        let packet = message(
            BINDING_SUCCESS_RESPONSE,
            TXID,
            &[
                (ATTR_XOR_MAPPED_ADDRESS, &[0, 9, 0, 0, 1, 2, 3, 4]),
                (ATTR_MAPPED_ADDRESS, &address_value(mapped, TXID, false)),
            ],
        );
        assert_eq!(parse_binding_success(&packet), Some((TXID, mapped)));
    }

    #[test]
    fn not_a_success_response() {
        let addr: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let value = address_value(addr, TXID, true);
        for kind in [BINDING_REQUEST, 0x0111 /* error response */, 0x0011] {
            let packet = message(kind, TXID, &[(ATTR_XOR_MAPPED_ADDRESS, &value)]);
            assert_eq!(parse_binding_success(&packet), None);
        }
        // No address at all.
        let packet = message(BINDING_SUCCESS_RESPONSE, TXID, &[]);
        assert_eq!(parse_binding_success(&packet), None);
        // Truncated address values.
        let packet = message(
            BINDING_SUCCESS_RESPONSE,
            TXID,
            &[(ATTR_XOR_MAPPED_ADDRESS, &value[..7])],
        );
        assert_eq!(parse_binding_success(&packet), None);
        let packet = message(
            BINDING_SUCCESS_RESPONSE,
            TXID,
            &[(ATTR_XOR_MAPPED_ADDRESS, &[0, FAMILY_IPV6, 0, 1, 2, 3])],
        );
        assert_eq!(parse_binding_success(&packet), None);
    }

    #[test]
    fn truncations_and_garbage_never_panic() {
        let v6: SocketAddr = "[2001:db8::1]:5".parse().unwrap();
        let full = message(
            BINDING_SUCCESS_RESPONSE,
            TXID,
            &[
                (ATTR_USERNAME, b"abcd:efghi"),
                (ATTR_MAPPED_ADDRESS, &address_value(v6, TXID, false)),
                (ATTR_XOR_MAPPED_ADDRESS, &address_value(v6, TXID, true)),
            ],
        );
        assert_eq!(parse_binding_success(&full), Some((TXID, v6)));
        for end in 0..full.len() {
            let prefix = &full[..end];
            // The header's declared length no longer fits, so nothing but the header parses.
            assert_eq!(username(prefix), None);
            assert_eq!(parse_binding_success(prefix), None);
            let _ = (
                is_stun(prefix),
                message_type(prefix),
                transaction_id(prefix),
            );
            let _ = local_ufrag(prefix);

            // The same prefix with its header length patched to match: attributes are cut.
            if end >= 20 {
                let mut patched = prefix.to_vec();
                let len = (end - 20) as u16;
                patched[2..4].copy_from_slice(&len.to_be_bytes());
                let _ = username(&patched);
                let _ = local_ufrag(&patched);
                let _ = parse_binding_success(&patched);
            }
        }
        // Pseudo-random garbage behind a valid header.
        let mut state: u32 = 0x1234_5678;
        for _ in 0..2000 {
            let mut packet = binding_request(TXID);
            packet[0] = 0x01;
            packet[1] = 0x01;
            let extra = (state % 64) as usize;
            for _ in 0..extra {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                packet.push((state >> 24) as u8);
            }
            let len = (state % 80) as u16;
            packet[2..4].copy_from_slice(&len.to_be_bytes());
            let _ = username(&packet);
            let _ = local_ufrag(&packet);
            let _ = parse_binding_success(&packet);
        }
        // Maximum declared lengths.
        let mut packet = binding_request(TXID);
        packet[2] = 0xff;
        packet[3] = 0xff;
        assert_eq!(username(&packet), None);
        let mut packet = message(BINDING_SUCCESS_RESPONSE, TXID, &[(0xffff, &[0; 4])]);
        packet[22] = 0xff;
        packet[23] = 0xff;
        assert_eq!(parse_binding_success(&packet), None);
    }
}
