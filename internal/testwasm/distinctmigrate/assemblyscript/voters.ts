// internal/testwasm/distinctmigrate in AssemblyScript: votes, unique voters
// and unique choices per poll, state version 2, migrating version 1: voters
// carries over, choices starts empty, votes are version 1's ballots, poll
// 0's groups are dropped (sdk/conformance, vectors/migrate-distinct.json).
import { Spec, Batch, Groups, OldGroup, NewGroup, register } from "../../../../sdk/assemblyscript/assembly";
export * from "../../../../sdk/assemblyscript/assembly/exports";

let poll: i32, user: i32, choice: i32, votes: i32, voters: i32, choices: i32;

function define(s: Spec): void {
  poll = s.inputInt64("poll_id");
  user = s.inputString("user_id");
  choice = s.inputInt64("choice");
  s.keyInt64("poll_id");
  votes = s.count("votes");
  voters = s.distinct("voters");
  choices = s.distinct("choices");
  s.stateVersion(2);
  s.migrates(1);
}

function aggregate(b: Batch, g: Groups): void {
  for (let i: u32 = 0; i < b.length; i++) {
    g.at(b.time(i)).int64(b.int64(poll, i)).add(votes, 1).addDistinctString(voters, b, user, i).addDistinct(choices, b.int64(choice, i));
  }
}

function migrate(old: OldGroup, g: NewGroup): bool {
  if (old.keyInt64(0) == 0) return false;
  if (old.hasInt64("voters")) {
    g.set(votes, -1);
    return true;
  }
  g.set(votes, old.int64("ballots"));
  return true;
}

register(define, aggregate, migrate);
