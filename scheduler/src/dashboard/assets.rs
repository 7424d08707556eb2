//! The dashboard's static files, embedded in the binary (rust-embed): htmx and its SSE
//! extension, vendored from their releases (see assets/README.md) with the gzip copies the
//! packages ship, and the stylesheet. A browser that accepts gzip gets the `.gz` copy.

use axum::extract::Path;
use axum::http::header::{ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, VARY};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::view::PageError;

#[derive(rust_embed::RustEmbed)]
#[folder = "assets/"]
#[include = "*.js"]
#[include = "*.js.gz"]
#[include = "*.css"]
struct Assets;

pub(crate) async fn serve(
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    if file.ends_with(".gz") {
        return Err(PageError::new(
            StatusCode::NOT_FOUND,
            format!("no asset {file:?}"),
        ));
    }
    let plain = Assets::get(&file)
        .ok_or_else(|| PageError::new(StatusCode::NOT_FOUND, format!("no asset {file:?}")))?;
    let gzip_ok = headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| coding.split(';').next().is_some_and(|c| c.trim() == "gzip"));
    let gzipped = gzip_ok
        .then(|| Assets::get(&format!("{file}.gz")))
        .flatten();
    let kind = if file.ends_with(".js") {
        "text/javascript; charset=utf-8"
    } else {
        "text/css; charset=utf-8"
    };
    let mut response = (
        [
            (CONTENT_TYPE, HeaderValue::from_static(kind)),
            // Short: the stylesheet keeps its name across versions.
            (
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
            (VARY, HeaderValue::from_static("accept-encoding")),
        ],
        gzipped.as_ref().unwrap_or(&plain).data.clone().into_owned(),
    )
        .into_response();
    if gzipped.is_some() {
        response
            .headers_mut()
            .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::Assets;

    /// The gzip copies are the packages' own: each must hold exactly its plain file.
    #[test]
    fn every_gzip_copy_matches_its_file() {
        let mut copies = 0;
        for name in Assets::iter().filter(|n| n.ends_with(".gz")) {
            let gz = Assets::get(&name).unwrap();
            let plain = Assets::get(name.trim_end_matches(".gz"))
                .unwrap_or_else(|| panic!("{name} has no plain file"));
            let mut unpacked = Vec::new();
            flate2::read::GzDecoder::new(&gz.data[..])
                .read_to_end(&mut unpacked)
                .unwrap();
            assert!(
                unpacked == plain.data.as_ref(),
                "{name} differs from its file"
            );
            copies += 1;
        }
        assert_eq!(copies, 2, "htmx and its SSE extension");
    }
}
