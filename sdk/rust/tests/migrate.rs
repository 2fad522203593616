//! A deployment upgraded from one build to the next: version 1 counts votes
//! and seconds per poll; version 2 keeps the votes, counts milliseconds,
//! adds a low, and no longer counts poll 13, whose groups it drops.

use wagg::{
    Aggregator, Batch, BatchBuilder, Code, Error, Groups, Int64Field, Local, Metric, NewGroup,
    OldGroup, Spec, Value, Window,
};

struct V1 {
    poll: Int64Field,
    secs: Int64Field,
    votes: Metric,
    total: Metric,
}

impl Aggregator for V1 {
    fn define(s: &mut Spec) -> Self {
        let (poll, secs) = (s.input_int64("poll_id"), s.input_int64("secs"));
        s.key_int64("poll_id");
        V1 {
            poll,
            secs,
            votes: s.count("votes"),
            total: s.sum("secs"),
        }
    }
    fn aggregate(&mut self, b: &Batch, g: &mut Groups) -> Result<(), Error> {
        let (polls, secs) = (b.int64s(self.poll), b.int64s(self.secs));
        for i in 0..b.len() {
            g.at(b.time(i))
                .int64(polls[i])
                .add(self.votes, 1)
                .add(self.total, secs[i]);
        }
        Ok(())
    }
}

struct V2 {
    poll: Int64Field,
    secs: Int64Field,
    votes: Metric,
    millis: Metric,
    low: Metric,
}

impl Aggregator for V2 {
    fn define(s: &mut Spec) -> Self {
        let (poll, secs) = (s.input_int64("poll_id"), s.input_int64("secs"));
        s.key_int64("poll_id");
        s.state_version(2);
        s.migrates(&[1]);
        V2 {
            poll,
            secs,
            votes: s.count("votes"),
            millis: s.sum("millis"),
            low: s.min("low"),
        }
    }
    fn aggregate(&mut self, b: &Batch, g: &mut Groups) -> Result<(), Error> {
        let (polls, secs) = (b.int64s(self.poll), b.int64s(self.secs));
        for i in 0..b.len() {
            if polls[i] != 13 {
                g.at(b.time(i))
                    .int64(polls[i])
                    .add(self.votes, 1)
                    .add(self.millis, 1000 * secs[i])
                    .add(self.low, secs[i]);
            }
        }
        Ok(())
    }
    fn migrate(&mut self, old: &OldGroup, g: &mut NewGroup) -> Result<bool, Error> {
        // What version 1 wrote, as it wrote it.
        let start_ok = if old.window().name == "total" {
            old.start() == 0
        } else {
            old.start() % 1000 == 0
        };
        if old.version() != 1 || old.metrics() != vec!["votes", "secs"] || !start_ok {
            return Err(Error::new(format!(
                "unexpected old group: v{} {} {}",
                old.version(),
                old.window().name,
                old.start()
            )));
        }
        if old.key() == vec![Value::Int(13)] {
            return Ok(false);
        }
        let secs = old.int64("secs").ok_or_else(|| Error::new("no secs"))?;
        if old.float64("secs").is_some() || old.int64("millis").is_some() {
            return Err(Error::new("read a metric of another type or name"));
        }
        g.set(self.millis, 1000 * secs);
        Ok(true)
    }
}

/// Records (ts, poll, secs).
fn batch(rs: &[(i64, i64, i64)]) -> BatchBuilder {
    let mut b = BatchBuilder::new();
    for &(ts, poll, secs) in rs {
        b.record(ts).int64(poll).int64(secs);
    }
    b
}

fn windows() -> Vec<Window> {
    vec![Window::tumbling("second", 1000), Window::global("total")]
}

fn v1_snapshot(rs: &[(i64, i64, i64)]) -> (Vec<u8>, String) {
    let mut l = Local::<V1>::new(&windows()).unwrap();
    l.process(&batch(rs)).unwrap();
    (l.snapshot(), l.describe().to_string())
}

