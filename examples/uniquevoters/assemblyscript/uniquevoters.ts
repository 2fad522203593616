// uniquevoters: votes and unique voters per poll_id, in every window the
// deployment declares (../deploy.yaml); the AssemblyScript twin of ../main.go.
import { Spec, Batch, Groups, register } from "../../../sdk/assemblyscript/assembly";
export * from "../../../sdk/assemblyscript/assembly/exports";

let poll: i32, user: i32, votes: i32, voters: i32;

function define(s: Spec): void {
  poll = s.inputInt64("poll_id");
  user = s.inputString("user_id");
  s.keyInt64("poll_id");
  votes = s.count("votes");
  voters = s.distinct("voters");
}

function aggregate(b: Batch, g: Groups): void {
  for (let i: u32 = 0; i < b.length; i++) {
    g.at(b.time(i)).int64(b.int64(poll, i)).add(votes, 1).addDistinctString(voters, b, user, i);
  }
}

register(define, aggregate);
