//! [`Repartition`]: re-keys records into another topic, stamping each output with its origin so that the
//! consuming job applies it once even if this stage writes it again after a crash.

use std::marker::PhantomData;

use super::Output;
use crate::error::Result;
use crate::log::ProduceRecord;
use crate::operator::{Context, DeadLetter, Operator};
use crate::record::Record;

/// Maps each input record to one record of `topic` with a new key (the log partitions it by that key)
/// and a payload, keeping its timestamp, with `origin` = the input record's coordinates.
///
/// The mapping returns `Ok(Some((key, payload)))` to forward, `Ok(None)` to drop the record on purpose,
/// `Err(reason)` to send it to the dead-letter output (stage `repartition:<topic>`; the dead letter's
/// `payload` is empty because the typed input has no bytes any more).
///
/// One output per input record: the consumer skips a record whose origin is not beyond the last origin
/// it applied from the same origin partition.
pub struct Repartition<K, V, F> {
    topic: String,
    map: F,
    _types: PhantomData<fn(K, V)>,
}

impl<K, V, F> std::fmt::Debug for Repartition<K, V, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repartition").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl<K, V, F> Repartition<K, V, F>
where
    F: FnMut(&Record<K, V>) -> std::result::Result<Option<(Vec<u8>, Vec<u8>)>, String> + Send,
{
    /// A repartition stage writing to `topic`.
    pub fn new(topic: impl Into<String>, map: F) -> Self {
        Self { topic: topic.into(), map, _types: PhantomData }
    }
}

impl<K, V, F> Operator for Repartition<K, V, F>
where
    F: FnMut(&Record<K, V>) -> std::result::Result<Option<(Vec<u8>, Vec<u8>)>, String> + Send,
{
    type Key = K;
    type In = V;
    type Out = Output;

    fn process(&mut self, record: Record<K, V>, ctx: &mut Context<'_, Output>) -> Result<()> {
        match (self.map)(&record) {
            Ok(Some((key, payload))) => ctx.emit(Output {
                topic: self.topic.clone(),
                record: ProduceRecord {
                    key: Some(key),
                    payload,
                    timestamp: record.timestamp,
                    partition: None,
                    origin: Some(record.source),
                },
            }),
            Ok(None) => {}
            Err(reason) => ctx.dead_letter(DeadLetter {
                source: record.source,
                stage: format!("repartition:{}", self.topic),
                reason,
                payload: String::new(),
            }),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::Harness;
    use crate::record::SourceCoord;

    #[test]
    fn rekeys_keeps_time_and_stamps_origin() {
        let op = Repartition::new("by-user", |r: &Record<String, u32>| match r.value {
            0 => Ok(None),
            v if v > 100 => Err(format!("value {v} too large")),
            v => Ok(Some((format!("user-{v}").into_bytes(), r.key.clone().into_bytes()))),
        });
        let mut h = Harness::new(op);
        let src = |o| SourceCoord::new("raw", 2, o);
        h.process(Record::new("a".to_string(), 7, 1_000, src(10))).expect("process");
        h.process(Record::new("b".to_string(), 0, 1_001, src(11))).expect("process");
        h.process(Record::new("c".to_string(), 500, 1_002, src(12))).expect("process");
        let out = h.drain();
        assert_eq!(out.len(), 1, "the 0 was filtered, the 500 dead-lettered");
        assert_eq!(out[0].topic, "by-user");
        assert_eq!(out[0].record.key.as_deref(), Some(&b"user-7"[..]));
        assert_eq!(out[0].record.payload, b"a");
        assert_eq!(out[0].record.timestamp, 1_000);
        assert_eq!(out[0].record.partition, None, "partitioned by the new key");
        assert_eq!(out[0].record.origin, Some(src(10)));
        assert_eq!(h.dead_letters.len(), 1);
        assert_eq!(h.dead_letters[0].source, src(12));
        assert_eq!(h.dead_letters[0].stage, "repartition:by-user");
    }
}
