//! Replication stream drivers between two pools: `send` into bytes, `receive` from them.
//! Chains of increments, a clone sent from its origin, cut streams resumed with the token
//! (and after the receiving pool is closed and reopened), and hostile streams refused with
//! the replica unchanged.

use bytes::Bytes;
use storage_core::stream::{
    pending_receives, prepare_send, receive, send, ReceiveRequest, ResumeToken, SendRequest,
    StreamError, StreamProgress,
};
use storage_core::{Guarantee, Pool, PoolOptions, SnapshotRef};

const CS: u64 = 64 * 1024;
const BS: u64 = 4096;
const VOL: u64 = 40 * CS + 3 * BS; // a short last chunk

async fn new_pool(dir: &std::path::Path) -> Pool {
    let opts = PoolOptions {
        chunk_size: CS as u32,
        capacity_bytes: Some(64 << 20),
        soft_threshold_pct: None,
    };
    Pool::create(dir, &opts).await.expect("create pool")
}

async fn write(pool: &Pool, vol: &str, lba: u64, tag: u8) {
    let mut v = vec![tag; BS as usize];
    v[..8].copy_from_slice(&lba.to_le_bytes());
    pool.volume(vol)
        .expect("volume")
        .write(lba, Bytes::from(v), false)
        .await
        .expect("write");
}

async fn snap_bytes(pool: &Pool, vol: &str, snap: &str) -> Vec<u8> {
    let r = SnapshotRef::new(vol, snap);
    let size = pool
        .snapshots(Some(vol))
        .into_iter()
        .find(|s| s.name == snap)
        .expect("snapshot")
        .size_bytes;
    let mut out = Vec::new();
    for i in 0..size.div_ceil(CS) {
        out.extend_from_slice(&pool.read_snapshot_chunk(&r, i).await.expect("read"));
    }
    out
}

async fn stream_of(pool: &Pool, from: Option<(&str, &str)>, to: (&str, &str)) -> Vec<u8> {
    stream_resume(pool, from, to, None).await
}

async fn stream_resume(
    pool: &Pool,
    from: Option<(&str, &str)>,
    to: (&str, &str),
    resume: Option<ResumeToken>,
) -> Vec<u8> {
    let req = SendRequest {
        from: from.map(|(v, s)| SnapshotRef::new(v, s)),
        to: SnapshotRef::new(to.0, to.1),
        resume,
    };
    let mut out = Vec::new();
    let p = StreamProgress::default();
    let sum = send(pool, &req, &mut out, &p).await.expect("send");
    assert_eq!(sum.bytes, out.len() as u64);
    out
}

async fn recv(
    pool: &Pool,
    bytes: &[u8],
) -> Result<storage_core::stream::ReceiveSummary, storage_core::stream::ReceiveError> {
    receive(
        pool,
        &ReceiveRequest::default(),
        bytes,
        &StreamProgress::default(),
    )
    .await
}

/// Source with v@s1, v@s2, v@s3 (random-ish writes between) and a clone c of v@s1 with c@c1.
async fn source(dir: &std::path::Path) -> Pool {
    let src = new_pool(dir).await;
    src.create_volume("v", VOL, BS as u32, Guarantee::None)
        .await
        .unwrap();
    for (i, lba) in [0u64, 17, 160, 161, 640, 641].into_iter().enumerate() {
        write(&src, "v", lba, i as u8 + 1).await;
    }
    write(&src, "v", VOL / BS - 1, 0xee).await;
    src.snapshot("v", "s1").await.unwrap();
    write(&src, "v", 17, 0x21).await;
    write(&src, "v", 300, 0x22).await;
    src.volume("v").unwrap().unmap(160, 16).await.unwrap();
    src.snapshot("v", "s2").await.unwrap();
    for lba in (0..VOL / BS).step_by(37) {
        write(&src, "v", lba, 0x33).await;
    }
    src.snapshot("v", "s3").await.unwrap();
    src.clone_volume("v@s1", "c", None).await.unwrap();
    write(&src, "c", 5, 0x44).await;
    src.snapshot("c", "c1").await.unwrap();
    src
}

