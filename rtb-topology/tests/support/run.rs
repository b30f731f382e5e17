//! Running the `rtb` binary of this package.

use std::path::Path;
use std::process::Command;

use super::outputs::Outputs;

/// Runs `rtb ARGS`; Err with the exit status and the tail of stderr when it fails.
pub fn rtb(args: &[&str]) -> Result<(), String> {
    let out =
        Command::new(env!("CARGO_BIN_EXE_rtb")).args(args).output().map_err(|e| format!("cannot start rtb: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let tail: String = err.chars().rev().take(2_000).collect::<Vec<_>>().into_iter().rev().collect();
    Err(format!("rtb {} failed ({}):\n{tail}", args.join(" "), out.status))
}

/// The engines of `rtb replay`: every replay test runs on both.
pub const ENGINES: [&str; 2] = ["merge", "runtime"];

/// `rtb replay --input IN --output OUT --max-out-of-orderness-ms OOO --engine ENGINE`, then loads what it
/// wrote.
pub fn replay(input: &Path, output: &Path, out_of_orderness_ms: i64, engine: &str) -> Result<Outputs, String> {
    let ooo = out_of_orderness_ms.to_string();
    rtb(&[
        "replay",
        "--input",
        &input.display().to_string(),
        "--output",
        &output.display().to_string(),
        "--max-out-of-orderness-ms",
        &ooo,
        "--engine",
        engine,
    ])?;
    Outputs::load_replay(output)
}
