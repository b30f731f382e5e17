//! The `rtb` binary: `describe`, `validate`, `run`, `replay`, `generate`, `export`. See `rtb --help`.

use std::process::ExitCode;

use clap::Parser;
use rtb_topology::cli::{execute, exit_status, Cli};
use tracing_subscriber::EnvFilter;

// Replay decodes on worker threads and frees on the operator thread; mimalloc handles that cross-thread
// pattern far better than the system allocator (it was a third of replay's time). It is built without
// transparent huge pages (feature `no_thp`): with them `rtb run` kept twice the memory (BENCHMARKS.md);
// `MIMALLOC_ALLOW_THP=1` turns them back on for a batch replay (~8 % faster there).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Usage errors exit with status 2 here (clap); --help and --version with 0.
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log redirected to a file or a collector stays plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let mut stdout = std::io::stdout().lock();
    let result = execute(cli, &mut stdout);
    if let Err(e) = &result {
        // Every error's message already includes its cause.
        eprintln!("error: {e}");
    }
    ExitCode::from(exit_status(&result))
}
