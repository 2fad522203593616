//! internal/testwasm/distinctmigrate in Rust: votes, unique voters and
//! unique choices per poll, state version 2, migrating version 1: voters
//! carries over, choices starts empty, votes are version 1's ballots, poll
//! 0's groups are dropped (sdk/conformance, vectors/migrate-distinct.json).

use wagg::{Aggregator, Batch, Error, Groups, Int64Field, Metric, NewGroup, OldGroup, Spec, StringField, Value};

pub struct Voters {
    poll: Int64Field,
    user: StringField,
    choice: Int64Field,
    votes: Metric,
    voters: Metric,
    choices: Metric,
}

impl Aggregator for Voters {
    fn define(s: &mut Spec) -> Self {
        let poll = s.input_int64("poll_id");
        let user = s.input_string("user_id");
        let choice = s.input_int64("choice");
        s.key_int64("poll_id");
        s.state_version(2);
        s.migrates(&[1]);
        Voters { poll, user, choice, votes: s.count("votes"), voters: s.distinct("voters"), choices: s.distinct("choices") }
    }
    fn aggregate(&mut self, b: &Batch, g: &mut Groups) -> Result<(), Error> {
        let (polls, users, cs) = (b.int64s(self.poll), b.strings(self.user), b.int64s(self.choice));
        for i in 0..b.len() {
            g.at(b.time(i))
                .int64(polls[i])
                .add(self.votes, 1)
                .add_distinct_string(self.voters, users.get(i))
                .add_distinct(self.choices, cs[i]);
        }
        Ok(())
    }
    fn migrate(&mut self, old: &OldGroup, g: &mut NewGroup) -> Result<bool, Error> {
        if old.key() == vec![Value::Int(0)] {
            return Ok(false);
        }
        if old.int64("voters").is_some() {
            g.set(self.votes, -1);
            return Ok(true);
        }
        g.set(self.votes, old.int64("ballots").unwrap_or(0));
        Ok(true)
    }
}

wagg::export!(Voters);
