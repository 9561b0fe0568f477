//! Turning a byte stream into packets: leader hunting, header and trailer checks, checksums,
//! and resynchronisation after noise.

use crate::packet::{
    checksum, Packet, PacketType, BREAKIN_BYTE, CONTROL_LEADER, DATA_LEADER, HEADER_LEN,
    MAX_PAYLOAD, TRAILER,
};
use thiserror::Error;

/// What the decoder found in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A packet that passed every check.
    Packet(Packet),
    /// A break-in byte outside any packet.
    BreakIn,
    /// A packet that failed a check; the receiver asks for a resend and hunts for the next leader.
    Corrupt(FrameError),
}

/// Which check a packet failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("unknown packet type {0}")]
    UnknownType(u16),
    #[error("packet type {kind:?} arrived with the wrong leader")]
    WrongLeader { kind: PacketType },
    #[error("byte count {0} exceeds the protocol maximum")]
    TooLong(u16),
    #[error("control packet with byte count {0}")]
    ControlWithPayload(u16),
    #[error("checksum {found:#010x} does not match the payload's {computed:#010x}")]
    Checksum { found: u32, computed: u32 },
    #[error("trailer byte {0:#04x} instead of 0xaa")]
    Trailer(u8),
}

#[derive(Debug)]
enum State {
    /// Counting identical leader bytes.
    Hunting {
        byte: u8,
        count: u8,
    },
    /// Reading the 12 header bytes after the leader.
    Header {
        leader: u32,
    },
    Payload {
        header: Header,
    },
    Trailer {
        header: Header,
    },
}

#[derive(Debug, Clone, Copy)]
struct Header {
    kind: PacketType,
    count: usize,
    id: u32,
    checksum: u32,
}

/// A byte-at-a-time KDCOM decoder. Feed it every byte read from the link.
///
/// ```
/// use kds_kd::framer::{Frame, FrameDecoder};
/// use kds_kd::packet::{Packet, PacketType};
/// let bytes = Packet::control(PacketType::Reset, 0).encode();
/// let mut decoder = FrameDecoder::default();
/// let frames: Vec<Frame> = b"noise".iter().chain(&bytes).filter_map(|b| decoder.push(*b)).collect();
/// assert_eq!(frames, [Frame::Packet(Packet::control(PacketType::Reset, 0))]);
/// ```
#[derive(Debug)]
pub struct FrameDecoder {
    state: State,
    buffer: Vec<u8>,
    /// Bytes that were not part of any accepted packet or break-in.
    discarded: u64,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder {
            state: State::Hunting { byte: 0, count: 0 },
            buffer: Vec::with_capacity(MAX_PAYLOAD),
            discarded: 0,
        }
    }
}

impl FrameDecoder {
    /// Bytes skipped so far as noise or as parts of corrupt packets.
    #[must_use]
    pub fn discarded(&self) -> u64 {
        self.discarded
    }

    /// Forget any partial packet (after a reset, or when stale input is dropped).
    pub fn clear(&mut self) {
        self.state = State::Hunting { byte: 0, count: 0 };
        self.buffer.clear();
    }

    /// Consume one byte; returns a frame when one completes.
    pub fn push(&mut self, b: u8) -> Option<Frame> {
        match self.state {
            State::Hunting { byte, count } => self.hunt(b, byte, count),
            State::Header { leader } => {
                self.buffer.push(b);
                if self.buffer.len() < HEADER_LEN - 4 {
                    return None;
                }
                self.header(leader)
            }
            State::Payload { header } => {
                self.buffer.push(b);
                if self.buffer.len() == header.count {
                    self.state = State::Trailer { header };
                }
                None
            }
            State::Trailer { header } => Some(self.finish(header, b)),
        }
    }

    fn hunt(&mut self, b: u8, byte: u8, count: u8) -> Option<Frame> {
        if b == b'0' || b == b'i' {
            let count = if b == byte { count + 1 } else { 1 };
            if count == 4 {
                let leader = if b == b'0' {
                    DATA_LEADER
                } else {
                    CONTROL_LEADER
                };
                self.buffer.clear();
                self.state = State::Header { leader };
            } else {
                self.state = State::Hunting { byte: b, count };
            }
            return None;
        }
        self.discarded += u64::from(count);
        self.state = State::Hunting { byte: 0, count: 0 };
        if b == BREAKIN_BYTE {
            return Some(Frame::BreakIn);
        }
        self.discarded += 1;
        None
    }

