//! The STUN header and the attribute list (RFC 8489 §5, §14).

use super::attribute::{Attribute, attr, decode_attribute, encode_attribute};
use super::error::StunError;
use super::{HEADER_LEN, MAGIC_COOKIE, MAX_MESSAGE};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }
    fn from_bits(b: u16) -> Class {
        match b & 0b11 {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::Success,
            _ => Class::Error,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub class: Class,
    /// 12-bit method (Binding is 0x001).
    pub method: u16,
    pub transaction_id: [u8; 12],
    /// In wire order. FINGERPRINT is not listed: it is checked on decode and added
    /// by [`Message::encode`] on request.
    pub attributes: Vec<Attribute>,
}

/// RFC 7983 demultiplexing: first byte 0..=3 and the magic cookie in bytes 4..8.
pub fn is_stun(bytes: &[u8]) -> bool {
    bytes.len() >= HEADER_LEN && bytes[0] <= 3 && bytes[4..8] == MAGIC_COOKIE.to_be_bytes()
}

/// TCP framing (RFC 8489 §6.2.2): STUN messages delimit themselves. Given the start
/// of a stream, the length of the first message once the header is in, or an error
/// if the bytes cannot begin a STUN message.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, StunError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if !is_stun(buf) {
        return Err(StunError::NotStun("bad first byte or magic cookie"));
    }
    let len = HEADER_LEN + u16::from_be_bytes([buf[2], buf[3]]) as usize;
    if len > MAX_MESSAGE {
        return Err(StunError::TooLarge);
    }
    Ok(Some(len))
}

impl Message {
    pub fn new(class: Class, method: u16, transaction_id: [u8; 12]) -> Message {
        Message {
            class,
            method,
            transaction_id,
            attributes: Vec::new(),
        }
    }

    pub fn with(mut self, a: Attribute) -> Message {
        self.attributes.push(a);
        self
    }

    pub fn get(&self, typ: u16) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.typ() == typ)
    }

    /// Encode; with `fingerprint`, FINGERPRINT (CRC-32 of everything before it, XOR
    /// 0x5354554e, §14.7) goes last.
    pub fn encode(&self, fingerprint: bool) -> Vec<u8> {
        let m = self.method & 0x0fff;
        let c = self.class.bits();
        let typ = (m & 0x000f)
            | ((m & 0x0070) << 1)
            | ((m & 0x0f80) << 2)
            | ((c & 1) << 4)
            | ((c & 2) << 7);
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&typ.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        out.extend_from_slice(&self.transaction_id);
        for a in &self.attributes {
            encode_attribute(a, &self.transaction_id, &mut out);
        }
        if fingerprint {
            let len = (out.len() - HEADER_LEN + 8) as u16;
            out[2..4].copy_from_slice(&len.to_be_bytes());
            let crc = crc32fast::hash(&out) ^ 0x5354_554e;
            out.extend_from_slice(&attr::FINGERPRINT.to_be_bytes());
            out.extend_from_slice(&4u16.to_be_bytes());
            out.extend_from_slice(&crc.to_be_bytes());
        } else {
            let len = (out.len() - HEADER_LEN) as u16;
            out[2..4].copy_from_slice(&len.to_be_bytes());
        }
        out
    }

    /// Decode exactly one message (`bytes` is the whole datagram or TCP frame).
    pub fn decode(bytes: &[u8]) -> Result<Message, StunError> {
        if bytes.len() > MAX_MESSAGE {
            return Err(StunError::TooLarge);
        }
        if !is_stun(bytes) {
            return Err(StunError::NotStun("bad first byte or magic cookie"));
        }
        let typ = u16::from_be_bytes([bytes[0], bytes[1]]);
        let len = u16::from_be_bytes([bytes[2], bytes[3]]) as usize;
        if len % 4 != 0 || HEADER_LEN + len != bytes.len() {
            return Err(StunError::Malformed(
                "length field does not match the message",
            ));
        }
        let method = (typ & 0x000f) | ((typ >> 1) & 0x0070) | ((typ >> 2) & 0x0f80);
        let class = Class::from_bits(((typ >> 4) & 1) | ((typ >> 7) & 2));
        let transaction_id: [u8; 12] = bytes[8..20].try_into().expect("12 bytes");
        let mut attributes = Vec::new();
        let mut pos = HEADER_LEN;
        while pos < bytes.len() {
            if bytes.len() - pos < 4 {
                return Err(StunError::Malformed("truncated attribute header"));
            }
            let at = u16::from_be_bytes([bytes[pos], bytes[pos + 1]]);
            let alen = u16::from_be_bytes([bytes[pos + 2], bytes[pos + 3]]) as usize;
            let start = pos + 4;
            let end = start + alen;
            let padded = start + alen.div_ceil(4) * 4;
            if padded > bytes.len() {
                return Err(StunError::Malformed("attribute runs past the end"));
            }
            if at == attr::FINGERPRINT {
                if alen != 4 || padded != bytes.len() {
                    return Err(StunError::Malformed(
                        "FINGERPRINT must be the last attribute",
                    ));
                }
                // The CRC covers the header as sent, whose length includes FINGERPRINT.
                let got = u32::from_be_bytes(bytes[start..end].try_into().expect("4 bytes"));
                if crc32fast::hash(&bytes[..pos]) ^ 0x5354_554e != got {
                    return Err(StunError::Fingerprint);
                }
                break;
            }
            attributes.push(decode_attribute(at, &bytes[start..end], &transaction_id)?);
            pos = padded;
        }
        Ok(Message {
            class,
            method,
            transaction_id,
            attributes,
        })
    }
}
