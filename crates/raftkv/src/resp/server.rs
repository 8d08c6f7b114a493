//! The accept loop and the per-connection loop.

use super::codec::{Reply, RespCodec, RespError};
use super::command::{After, Connection, Pipeline};
use super::{InfoSource, RespLimits};
use crate::metrics::Metrics;
use bytes::{Bytes, BytesMut};
use kv::{Clerk, ClientTransport};
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::codec::Decoder;

/// Room made in the input buffer before each read. Input is read only when no complete
/// request is buffered, so the buffer holds at most one partial request and one read.
const READ_CHUNK: usize = 16 << 10;

/// Replies waiting to be written past this size are written before the rest of a pipeline is
/// run, so a long pipeline cannot pile up replies in memory.
const WRITE_HIGH_WATER: usize = 64 << 10;

/// After replying to a request that closes the connection, input is read and dropped for at
/// most this long (and this much): closing a socket with unread input makes TCP reset the
/// connection, which can destroy the reply before the client reads it.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1 << 20;

/// How long to wait after `accept` fails (out of file descriptors, say) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves one client connection until it closes, sends `QUIT`, or breaks the protocol.
///
/// Requests run in order through `clerk`, which belongs to this connection alone. Data
/// commands that arrive together (pipelined) are proposed together and applied in order;
/// other commands run on their own. Replies are sent in request order; those to pipelined
/// requests are written together once no complete request is left in the input.
pub async fn serve_connection<T, S>(
    mut stream: S,
    mut clerk: Clerk<T>,
    limits: RespLimits,
    password: Option<Arc<str>>,
    info: Option<InfoSource>,
) where
    T: ClientTransport,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = Connection::new(clerk.client_id(), password, limits, info);
    match run(&mut stream, &mut clerk, limits, &mut conn).await {
        Ok(After::Close) => linger(&mut stream).await,
        Ok(After::Continue) => {}
        Err(e) => tracing::debug!("RESP connection failed: {e}"),
    }
    // Release the connection's session through the log, so the table need not wait for
    // eviction to forget it. Best effort: if it fails, eviction does it later.
    if let Err(e) = clerk.close().await {
        tracing::debug!("could not close the session of a RESP connection: {e}");
    }
}

/// Returns `Continue` when the client has closed its side, `Close` when the server ends the
/// connection.
async fn run<T, S>(
    stream: &mut S,
    clerk: &mut Clerk<T>,
    limits: RespLimits,
    conn: &mut Connection,
) -> io::Result<After>
where
    T: ClientTransport,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut codec = RespCodec::new(limits);
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut output = BytesMut::new();
    let mut pipeline = Pipeline::default();
    loop {
        loop {
            // Data commands wait in the pipeline while more requests are buffered behind
            // them; anything else, the end of the buffered input and a full pipeline first
            // run what waits, so that replies keep request order.
            let next = match codec.decode(&mut input) {
                Ok(Some(args)) => match conn.pipeline(&mut pipeline, args) {
                    None if pipeline.is_full() => Next::Pipeline,
                    None => continue,
                    Some(args) => Next::Request(args),
                },
                Ok(None) => Next::Read,
                Err(e) => Next::Failed(e),
            };
            if !pipeline.is_empty() {
                conn.run_pipeline(clerk, &mut pipeline, &mut output).await;
            }
            match next {
                Next::Pipeline => {}
                Next::Read => break,
                Next::Request(args) => {
                    let (reply, after) = conn.execute(clerk, args).await;
                    reply.encode_as(conn.protocol, &mut output);
                    if after == After::Close {
                        stream.write_all(&output).await?;
                        stream.flush().await?;
                        return Ok(After::Close);
                    }
                }
                // Too large: refused, and the codec drops the rest of it as it comes.
                Next::Failed(RespError::Refused(msg)) => {
                    conn.refused(msg).encode_as(conn.protocol, &mut output);
                }
                Next::Failed(RespError::Protocol(msg)) => {
                    tracing::debug!("RESP protocol error: {msg}");
                    Reply::error(format!("Protocol error: {msg}")).encode(&mut output);
                    stream.write_all(&output).await?;
                    stream.flush().await?;
                    return Ok(After::Close);
                }
                Next::Failed(RespError::Io(e)) => return Err(e),
            }
            if output.len() >= WRITE_HIGH_WATER {
                stream.write_all(&output).await?;
                output.clear();
            }
        }
        if !output.is_empty() {
            stream.write_all(&output).await?;
            output.clear();
            stream.flush().await?;
        }
        input.reserve(READ_CHUNK);
        if stream.read_buf(&mut input).await? == 0 {
            return Ok(After::Continue);
        }
    }
}

/// What the connection loop does after decoding from its input.
enum Next {
    /// Run the pipeline, which is full, and decode on.
    Pipeline,
    /// Run this request, which cannot join a pipeline.
    Request(Vec<Bytes>),
    /// Reply to what was decoded, and read more input.
    Read,
    Failed(RespError),
}

/// Ends our side of the connection, then drops input until the client closes its side, for
/// a bounded time, so that the last reply is not lost to a reset.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut scratch = vec![0u8; 8 << 10];
        let mut dropped = 0;
        while dropped < LINGER_BYTES {
            match stream.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => dropped += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// How the Redis port is served.
#[derive(Clone)]
pub struct RespOptions {
    pub limits: RespLimits,
    /// TLS on the port, if configured: a plain-text client gets no answer.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// The password `AUTH` must give (Redis's `requirepass`), if any.
    pub password: Option<Arc<str>>,
    pub metrics: Metrics,
    /// What INFO reports of the node, if it runs in one.
    pub info: Option<InfoSource>,
}

/// A TLS handshake must end within this long.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts RESP clients forever, serving each connection in a task of its own with a Clerk
/// from `make_clerk`.
///
/// At most `limits.max_clients` connections are served at once; a connection beyond that is
/// told `-ERR max number of clients reached` and closed. A connection that fails, or a task
/// that panics, affects no other connection.
pub async fn serve<T, F>(listener: TcpListener, make_clerk: F, options: RespOptions)
where
    T: ClientTransport,
    F: Fn() -> Clerk<T> + Send + Sync + 'static,
{
    let RespOptions {
        limits,
        tls,
        password,
        metrics,
        info,
    } = options;
    let make_clerk = Arc::new(make_clerk);
    let slots = Arc::new(Semaphore::new(
        limits.max_clients.min(Semaphore::MAX_PERMITS),
    ));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!("RESP accept failed: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Never wait on a client being turned away: a fresh socket's send buffer has
            // room for the line, and if it does not, the client just sees the close.
            let _ = stream.try_write(b"-ERR max number of clients reached\r\n");
            continue;
        };
        // Replies are batched by the connection loop, so Nagle would only add delay.
        let _ = stream.set_nodelay(true);
        let make_clerk = make_clerk.clone();
        let open = metrics.connection("redis");
        let (tls, password, info) = (tls.clone(), password.clone(), info.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let _open = open;
            // Made here rather than in the accept loop, so that a panic in it ends only this
            // connection.
            let clerk = make_clerk();
            tracing::debug!(%peer, client_id = clerk.client_id(), "RESP client connected");
            match tls {
                None => serve_connection(stream, clerk, limits, password, info).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, clerk, limits, password, info).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "RESP TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "RESP TLS handshake timed out"),
                    }
                }
            }
        });
    }
}
