//! The daemons' `/metrics` endpoint: Prometheus text (format 0.0.4) over plain HTTP/1.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The `Content-Type` of a scrape's answer (what `promtool check metrics` and Prometheus read).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One scrape's text, or why it could not be made (answered as a 500 with that text).
pub type Scrape = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

/// Makes a scrape: called once per GET /metrics.
pub type Render = Arc<dyn Fn() -> Scrape + Send + Sync>;

/// Serves GET /metrics from `render` on `listener` until `shutdown` resolves; every other
/// path is 404 and every other method 405.
pub async fn serve(
    listener: tokio::net::TcpListener,
    render: Render,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let scrape = render();
            async move { answer(scrape.await) }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

fn answer(scrape: Result<String, String>) -> Response {
    match scrape {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("collecting metrics: {e}\n"),
        )
            .into_response(),
    }
}
