//! The physical limit beside the cross-process figures: a bare tokio TCP ping-pong of
//! 8-byte messages between the same two processes, with no framing, encryption, signing or
//! agents, so the report can say what fraction of what the loopback and the scheduler allow
//! Agora's one-at-a-time request/reply reaches.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

use crate::Figures;

/// Serves echo connections on `listener` until the process ends: every 8 bytes read are
/// written back. `busy_poll` is how long a read keeps polling the socket before its task
/// parks, as Agora's `NetworkConfig::with_busy_poll` does.
pub async fn serve_echo(listener: TcpListener, busy_poll: Duration) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let mut ping = [0u8; 8];
            while read_exact(&stream, &mut ping, busy_poll).await.is_ok() {
                if write_all(&stream, &ping).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// `round_trips` pings to the echo at `addr`, one at a time, from a task spawned on the
/// current runtime. Call inside the runtime under test.
pub async fn ping_pong(addr: SocketAddr, round_trips: u64, busy_poll: Duration) -> std::io::Result<Figures> {
    tokio::spawn(async move {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut latencies = Vec::with_capacity(round_trips as usize);
        let started = Instant::now();
        let mut pong = [0u8; 8];
        for n in 0..round_trips {
            let sent = Instant::now();
            write_all(&stream, &n.to_le_bytes()).await?;
            read_exact(&stream, &mut pong, busy_poll).await?;
            if u64::from_le_bytes(pong) != n {
                return Err(std::io::Error::new(ErrorKind::InvalidData, format!("echo answered ping {n} wrongly")));
            }
            latencies.push(sent.elapsed().as_nanos().min(u32::MAX as u128) as u32);
        }
        Ok(Figures::from_latencies(latencies, started.elapsed()))
    })
    .await?
}

async fn read_exact(stream: &TcpStream, buf: &mut [u8], busy_poll: Duration) -> std::io::Result<()> {
    let mut filled = 0;
    let mut spinning_since = Instant::now();
    while filled < buf.len() {
        match stream.try_read(&mut buf[filled..]) {
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                filled += n;
                spinning_since = Instant::now();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if spinning_since.elapsed() < busy_poll {
                    // As Agora's transport polls: yield, so the runtime runs its other
                    // tasks and checks its sockets without parking the thread.
                    tokio::task::yield_now().await;
                } else {
                    stream.readable().await?;
                    spinning_since = Instant::now();
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => stream.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
