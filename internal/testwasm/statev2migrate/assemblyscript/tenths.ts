// internal/testwasm/statev2migrate in AssemblyScript: counts votes per poll
// in tenths of a vote, declares state version 2 and migrates version 1's
// whole votes by multiplying them by 10; poll 0 it no longer counts, and
// drops version 1's groups of it (sdk/conformance, vectors/migrate.json).
import { Spec, Batch, Groups, OldGroup, NewGroup, register } from "../../../../sdk/assemblyscript/assembly";
export * from "../../../../sdk/assemblyscript/assembly/exports";

let poll: i32, votes: i32;

function define(s: Spec): void {
  poll = s.inputInt64("poll_id");
  s.keyInt64("poll_id");
  votes = s.count("votes");
  s.stateVersion(2);
  s.migrates(1);
}

function aggregate(b: Batch, g: Groups): void {
  for (let i: u32 = 0; i < b.length; i++) {
    const p = b.int64(poll, i);
    if (p != 0) g.at(b.time(i)).int64(p).add(votes, 10);
  }
}

function migrate(old: OldGroup, g: NewGroup): bool {
  if (old.keyInt64(0) == 0) return false;
  g.set(votes, 10 * old.int64("votes"));
  return true;
}

register(define, aggregate, migrate);
