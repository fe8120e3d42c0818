//! Throughput of a full replication send of cached data, side by side with one loopback TCP
//! stream (the issue-18 goal: a full send at >= 0.8 of loopback TCP), alternating in one run.
//!
//! ```text
//! cargo run --release -p storage-core --example stream_bench -- [MIB] [ROUNDS] [DIR]
//! ```
//!
//! Builds a pool in DIR (default: a temporary directory under /dev/shm if it exists, so the
//! data is cached), writes MIB (default 512) MiB of non-zero data into one volume, snapshots
//! it, then per round measures, in this order:
//! - `tcp`: 1 MiB writes over one loopback TCP connection into a reader that discards them;
//! - `send>null`: the full stream into a sink (what `lunarctl replica send > /dev/null` does
//!   minus the socket);
//! - `send>tcp`: the full stream over loopback TCP into a reader that runs the stream decoder
//!   (every CRC checked, payloads dropped).
//!
//! Prints MiB/s of each and the ratios to `tcp` of the same round.

use std::time::Instant;

use bytes::Bytes;
use storage_core::stream::{send, Decoder, SendRequest, StreamProgress};
use storage_core::{Guarantee, Pool, PoolOptions, SnapshotRef};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: u64 = 1 << 20;

async fn tcp_raw(bytes: u64) -> anyhow::Result<f64> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    let sink = tokio::spawn(async move {
        let (mut s, _) = l.accept().await?;
        let mut b = vec![0u8; MIB as usize];
        let mut total = 0u64;
        loop {
            let n = s.read(&mut b).await?;
            if n == 0 {
                return anyhow::Ok(total);
            }
            total += n as u64;
        }
    });
    let mut c = tokio::net::TcpStream::connect(addr).await?;
    let buf = vec![0x5au8; MIB as usize];
    let t0 = Instant::now();
    let mut sent = 0;
    while sent < bytes {
        c.write_all(&buf).await?;
        sent += MIB;
    }
    c.shutdown().await?;
    let got = sink.await??;
    anyhow::ensure!(got == sent, "sink got {got} of {sent}");
    Ok(sent as f64 / MIB as f64 / t0.elapsed().as_secs_f64())
}

async fn send_null(pool: &Pool, req: &SendRequest) -> anyhow::Result<(f64, u64)> {
    let t0 = Instant::now();
    let sum = send(pool, req, tokio::io::sink(), &StreamProgress::default()).await?;
    Ok((
        sum.bytes as f64 / MIB as f64 / t0.elapsed().as_secs_f64(),
        sum.bytes,
    ))
}

async fn send_tcp(pool: &Pool, req: &SendRequest) -> anyhow::Result<f64> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    let reader = tokio::spawn(async move {
        let (mut s, _) = l.accept().await?;
        let mut d = Decoder::new();
        loop {
            d.buffer_mut().reserve(MIB as usize);
            let n = s.read_buf(d.buffer_mut()).await?;
            if n == 0 {
                d.finish()?;
                return anyhow::Ok(d.offset());
            }
            while d.next_event()?.is_some() {}
        }
    });
    let c = tokio::net::TcpStream::connect(addr).await?;
    let t0 = Instant::now();
    let mut c = c;
    let sum = send(pool, req, &mut c, &StreamProgress::default()).await?;
    c.shutdown().await?;
    let got = reader.await??;
    anyhow::ensure!(got == sum.bytes, "decoder saw {got} of {} bytes", sum.bytes);
    Ok(sum.bytes as f64 / MIB as f64 / t0.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mib: u64 = args.get(1).map_or(Ok(512), |s| s.parse())?;
    let rounds: usize = args.get(2).map_or(Ok(3), |s| s.parse())?;
    let base = match args.get(3) {
        Some(d) => std::path::PathBuf::from(d),
        None if std::path::Path::new("/dev/shm").is_dir() => "/dev/shm".into(),
        None => std::env::temp_dir(),
    };
    let dir = tempfile::tempdir_in(base)?;
    let opts = PoolOptions {
        capacity_bytes: Some((mib + 256) * MIB),
        ..PoolOptions::default()
    };
    let pool = Pool::create(dir.path(), &opts).await?;
    pool.create_volume("v", mib * MIB, 4096, Guarantee::None)
        .await?;
    let v = pool.volume("v")?;
    let mut block = vec![0u8; MIB as usize];
    for i in 0..mib {
        block
            .iter_mut()
            .enumerate()
            .for_each(|(k, b)| *b = (k as u64 ^ i) as u8 | 1);
        v.write(i * MIB / 4096, Bytes::from(block.clone()), false)
            .await?;
    }
    pool.flush().await?;
    pool.snapshot("v", "s").await?;
    let req = SendRequest {
        from: None,
        to: SnapshotRef::new("v", "s"),
        resume: None,
    };
    // Warm the cache once.
    let (_, stream_bytes) = send_null(&pool, &req).await?;
    println!(
        "stream_bench: {mib} MiB volume, {stream_bytes} stream bytes, chunk {} KiB, io {}",
        pool.status().chunk_size / 1024,
        pool.io_backend()
    );
    println!("round      tcp MiB/s  send>null MiB/s  send>tcp MiB/s  null/tcp  send-tcp/tcp");
    for r in 0..rounds {
        let tcp = tcp_raw(stream_bytes).await?;
        let (null, _) = send_null(&pool, &req).await?;
        let over_tcp = send_tcp(&pool, &req).await?;
        println!(
            "{r:>5} {tcp:>14.0} {null:>16.0} {over_tcp:>15.0} {:>9.2} {:>13.2}",
            null / tcp,
            over_tcp / tcp
        );
    }
    pool.close().await?;
    Ok(())
}