/// The open rows of a flush, as "window start poll votes millis low".
fn rows(l: &mut Local<V2>) -> Vec<String> {
    let mut out: Vec<String> = l
        .flush(0)
        .unwrap()
        .iter()
        .map(|r| format!("{} {} {:?} {:?}", r.window, r.start, r.key, r.metrics))
        .collect();
    out.sort();
    out
}

#[test]
fn migrates_an_older_state_and_counts_on_from_it() {
    let (snap, v1) = v1_snapshot(&[(1000, 12, 3), (1000, 13, 1), (2500, 12, 4)]);
    let mut l = Local::<V2>::migrating(&windows(), &v1).unwrap();
    l.restore(&snap).unwrap();
    assert_eq!(
        rows(&mut l),
        vec![
            "0 1000 [Int(12)] [Int(1), Int(3000), Int(9223372036854775807)]".to_string(),
            "0 2000 [Int(12)] [Int(1), Int(4000), Int(9223372036854775807)]".to_string(),
            "1 0 [Int(12)] [Int(2), Int(7000), Int(9223372036854775807)]".to_string(),
        ],
        "poll 13 dropped, seconds in milliseconds, low empty"
    );
    l.process(&batch(&[(2100, 12, 2), (2200, 13, 5)])).unwrap();
    assert_eq!(
        rows(&mut l),
        vec![
            "0 2000 [Int(12)] [Int(2), Int(6000), Int(2)]".to_string(),
            "1 0 [Int(12)] [Int(3), Int(9000), Int(2)]".to_string()
        ],
    );
    // The migrated state is version 2's own.
    let own = l.snapshot();
    let mut again = Local::<V2>::new(&windows()).unwrap();
    again.restore(&own).unwrap();
    assert_eq!(again.snapshot(), own);
}

#[test]
fn refuses_what_it_cannot_migrate() {
    let (snap, v1) = v1_snapshot(&[(1000, 12, 3)]);
    // A version it does not list.
    let v3 = v1.replace("\"metrics\"", "\"state\":{\"version\":3},\"metrics\"");
    let err = Local::<V2>::migrating(&windows(), &v3)
        .err()
        .expect("migrating version 3");
    assert_eq!(err.code, Code::BadInput);
    assert!(
        err.message
            .contains("state version 3, which this build (state version 2) does not migrate"),
        "{}",
        err.message
    );
    // Other key types.
    let keys = v1.replace(
        "{\"name\":\"poll_id\",\"type\":\"int64\"}],\"metrics\"",
        "{\"name\":\"poll_id\",\"type\":\"string\"}],\"metrics\"",
    );
    let err = Local::<V2>::migrating(&windows(), &keys)
        .err()
        .expect("migrating other keys");
    assert!(
        err.message
            .contains("a migration keeps the key's column types"),
        "{}",
        err.message
    );
    // Read as its own (no migrate_from), version 1's 2 metrics do not fit
    // version 2's 3: refused, the state left empty.
    let mut own = Local::<V2>::new(&windows()).unwrap();
    assert_eq!(own.restore(&snap).unwrap_err().code, Code::BadInput);
    assert!(own.flush(i64::MAX).unwrap().is_empty());
}

struct Misuse(V2);

impl Aggregator for Misuse {
    fn define(s: &mut Spec) -> Self {
        Misuse(V2::define(s))
    }
    fn aggregate(&mut self, b: &Batch, g: &mut Groups) -> Result<(), Error> {
        self.0.aggregate(b, g)
    }
    fn migrate(&mut self, _: &OldGroup, g: &mut NewGroup) -> Result<bool, Error> {
        g.set_float(self.0.millis, 1.0);
        Ok(true)
    }
}

#[test]
fn a_failed_migration_fails_the_restore_and_leaves_nothing() {
    let (snap, v1) = v1_snapshot(&[(1000, 12, 3)]);
    let mut l = Local::<Misuse>::migrating(&windows(), &v1).unwrap();
    let err = l.restore(&snap).unwrap_err();
    assert_eq!(err.code, Code::Aggregate);
    assert!(
        err.message
            .contains("NewGroup::set_float does not set metric millis"),
        "{}",
        err.message
    );
    assert!(l.flush(i64::MAX).unwrap().is_empty());
}
