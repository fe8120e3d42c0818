//! Throughput of the replication link's TLS (mutual TLS 1.3, pinned certificates, the ring
//! provider) against plain loopback TCP, measured side by side in one run, alternating:
//! `cargo run --release -p target-daemon --example link_bench [MiB] [rounds]`.
//! Prints MB/s of each round and the TLS/TCP ratio of the medians (the goal for the
//! link: at least 0.8).

use std::time::Instant;

use target_daemon::replica::identity::Identity;
use target_daemon::replica::listener::connect;
use target_daemon::replica::tls::{client_config, server_config, PeerSet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CHUNK: usize = 1 << 20;

async fn sink<S: AsyncReadExt + Unpin>(mut s: S) -> u64 {
    let mut buf = vec![0u8; CHUNK];
    let mut n = 0u64;
    while let Ok(k) = s.read(&mut buf).await {
        if k == 0 {
            break;
        }
        n += k as u64;
    }
    n
}

async fn push<S: AsyncWriteExt + Unpin>(mut s: S, total: u64) -> anyhow::Result<S> {
    let buf = vec![0x5au8; CHUNK];
    let mut left = total;
    while left > 0 {
        let k = left.min(CHUNK as u64) as usize;
        s.write_all(&buf[..k]).await?;
        left -= k as u64;
    }
    s.shutdown().await?;
    Ok(s)
}

async fn round(tls: bool, total: u64, a: &Identity, b: &Identity) -> anyhow::Result<f64> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?.to_string();
    let scfg = server_config(a, PeerSet::new([("b".to_string(), b.fingerprint())]))?;
    let server = tokio::spawn(async move {
        let (tcp, _) = l.accept().await?;
        let n = if tls {
            let s = tokio_rustls::TlsAcceptor::from(scfg).accept(tcp).await?;
            sink(s).await
        } else {
            sink(tcp).await
        };
        anyhow::Ok(n)
    });
    let t0 = Instant::now();
    if tls {
        let c = connect(
            &addr,
            client_config(b, "a", a.fingerprint())?,
            std::time::Duration::from_secs(10),
        )
        .await?;
        let c = push(c, total).await?;
        let got = server.await??;
        drop(c);
        anyhow::ensure!(got == total, "received {got} of {total}");
        return Ok(total as f64 / t0.elapsed().as_secs_f64() / 1e6);
    }
    let c = push(TcpStream::connect(&addr).await?, total).await?;
    let got = server.await??;
    drop(c);
    anyhow::ensure!(got == total, "received {got} of {total}");
    Ok(total as f64 / t0.elapsed().as_secs_f64() / 1e6)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mib: u64 = args.next().map_or(Ok(1024), |s| s.parse())?;
    let rounds: usize = args.next().map_or(Ok(5), |s| s.parse())?;
    let (a, b) = (Identity::generate("a")?.0, Identity::generate("b")?.0);
    let total = mib << 20;
    let (mut tcp, mut tls) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let p = round(false, total, &a, &b).await?;
        let t = round(true, total, &a, &b).await?;
        println!("round {i}: tcp {p:.0} MB/s, tls {t:.0} MB/s");
        tcp.push(p);
        tls.push(t);
    }
    let (mp, mt) = (median(tcp), median(tls));
    println!(
        "median: tcp {mp:.0} MB/s, tls {mt:.0} MB/s, tls/tcp {:.2}",
        mt / mp
    );
    Ok(())
}
