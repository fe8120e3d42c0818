//! Round trips and hostile input for the sans-I/O codec.

use bytes::Bytes;
use proptest::prelude::*;
use uuid::Uuid;

use super::encode::encode_end;
use super::format::{StreamSnapshot, END_LEN, HEADER_FIXED};
use super::*;

fn header(size_bytes: u64, chunk_size: u32, changes: u64) -> StreamHeader {
    StreamHeader {
        kind: StreamKind::Increment,
        stream_id: Uuid::from_u128(7),
        source_pool: Uuid::from_u128(9),
        to: StreamSnapshot {
            volume: "vol".into(),
            snapshot: "s2".into(),
            uuid: Uuid::from_u128(2),
        },
        from: Some(StreamSnapshot {
            volume: "vol".into(),
            snapshot: "s1".into(),
            uuid: Uuid::from_u128(1),
        }),
        size_bytes,
        block_size: 512,
        chunk_size,
        change_count: changes,
        start_index: 0,
    }
}

fn changes_of(records: &[Record]) -> u64 {
    records
        .iter()
        .map(|r| match r {
            Record::Data { .. } => 1,
            Record::Hole { run, .. } => *run,
        })
        .sum()
}

fn encode_stream(h: &StreamHeader, records: &[Record]) -> Vec<u8> {
    let (mut e, mut out) = Encoder::new(h.clone()).unwrap();
    for r in records {
        match r {
            Record::Data { index, payload } => {
                let (p, c) = e.data(*index, payload).unwrap();
                out.extend_from_slice(&p);
                out.extend_from_slice(payload);
                out.extend_from_slice(&c);
            }
            Record::Hole { index, run } => out.extend_from_slice(&e.hole(*index, *run).unwrap()),
        }
    }
    out.extend_from_slice(&e.end().unwrap().0);
    out
}

/// Feeds `bytes` in pieces of `step` and collects every event; the first error ends it.
fn decode_all(bytes: &[u8], step: usize) -> Result<Vec<Event>, StreamError> {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    for piece in bytes.chunks(step.max(1)) {
        d.push(piece);
        while let Some(ev) = d.next_event()? {
            out.push(ev);
        }
    }
    d.finish()?;
    Ok(out)
}

fn sample() -> (StreamHeader, Vec<Record>) {
    let cs = 4096u32;
    // 10 chunks, the last one short (a volume of 9.5 chunks).
    let size = 9 * 4096 + 2048;
    let records = vec![
        Record::Data {
            index: 0,
            payload: Bytes::from(vec![1u8; 4096]),
        },
        Record::Hole { index: 2, run: 3 },
        Record::Data {
            index: 6,
            payload: Bytes::from(vec![6u8; 4096]),
        },
        Record::Data {
            index: 9,
            payload: Bytes::from(vec![9u8; 2048]),
        },
    ];
    (header(size, cs, changes_of(&records)), records)
}

#[test]
fn a_stream_round_trips_whatever_the_read_sizes() {
    let (h, records) = sample();
    let bytes = encode_stream(&h, &records);
    for step in [1, 3, 7, 16, 100, 4096, 5000, bytes.len()] {
        let ev = decode_all(&bytes, step).unwrap();
        assert_eq!(ev[0], Event::Header(Box::new(h.clone())));
        let got: Vec<Record> = ev[1..ev.len() - 1]
            .iter()
            .map(|e| match e {
                Event::Record(r) => r.clone(),
                e => panic!("unexpected {e:?}"),
            })
            .collect();
        assert_eq!(got, records);
        assert!(matches!(ev.last(), Some(Event::End(t)) if t.records == 4));
    }
}

#[test]
fn every_truncation_is_refused() {
    let (h, records) = sample();
    let bytes = encode_stream(&h, &records);
    for cut in 0..bytes.len() {
        let e = decode_all(&bytes[..cut], 64).unwrap_err();
        assert!(
            matches!(e, StreamError::Truncated { .. }),
            "cut at {cut}: {e:?}"
        );
    }
}

