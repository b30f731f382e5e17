//! [`KafkaReader`]: one task's [`PartitionReader`] — one consumer per input partition, assigned (not
//! subscribed), seeking where the task reads.
//!
//! Reads are served from a buffer filled from the consumer's queue: `read(input, from, max)` serves from
//! the buffer when `from` lies between where the buffer starts and where the consumer delivers next, and
//! otherwise re-assigns the partition at `from` (a rewind or a jump). Records stay in the buffer until a
//! read asks for a later offset, so reading the same offset twice (peeking at the next record) costs
//! nothing.
//!
//! End offsets: [`PartitionReader::end_offset`] asks the broker for `ListOffsets(latest)`, then fetches
//! from the record before it to the partition end (EOF): on Apache Kafka the answer is the end already
//! and the fetch reads one record; Tansu answers with the base offset of the last batch + 1, and the
//! fetch reads that batch to the true end. [`PartitionReader::caught_up`] answers from the consumer's own
//! fetches (`enable.partition.eof`): caught up once the fetcher reported the end where the task is.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer as RdBaseConsumer, Consumer, ConsumerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::{decode_origin, kafka_partition, retry, KafkaConfig, ORIGIN_HEADER};
use crate::error::{Error, Result};
use crate::io::{LogRecord, PartitionReader};

/// Defaults of the readers' consumers (overridden by [`KafkaConfig::properties`]).
pub(crate) const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("enable.partition.eof", "true"),
    ("auto.offset.reset", "earliest"),
    ("fetch.wait.max.ms", "50"),
    ("queued.max.messages.kbytes", "4096"),
    ("allow.auto.create.topics", "false"),
];

/// The context of every consumer here: the end of a partition is an event the readers handle, not an
/// error to log; other client errors are logged as warnings (librdkafka retries them by itself).
pub(crate) struct Quiet;

impl ClientContext for Quiet {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
            return;
        }
        tracing::warn!(%error, reason, "kafka: client error; librdkafka retries");
    }
}

impl ConsumerContext for Quiet {}

/// The consumers of this module.
pub(crate) type BaseConsumer = RdBaseConsumer<Quiet>;

/// See [`KafkaReader::step_back`].
const STEP_BACK_AFTER: Duration = Duration::from_millis(150);
const FIRST_STEP: u64 = 64;
const MAX_STEP: u64 = 1 << 16;

/// Records served by one `read` beyond those buffered, pumping the consumer without waiting.
const PUMP_LIMIT: usize = 4_096;

/// One input partition: its consumer and what it delivered.
struct Input {
    /// The plan's topic name (records carry it).
    topic: Arc<str>,
    /// The cluster's topic name.
    name: String,
    consumer: BaseConsumer,
    /// Whether the partition is assigned.
    assigned: bool,
    /// Every buffered record has an offset `>= lo`, and nothing between `lo` and the first buffered record
    /// exists (deleted by retention).
    lo: u64,
    /// The offset the consumer delivers next.
    delivered: u64,
    /// The fetcher reported the end of the partition at `delivered` and nothing came since.
    at_eof: bool,
    buffer: VecDeque<LogRecord>,
    /// Where the partition is assigned (at or before `lo`: see [`KafkaReader::step_back`]).
    assigned_at: u64,
    /// When it was assigned there.
    assigned_since: Instant,
    /// How far the next step back goes.
    step: u64,
    /// Whether anything (a record, the end) arrived since the last assign.
    heard: bool,
}

/// See the module docs.
pub(crate) struct KafkaReader {
    cfg: KafkaConfig,
    partition: u32,
    inputs: Vec<Input>,
    probes: Arc<Mutex<Vec<BaseConsumer>>>,
}

impl KafkaReader {
    pub(crate) fn new(
        cfg: &KafkaConfig,
        group: &str,
        topics: &[Arc<str>],
        partition: u32,
        probes: Arc<Mutex<Vec<BaseConsumer>>>,
    ) -> Result<Self> {
        let mut inputs = Vec::with_capacity(topics.len());
        for topic in topics {
            let name = cfg.topic(topic);
            let consumer: BaseConsumer = cfg
                .client(CONSUMER_DEFAULTS)
                // A group id is required by librdkafka's consumer; nothing is committed to it (the offsets
                // live in the task's state) and nothing subscribes, so no group is ever joined.
                .set("group.id", format!("{}{group}", cfg.topic_prefix))
                .set("client.id", format!("rtb-{group}-{partition}"))
                .create_with_context(Quiet)
                .map_err(|e| consume_err(&name, partition, 0, format!("consumer: {e}")))?;
            inputs.push(Input {
                topic: Arc::clone(topic),
                name,
                consumer,
                assigned: false,
                lo: 0,
                delivered: 0,
                at_eof: false,
                buffer: VecDeque::new(),
                assigned_at: 0,
                assigned_since: Instant::now(),
                step: FIRST_STEP,
                heard: false,
            });
        }
        Ok(Self { cfg: cfg.clone(), partition, inputs, probes })
    }

