//! An HTTP server of the tests' own (a fake third party, a proxy) on a free
//! loopback port, with its own thread and tokio runtime; dropping it stops
//! the server. The fake Stripe, the fake GitHub and the ID token proxy run
//! on it.

use std::future::Future;
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use poem::listener::{Acceptor, Listener, TcpListener};
use poem::{Request, Response};

/// A running server.
pub struct LoopbackServer {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl LoopbackServer {
    /// Starts `handle` on `127.0.0.1:<free port>`, on a thread called
    /// `name` with a runtime of `workers` threads (1: a current-thread
    /// runtime). Panics if it cannot.
    pub fn start<F, Fut>(name: &str, workers: usize, handle: F) -> LoopbackServer
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response> + Send + 'static,
    {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel::<std::io::Result<SocketAddr>>();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let runtime = if workers > 1 {
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(workers)
                        .enable_all()
                        .build()
                } else {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                };
                let runtime = match runtime {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = addr_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let acceptor = match TcpListener::bind("127.0.0.1:0").into_acceptor().await {
                        Ok(a) => a,
                        Err(e) => {
                            let _ = addr_tx.send(Err(e));
                            return;
                        }
                    };
                    let addr = acceptor
                        .local_addr()
                        .first()
                        .and_then(|a| a.as_socket_addr().copied())
                        .expect("a TCP listener has a socket address");
                    let _ = addr_tx.send(Ok(addr));
                    let endpoint = poem::endpoint::make(move |req: Request| {
                        let answer = handle(req);
                        async move { Ok::<Response, poem::Error>(answer.await) }
                    });
                    let _ = poem::Server::new_with_acceptor(acceptor)
                        .run_with_graceful_shutdown(
                            endpoint,
                            async move {
                                let _ = shutdown_rx.await;
                            },
                            Some(Duration::from_secs(2)),
                        )
                        .await;
                });
                // Work still waiting on a slow peer (a webhook delivery) must
                // not hold up the test that dropped the server.
                runtime.shutdown_timeout(Duration::from_secs(5));
            })
            .unwrap_or_else(|e| panic!("spawn the {name} thread: {e}"));
        let addr = addr_rx
            .recv()
            .unwrap_or_else(|_| panic!("the {name} thread reports its address"))
            .unwrap_or_else(|e| panic!("cannot start the {name}: {e}"));
        LoopbackServer {
            addr,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
