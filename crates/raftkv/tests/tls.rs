//! TLS and passwords with real processes on 127.0.0.1: a cluster whose every port speaks TLS
//! works for clients with the CA, while a would-be peer without a certificate of the cluster's
//! CA, a plain-text client on a TLS port and a Redis client with a wrong password are all
//! refused and change nothing.

mod common;

use common::{runtime, Cluster, TEST_LIMIT};
use futures::{SinkExt, StreamExt};
use raft::{LogIndex, Message, MessageBody, Term};
use raftkv::tls::{generate_local, ClientTls, LocalTls, TlsFiles};
use raftkv::wire::{self, Hello};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

const PASSWORD: &str = "correct horse";

fn client_tls(ca: &Path, cert: Option<(&Path, &Path)>) -> ClientTls {
    ClientTls::load(&TlsFiles {
        cert: cert.map(|(c, _)| c.to_path_buf()),
        key: cert.map(|(_, k)| k.to_path_buf()),
        ca: ca.to_path_buf(),
        server_name: None,
    })
    .expect("client TLS")
}

/// A 3-node cluster with TLS on every port and a Redis password.
fn tls_cluster(certs: &LocalTls) -> Cluster {
    let mut cluster = Cluster::start_per_node(3, &["--requirepass", PASSWORD], |i| {
        vec![
            "--tls-cert".into(),
            certs.node_cert[i].display().to_string(),
            "--tls-key".into(),
            certs.node_key[i].display().to_string(),
            "--tls-ca".into(),
            certs.ca.display().to_string(),
        ]
    });
    cluster.client_tls = Some(client_tls(&certs.ca, None));
    cluster
}

/// A RequestVote from "node 2" for a term far ahead: if a node took it, its term would jump.
fn forged_vote_request(to: u64) -> Message {
    Message {
        from: 2,
        to,
        term: Term(1_000),
        body: MessageBody::RequestVote {
            last_log_index: LogIndex(1_000_000),
            last_log_term: Term(999),
        },
    }
}

/// A message from "node 2" that changes nothing (an answer from a term long gone).
fn harmless(to: u64) -> Message {
    Message {
        from: 2,
        to,
        term: Term(0),
        body: MessageBody::RequestVoteResponse {
            vote_granted: false,
        },
    }
}

/// Sends a peer hello and `msg` on `stream`; true if the node kept the connection open for a
/// moment afterwards (it closes connections it refuses).
async fn try_as_peer<S>(stream: S, msg: Message) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut framed = Framed::new(stream, wire::codec());
    let sent = async {
        framed
            .send(wire::encode(&Hello::Peer {
                from: 2,
                lease_reads: false,
            }))
            .await?;
        framed.send(wire::encode(&msg)).await
    };
    if sent.await.is_err() {
        return false;
    }
    // A refused connection ends (or fails) at once; an accepted one stays silent.
    let ended = tokio::time::timeout(Duration::from_millis(500), framed.next()).await;
    ended.is_err()
}

#[test]
fn tls_clients_work_and_impostors_plain_text_and_wrong_passwords_are_refused() {
    runtime().block_on(async {
        tokio::time::timeout(TEST_LIMIT, async {
            let dir = tempfile::tempdir().expect("tmp");
            let certs = generate_local(&dir.path().join("cluster"), 3).expect("certs");
            let cluster = tls_cluster(&certs);
            let leader = cluster.wait_for_leader().await;
            let mut clerk = cluster.clerk(1);
            clerk.put("k", "v").await.expect("a put over TLS");
            let target = (leader + 1) % 3;
            let term_before = cluster.status(target).await.expect("status").term;

            // Plain text to the peer port: the node expects a TLS handshake.
            let plain = TcpStream::connect(cluster.rpc[target])
                .await
                .expect("connect");
            assert!(
                !try_as_peer(plain, forged_vote_request(target as u64 + 1)).await,
                "plain-text peer accepted"
            );

            // TLS without a client certificate: encrypted, but not a peer.
            let anonymous = client_tls(&certs.ca, None);
            let stream = TcpStream::connect(cluster.rpc[target])
                .await
                .expect("connect");
            let stream = anonymous
                .connect(cluster.rpc[target], stream)
                .await
                .expect("an anonymous TLS client connects");
            assert!(
                !try_as_peer(stream, forged_vote_request(target as u64 + 1)).await,
                "a peer without a certificate was accepted"
            );

            // A certificate of another CA: the handshake fails.
            let other = generate_local(&dir.path().join("other"), 1).expect("other certs");
            let impostor = client_tls(&certs.ca, Some((&other.node_cert[0], &other.node_key[0])));
            let stream = TcpStream::connect(cluster.rpc[target])
                .await
                .expect("connect");
            if let Ok(stream) = impostor.connect(cluster.rpc[target], stream).await {
                assert!(
                    !try_as_peer(stream, forged_vote_request(target as u64 + 1)).await,
                    "a peer with another CA's certificate was accepted"
                );
            }

            // The check can tell: node 2's own certificate is let in (with a harmless message).
            let node2 = client_tls(&certs.ca, Some((&certs.node_cert[1], &certs.node_key[1])));
            let stream = TcpStream::connect(cluster.rpc[target])
                .await
                .expect("connect");
            let stream = node2
                .connect(cluster.rpc[target], stream)
                .await
                .expect("a peer's certificate is accepted");
            assert!(
                try_as_peer(stream, harmless(target as u64 + 1)).await,
                "a certified peer was refused"
            );

            // None of it moved the node's term.
            let status = cluster.status(target).await.expect("status");
            assert!(
                status.term < 1_000,
                "a forged message was taken: term {}",
                status.term
            );
            assert_eq!(status.term, term_before);

            // Redis: plain text to a TLS port gets no Redis reply.
            let mut plain = TcpStream::connect(cluster.resp[target])
                .await
                .expect("connect");
            plain.write_all(b"PING\r\n").await.expect("write");
            let mut buf = [0u8; 64];
            let read = tokio::time::timeout(Duration::from_secs(5), plain.read(&mut buf)).await;
            let got = match read {
                Ok(Ok(n)) => buf[..n].to_vec(),
                _ => Vec::new(),
            };
            assert!(
                !got.starts_with(b"+PONG"),
                "a plain-text client was answered"
            );

            // Redis over TLS: a wrong password and no password are refused, and change nothing.
            let redis = |args: &[&str]| redis_cli_tls(&certs.ca, cluster.resp[target].port(), args);
            assert!(redis(&["-a", "wrong", "SET", "k", "forged"]).contains("NOAUTH"));
            assert!(redis(&["SET", "k", "forged"]).contains("NOAUTH"));
            let auth =
                redis_cli_tls_raw(&certs.ca, cluster.resp[target].port(), &["AUTH", "wrong"]);
            assert!(auth.contains("WRONGPASS"), "{auth}");
            assert_eq!(clerk.get("k").await.expect("get"), "v");
            // The right password works, through redis-cli's TLS.
            assert_eq!(redis(&["-a", PASSWORD, "GET", "k"]).trim(), "v");
        })
        .await
        .expect("test ran past its limit");
    });
}

/// redis-cli over TLS (stderr included: that is where it reports AUTH failures).
fn redis_cli_tls(ca: &Path, port: u16, args: &[&str]) -> String {
    let mut all = vec!["--no-auth-warning"];
    all.extend_from_slice(args);
    redis_cli_tls_raw(ca, port, &all)
}

fn redis_cli_tls_raw(ca: &Path, port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(ca)
        .args(["-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli (Debian package redis-tools) runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
