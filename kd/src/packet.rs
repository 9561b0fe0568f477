//! KDCOM packets: the 16-byte header, data and control packets, checksums and packet ids.

use thiserror::Error;

/// Leader of a data packet: four '0' bytes.
pub const DATA_LEADER: u32 = 0x3030_3030;
/// Leader of a control packet: four 'i' bytes.
pub const CONTROL_LEADER: u32 = 0x6969_6969;
/// The byte that ends every data packet (not counted, not checksummed).
pub const TRAILER: u8 = 0xAA;
/// The break-in byte a host sends outside any packet.
pub const BREAKIN_BYTE: u8 = b'b';
/// Largest payload either side sends or accepts (PACKET_MAX_SIZE).
pub const MAX_PAYLOAD: usize = 4000;
/// Header length on the wire.
pub const HEADER_LEN: usize = 16;

/// First packet id after a reset.
pub const INITIAL_PACKET_ID: u32 = 0x8080_0000;
/// Set in an id when the sender restarted its numbering.
pub const SYNC_PACKET_ID: u32 = 0x0000_0800;

/// The packet id that follows `id` once `id` is acknowledged: bit 0 flipped, SYNC cleared.
#[must_use]
pub fn next_packet_id(id: u32) -> u32 {
    (id ^ 1) & !SYNC_PACKET_ID
}

/// Wrapping sum of the payload bytes.
#[must_use]
pub fn checksum(payload: &[u8]) -> u32 {
    payload
        .iter()
        .fold(0u32, |sum, &b| sum.wrapping_add(u32::from(b)))
}

/// The packet types of KDCOM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    StateChange32,
    StateManipulate,
    DebugIo,
    Acknowledge,
    Resend,
    Reset,
    StateChange64,
    TraceIo,
    ControlRequest,
    FileIo,
}

impl PacketType {
    /// The type from its wire value; `None` for 0, POLL_BREAKIN (8, never on the wire) and
    /// values beyond FILE_IO.
    #[must_use]
    pub fn from_wire(value: u16) -> Option<PacketType> {
        Some(match value {
            1 => PacketType::StateChange32,
            2 => PacketType::StateManipulate,
            3 => PacketType::DebugIo,
            4 => PacketType::Acknowledge,
            5 => PacketType::Resend,
            6 => PacketType::Reset,
            7 => PacketType::StateChange64,
            9 => PacketType::TraceIo,
            10 => PacketType::ControlRequest,
            11 => PacketType::FileIo,
            _ => return None,
        })
    }

    /// The value on the wire.
    #[must_use]
    pub fn wire(self) -> u16 {
        match self {
            PacketType::StateChange32 => 1,
            PacketType::StateManipulate => 2,
            PacketType::DebugIo => 3,
            PacketType::Acknowledge => 4,
            PacketType::Resend => 5,
            PacketType::Reset => 6,
            PacketType::StateChange64 => 7,
            PacketType::TraceIo => 9,
            PacketType::ControlRequest => 10,
            PacketType::FileIo => 11,
        }
    }

    /// Control packets (ACK, RESEND, RESET) travel with the 'iiii' leader and no payload.
    #[must_use]
    pub fn is_control(self) -> bool {
        matches!(
            self,
            PacketType::Acknowledge | PacketType::Resend | PacketType::Reset
        )
    }
}

/// One well-formed packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub kind: PacketType,
    pub id: u32,
    /// Empty for control packets.
    pub payload: Vec<u8>,
}

/// Why bytes could not be made into a packet.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PacketError {
    #[error("payload of {0} bytes is larger than the protocol's maximum of {MAX_PAYLOAD}")]
    TooLarge(usize),
    #[error("control packets carry no payload")]
    ControlWithPayload,
}

impl Packet {
    /// A data packet.
    pub fn data(kind: PacketType, id: u32, payload: Vec<u8>) -> Result<Packet, PacketError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(PacketError::TooLarge(payload.len()));
        }
        if kind.is_control() {
            return Err(PacketError::ControlWithPayload);
        }
        Ok(Packet { kind, id, payload })
    }

    /// A control packet (ACK, RESEND or RESET).
    #[must_use]
    pub fn control(kind: PacketType, id: u32) -> Packet {
        Packet {
            kind,
            id,
            payload: Vec::new(),
        }
    }

    /// The bytes on the wire.
    ///
    /// ```
    /// use kds_kd::packet::{Packet, PacketType};
    /// let ack = Packet::control(PacketType::Acknowledge, 0x8080_0000).encode();
    /// assert_eq!(&ack[..4], b"iiii");
    /// assert_eq!(ack.len(), 16);
    /// ```
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let control = self.kind.is_control();
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len() + 1);
        let leader = if control { CONTROL_LEADER } else { DATA_LEADER };
        out.extend_from_slice(&leader.to_le_bytes());
        out.extend_from_slice(&self.kind.wire().to_le_bytes());
        // Lengths are checked by the constructors; `control` builds an empty payload.
        let count = u16::try_from(self.payload.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&checksum(&self.payload).to_le_bytes());
        if !control {
            out.extend_from_slice(&self.payload);
            out.push(TRAILER);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_flip_bit_zero_and_drop_sync() {
        assert_eq!(next_packet_id(0x8080_0800), 0x8080_0001);
        assert_eq!(next_packet_id(0x8080_0001), 0x8080_0000);
        assert_eq!(next_packet_id(INITIAL_PACKET_ID), 0x8080_0001);
    }

    #[test]
    fn data_packet_layout() {
        let p = Packet::data(PacketType::StateManipulate, 0x8080_0001, vec![1, 2, 0xFF]).unwrap();
        let bytes = p.encode();
        assert_eq!(
            bytes,
            [
                0x30, 0x30, 0x30, 0x30, 2, 0, 3, 0, 0x01, 0, 0x80, 0x80, 0x02, 0x01, 0, 0, 1, 2,
                0xFF, 0xAA
            ]
        );
    }

    #[test]
    fn oversized_payload_is_refused() {
        let err = Packet::data(PacketType::StateManipulate, 0, vec![0; MAX_PAYLOAD + 1]);
        assert_eq!(err, Err(PacketError::TooLarge(MAX_PAYLOAD + 1)));
    }
}