    /// Assigns input `i` at `from`, dropping what was buffered.
    fn seek(&mut self, i: usize, from: u64) -> Result<()> {
        self.assign(i, from)?;
        let input = &mut self.inputs[i];
        input.lo = from;
        input.delivered = from;
        input.at_eof = false;
        input.buffer.clear();
        input.step = FIRST_STEP;
        Ok(())
    }

    /// Assigns input `i`'s partition at offset `from` (what is delivered and buffered is unchanged).
    fn assign(&mut self, i: usize, from: u64) -> Result<()> {
        let partition = self.partition;
        let input = &mut self.inputs[i];
        let p = kafka_partition(&input.name, partition)?;
        let offset = i64::try_from(from).map_err(|_| consume_err(&input.name, partition, from, "offset out of range".into()))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&input.name, p, Offset::Offset(offset))
            .map_err(|e| consume_err(&input.name, partition, from, e.to_string()))?;
        input.consumer.assign(&tpl).map_err(|e| consume_err(&input.name, partition, from, format!("assign: {e}")))?;
        input.assigned = true;
        input.assigned_at = from;
        input.assigned_since = Instant::now();
        input.heard = false;
        Ok(())
    }

    /// Tansu serves no records for a fetch that starts inside a record batch (Apache Kafka returns the
    /// batch, and the client skips the records before the offset): when nothing at all arrived for a while
    /// after assigning at an offset that is not the end, assign further back (by 64, 256, 1 024, …
    /// records, then 0) — the records before the offset asked for are dropped as they arrive.
    fn step_back(&mut self, i: usize) -> Result<()> {
        let input = &self.inputs[i];
        let stuck = input.assigned
            && !input.heard
            && input.buffer.is_empty()
            && !input.at_eof
            && input.delivered == input.lo
            && input.assigned_at > 0
            && input.assigned_since.elapsed() >= STEP_BACK_AFTER;
        if !stuck {
            return Ok(());
        }
        let to = if input.step > MAX_STEP { 0 } else { input.assigned_at.saturating_sub(input.step) };
        tracing::debug!(topic = %input.name, partition = self.partition, offset = input.lo, from = to,
            "kafka: nothing fetched from inside a batch; assigning further back");
        self.inputs[i].step = self.inputs[i].step.saturating_mul(4);
        self.assign(i, to)
    }

    /// Makes input `i` serve from `from`: keeps the buffer if it covers `from`, else seeks.
    fn position(&mut self, i: usize, from: u64) -> Result<()> {
        let input = &mut self.inputs[i];
        if input.assigned && input.lo <= from && from <= input.delivered {
            while input.buffer.front().is_some_and(|r| r.offset < from) {
                input.buffer.pop_front();
            }
            input.lo = from;
            return Ok(());
        }
        self.seek(i, from)
    }

    /// Polls input `i`'s consumer: waits up to `timeout` for the first event, then takes what is ready,
    /// up to `limit` records.
    fn pump(&mut self, i: usize, timeout: Duration, limit: usize) -> Result<()> {
        let partition = self.partition;
        let input = &mut self.inputs[i];
        let mut wait = timeout;
        let mut taken = 0;
        while taken < limit {
            let Some(event) = input.consumer.poll(wait) else { break };
            wait = Duration::ZERO;
            match event {
                Ok(m) => {
                    input.heard = true;
                    let offset = u64::try_from(m.offset()).unwrap_or(0);
                    if offset < input.delivered {
                        // Before the offset asked for (assigned further back, see `step_back`), or already
                        // delivered before a seek.
                        continue;
                    }
                    taken += 1;
                    input.delivered = offset + 1;
                    input.at_eof = false;
                    let origin = m.headers().and_then(|h| {
                        h.iter().find(|h| h.key == ORIGIN_HEADER).and_then(|h| h.value).and_then(decode_origin)
                    });
                    input.buffer.push_back(LogRecord {
                        topic: Arc::clone(&input.topic),
                        partition,
                        offset,
                        timestamp: m.timestamp().to_millis().unwrap_or(0),
                        key: m.key().map(Arc::from),
                        payload: Arc::from(m.payload().unwrap_or_default()),
                        origin,
                    });
                }
                Err(KafkaError::PartitionEOF(_)) => {
                    input.heard = true;
                    input.at_eof = true;
                }
                Err(e) => {
                    // A consumer error (broker down, partition moved): librdkafka keeps retrying the fetch by
                    // itself; say so and go on polling, the records come when the broker is back.
                    tracing::warn!(topic = %input.name, partition, offset = input.delivered, error = %e,
                        "kafka: consumer error; librdkafka retries the fetch");
                    if is_fatal(&e) {
                        return Err(consume_err(&input.name, partition, input.delivered, e.to_string()));
                    }
                }
            }
        }
        self.step_back(i)
    }
}

