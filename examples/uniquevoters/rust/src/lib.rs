//! uniquevoters: votes and unique voters per poll_id, in every window the
//! deployment declares (../deploy.yaml); the Rust twin of ../main.go.
//!
//! ```text
//! cargo build --release --target wasm32-unknown-unknown
//! ```

use wagg::{Aggregator, Batch, Error, Groups, Int64Field, Metric, Spec, StringField};

pub struct UniqueVoters {
    poll: Int64Field,
    user: StringField,
    votes: Metric,
    voters: Metric,
}

impl Aggregator for UniqueVoters {
    fn define(s: &mut Spec) -> Self {
        let poll = s.input_int64("poll_id");
        let user = s.input_string("user_id");
        s.key_int64("poll_id");
        UniqueVoters {
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

wagg::export!(UniqueVoters);

#[cfg(test)]
mod tests {
    use super::UniqueVoters;
    use wagg::{BatchBuilder, Code, Local, Value, Window};

    #[test]
    fn counts_unique_voters_and_restores() {
        let mut l = Local::<UniqueVoters>::new(&[Window::tumbling("ten", 10_000)]).unwrap();
        let mut b = BatchBuilder::new();
        for i in 0..6000 {
            b.record(1000).int64(1).string(&format!("u{}", i % 3000));
        }
        b.record(2000).int64(2).string("ann");
        b.record(2500).int64(2).string("bob");
        b.record(3000).int64(2).string("ann");
        l.process(&b).unwrap();
        let snap = l.snapshot();
        let mut rows = l.flush(10_000).unwrap();
        rows.sort_by_key(|r| format!("{:?}", r.key));
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].metrics[0], Value::Int(6000));
        match rows[0].metrics[1] {
            Value::Int(v) => assert!(
                (v as f64 - 3000.0).abs() <= 3.0 * 1.04 / 64.0 * 3000.0,
                "{} voters of 3000",
                v
            ),
            ref v => panic!("voters {:?}", v),
        }
        assert_eq!(rows[1].metrics, vec![Value::Int(3), Value::Int(2)]);

        l.restore(&snap).unwrap();
        let mut again = l.flush(10_000).unwrap();
        again.sort_by_key(|r| format!("{:?}", r.key));
        assert_eq!(again, rows, "the restored sketches");
        let mut bad = snap.clone();
        let n = bad.len();
        bad[n - 1] ^= 0x40; // the last sketch entry now names register 2^18
        assert_eq!(l.restore(&bad).unwrap_err().code, Code::BadInput);
    }
}
