//! `rtb generate`: the simulator's traffic written as replay input files.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::pricing::GspPricer;
use crate::error::{Error, Result};
use crate::sim::{SimConfig, SimTopic, Simulator};

/// Writes `campaign-events.jsonl`, `ad-events.jsonl`, `conversion-events.jsonl` (each in arrival order) and
/// `advertisers.jsonl` under `dir`; returns the number of events written.
pub fn write_inputs(dir: &Path, seed: u64, scale: u32, ad_events: u64, hours: u32) -> Result<u64> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.to_path_buf(), source: e })?;
    let open = |name: &str| -> Result<(BufWriter<File>, std::path::PathBuf)> {
        let p = dir.join(name);
        let f = File::create(&p).map_err(|e| Error::Io { path: p.clone(), source: e })?;
        Ok((BufWriter::with_capacity(1 << 20, f), p))
    };
    let cfg = SimConfig { seed, scale, ad_events, ..SimConfig::default() }.spanning(i64::from(hours.max(1)) * 3_600_000);
    let sim = Simulator::new(cfg, GspPricer::default());
    let (mut adv, adv_path) = open("advertisers.jsonl")?;
    for a in sim.advertisers() {
        let line = serde_json::to_string(a).map_err(|e| Error::Run(e.to_string()))?;
        writeln!(adv, "{line}").map_err(|e| Error::Io { path: adv_path.clone(), source: e })?;
    }
    adv.flush().map_err(|e| Error::Io { path: adv_path, source: e })?;
    let mut files = [open("campaign-events.jsonl")?, open("ad-events.jsonl")?, open("conversion-events.jsonl")?];
    let mut n = 0u64;
    for ev in sim {
        let (w, p) = &mut files[match ev.topic {
            SimTopic::Campaign => 0,
            SimTopic::Ad => 1,
            SimTopic::Conversion => 2,
        }];
        // A malformed payload may contain a newline: one event must stay one line.
        let payload: Vec<u8> = ev.payload.iter().map(|b| if *b == b'\n' { b' ' } else { *b }).collect();
        w.write_all(&payload).and_then(|()| w.write_all(b"\n")).map_err(|e| Error::Io { path: p.clone(), source: e })?;
        n += 1;
    }
    for (w, p) in &mut files {
        w.flush().map_err(|e| Error::Io { path: p.clone(), source: e })?;
    }
    Ok(n)
}
