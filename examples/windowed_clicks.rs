//! `rtb-stream` on its own, without the CPC system: clicks are appended to an in-memory embedded log
//! (8 partitions, Kafka's key partitioner), a job counts them per ad in 1-minute tumbling windows with a
//! task per partition, and writes each window result to an output topic. Batch mode (`stop_at_end`) drains
//! the input, advances the watermark to the end and returns.
//!
//! Run: `cargo run --example windowed_clicks`

use std::sync::Arc;
use std::time::Duration;

use rtb_stream::log::{EmbeddedLog, LogRecord, ProduceRecord, TopicConfig};
use rtb_stream::runtime::{JobConfig, Output, Runtime};
use rtb_stream::state::{MemoryBackend, StateScope, WriteBatch};
use rtb_stream::window::{Count, LatePolicy, Tumbling, WindowEvent, WindowedAggregate};
use rtb_stream::{Context, Operator, Record, Timestamp};

/// Counts clicks per ad per minute.
struct ClicksPerMinute {
    windows: WindowedAggregate<String, Count, Tumbling>,
    events: Vec<WindowEvent<String, u64, ()>>,
}

impl ClicksPerMinute {
    fn emit(&mut self, ctx: &mut Context<'_, Output>) {
        for ev in self.events.drain(..) {
            if let WindowEvent::Final { key, window, acc } = ev {
                let line = format!("{key} [{}, {}) {acc} clicks", window.start, window.end);
                ctx.emit(Output {
                    topic: "clicks-per-minute".into(),
                    record: ProduceRecord {
                        key: Some(key.into_bytes()),
                        payload: line.into_bytes(),
                        timestamp: window.end,
                        partition: None,
                        origin: None,
                    },
                });
            }
        }
    }
}

impl Operator for ClicksPerMinute {
    type Key = String;
    type In = ();
    type Out = Output;

    fn process(&mut self, r: Record<String, ()>, ctx: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        self.windows.process(r.key, r.timestamp, &(), &mut self.events);
        self.emit(ctx);
        Ok(())
    }

    fn on_watermark(&mut self, wm: Timestamp, ctx: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        self.windows.on_watermark(wm, &mut self.events);
        self.emit(ctx);
        Ok(())
    }

    fn flush_state(&mut self, batch: &mut WriteBatch) -> rtb_stream::Result<()> {
        self.windows.flush_into(batch)
    }
}

fn main() -> anyhow::Result<()> {
    let log = EmbeddedLog::in_memory();
    // The input, the job's output and its dead letters.
    log.ensure_topics(["clicks", "clicks-per-minute", "dead-letters"], TopicConfig { partitions: 8, retention: None })?;
    // 3 ads, 10 minutes of clicks, a little out of order.
    for i in 0..3_000i64 {
        let ad = format!("ad-{}", i % 3);
        let ts = i * 200 - (i % 7) * 150;
        log.append("clicks", ProduceRecord { key: Some(ad.into_bytes()), payload: Vec::new(), timestamp: ts, partition: None, origin: None })?;
    }

    let mut rt = Runtime::new(log.clone(), Arc::new(MemoryBackend::new()));
    let mut cfg = JobConfig::new("clicks-per-minute", ["clicks"]);
    cfg.stop_at_end = true;
    cfg.dead_letter_topic = Some("dead-letters".into());
    let decode = |r: &LogRecord| -> Result<Record<String, ()>, String> {
        let key = r.key.as_deref().ok_or("click without a key")?;
        Ok(Record::new(String::from_utf8_lossy(key).into_owned(), (), r.timestamp, r.coord()))
    };
    rt.spawn(cfg, decode, |_, scope: &StateScope| {
        let minute = Tumbling::of(Duration::from_secs(60));
        let windows = WindowedAggregate::new(scope, "clicks", minute, Count, Duration::ZERO, LatePolicy::Drop)?;
        Ok(ClicksPerMinute { windows, events: Vec::new() })
    })?;
    let report = rt.join()?;
    let job = report.groups.get("clicks-per-minute").copied().unwrap_or_default();

    // Window results by (window start, ad): in time order, not as text.
    let mut lines = Vec::new();
    for r in log.read_topic("clicks-per-minute")? {
        let ad = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
        lines.push((r.timestamp, ad, String::from_utf8_lossy(&r.payload).into_owned()));
    }
    lines.sort();
    for (_, _, l) in &lines {
        println!("{l}");
    }
    let total: u64 = lines.iter().filter_map(|(_, _, l)| l.split_whitespace().nth(3)?.parse::<u64>().ok()).sum();
    println!(
        "{} windows, {total} clicks counted of 3000 ({} records read by {} tasks, {} late, {} dead letters)",
        lines.len(),
        job.records_in,
        job.tasks,
        job.late_records,
        job.dead_letters
    );
    Ok(())
}
