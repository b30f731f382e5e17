//! A priority queue of `(time, key)` entries for "what is due at this watermark", tuned for the join's
//! pattern: entries are pushed at or after the time last popped, and popped in `(time, key)` order.
//!
//! Future entries sit unsorted in fixed-width time buckets (`BTreeMap<bucket, Vec<_>>`; a push is a vector
//! append), and only the bucket being drained is heap-ordered. A single big binary heap would instead walk
//! `log n` cache-cold levels on every pop once it holds hundreds of thousands of entries.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use crate::time::Timestamp;

#[derive(Debug)]
pub(super) struct DueQueue<K> {
    width: i64,
    /// Bucket id → entries, for buckets after `current`.
    future: BTreeMap<i64, Vec<(Timestamp, K)>>,
    /// The bucket being drained, as a min-heap, and its id.
    current: BinaryHeap<Reverse<(Timestamp, K)>>,
    current_id: Option<i64>,
    len: usize,
}

impl<K: Ord> DueQueue<K> {
    /// A queue with buckets `width` ms wide (at least 1).
    pub(super) fn new(width: i64) -> Self {
        Self {
            width: width.max(1),
            future: BTreeMap::new(),
            current: BinaryHeap::new(),
            current_id: None,
            len: 0,
        }
    }

    fn bucket(&self, t: Timestamp) -> i64 {
        t.div_euclid(self.width)
    }

    /// Number of entries.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Adds an entry (any time: an entry at or before the bucket being drained joins its heap).
    pub(super) fn push(&mut self, t: Timestamp, key: K) {
        self.len += 1;
        let b = self.bucket(t);
        if self.current_id.is_some_and(|c| b <= c) {
            self.current.push(Reverse((t, key)));
        } else {
            self.future.entry(b).or_default().push((t, key));
        }
    }

    /// The time of the first entry if it is `<= limit`.
    pub(super) fn due(&mut self, limit: Timestamp) -> Option<Timestamp> {
        if self.current.is_empty() {
            self.current_id = None;
            let first = *self.future.first_key_value()?.0;
            if first > self.bucket(limit) {
                return None;
            }
            let (id, entries) = self.future.pop_first()?;
            self.current = entries.into_iter().map(Reverse).collect();
            self.current_id = Some(id);
        }
        self.current.peek().map(|Reverse((t, _))| *t).filter(|t| *t <= limit)
    }

    /// Removes the first entry (call after [`Self::due`] said it is due).
    pub(super) fn pop(&mut self) -> Option<(Timestamp, K)> {
        let Reverse(e) = self.current.pop()?;
        self.len -= 1;
        Some(e)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Push(Timestamp, u8),
        /// Pop everything due at `limit`; while popping, the popped entry may push a later one.
        Drain {
            limit: Timestamp,
            push_after: Option<(Timestamp, u8)>,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (-50i64..200, 0u8..5).prop_map(|(t, k)| Op::Push(t, k)),
            1 => (-50i64..200, prop::option::of((1i64..30, 0u8..5)))
                .prop_map(|(limit, push_after)| Op::Drain { limit, push_after }),
        ]
    }

    proptest! {
        #[test]
        fn pops_like_a_btreeset_for_any_width(width in 1i64..40, ops in prop::collection::vec(op(), 0..80)) {
            let mut q = DueQueue::new(width);
            let mut model: BTreeSet<(Timestamp, u8, u32)> = BTreeSet::new(); // (t, key, seq) keeps duplicates
            let mut seq = 0u32;
            for op in ops {
                match op {
                    Op::Push(t, k) => {
                        q.push(t, k);
                        seq += 1;
                        model.insert((t, k, seq));
                    }
                    Op::Drain { limit, push_after } => {
                        let mut pushed_once = false;
                        while let Some(t) = q.due(limit) {
                            let (pt, pk) = q.pop().expect("due entry");
                            let (mt, mk, _seq) = model.pop_first().expect("model has it");
                            prop_assert_eq!((t, pt, pk), (mt, mt, mk));
                            prop_assert!(pt <= limit);
                            if let (Some((dt, k)), false) = (push_after, pushed_once) {
                                // like the join: the next deadline of a handled key lies after it
                                q.push(pt + dt, k);
                                seq += 1;
                                model.insert((pt + dt, k, seq));
                                pushed_once = true;
                            }
                        }
                        prop_assert!(model.first().is_none_or(|(t, _, _)| *t > limit));
                    }
                }
                prop_assert_eq!(q.len(), model.len());
            }
        }
    }

    #[test]
    fn pops_in_time_then_key_order_across_buckets_with_pushes_while_draining() {
        let mut q = DueQueue::new(10);
        for (t, k) in [(25, 'b'), (3, 'z'), (8, 'v'), (25, 'a'), (-7, 'x'), (14, 'q'), (40, 'c')] {
            q.push(t, k);
        }
        let mut got = Vec::new();
        while q.due(30).is_some() {
            let (t, k) = q.pop().expect("due");
            if k == 'z' {
                q.push(5, 'y'); // same bucket as the one being drained, before its next entry
                q.push(27, 'w'); // a later bucket
            }
            got.push((t, k));
        }
        assert_eq!(
            got,
            vec![(-7, 'x'), (3, 'z'), (5, 'y'), (8, 'v'), (14, 'q'), (25, 'a'), (25, 'b'), (27, 'w')]
        );
        q.push(-100, 'e'); // earlier than the bucket being drained: still first
        assert_eq!(q.due(39), Some(-100));
        assert_eq!(q.pop(), Some((-100, 'e')));
        assert_eq!(q.len(), 1);
        assert_eq!(q.due(39), None, "40 is not due at 39");
        assert_eq!(q.due(40), Some(40));
    }
}
