//! Long image work shows progress on a terminal and stays quiet in pipes.

use std::process::Command;

use berth_tests::{Berth, busybox_image, require_tool, run_ok};

/// Runs `cmd` under `script`, which gives it a pseudo-terminal, and returns what it printed.
fn on_a_terminal(cmd: &Command) -> String {
    let script = require_tool("script");
    let line: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| shell_quote(&a.to_string_lossy()))
        .collect();
    run_ok(
        Command::new(script)
            .args(["--quiet", "--return", "--command"])
            .arg(line.join(" "))
            .arg("/dev/null")
            // A terminal that can draw: CI may run with no TERM (indicatif then hides bars)
            // and no SHELL.
            .env("TERM", "xterm")
            .env("SHELL", "/bin/sh"),
    )
}

fn shell_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

#[test]
fn unpack_draws_a_bar_per_layer_on_a_terminal_and_nothing_in_a_pipe() {
    let berth = Berth::new();
    busybox_image(&berth, "progress:v1");
    let image = berth.json(["image", "inspect", "progress:v1"]);
    let layer = image["manifest"]["layers"][0]["digest"]
        .as_str()
        .expect("the image has a layer")
        .trim_start_matches("sha256:")[..12]
        .to_string();

    let out_dir = tempfile::tempdir().unwrap();
    let target = out_dir.path().join("tty");
    let shown = on_a_terminal(berth.cmd(["image", "unpack", "progress:v1"]).arg(&target));
    assert!(
        shown.contains(&layer),
        "no bar for layer {layer}: {shown:?}"
    );
    assert!(
        shown.contains("MiB") || shown.contains("KiB"),
        "no byte counts: {shown:?}"
    );

    let piped = berth
        .cmd(["image", "unpack", "progress:v1"])
        .arg(out_dir.path().join("pipe"))
        .output()
        .unwrap();
    assert!(piped.status.success());
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(
        !stderr.contains(&layer),
        "progress drawn into a pipe: {stderr:?}"
    );
}
