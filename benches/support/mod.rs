//! Shared by the bench binaries (`#[path = "support/mod.rs"] mod support;`).

/// Peak resident memory of this process so far (VmHWM), in KiB; reset with `reset_peak_rss`.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// Prints `PEAK_RSS_MIB name=NAME value=…` (the figure BENCHMARKS.md reports).
pub fn print_peak_rss(name: &str) {
    if let Some(kib) = peak_rss_kib() {
        println!("PEAK_RSS_MIB name={name} value={:.0}", kib as f64 / 1024.0);
    }
}