#[tokio::test]
async fn a_chain_of_increments_and_a_clone_arrive_identical() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let src = source(d1.path()).await;
    let dst = new_pool(d2.path()).await;

    let full = stream_of(&src, None, ("v", "s1")).await;
    let sum = recv(&dst, &full).await.unwrap();
    assert_eq!(sum.snapshot.name, "s1");
    assert_eq!(
        snap_bytes(&dst, "v", "s1").await,
        snap_bytes(&src, "v", "s1").await
    );

    let inc = stream_of(&src, Some(("v", "s1")), ("v", "s2")).await;
    // s2 rewrote 2 chunks and unmapped 1: two chunks of payload and a little framing.
    assert!(inc.len() as u64 <= 2 * CS + 500, "{} bytes", inc.len());
    assert!(inc.len() < full.len());
    recv(&dst, &inc).await.unwrap();
    let inc3 = stream_of(&src, Some(("v", "s2")), ("v", "s3")).await;
    recv(&dst, &inc3).await.unwrap();
    for s in ["s1", "s2", "s3"] {
        assert_eq!(
            snap_bytes(&dst, "v", s).await,
            snap_bytes(&src, "v", s).await,
            "{s}"
        );
    }
    // The snapshots keep the sender's uuids.
    let uuids = |p: &Pool| {
        let mut v: Vec<_> = p.snapshots(Some("v")).iter().map(|s| s.uuid).collect();
        v.sort();
        v
    };
    assert_eq!(uuids(&src), uuids(&dst));

    // The clone, sent as an increment from its origin, shares the origin's chunks.
    let used_before = dst.status().used_bytes;
    let clone = stream_of(&src, Some(("v", "s1")), ("c", "c1")).await;
    recv(&dst, &clone).await.unwrap();
    assert_eq!(
        snap_bytes(&dst, "c", "c1").await,
        snap_bytes(&src, "c", "c1").await
    );
    assert!(
        dst.status().used_bytes - used_before <= CS,
        "the clone took more than its one changed chunk"
    );
    assert!(dst.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn replayed_out_of_order_and_corrupt_streams_leave_the_replica_unchanged() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let src = source(d1.path()).await;
    let dst = new_pool(d2.path()).await;
    let full = stream_of(&src, None, ("v", "s1")).await;
    recv(&dst, &full).await.unwrap();
    let before = snap_bytes(&dst, "v", "s1").await;
    let status = |p: &Pool| {
        (
            p.snapshots(None).len(),
            p.volumes().len(),
            p.status().used_bytes,
        )
    };
    let st = status(&dst);

    let e = recv(&dst, &full).await.unwrap_err();
    assert!(matches!(e.error, StreamError::Replayed { .. }), "{e}");
    let s3 = stream_of(&src, Some(("v", "s2")), ("v", "s3")).await;
    let e = recv(&dst, &s3).await.unwrap_err();
    assert!(matches!(e.error, StreamError::BaseMissing { .. }), "{e}");

    let inc = stream_of(&src, Some(("v", "s1")), ("v", "s2")).await;
    // A corrupted byte deep in the records: refused, the staged part aborted.
    let mut bad = inc.clone();
    let at = bad.len() - 100;
    bad[at] ^= 0x40;
    let e = recv(&dst, &bad).await.unwrap_err();
    assert!(e.error.is_corrupt_stream(), "{e}");
    assert!(e.resume.is_none());
    assert!(pending_receives(&dst).is_empty());
    // Garbage, and a header only.
    assert!(recv(&dst, b"not a stream at all").await.is_err());
    assert!(recv(&dst, &inc[..50]).await.is_err());
    assert_eq!(status(&dst), st);
    assert_eq!(snap_bytes(&dst, "v", "s1").await, before);
    // And the good stream still applies afterwards.
    recv(&dst, &inc).await.unwrap();
    assert_eq!(
        snap_bytes(&dst, "v", "s2").await,
        snap_bytes(&src, "v", "s2").await
    );
}

