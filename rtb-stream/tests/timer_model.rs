//! Model test of the timer service against two plain `BTreeSet<(at, key)>`s, with commits, restarts and
//! crashes (reopen without flushing: back to the last commit).

use std::collections::BTreeSet;

use proptest::prelude::*;
use rtb_stream::state::{StateScope, WriteBatch};
use rtb_stream::timer::TimerService;

#[derive(Debug, Clone, Copy)]
enum Op {
    Register { event: bool, key: u8, at: i64 },
    Delete { event: bool, key: u8, at: i64 },
    Fire { event: bool, upto: i64 },
    Commit,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<bool>(), 0u8..6, 0i64..50).prop_map(|(event, key, at)| Op::Register { event, key, at }),
        2 => (any::<bool>(), 0u8..6, 0i64..50).prop_map(|(event, key, at)| Op::Delete { event, key, at }),
        2 => (any::<bool>(), 0i64..60).prop_map(|(event, upto)| Op::Fire { event, upto }),
        1 => Just(Op::Commit),
        1 => Just(Op::Crash),
    ]
}

type Model = [BTreeSet<(i64, u8)>; 2];

fn fire(set: &mut BTreeSet<(i64, u8)>, upto: i64) -> Vec<(u8, i64)> {
    let rest = set.split_off(&(upto + 1, 0));
    let due = std::mem::replace(set, rest);
    due.into_iter().map(|(at, k)| (k, at)).collect()
}

proptest! {
    #[test]
    fn timers_match_a_btreeset_model_across_restarts(ops in prop::collection::vec(op(), 1..200)) {
        let scope = StateScope::in_memory();
        let mut timers = TimerService::<u8>::new(&scope, "timers").expect("open");
        let (mut model, mut committed): (Model, Model) = Default::default();
        for op in ops {
            match op {
                Op::Register { event, key, at } => {
                    model[usize::from(event)].insert((at, key));
                    if event {
                        timers.register_event_time(key, at)
                    } else {
                        timers.register_processing_time(key, at)
                    }
                }
                Op::Delete { event, key, at } => {
                    model[usize::from(event)].remove(&(at, key));
                    if event {
                        timers.delete_event_time(&key, at)
                    } else {
                        timers.delete_processing_time(&key, at)
                    }
                }
                Op::Fire { event, upto } => {
                    let got =
                        if event { timers.fire_event_time(upto) } else { timers.fire_processing_time(upto) };
                    prop_assert_eq!(got, fire(&mut model[usize::from(event)], upto));
                }
                Op::Commit => {
                    let mut b = WriteBatch::new();
                    timers.flush_into(&mut b).expect("flush");
                    scope.backend().apply(b).expect("apply");
                    committed = model.clone();
                }
                Op::Crash => {
                    timers = TimerService::new(&scope, "timers").expect("reopen");
                    model = committed.clone();
                }
            }
            prop_assert_eq!(timers.pending(), (model[1].len(), model[0].len()));
            prop_assert_eq!(timers.next_event_time(), model[1].first().map(|(at, _)| *at));
            prop_assert_eq!(timers.next_processing_time(), model[0].first().map(|(at, _)| *at));
        }
    }
}