#[test]
fn every_flipped_byte_is_refused() {
    let (h, records) = sample();
    let bytes = encode_stream(&h, &records);
    for at in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut b = bytes.clone();
            b[at] ^= bit;
            let r = decode_all(&b, 512);
            assert!(r.is_err(), "flip {bit:#x} at {at} accepted");
        }
    }
}

/// Byte ranges of each record in an encoded stream.
fn record_spans(h: &StreamHeader, records: &[Record]) -> (usize, Vec<std::ops::Range<usize>>) {
    let head = h.encode().unwrap().len();
    let mut at = head;
    let mut spans = Vec::new();
    for r in records {
        let len = match r {
            Record::Data { payload, .. } => 16 + payload.len() + 4,
            Record::Hole { .. } => 28,
        };
        spans.push(at..at + len);
        at += len;
    }
    (head, spans)
}

#[test]
fn reordered_duplicated_and_dropped_records_are_refused() {
    let (h, records) = sample();
    let bytes = encode_stream(&h, &records);
    let (head, spans) = record_spans(&h, &records);
    let end = &bytes[bytes.len() - END_LEN..];
    let piece = |i: usize| &bytes[spans[i].clone()];
    let build = |order: &[usize]| {
        let mut b = bytes[..head].to_vec();
        for &i in order {
            b.extend_from_slice(piece(i));
        }
        b.extend_from_slice(end);
        b
    };
    let swapped = decode_all(&build(&[0, 2, 1, 3]), 64).unwrap_err();
    assert!(
        matches!(swapped, StreamError::OutOfOrder { .. }),
        "{swapped:?}"
    );
    let dup = decode_all(&build(&[0, 1, 1, 2, 3]), 64).unwrap_err();
    assert!(matches!(dup, StreamError::OutOfOrder { .. }), "{dup:?}");
    let dropped = decode_all(&build(&[0, 2, 3]), 64).unwrap_err();
    assert!(
        matches!(dropped, StreamError::EndMismatch(_)),
        "{dropped:?}"
    );
    // Dropping a record and forging a self-consistent END (right count and bytes) is still
    // caught by the running digest.
    let mut forged = build(&[0, 2, 3]);
    let seed = crc32c::crc32c(&bytes[..head - 4]);
    let t = Trailer {
        records: 3,
        payload_bytes: 4096 + 4096 + 2048,
        digest: 0x1234_5678,
    };
    let n = forged.len();
    forged[n - END_LEN..].copy_from_slice(&encode_end(seed, &t));
    let e = decode_all(&forged, 64).unwrap_err();
    assert!(matches!(e, StreamError::EndMismatch(_)), "{e:?}");
}

#[test]
fn a_record_spliced_from_another_stream_fails_its_crc() {
    let (h, records) = sample();
    let bytes = encode_stream(&h, &records);
    let mut other_h = h.clone();
    other_h.stream_id = Uuid::from_u128(8);
    let other = encode_stream(&other_h, &records);
    let (_, spans) = record_spans(&h, &records);
    let mut b = bytes.clone();
    let s = spans[2].clone();
    b[s.clone()].copy_from_slice(&other[s.clone()]);
    let e = decode_all(&b, 64).unwrap_err();
    assert!(matches!(e, StreamError::RecordCrc { .. }), "{e:?}");
}

#[test]
fn trailing_bytes_and_missing_end_are_refused() {
    let (h, records) = sample();
    let mut bytes = encode_stream(&h, &records);
    let without_end = bytes[..bytes.len() - END_LEN].to_vec();
    assert!(matches!(
        decode_all(&without_end, 64),
        Err(StreamError::Truncated { .. })
    ));
    bytes.push(0);
    assert!(matches!(
        decode_all(&bytes, 64),
        Err(StreamError::TrailingData)
    ));
}

