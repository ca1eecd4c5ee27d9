//! Serving an [`App`] over HTTP/1.1 on a TCP listener.

use crate::app::App;
use crate::reuse::RequestRecord;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// An app being served; dropping it stops the server.
pub struct Running {
    pub addr: SocketAddr,
    /// The app being served, for what tests observe of the host itself.
    pub app: Arc<App>,
    _stop: oneshot::Sender<()>,
}

impl App {
    /// Serves the app on `addr` (port 0 picks a free port) until the returned
    /// handle is dropped.
    pub async fn serve(
        self: Arc<Self>,
        addr: SocketAddr,
        log_requests: bool,
    ) -> anyhow::Result<Running> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = oneshot::channel();
        tokio::spawn(accept_loop(self.clone(), listener, log_requests, stop_rx));
        Ok(Running {
            addr,
            app: self,
            _stop: stop_tx,
        })
    }
}

async fn accept_loop(
    app: Arc<App>,
    listener: TcpListener,
    log_requests: bool,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    continue;
                }
            },
            _ = &mut stop => return,
        };
        // No `TCP_NODELAY`, as in Spin's HTTP trigger: a response written in two pieces (a chunked
        // body's last chunk) waits on Nagle's algorithm here as it does under `spin up`.
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let app = app.clone();
                async move {
                    let started = Instant::now();
                    let method = request.method().clone();
                    let path = request.uri().path().to_owned();
                    let record = Arc::new(RequestRecord::default());
                    let response = app.handle_recorded(request, client, record.clone()).await;
                    crate::request_log::record(&method, &path, response.status().as_u16());
                    if log_requests {
                        tracing::info!(
                            "{method} {path} {} {:.2}ms {}",
                            response.status().as_u16(),
                            started.elapsed().as_secs_f64() * 1000.0,
                            record.describe(),
                        );
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            if let Err(e) = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("connection from {client} ended: {e}");
            }
        });
    }
}
