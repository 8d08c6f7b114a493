//! Record codec.
//!
//! A record is `[len: u32 LE][crc32c: u32 LE][payload: len bytes]` and the payload is
//! `[index: u64 LE][data]`. The checksum covers the whole payload (index and data), so a damaged
//! index is caught like damaged data. Decoding never allocates: a length above the configured
//! maximum is reported before any bytes are looked at.

use std::fmt;

/// Bytes of `len` + `crc` in front of every payload.
pub(crate) const HEADER_LEN: usize = 8;
/// Bytes of the entry index at the start of every payload.
pub(crate) const INDEX_LEN: usize = 8;

/// Payload length (the `len` field) of a record carrying `data_len` bytes of entry data.
pub(crate) fn payload_len(data_len: usize) -> u64 {
    INDEX_LEN as u64 + data_len as u64
}

/// Appends the encoding of one record to `out`.
///
/// The caller guarantees `payload_len(data.len())` fits in a `u32`.
pub(crate) fn encode(index: u64, data: &[u8], out: &mut Vec<u8>) {
    let index_bytes = index.to_le_bytes();
    let len = u32::try_from(payload_len(data.len())).expect("record size checked by the caller");
    let crc = crc32c::crc32c_append(crc32c::crc32c(&index_bytes), data);
    out.reserve(HEADER_LEN + len as usize);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&index_bytes);
    out.extend_from_slice(data);
}

/// One successfully decoded record, borrowing its data from the input buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    pub index: u64,
    pub data: &'a [u8],
    /// Total bytes the record occupies, header included.
    pub encoded_len: usize,
}

/// Why the bytes at some position are not a valid record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The buffer ends inside the record: `have` bytes present, `need` required (when the header
    /// itself is cut short, `need` is the header length).
    Incomplete { have: usize, need: usize },
    /// The length field exceeds the configured maximum.
    TooLong { len: u32, max: u32 },
    /// The length field is too small to hold the entry index.
    TooShort { len: u32 },
    /// The record is complete but its payload does not match the stored checksum.
    Checksum {
        len: u32,
        stored: u32,
        computed: u32,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Incomplete { have, need } => {
                write!(f, "record cut short: {have} of {need} bytes present")
            }
            DecodeError::TooLong { len, max } => write!(
                f,
                "record length {len} exceeds the maximum of {max} (max_record_bytes)"
            ),
            DecodeError::TooShort { len } => write!(
                f,
                "record length {len} is too small to hold an entry index ({INDEX_LEN} bytes)"
            ),
            DecodeError::Checksum {
                len,
                stored,
                computed,
            } => write!(
                f,
                "checksum mismatch in a {len}-byte record: stored {stored:#010x}, computed {computed:#010x}"
            ),
        }
    }
}

/// Decodes the record at the start of `buf`.
pub(crate) fn decode(buf: &[u8], max_record_bytes: u32) -> Result<Record<'_>, DecodeError> {
    if buf.len() < HEADER_LEN {
        return Err(DecodeError::Incomplete {
            have: buf.len(),
            need: HEADER_LEN,
        });
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes"));
    let stored = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    if len > max_record_bytes {
        return Err(DecodeError::TooLong {
            len,
            max: max_record_bytes,
        });
    }
    if (len as usize) < INDEX_LEN {
        return Err(DecodeError::TooShort { len });
    }
    let need = HEADER_LEN + len as usize;
    if buf.len() < need {
        return Err(DecodeError::Incomplete {
            have: buf.len(),
            need,
        });
    }
    let payload = &buf[HEADER_LEN..need];
    let computed = crc32c::crc32c(payload);
    if computed != stored {
        return Err(DecodeError::Checksum {
            len,
            stored,
            computed,
        });
    }
    let index = u64::from_le_bytes(payload[..INDEX_LEN].try_into().expect("8 bytes"));
    Ok(Record {
        index,
        data: &payload[INDEX_LEN..],
        encoded_len: need,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: u32 = 1 << 20;

    proptest! {
        #[test]
        fn round_trip(index in any::<u64>(), data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut buf = Vec::new();
            encode(index, &data, &mut buf);
            prop_assert_eq!(buf.len(), HEADER_LEN + INDEX_LEN + data.len());
            let rec = decode(&buf, MAX).unwrap();
            prop_assert_eq!(rec.index, index);
            prop_assert_eq!(rec.data, &data[..]);
            prop_assert_eq!(rec.encoded_len, buf.len());
        }

        #[test]
        fn decodes_first_of_concatenated_records(
            a in proptest::collection::vec(any::<u8>(), 0..300),
            b in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut buf = Vec::new();
            encode(1, &a, &mut buf);
            encode(2, &b, &mut buf);
            let first = decode(&buf, MAX).unwrap();
            prop_assert_eq!(first.data, &a[..]);
            let second = decode(&buf[first.encoded_len..], MAX).unwrap();
            prop_assert_eq!(second.index, 2);
            prop_assert_eq!(second.data, &b[..]);
        }

        #[test]
        fn every_prefix_is_incomplete(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut buf = Vec::new();
            encode(7, &data, &mut buf);
            for cut in 0..buf.len() {
                let is_incomplete = matches!(decode(&buf[..cut], MAX), Err(DecodeError::Incomplete { .. }));
                prop_assert!(is_incomplete, "cut at {}", cut);
            }
        }

        #[test]
        fn any_payload_bit_flip_is_detected(
            data in proptest::collection::vec(any::<u8>(), 1..200),
            pos in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let mut buf = Vec::new();
            encode(3, &data, &mut buf);
            let at = HEADER_LEN + pos.index(buf.len() - HEADER_LEN);
            buf[at] ^= 1 << bit;
            let is_checksum = matches!(decode(&buf, MAX), Err(DecodeError::Checksum { .. }));
            prop_assert!(is_checksum);
        }
    }

    #[test]
    fn length_above_maximum_is_rejected_before_reading() {
        let mut buf = Vec::new();
        encode(1, &[0u8; 100], &mut buf);
        assert_eq!(
            decode(&buf, 50),
            Err(DecodeError::TooLong { len: 108, max: 50 })
        );
        // A huge length in a short buffer is still "too long", never "incomplete".
        let mut huge = u32::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(&[0; 4]);
        assert!(matches!(
            decode(&huge, MAX),
            Err(DecodeError::TooLong { .. })
        ));
    }

    #[test]
    fn zeroed_header_is_too_short() {
        assert_eq!(
            decode(&[0u8; 32], MAX),
            Err(DecodeError::TooShort { len: 0 })
        );
    }
}