/// Re-encodes a header with one field changed and a fixed CRC, as a hostile sender would.
fn with_crc(mut b: Vec<u8>, change: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    b.truncate(b.len() - 4);
    change(&mut b);
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

#[test]
fn hostile_headers_are_refused_with_specific_errors() {
    let (h, _) = sample();
    let good = h.encode().unwrap();
    let dec = |b: &[u8]| {
        let mut d = Decoder::new();
        d.push(b);
        d.next_event()
    };
    assert!(matches!(dec(b"GARBAGE!"), Err(StreamError::BadMagic)));
    assert!(matches!(dec(b"X"), Err(StreamError::BadMagic)));
    let v2 = with_crc(good.clone(), |b| b[8] = 2);
    assert!(matches!(dec(&v2), Err(StreamError::UnsupportedVersion(2))));
    let flags = with_crc(good.clone(), |b| b[10] = 1);
    assert!(matches!(dec(&flags), Err(StreamError::UnknownFlags(1))));
    let kind = with_crc(good.clone(), |b| b[12] = 9);
    assert!(matches!(dec(&kind), Err(StreamError::BadHeader(_))));
    let huge_chunk = with_crc(good.clone(), |b| {
        b[60..64].copy_from_slice(&(1u32 << 31).to_le_bytes())
    });
    assert!(matches!(dec(&huge_chunk), Err(StreamError::BadHeader(_))));
    let too_many = with_crc(good.clone(), |b| {
        b[64..72].copy_from_slice(&u64::MAX.to_le_bytes())
    });
    assert!(matches!(dec(&too_many), Err(StreamError::BadHeader(_))));
    let mut bad_crc = good.clone();
    let n = bad_crc.len();
    bad_crc[n - 1] ^= 1;
    assert!(matches!(dec(&bad_crc), Err(StreamError::HeaderCrc)));
    // A name with '/' (the sender's names become the receiver's names).
    let slash = with_crc(good.clone(), |b| b[HEADER_FIXED] = b'/');
    assert!(matches!(dec(&slash), Err(StreamError::BadHeader(_))));
    // Full stream naming a base.
    let full = with_crc(good, |b| b[12] = 0);
    assert!(matches!(dec(&full), Err(StreamError::BadHeader(_))));
}

#[test]
fn a_hostile_length_is_refused_before_anything_is_buffered() {
    let (h, _) = sample();
    let mut b = h.encode().unwrap();
    // DATA for chunk 0 claiming 4 GiB - 1 bytes.
    b.push(b'D');
    b.extend_from_slice(&[0; 3]);
    b.extend_from_slice(&u32::MAX.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    let mut d = Decoder::new();
    d.push(&b);
    assert!(matches!(d.next_event(), Ok(Some(Event::Header(_)))));
    assert!(matches!(d.next_event(), Err(StreamError::BadRecord { .. })));
    assert!(d.buffer_mut().capacity() < 1 << 20);
    // And past the volume end.
    let mut b = h.encode().unwrap();
    b.push(b'D');
    b.extend_from_slice(&[0; 3]);
    b.extend_from_slice(&4096u32.to_le_bytes());
    b.extend_from_slice(&10u64.to_le_bytes());
    let mut d = Decoder::new();
    d.push(&b);
    d.next_event().unwrap();
    assert!(matches!(d.next_event(), Err(StreamError::PastEnd { .. })));
}

#[test]
fn after_an_error_the_decoder_stays_failed() {
    let mut d = Decoder::new();
    d.push(b"nonsense");
    assert!(d.next_event().is_err());
    let (h, records) = sample();
    d.push(&encode_stream(&h, &records));
    assert!(d.next_event().is_err());
    assert!(d.finish().is_err());
}

#[test]
fn a_resumed_stream_starts_at_its_start_index() {
    let (mut h, records) = sample();
    h.start_index = 6;
    let rest: Vec<Record> = records[2..].to_vec();
    h.change_count = changes_of(&rest);
    let bytes = encode_stream(&h, &rest);
    assert_eq!(decode_all(&bytes, 100).unwrap().len(), 4);
    // A record below the start index is refused on both ends.
    let (mut e, _) = Encoder::new(h.clone()).unwrap();
    assert!(matches!(
        e.data(0, &[0; 4096]),
        Err(StreamError::OutOfOrder { .. })
    ));
}

#[test]
fn the_encoder_refuses_what_the_decoder_would() {
    let (h, _) = sample();
    let (mut e, _) = Encoder::new(h.clone()).unwrap();
    assert!(e.data(0, &[0; 100]).is_err()); // wrong length
    e.hole(1, 2).unwrap();
    assert!(e.hole(2, 1).is_err()); // overlaps
    assert!(e.hole(5, 100).is_err()); // past end
    assert!(e.end().is_err()); // fewer changes than announced
}

#[test]
fn resume_tokens_round_trip_and_refuse_damage() {
    let t = ResumeToken {
        to_uuid: Uuid::new_v4(),
        from_uuid: Some(Uuid::new_v4()),
        next_index: 12345,
    };
    let s = t.to_string();
    assert_eq!(s.parse::<ResumeToken>().unwrap(), t);
    let full = ResumeToken {
        from_uuid: None,
        ..t
    };
    assert_eq!(full.to_string().parse::<ResumeToken>().unwrap(), full);
    let mut damaged = s.clone().into_bytes();
    let at = damaged.len() - 10;
    damaged[at] = if damaged[at] == b'0' { b'1' } else { b'0' };
    let damaged = String::from_utf8(damaged).unwrap();
    assert!(matches!(
        damaged.parse::<ResumeToken>(),
        Err(StreamError::BadToken(_))
    ));
    assert!("lunar-resume-v1-zz".parse::<ResumeToken>().is_err());
    assert!(s[..s.len() - 2].parse::<ResumeToken>().is_err());
    assert!("".parse::<ResumeToken>().is_err());
}

fn arb_stream() -> impl Strategy<Value = (StreamHeader, Vec<Record>)> {
    (
        1u64..40,
        prop::sample::select(vec![4096u32, 8192]),
        any::<u64>(),
    )
        .prop_flat_map(|(chunks, cs, seed)| {
            let size = chunks * u64::from(cs) - (seed % 4) * 512;
            prop::collection::vec((any::<bool>(), 1u64..4, any::<u8>()), 0..12).prop_map(
                move |steps| {
                    let mut h = header(size, cs, 0);
                    h.stream_id = Uuid::from_u128(u128::from(seed));
                    let mut records = Vec::new();
                    let mut at = seed % 3;
                    for (data, run, fill) in steps {
                        if at >= h.chunks() {
                            break;
                        }
                        if data {
                            let len = h.chunk_len(at) as usize;
                            records.push(Record::Data {
                                index: at,
                                payload: Bytes::from(vec![fill; len]),
                            });
                            at += 1;
                        } else {
                            let run = run.min(h.chunks() - at);
                            records.push(Record::Hole { index: at, run });
                            at += run;
                        }
                        at += u64::from(fill % 3);
                    }
                    h.change_count = changes_of(&records);
                    (h, records)
                },
            )
        })
}

proptest! {
    #[test]
    fn any_valid_stream_round_trips((h, records) in arb_stream(), step in 1usize..9000) {
        let bytes = encode_stream(&h, &records);
        let ev = decode_all(&bytes, step).unwrap();
        prop_assert_eq!(&ev[0], &Event::Header(Box::new(h)));
        prop_assert_eq!(ev.len(), records.len() + 2);
        for (e, r) in ev[1..].iter().zip(&records) {
            prop_assert_eq!(e, &Event::Record(r.clone()));
        }
    }

    #[test]
    fn arbitrary_damage_never_panics_and_is_mostly_refused(
        (h, records) in arb_stream(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut bytes = encode_stream(&h, &records);
        let i = at.index(bytes.len());
        let changed = bytes[i] != byte;
        bytes[i] = byte;
        let r = decode_all(&bytes, 777);
        if changed {
            prop_assert!(r.is_err());
        }
    }

    #[test]
    fn random_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode_all(&b, 13);
        let mut with_magic = super::format::MAGIC.to_vec();
        with_magic.extend_from_slice(&b);
        let _ = decode_all(&with_magic, 13);
    }
}
