//! A topology of a library user's own, with no CPC part: its own schema (`page-views`), its own operator
//! kind (`page-view-counter`, with typed settings), its own sink backend (`view-counts` on `jsonl`),
//! registered by name in an `rtb_stream::registry::Registry`, declared in `examples/page_views.toml`,
//! validated, described and run on the runtime over an embedded log, end to end.
//!
//! Run: `cargo run --example page_views [-- DATA_DIR]` (default: a temporary directory).
//!
//! The counter writes one JSON line per (page, window) with at least `min_views` views to its sink's
//! `counts.jsonl`. The sink is at-least-once: a run killed between a write and the next commit writes that
//! window again on restart (readers keep the last line per page and window).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rtb_stream::log::{EmbeddedLog, LogRecord, ProduceRecord, TopicConfig};
use rtb_stream::registry::{
    JsonSchema, KindRules, Millis, OpenedSink, OperatorKind, Registry, SettingsError, SinkBackend,
    SinkHandle, SinkOptions, StageContext,
};
use rtb_stream::runtime::{Output, Runtime};
use rtb_stream::state::{MemoryBackend, WriteBatch};
use rtb_stream::window::{Count, LatePolicy, Tumbling, WindowEvent, WindowedAggregate};
use rtb_stream::{Context, Operator, Record, Timestamp};
use rtb_topology::app::wiring::{self, OpenedSinks, DEAD_LETTER_TOPIC, LATE_TOPIC};
use rtb_topology::{DescribeFormat, Topology};
use serde::{Deserialize, Serialize};

/// The topology file of this example.
pub const TOPOLOGY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/page_views.toml");

// ------------------------------------------------------------------ the sink backend

/// One line of the counts file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewCount {
    /// The page.
    pub page: String,
    /// Window start (ms, inclusive).
    pub window_start: i64,
    /// Window end (ms, exclusive).
    pub window_end: i64,
    /// Views in the window.
    pub views: u64,
}

/// An append-only JSON Lines file, made durable at each commit.
#[derive(Debug)]
pub struct JsonlSink {
    file: Mutex<BufWriter<File>>,
}

impl JsonlSink {
    fn write(&self, row: &ViewCount) -> rtb_stream::Result<()> {
        let mut line = serde_json::to_vec(row).map_err(|e| rtb_stream::Error::Config(e.to_string()))?;
        line.push(b'\n');
        let mut f = self.file.lock().map_err(|_| rtb_stream::Error::Config("counts file lock poisoned".into()))?;
        f.write_all(&line).map_err(rtb_stream::Error::Io)
    }
}

impl SinkHandle for JsonlSink {
    fn sync(&self) -> rtb_stream::Result<()> {
        let mut f = self.file.lock().map_err(|_| rtb_stream::Error::Config("counts file lock poisoned".into()))?;
        f.flush()?;
        f.get_ref().sync_data()?;
        Ok(())
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// `kind = "view-counts", backend = "jsonl"`: `<data_dir>/<path or name>/counts.jsonl`.
pub struct JsonlBackend;

impl SinkBackend for JsonlBackend {
    fn kind(&self) -> &str {
        "view-counts"
    }
    fn backend(&self) -> &str {
        "jsonl"
    }
    fn check(&self, options: &SinkOptions<'_>) -> Result<(), SettingsError> {
        if options.url.is_some() {
            return Err(SettingsError::field("url", "the jsonl backend writes a file: give a `path`"));
        }
        Ok(())
    }
    fn open(&self, options: &SinkOptions<'_>) -> rtb_stream::Result<OpenedSink> {
        let dir = options.dir();
        std::fs::create_dir_all(&dir)?;
        let file = OpenOptions::new().create(true).append(true).open(dir.join("counts.jsonl"))?;
        Ok(OpenedSink {
            name: options.name.to_owned(),
            kind: "view-counts".to_owned(),
            handle: Arc::new(JsonlSink { file: Mutex::new(BufWriter::new(file)) }),
        })
    }
}

// ------------------------------------------------------------------ the operator kind

/// Settings of `page-view-counter` (`settings = { ... }` in the topology file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CounterSettings {
    /// Tumbling window size.
    pub window: Millis,
    /// Grace after a window's end before it is written (later views are dropped, and counted).
    pub grace: Millis,
    /// Windows with fewer views are not written.
    pub min_views: u64,
}

impl Default for CounterSettings {
    fn default() -> Self {
        Self { window: Millis::minutes(1), grace: Millis::ZERO, min_views: 1 }
    }
}

/// Views per page in tumbling windows.
pub struct PageViewCounter;

impl OperatorKind for PageViewCounter {
    type Settings = CounterSettings;

    fn name(&self) -> &str {
        "page-view-counter"
    }

    fn rules(&self) -> KindRules {
        KindRules::new().input("page-views").sink("view-counts").key(&["page"], true).role("counter")
    }

    fn check(&self, s: &CounterSettings) -> Result<(), SettingsError> {
        if s.window == Millis::ZERO {
            return Err(SettingsError::field("window", "must be greater than 0"));
        }
        Ok(())
    }