#[tokio::test]
async fn a_cut_stream_resumes_from_the_token_even_after_a_reopen() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let src = source(d1.path()).await;
    let mut dst = new_pool(d2.path()).await;
    let full = stream_of(&src, None, ("v", "s3")).await;
    // Cut at several points; each time resume from the token with a new stream.
    let mut token: Option<ResumeToken> = None;
    for (round, frac) in [3usize, 5, 8].into_iter().enumerate() {
        let bytes = stream_resume(&src, None, ("v", "s3"), token).await;
        let cut = &bytes[..bytes.len() * frac / 10];
        let e = recv(&dst, cut).await.unwrap_err();
        assert!(matches!(e.error, StreamError::Truncated { .. }), "{e}");
        let t = e.resume.expect("a cut keeps the staged state");
        assert_eq!(pending_receives(&dst)[0].token, t);
        assert!(
            dst.volume_info("v").is_err(),
            "nothing visible before the commit"
        );
        if round == 1 {
            dst.close().await.unwrap();
            dst = Pool::open(d2.path()).await.unwrap();
            assert_eq!(pending_receives(&dst)[0].token.next_index, t.next_index);
        }
        token = Some(t);
    }
    // A stream resumed from an older point than the receiver holds is fine (skipped)...
    let again = stream_resume(&src, None, ("v", "s3"), None).await;
    // ...but a token pointing past what the receiver holds is refused.
    let mut ahead = token.unwrap();
    ahead.next_index += 3;
    let bytes_ahead = stream_resume(&src, None, ("v", "s3"), Some(ahead)).await;
    let e = recv(&dst, &bytes_ahead).await.unwrap_err();
    assert!(matches!(e.error, StreamError::ResumeMismatch(_)), "{e}");
    let sum = recv(&dst, &again).await.unwrap();
    assert_eq!(sum.snapshot.name, "s3");
    assert_eq!(
        snap_bytes(&dst, "v", "s3").await,
        snap_bytes(&src, "v", "s3").await
    );
    assert!(pending_receives(&dst).is_empty());
    // full is what was cut: unused otherwise.
    assert!(!full.is_empty());
}

#[tokio::test]
async fn a_token_for_another_stream_is_refused_by_the_sender() {
    let d1 = tempfile::tempdir().unwrap();
    let src = source(d1.path()).await;
    let snaps = src.snapshots(Some("v"));
    let t = ResumeToken {
        to_uuid: snaps[0].uuid,
        from_uuid: None,
        next_index: 2,
    };
    let req = SendRequest {
        from: Some(SnapshotRef::new("v", "s1")),
        to: SnapshotRef::new("v", "s2"),
        resume: Some(t),
    };
    let mut out = Vec::new();
    let e = send(&src, &req, &mut out, &StreamProgress::default())
        .await
        .unwrap_err();
    assert!(matches!(e, StreamError::ResumeMismatch(_)), "{e}");
    assert!(out.is_empty());
}

#[tokio::test]
async fn the_announced_length_is_exact_and_origins_bound_a_clone_base() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let src = source(d1.path()).await;
    let dst = new_pool(d2.path()).await;
    // `stream_bytes` is what `write_to` writes, for a full stream, an increment (holes
    // included) and a clone stream.
    let cases = [
        (None, ("v", "s1")),
        (Some(("v", "s1")), ("v", "s2")),
        (Some(("v", "s1")), ("c", "c1")),
    ];
    for (from, to) in cases {
        let req = SendRequest {
            from: from.map(|(v, s)| SnapshotRef::new(v, s)),
            to: SnapshotRef::new(to.0, to.1),
            resume: None,
        };
        let prepared = prepare_send(&src, &req).expect("prepare");
        let announced = prepared.stream_bytes().expect("length");
        let mut out = Vec::new();
        prepared
            .write_to(&mut out, &StreamProgress::default())
            .await
            .expect("send");
        assert_eq!(announced, out.len() as u64, "{from:?} -> {to:?}");
    }

    recv(&dst, &stream_of(&src, None, ("v", "s1")).await)
        .await
        .unwrap();
    let clone = stream_of(&src, Some(("v", "s1")), ("c", "c1")).await;
    // An origin outside the allowed volumes is as good as absent, and nothing is staged.
    let elsewhere = ReceiveRequest {
        volume: None,
        origins: Some(vec!["w".into()]),
    };
    let e = receive(&dst, &elsewhere, &clone[..], &StreamProgress::default())
        .await
        .unwrap_err();
    assert!(
        matches!(e.error, StreamError::BaseMissing { .. }),
        "{}",
        e.error
    );
    assert!(pending_receives(&dst).is_empty());
    assert!(dst.volume_info("c").is_err());
    let allowed = ReceiveRequest {
        volume: None,
        origins: Some(vec!["v".into()]),
    };
    receive(&dst, &allowed, &clone[..], &StreamProgress::default())
        .await
        .expect("a clone of an allowed origin");
    assert_eq!(
        snap_bytes(&dst, "c", "c1").await,
        snap_bytes(&src, "c", "c1").await
    );
    assert_eq!(
        dst.volume_info("c").unwrap().origin.as_deref(),
        Some("v@s1")
    );
}
