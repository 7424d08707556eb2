//! `features`: the runtime's features document as JSON, as `runc features` prints it.

pub(crate) fn run() -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(&berth_runtime::features::features())?
    );
    Ok(())
}
