//! A migration of groups that hold distinct metrics: version 1 counts votes
//! and unique voters per poll; version 2 renames votes to tally, keeps
//! voters and adds fresh, a distinct count of polls. The voters sketches
//! carry over as they were, fresh starts empty, and the hook can neither
//! read nor set a sketch.

use wagg::{
    Aggregator, Batch, BatchBuilder, Code, Error, Groups, Int64Field, Local, Metric, NewGroup,
    OldGroup, Spec, StringField, Value, Window,
};

struct V1 {
    poll: Int64Field,
    user: StringField,
    votes: Metric,
    voters: Metric,
}

impl Aggregator for V1 {
    fn define(s: &mut Spec) -> Self {
        let (poll, user) = (s.input_int64("poll_id"), s.input_string("user_id"));
        s.key_int64("poll_id");
        V1 {
            poll,
            user,
            votes: s.count("votes"),
            voters: s.distinct("voters"),
        }
    }
    fn aggregate(&mut self, b: &Batch, g: &mut Groups) -> Result<(), Error> {
        let (polls, users) = (b.int64s(self.poll), b.strings(self.user));
        for i in 0..b.len() {
            g.at(b.time(i))
                .int64(polls[i])
                .add(self.votes, 1)
                .add_distinct_string(self.voters, users.get(i));
        }
        Ok(())
    }
}

struct V2 {
    poll: Int64Field,
    user: StringField,
    tally: Metric,
    voters: Metric,
    fresh: Metric,
}

impl Aggregator for V2 {
    fn define(s: &mut Spec) -> Self {
        let (poll, user) = (s.input_int64("poll_id"), s.input_string("user_id"));
        s.key_int64("poll_id");
        s.state_version(2);
        s.migrates(&[1]);
        V2 {
            poll,
            user,
            tally: s.count("tally"),
            voters: s.distinct("voters"),
            fresh: s.distinct("fresh"),
        }
    }
    fn aggregate(&mut self, b: &Batch, g: &mut Groups) -> Result<(), Error> {
        let (polls, users) = (b.int64s(self.poll), b.strings(self.user));
        for i in 0..b.len() {
            g.at(b.time(i))
                .int64(polls[i])
                .add(self.tally, 1)
                .add_distinct_string(self.voters, users.get(i))
                .add_distinct(self.fresh, polls[i]);
        }
        Ok(())
    }
    fn migrate(&mut self, old: &OldGroup, g: &mut NewGroup) -> Result<bool, Error> {
        if old.int64("voters").is_some() {
            return Err(Error::new("read the distinct metric voters as a value"));
        }
        g.set(
            self.tally,
            old.int64("votes").ok_or_else(|| Error::new("no votes"))?,
        );
        if old.key() == vec![Value::Int(99)] {
            g.set(self.voters, 1); // misuse: a sketch is not set
        }
        Ok(true)
    }
}

fn windows() -> Vec<Window> {
    vec![Window::tumbling("ten", 10_000)]
}

fn votes(poll_of: fn(usize) -> i64) -> BatchBuilder {
    let mut b = BatchBuilder::new();
    for i in 0..3000 {
        b.record(1000 + i as i64)
            .int64(poll_of(i))
            .string(&format!("u{}", i % 1200));
    }
    b
}

/// (poll, metrics) of a flush's rows, by poll.
fn rows<A: Aggregator>(l: &mut Local<A>) -> Vec<(Vec<Value>, Vec<Value>)> {
    let mut out: Vec<_> = l
        .flush(0)
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.metrics))
        .collect();
    out.sort_by_key(|r| format!("{:?}", r.0));
    out
}

#[test]
fn sketches_carry_over_by_name_or_start_empty() {
    let mut old = Local::<V1>::new(&windows()).unwrap();
    old.process(&votes(|i| (i % 3) as i64)).unwrap();
    let (snap, v1) = (old.snapshot(), old.describe().to_string());
    let before = rows(&mut old);
    assert_eq!(before.len(), 3);

    let mut l = Local::<V2>::migrating(&windows(), &v1).unwrap();
    l.restore(&snap).unwrap();
    let after = rows(&mut l);
    assert_eq!(after.len(), before.len());
    for ((k0, m0), (k1, m1)) in before.iter().zip(&after) {
        assert_eq!(k0, k1);
        assert_eq!(
            m1,
            &vec![m0[0].clone(), m0[1].clone(), Value::Int(0)],
            "poll {:?}",
            k0
        );
    }
    // The same voters again: all in the carried sketches already.
    l.process(&votes(|i| (i % 3) as i64)).unwrap();
    for ((_, m0), (_, m1)) in before.iter().zip(&rows(&mut l)) {
        let n = match m0[0] {
            Value::Int(n) => n,
            ref v => panic!("votes {:?}", v),
        };
        assert_eq!(m1, &vec![Value::Int(2 * n), m0[1].clone(), Value::Int(1)]);
    }
}

#[test]
fn setting_a_sketch_fails_the_restore() {
    let mut old = Local::<V1>::new(&windows()).unwrap();
    old.process(&votes(|i| if i % 2 == 0 { 99 } else { 1 }))
        .unwrap();
    let (snap, v1) = (old.snapshot(), old.describe().to_string());
    let mut l = Local::<V2>::migrating(&windows(), &v1).unwrap();
    assert_eq!(l.restore(&snap).unwrap_err().code, Code::Aggregate);
    assert!(l.flush(i64::MAX).unwrap().is_empty());
}