    fn spawn(&self, rt: &mut Runtime, stage: StageContext<'_>, s: &CounterSettings) -> rtb_stream::Result<()> {
        let sink = stage.sink("view-counts")?.clone();
        let (window, grace, min_views) = (s.window.to_std(), s.grace.to_std(), s.min_views);
        // A page view: `{"page": "/home", "user": "u1", "ts": 1705312800000}`; its key is the page.
        let decode = |r: &LogRecord| -> Result<Record<String, ()>, String> {
            let v: serde_json::Value = serde_json::from_slice(&r.payload).map_err(|e| format!("invalid JSON: {e}"))?;
            let page = v.get("page").and_then(|p| p.as_str()).ok_or("missing field `page`")?;
            let ts = v.get("ts").and_then(serde_json::Value::as_i64).ok_or("missing field `ts`")?;
            Ok(Record::new(page.to_owned(), (), ts, r.coord()))
        };
        rt.spawn(stage.job, decode, move |_, scope| {
            let windows = WindowedAggregate::new(scope, "views", Tumbling::of(window), Count, grace, LatePolicy::Drop)?;
            Ok(Counter { windows, events: Vec::new(), sink: sink.clone(), min_views })
        })
    }
}

struct Counter {
    windows: WindowedAggregate<String, Count, Tumbling>,
    events: Vec<WindowEvent<String, u64, ()>>,
    sink: OpenedSink,
    min_views: u64,
}

impl Counter {
    fn write(&mut self) -> rtb_stream::Result<()> {
        let sink = self.sink.handle::<JsonlSink>()?;
        for ev in self.events.drain(..) {
            if let WindowEvent::Final { key, window, acc } = ev {
                if acc >= self.min_views {
                    sink.write(&ViewCount { page: key, window_start: window.start, window_end: window.end, views: acc })?;
                }
            }
        }
        Ok(())
    }
}

impl Operator for Counter {
    type Key = String;
    type In = ();
    type Out = Output;

    fn process(&mut self, r: Record<String, ()>, _: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        self.windows.process(r.key, r.timestamp, &(), &mut self.events);
        self.write()
    }

    fn on_watermark(&mut self, wm: Timestamp, _: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        self.windows.on_watermark(wm, &mut self.events);
        self.write()
    }

    fn flush_state(&mut self, batch: &mut WriteBatch) -> rtb_stream::Result<()> {
        self.windows.flush_into(batch)?;
        // The windows written so far are durable before the offsets that say their views were read.
        self.sink.handle.sync()
    }
}

// ------------------------------------------------------------------ running it

/// A registry with this example's schema, kind and sink backend, and nothing else.
pub fn registry() -> rtb_stream::Result<Registry> {
    let mut r = Registry::new();
    r.register_schema(JsonSchema::new("page-views"))?;
    r.register_kind(PageViewCounter)?;
    r.register_sink_backend(JsonlBackend)?;
    Ok(r)
}

/// Reads `topology` with this example's registry, appends `views` (page, ts) to its `page-views` topic
/// in a log under `data_dir`, runs every stage to the end of its input, and returns the counts written.
pub fn run(topology: &Path, data_dir: &Path, views: &[(&str, i64)]) -> anyhow::Result<(String, Vec<ViewCount>)> {
    let registry = registry()?;
    let plan = Topology::from_file_with(topology, &registry)?.plan_with(&registry)?;
    let description = plan.describe(DescribeFormat::Text);

    let log = EmbeddedLog::open(data_dir.join("log"))?;
    for t in &plan.topics {
        log.create_topic(&t.name, t.topic_config())?;
    }
    for t in [DEAD_LETTER_TOPIC, LATE_TOPIC] {
        log.create_topic(t, TopicConfig { partitions: 1, retention: None })?;
    }
    for (i, (page, ts)) in views.iter().enumerate() {
        let payload = serde_json::json!({ "page": page, "user": format!("u{i}"), "ts": ts });
        log.append(
            "page-views",
            ProduceRecord {
                key: Some(page.as_bytes().to_vec()),
                payload: serde_json::to_vec(&payload)?,
                timestamp: *ts,
                partition: None,
                origin: None,
            },
        )?;
    }

    let sinks = OpenedSinks::open(&plan, data_dir, &registry)?;
    let mut rt = Runtime::new(log, Arc::new(MemoryBackend::new()));
    wiring::spawn_all(&mut rt, &plan, &registry, &sinks, true)?;
    rt.join()?;
    drop(sinks);

    let sink = plan.sinks.iter().find(|s| s.kind == "view-counts").ok_or_else(|| anyhow::anyhow!("no counts sink"))?;
    let file = sink.embedded_dir(data_dir).join("counts.jsonl");
    let mut counts: Vec<ViewCount> = std::fs::read_to_string(&file)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    counts.sort_by(|a, b| (&a.page, a.window_start).cmp(&(&b.page, b.window_start)));
    Ok((description, counts))
}

#[allow(dead_code)]
fn main() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let data_dir = std::env::args().nth(1).map_or_else(|| tmp.path().to_path_buf(), PathBuf::from);
    // Five minutes of views of three pages, one every 10 s, a page every third view.
    let pages = ["/home", "/cart", "/search"];
    let views: Vec<(&str, i64)> = (0..30).map(|i| (pages[i % 3], 1_705_312_800_000 + i as i64 * 10_000)).collect();
    let (description, counts) = run(Path::new(TOPOLOGY), &data_dir, &views)?;
    print!("{description}");
    println!("\nCounts ({})", data_dir.display());
    for c in &counts {
        println!("  {} [{}, {}) {} views", c.page, c.window_start, c.window_end, c.views);
    }
    Ok(())
}
