//! Serving the router over plain TCP or TLS. TLS handshakes run in tasks of their own, so a
//! slow or silent client delays only itself, never the next connection; finished ones are
//! handed to axum's server as its listener's connections, which keeps graceful shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::limits::{
    ACCEPT_ERROR_PAUSE_MS, TLS_ACCEPTED_QUEUE_MAX, TLS_HANDSHAKES_MAX, TLS_HANDSHAKE_TIMEOUT_MS,
};
use crate::security::TlsConfig;

/// Serves `app` on `listener` until `shutdown` resolves, over TLS when `tls` is given.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<&TlsConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(tls) => {
            let listener = TlsListener::new(listener, tls.server.clone())?;
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

/// Connections whose TLS handshake has finished.
struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    acceptor_task: JoinHandle<()>,
}

impl TlsListener {
    fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, accepted) = mpsc::channel(TLS_ACCEPTED_QUEUE_MAX);
        let acceptor = TlsAcceptor::from(config);
        let handshakes = Arc::new(Semaphore::new(TLS_HANDSHAKES_MAX));
        let acceptor_task = tokio::spawn(async move {
            loop {
                // Wait for room before accepting: past the bound, clients wait in the backlog.
                let Ok(permit) = handshakes.clone().acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!("accepting a connection failed: {e}");
                        tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_PAUSE_MS)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(
                        Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS),
                        acceptor.accept(stream),
                    )
                    .await;
                    drop(permit);
                    match handshake {
                        Ok(Ok(tls)) => {
                            // The server is gone when this fails; the connection just closes.
                            let _ = tx.send((tls, peer)).await;
                        }
                        // Plain HTTP to the HTTPS port, an untrusted certificate, a scanner:
                        // the client's problem, seen with BARGE_LOG=debug.
                        Ok(Err(e)) => tracing::debug!("TLS handshake with {peer} failed: {e}"),
                        Err(_) => tracing::debug!(
                            "TLS handshake with {peer} took over {TLS_HANDSHAKE_TIMEOUT_MS} ms; closed"
                        ),
                    }
                });
            }
        });
        Ok(TlsListener {
            accepted,
            local,
            acceptor_task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor_task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(connection) => connection,
            // The acceptor only ends when its semaphore closes, which never happens while
            // this listener lives; wait for shutdown rather than spin.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
