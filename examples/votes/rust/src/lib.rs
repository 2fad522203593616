//! votes: votes per (poll_id, option), counted in every window the
//! deployment declares (../deploy.yaml); the Rust twin of ../main.go.
//!
//! ```text
//! cargo build --release --target wasm32-unknown-unknown
//! ```

use wagg::{Aggregator, Batch, Error, Groups, Int64Field, Metric, Spec, StringField};

pub struct Votes {
    poll: Int64Field,
    option: StringField,
    votes: Metric,
}

impl Aggregator for Votes {
    fn define(s: &mut Spec) -> Self {
        let poll = s.input_int64("poll_id");
        let option = s.input_string("option");
        s.key_int64("poll_id");
        s.key_string("option");
        Votes {
            poll,
            option,
            votes: s.count("votes"),
        }
    }

    fn aggregate(&mut self, b: &Batch, g: &mut Groups) -> Result<(), Error> {
        // a batch at a time: every record counts once in its group
        g.columns(b)
            .int64(b.int64s(self.poll))
            .string(b.strings(self.option))
            .count(self.votes);
        Ok(())
    }
}

wagg::export!(Votes);

#[cfg(test)]
mod tests {
    use super::Votes;
    use wagg::{BatchBuilder, Code, Local, Row, Value, Window};

    fn row(window: u8, start: i64, final_: bool, poll: i64, option: &str, votes: i64) -> Row {
        Row {
            window,
            start,
            final_,
            key: vec![Value::Int(poll), Value::Str(option.into())],
            metrics: vec![Value::Int(votes)],
        }
    }

    fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
        rows.sort_by(|a, b| format!("{:?}", a).cmp(&format!("{:?}", b)));
        rows
    }

    #[test]
    fn counts_per_window_and_restores() {
        let windows = [Window::tumbling("second", 1000), Window::global("total")];
        let mut l = Local::<Votes>::new(&windows).unwrap();
        let mut b = BatchBuilder::new();
        b.record(1000).int64(7).string("yes");
        b.record(1500).int64(7).string("yes");
        b.record(2100).int64(7).string("no");
        l.process(&b).unwrap();
        assert_eq!(
            sorted(l.flush(2000).unwrap()),
            sorted(vec![
                row(0, 1000, true, 7, "yes", 2),
                row(0, 2000, false, 7, "no", 1),
                row(1, 0, false, 7, "yes", 2),
                row(1, 0, false, 7, "no", 1),
            ])
        );
        assert_eq!(l.flush(2000).unwrap(), vec![], "nothing changed");

        let snap = l.snapshot();
        let mut more = BatchBuilder::new();
        more.record(2500).int64(7).string("no");
        l.process(&more).unwrap();
        l.restore(&snap).unwrap();
        assert_eq!(
            sorted(l.flush(2000).unwrap()),
            sorted(vec![
                row(0, 2000, false, 7, "no", 1),
                row(1, 0, false, 7, "yes", 2),
                row(1, 0, false, 7, "no", 1)
            ]),
            "every restored group is emitted"
        );

        let mut bad = snap.clone();
        bad[0] ^= 1;
        assert_eq!(l.restore(&bad).unwrap_err().code, Code::BadInput);
        assert_eq!(
            l.flush(3000).unwrap(),
            vec![],
            "a refused snapshot leaves the state empty"
        );
    }

    #[test]
    fn refuses_a_batch_of_other_fields() {
        let mut l = Local::<Votes>::new(&[Window::global("total")]).unwrap();
        let mut b = BatchBuilder::new();
        b.record(1000).int64(7);
        assert_eq!(l.process(&b).unwrap_err().code, Code::Schema);
    }
}
