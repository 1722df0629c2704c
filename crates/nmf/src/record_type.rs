//! The record type byte: what errors and state tables name a record by.

/// The record type byte, for errors and state tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordType {
    /// 0x00.
    Version,
    /// 0x01.
    Mode,
    /// 0x02.
    Via,
    /// 0x03.
    KnownEncoding,
    /// 0x04.
    ExtensibleEncoding,
    /// 0x05.
    UnsizedEnvelope,
    /// 0x06.
    SizedEnvelope,
    /// 0x07.
    End,
    /// 0x08.
    Fault,
    /// 0x09.
    UpgradeRequest,
    /// 0x0A.
    UpgradeResponse,
    /// 0x0B.
    PreambleAck,
    /// 0x0C.
    PreambleEnd,
}

impl RecordType {
    /// The wire byte.
    pub const fn byte(self) -> u8 {
        match self {
            Self::Version => 0x00,
            Self::Mode => 0x01,
            Self::Via => 0x02,
            Self::KnownEncoding => 0x03,
            Self::ExtensibleEncoding => 0x04,
            Self::UnsizedEnvelope => 0x05,
            Self::SizedEnvelope => 0x06,
            Self::End => 0x07,
            Self::Fault => 0x08,
            Self::UpgradeRequest => 0x09,
            Self::UpgradeResponse => 0x0A,
            Self::PreambleAck => 0x0B,
            Self::PreambleEnd => 0x0C,
        }
    }
}