    fn header(&mut self, leader: u32) -> Option<Frame> {
        let h = &self.buffer;
        let kind = u16::from_le_bytes([h[0], h[1]]);
        let count = u16::from_le_bytes([h[2], h[3]]);
        let id = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let sum = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        let Some(kind) = PacketType::from_wire(kind) else {
            return Some(self.corrupt(FrameError::UnknownType(kind)));
        };
        if kind.is_control() != (leader == CONTROL_LEADER) {
            return Some(self.corrupt(FrameError::WrongLeader { kind }));
        }
        if kind.is_control() {
            self.clear();
            if count != 0 {
                return Some(self.corrupt(FrameError::ControlWithPayload(count)));
            }
            return Some(Frame::Packet(Packet::control(kind, id)));
        }
        if usize::from(count) > MAX_PAYLOAD {
            return Some(self.corrupt(FrameError::TooLong(count)));
        }
        let header = Header {
            kind,
            count: usize::from(count),
            id,
            checksum: sum,
        };
        self.buffer.clear();
        self.state = if header.count == 0 {
            State::Trailer { header }
        } else {
            State::Payload { header }
        };
        None
    }

    fn finish(&mut self, header: Header, trailer: u8) -> Frame {
        if trailer != TRAILER {
            return self.corrupt(FrameError::Trailer(trailer));
        }
        let computed = checksum(&self.buffer);
        if computed != header.checksum {
            return self.corrupt(FrameError::Checksum {
                found: header.checksum,
                computed,
            });
        }
        let payload = std::mem::take(&mut self.buffer);
        self.buffer.reserve(MAX_PAYLOAD);
        self.clear();
        Frame::Packet(Packet {
            kind: header.kind,
            id: header.id,
            payload,
        })
    }

    fn corrupt(&mut self, error: FrameError) -> Frame {
        self.discarded += (4 + self.buffer.len()) as u64;
        self.clear();
        Frame::Corrupt(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::INITIAL_PACKET_ID;

    fn decode(bytes: &[u8]) -> Vec<Frame> {
        let mut d = FrameDecoder::default();
        bytes.iter().filter_map(|b| d.push(*b)).collect()
    }

    fn manipulate(payload: Vec<u8>) -> Packet {
        Packet::data(PacketType::StateManipulate, INITIAL_PACKET_ID, payload).unwrap()
    }

    #[test]
    fn data_packet_round_trips_through_noise() {
        let p = manipulate((0..200).map(|i| i as u8).collect());
        let mut bytes = b"\x00\x01000i".to_vec();
        bytes.extend(p.encode());
        bytes.extend(b"xyz");
        assert_eq!(decode(&bytes), [Frame::Packet(p)]);
    }

    #[test]
    fn break_in_outside_a_packet() {
        let ack = Packet::control(PacketType::Acknowledge, 1);
        let mut bytes = vec![b'b'];
        bytes.extend(ack.encode());
        assert_eq!(decode(&bytes), [Frame::BreakIn, Frame::Packet(ack)]);
    }

    #[test]
    fn a_flipped_payload_byte_fails_the_checksum_and_the_next_packet_still_decodes() {
        let p = manipulate(vec![7; 64]);
        let mut bad = p.encode();
        bad[HEADER_LEN + 10] ^= 0x10;
        let mut bytes = bad;
        bytes.extend(p.encode());
        let frames = decode(&bytes);
        assert!(matches!(
            frames[0],
            Frame::Corrupt(FrameError::Checksum { .. })
        ));
        assert_eq!(frames[1], Frame::Packet(p));
    }

    #[test]
    fn bad_trailer_unknown_type_and_oversize_are_reported() {
        let p = manipulate(vec![1, 2, 3]);
        let mut bad = p.encode();
        *bad.last_mut().unwrap() = 0;
        assert_eq!(decode(&bad), [Frame::Corrupt(FrameError::Trailer(0))]);

        let mut unknown = p.encode();
        unknown[4] = 0x20;
        assert_eq!(
            decode(&unknown)[0],
            Frame::Corrupt(FrameError::UnknownType(0x20))
        );

        let mut long = p.encode();
        long[6..8].copy_from_slice(&4001u16.to_le_bytes());
        assert_eq!(decode(&long)[0], Frame::Corrupt(FrameError::TooLong(4001)));
    }

    #[test]
    fn three_leader_bytes_are_not_a_packet() {
        let ack = Packet::control(PacketType::Acknowledge, 3);
        let mut bytes = b"000".to_vec();
        bytes.push(b'x');
        bytes.extend(ack.encode());
        assert_eq!(decode(&bytes), [Frame::Packet(ack)]);
    }

    #[test]
    fn control_type_with_data_leader_is_corrupt() {
        let mut bytes = Packet::control(PacketType::Reset, 0).encode();
        bytes[..4].copy_from_slice(b"0000");
        assert!(matches!(
            decode(&bytes)[0],
            Frame::Corrupt(FrameError::WrongLeader { .. })
        ));
    }
}