impl Drop for KafkaReader {
    fn drop(&mut self) {
        super::close_in_parallel(std::mem::take(&mut self.inputs));
    }
}

impl PartitionReader for KafkaReader {
    fn start_offset(&mut self, input: usize) -> Result<u64> {
        let (name, partition) = (self.inputs[input].name.clone(), self.partition);
        let p = kafka_partition(&name, partition)?;
        let consumer = &self.inputs[input].consumer;
        let (low, _) = retry(&self.cfg, &|| format!("start offset of {name}[{partition}]"), || {
            consumer.fetch_watermarks(&name, p, self.cfg.request_timeout)
        })
        .map_err(|e| consume_err(&name, partition, 0, format!("watermarks: {e}")))?;
        Ok(u64::try_from(low).unwrap_or(0))
    }

    fn end_offset(&mut self, input: usize) -> Result<u64> {
        let name = self.inputs[input].name.clone();
        let end = probe_end(&self.cfg, &self.probes, &name, self.partition)?;
        let known = self.inputs[input].delivered;
        Ok(end.max(if self.inputs[input].assigned { known } else { 0 }))
    }

    fn read(&mut self, input: usize, from: u64, max: usize) -> Result<Vec<LogRecord>> {
        self.position(input, from)?;
        if self.inputs[input].buffer.len() < max {
            let want = (max - self.inputs[input].buffer.len()).min(PUMP_LIMIT);
            self.pump(input, Duration::ZERO, want)?;
        }
        Ok(self.inputs[input].buffer.iter().take(max).cloned().collect())
    }

    fn caught_up(&mut self, input: usize, next: u64) -> Result<bool> {
        let i = &self.inputs[input];
        Ok(i.assigned && i.at_eof && i.buffer.iter().all(|r| r.offset < next) && next >= i.delivered)
    }

    fn wait(&mut self, input: usize, offset: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        if self.position(input, offset).is_err() {
            std::thread::sleep(timeout);
            return false;
        }
        loop {
            if self.inputs[input].buffer.iter().any(|r| r.offset >= offset) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.pump(input, left, PUMP_LIMIT).is_err() {
                return self.inputs[input].buffer.iter().any(|r| r.offset >= offset);
            }
        }
    }
}

/// The end offset of the cluster's `name`[`partition`] now. See the module docs.
pub(crate) fn probe_end(cfg: &KafkaConfig, probes: &Mutex<Vec<BaseConsumer>>, name: &str, partition: u32) -> Result<u64> {
    let p = kafka_partition(name, partition)?;
    let probe = match probes.lock().pop() {
        Some(c) => c,
        None => cfg
            .client(CONSUMER_DEFAULTS)
            .set("group.id", format!("{}rtb-end-probe", cfg.topic_prefix))
            .set("fetch.wait.max.ms", "5")
            .create_with_context(Quiet)
            .map_err(|e| consume_err(name, partition, 0, format!("consumer: {e}")))?,
    };
    let result = retry(cfg, &|| format!("end offset of {name}[{partition}]"), || probe_once(cfg, &probe, name, p));
    let _ = probe.unassign();
    probes.lock().push(probe);
    result.map_err(|reason| consume_err(name, partition, 0, reason))
}

fn probe_once(cfg: &KafkaConfig, probe: &BaseConsumer, name: &str, p: i32) -> std::result::Result<u64, String> {
    let (_, listed) = probe.fetch_watermarks(name, p, cfg.request_timeout).map_err(|e| format!("watermarks: {e}"))?;
    if listed <= 0 {
        return Ok(0);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(name, p, Offset::Offset(listed - 1)).map_err(|e| e.to_string())?;
    probe.assign(&tpl).map_err(|e| format!("assign: {e}"))?;
    let mut end = listed;
    let deadline = Instant::now() + cfg.request_timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no end of partition reported within {:?}", cfg.request_timeout));
        }
        match probe.poll(left.min(Duration::from_millis(100))) {
            None => {}
            Some(Ok(m)) => end = end.max(m.offset() + 1),
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(u64::try_from(end).unwrap_or(0)),
            Some(Err(e)) if is_fatal(&e) => return Err(e.to_string()),
            Some(Err(e)) => tracing::warn!(topic = name, partition = p, error = %e, "kafka: end-offset probe: consumer error"),
        }
    }
}

/// Errors a consumer does not recover from by itself.
fn is_fatal(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(C::TopicAuthorizationFailed | C::ClusterAuthorizationFailed | C::Fatal)
    )
}

fn consume_err(topic: &str, partition: u32, offset: u64, reason: String) -> Error {
    Error::KafkaConsume { topic: topic.to_string(), partition, offset, reason }
}
