//! The replication stream decoder on hostile input. Two modes, by the first byte:
//! - even: the rest is a stream, fed in pieces whose size the second byte picks. Decoding must
//!   not panic; the decoder's buffer stays bounded by one record plus one piece; whatever
//!   decodes obeys the format's rules (ascending, in-bounds records of the exact chunk length).
//! - odd: a valid stream is built from the input (geometry, records), must decode to exactly
//!   what was encoded, and then one byte chosen by the input is changed: the damaged stream
//!   must be refused.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use storage_core::stream::format::{StreamSnapshot, MAX_HEADER, MAX_RECORD};
use storage_core::stream::{Decoder, Encoder, Event, Record, StreamHeader, StreamKind};

fn decode(bytes: &[u8], piece: usize) -> Result<Vec<Event>, ()> {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    let mut next = 0u64;
    let mut header: Option<StreamHeader> = None;
    for p in bytes.chunks(piece.max(1)) {
        d.push(p);
        assert!(d.buffer_mut().len() <= MAX_RECORD.max(MAX_HEADER) + piece);
        loop {
            match d.next_event() {
                Ok(None) => break,
                Ok(Some(ev)) => {
                    match &ev {
                        Event::Header(h) => {
                            h.validate().expect("a decoded header is valid");
                            next = h.start_index;
                            header = Some((**h).clone());
                        }
                        Event::Record(r) => {
                            let h = header.as_ref().expect("a record after the header");
                            let (i, run) = match r {
                                Record::Data { index, payload } => {
                                    assert_eq!(payload.len() as u64, h.chunk_len(*index));
                                    (*index, 1)
                                }
                                Record::Hole { index, run } => (*index, *run),
                            };
                            assert!(i >= next && run >= 1 && i + run <= h.chunks());
                            next = i + run;
                        }
                        Event::End(_) => assert!(header.is_some()),
                    }
                    out.push(ev);
                }
                Err(_) => return Err(()),
            }
        }
    }
    d.finish().map_err(|_| ())?;
    Ok(out)
}

fn build(data: &[u8]) -> Option<(Vec<u8>, Vec<Record>)> {
    let g = |i: usize| data.get(i).copied().unwrap_or(0);
    let chunk_size = 4096u32 << (g(0) % 3);
    let chunks = u64::from(g(1) % 24) + 1;
    let size = chunks * u64::from(chunk_size) - u64::from(g(2) % 8) * 512;
    let mut records = Vec::new();
    let mut at = u64::from(g(3) % 3);
    for (k, &b) in data.iter().skip(4).take(16).enumerate() {
        if at >= chunks {
            break;
        }
        if b % 2 == 0 {
            let len = size
                .saturating_sub(at * u64::from(chunk_size))
                .min(u64::from(chunk_size));
            records.push(Record::Data {
                index: at,
                payload: Bytes::from(vec![b ^ k as u8; len as usize]),
            });
            at += 1;
        } else {
            let run = (u64::from(b) % 4 + 1).min(chunks - at);
            records.push(Record::Hole { index: at, run });
            at += run;
        }
        at += u64::from(b % 3);
    }
    let changes = records
        .iter()
        .map(|r| match r {
            Record::Data { .. } => 1,
            Record::Hole { run, .. } => *run,
        })
        .sum();
    let snap = |v: &str, s: &str, u: u128| StreamSnapshot {
        volume: v.into(),
        snapshot: s.into(),
        uuid: uuid::Uuid::from_u128(u),
    };
    let h = StreamHeader {
        kind: StreamKind::Increment,
        stream_id: uuid::Uuid::from_u128(u128::from(g(4))),
        source_pool: uuid::Uuid::from_u128(3),
        to: snap("v", "b", 2),
        from: Some(snap("v", "a", 1)),
        size_bytes: size,
        block_size: 512,
        chunk_size,
        change_count: changes,
        start_index: 0,
    };
    let (mut e, mut out) = Encoder::new(h).ok()?;
    for r in &records {
        match r {
            Record::Data { index, payload } => {
                let (p, c) = e.data(*index, payload).ok()?;
                out.extend_from_slice(&p);
                out.extend_from_slice(payload);
                out.extend_from_slice(&c);
            }
            Record::Hole { index, run } => out.extend_from_slice(&e.hole(*index, *run).ok()?),
        }
    }
    out.extend_from_slice(&e.end().ok()?.0);
    Some((out, records))
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let piece = usize::from(data[1]) * 97 + 1;
    if data[0] % 2 == 0 {
        let _ = decode(&data[2..], piece);
        return;
    }
    let Some((stream, records)) = build(&data[2..]) else {
        panic!("a valid stream could not be encoded");
    };
    let events = decode(&stream, piece).expect("a valid stream decodes");
    assert_eq!(events.len(), records.len() + 2);
    for (e, r) in events[1..].iter().zip(&records) {
        assert_eq!(e, &Event::Record(r.clone()));
    }
    let tail = &data[data.len().saturating_sub(3)..];
    if tail.len() == 3 {
        let at = (usize::from(tail[0]) << 8 | usize::from(tail[1])) % stream.len();
        let mut damaged = stream.clone();
        damaged[at] ^= tail[2].max(1);
        assert!(decode(&damaged, piece).is_err(), "damage at {at} accepted");
    }
});
