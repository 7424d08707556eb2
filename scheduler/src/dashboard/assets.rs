//! The dashboard's static files, embedded in the binary (rust-embed): htmx and its SSE
//! extension, vendored from their releases (see assets/README.md), and the stylesheet.

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::view::PageError;

#[derive(rust_embed::RustEmbed)]
#[folder = "assets/"]
#[include = "*.js"]
#[include = "*.css"]
struct Assets;

pub(crate) async fn serve(Path(file): Path<String>) -> Result<Response, PageError> {
    let asset = Assets::get(&file)
        .ok_or_else(|| PageError::new(StatusCode::NOT_FOUND, format!("no asset {file:?}")))?;
    let kind = if file.ends_with(".js") {
        "text/javascript; charset=utf-8"
    } else {
        "text/css; charset=utf-8"
    };
    Ok((
        [
            (CONTENT_TYPE, HeaderValue::from_static(kind)),
            // Short: the stylesheet keeps its name across versions.
            (
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
        ],
        asset.data.into_owned(),
    )
        .into_response())
}
