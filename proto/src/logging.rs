//! The daemons' logging: tracing to stderr as `text` or `json`, filtered by `BERTH_LOG`
//! (default `info`). Agent and scheduler share only this crate, so their one set-up lives here.

/// A `--log-format` that is neither `text` nor `json`.
#[derive(Debug, thiserror::Error)]
#[error("--log-format {0:?}: expected text or json")]
pub struct UnknownLogFormat(pub String);

/// Installs the global subscriber for `format` (`text` or `json`).
pub fn init(format: &str) -> Result<(), UnknownLogFormat> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        "json" => builder.json().init(),
        "text" => builder.init(),
        other => return Err(UnknownLogFormat(other.to_string())),
    }
    Ok(())
}
