//! The accept loop, and what guards each connection.

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What one client may hold of a server. The defaults are the platform's
/// (both ports use them): generous for a real client, short enough that
/// clients which connect and then stall cannot pile up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// How long a connection may take to send a request's head, counted
    /// from when the server starts waiting for it. hyper starts that wait as
    /// soon as a connection opens or its previous response is sent, so this
    /// is also how long a kept-alive connection may sit between requests.
    pub header_read_timeout: Duration,
    /// How long a connection may move no byte either way while no request
    /// of it is being handled: a client that stopped reading its response,
    /// say. A handler waiting on a Doee is not idle; one reading a request
    /// body answers 408 when the body stops for as long (see [`crate::read_body`]).
    pub idle_timeout: Duration,
    /// Connections served at once. At the cap the server stops accepting:
    /// new connections wait in the listen backlog until one closes, rather
    /// than being refused, so a burst slows down instead of failing.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
        }
    }
}

/// What answers a server's requests.
pub trait Handler: Send + Sync + 'static {
    /// The body of its responses; an error ends the connection without
    /// ending the body, which is how a client learns that a streamed body
    /// broke off.
    type Body: hyper::body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + Unpin
        + 'static;

    /// The response to `request`; errors are responses too.
    fn handle(
        &self,
        request: Request<Incoming>,
    ) -> impl Future<Output = Response<Self::Body>> + Send;
}

/// Accepts connections on `listener` and serves each in its own task, with
/// `handler`, within `limits`. Runs until dropped.
pub async fn serve<H: Handler>(listener: TcpListener, limits: Limits, handler: Arc<H>) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        // Waits at the cap: the next connection is not accepted until one ends.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, limits, handler.clone(), slot));
            }
            Err(err) => {
                // Out of descriptors, most likely: give the others time to close.
                tracing::warn!(cause = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves one connection until it ends, its head is late or it is idle;
/// it holds `_slot` until then.
async fn connection<H: Handler>(
    stream: TcpStream,
    limits: Limits,
    handler: Arc<H>,
    _slot: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
    });
    let handling = activity.clone();
    let service = service_fn(move |request: Request<Incoming>| {
        let handler = handler.clone();
        let busy = handling.busy();
        async move {
            let response = handler.handle(request).await;
            // Busy until the body is sent: a stream may be quiet a while.
            Ok::<_, Infallible>(response.map(|body| Held { body, _busy: busy }))
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let served = builder.serve_connection(io, service);
    tokio::pin!(served);
    loop {
        let wait = if activity.is_busy() {
            limits.idle_timeout
        } else {
            limits.idle_timeout.saturating_sub(activity.quiet_for())
        };
        if wait.is_zero() {
            tracing::debug!("closing an idle HTTP connection");
            return;
        }
        tokio::select! {
            ended = &mut served => {
                if let Err(err) = ended {
                    tracing::debug!(cause = %err, "HTTP connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// When a connection last moved a byte, and how many of its requests are
/// being handled.
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
    busy: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let now = self.opened.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(last)
    }

    fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed) > 0
    }
}

/// A request being handled; its connection is not idle meanwhile.
struct Busy(Arc<Activity>);

/// A response's body, with its request counted as handled until the body
/// is done (or dropped: the client went away).
struct Held<B> {
    body: B,
    _busy: Busy,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Held<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that notes in [`Activity`] each time bytes move.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
