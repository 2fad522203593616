//! internal/testwasm/statev2migrate in Rust: counts votes per poll in
//! tenths of a vote, declares state version 2 and migrates version 1's
//! whole votes by multiplying them by 10; poll 0 it no longer counts, and
//! drops version 1's groups of it (sdk/conformance, vectors/migrate.json).

use wagg::{Aggregator, Batch, Error, Groups, Int64Field, Metric, NewGroup, OldGroup, Spec, Value};

pub struct Tenths {
    poll: Int64Field,
    votes: Metric,
}

impl Aggregator for Tenths {
    fn define(s: &mut Spec) -> Self {
        let poll = s.input_int64("poll_id");
        s.key_int64("poll_id");
        s.state_version(2);
        s.migrates(&[1]);
        Tenths { poll, votes: s.count("votes") }
    }
    fn aggregate(&mut self, b: &Batch, g: &mut Groups) -> Result<(), Error> {
        let polls = b.int64s(self.poll);
        for i in 0..b.len() {
            if polls[i] != 0 {
                g.at(b.time(i)).int64(polls[i]).add(self.votes, 10);
            }
        }
        Ok(())
    }
    fn migrate(&mut self, old: &OldGroup, g: &mut NewGroup) -> Result<bool, Error> {
        if old.key() == vec![Value::Int(0)] {
            return Ok(false);
        }
        g.set(self.votes, 10 * old.int64("votes").unwrap_or(0));
        Ok(true)
    }
}

wagg::export!(Tenths);
