//! The bounded ZMTP peer of the Worker link speaks real ZeroMQ: it exchanges
//! messages with the `zeromq` crate's DEALER in both roles.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

use bytes::Bytes;
use isms_ipc::zmtp::{AsyncLink, BlockingLink, Limits};
use std::os::unix::net::UnixStream;
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

fn socket_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("isms-zmtp-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("link.sock")
}

#[tokio::test(flavor = "current_thread")]
async fn our_listener_talks_to_a_zeromq_dealer() {
    let path = socket_path("listen");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let endpoint = format!("ipc://{}", path.display());

    let peer = tokio::spawn(async move {
        let mut dealer = DealerSocket::new();
        dealer.connect(&endpoint).await.unwrap();
        dealer
            .send(
                ZmqMessage::try_from(vec![
                    Bytes::from_static(b"one"),
                    Bytes::from(vec![1u8; 1000]),
                ])
                .unwrap(),
            )
            .await
            .unwrap();
        let reply = dealer.recv().await.unwrap();
        reply.into_vec()
    });

    let (stream, _) = listener.accept().await.unwrap();
    let mut link = AsyncLink::handshake(stream, Limits::default())
        .await
        .unwrap();
    let frames = link.recv().await.unwrap();
    assert_eq!(
        frames,
        vec![Bytes::from_static(b"one"), Bytes::from(vec![1u8; 1000])]
    );
    link.send(&[b"pong", b""]).await.unwrap();
    assert_eq!(
        peer.await.unwrap(),
        vec![Bytes::from_static(b"pong"), Bytes::new()]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn our_blocking_client_talks_to_a_zeromq_dealer() {
    let path = socket_path("connect");
    let endpoint = format!("ipc://{}", path.display());
    let mut dealer = DealerSocket::new();
    dealer.bind(&endpoint).await.unwrap();

    let client = std::thread::spawn(move || {
        let stream = UnixStream::connect(&path).unwrap();
        let mut link = BlockingLink::handshake(stream, Limits::default()).unwrap();
        link.send(&[b"hello from the worker"]).unwrap();
        link.recv().unwrap()
    });

    let message = dealer.recv().await.unwrap();
    assert_eq!(
        message.into_vec(),
        vec![Bytes::from_static(b"hello from the worker")]
    );
    dealer
        .send(ZmqMessage::from(Bytes::from_static(b"ack")))
        .await
        .unwrap();
    let got = tokio::task::spawn_blocking(move || client.join().unwrap())
        .await
        .unwrap();
    assert_eq!(got, vec![Bytes::from_static(b"ack")]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_hostile_peer_is_cut_off_without_allocating() {
    use tokio::io::AsyncWriteExt;
    let (ours, mut theirs) = tokio::net::UnixStream::pair().unwrap();
    let hostile = tokio::spawn(async move {
        // A valid greeting and READY, then a frame header claiming 4 EiB.
        let mut greeting = [0u8; 64];
        greeting[0] = 0xff;
        greeting[9] = 0x7f;
        greeting[10] = 3;
        greeting[12..16].copy_from_slice(b"NULL");
        theirs.write_all(&greeting).await.unwrap();
        let ready = b"\x05READY\x0bSocket-Type\x00\x00\x00\x06DEALER";
        theirs.write_all(&[0x04, ready.len() as u8]).await.unwrap();
        theirs.write_all(ready).await.unwrap();
        let mut frame = vec![0x02];
        frame.extend_from_slice(&(1u64 << 62).to_be_bytes());
        theirs.write_all(&frame).await.unwrap();
        theirs
    });
    let mut link = AsyncLink::handshake(ours, Limits::default()).await.unwrap();
    let err = link.recv().await.unwrap_err();
    assert!(err.to_string().contains("exceeds"), "{err}");
    drop(hostile.await.unwrap());
}
