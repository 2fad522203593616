// votes: votes per (poll_id, option), counted in every window the
// deployment declares (../deploy.yaml); the AssemblyScript twin of ../main.go.
import { Spec, Batch, Groups, register } from "../../../sdk/assemblyscript/assembly";
export * from "../../../sdk/assemblyscript/assembly/exports";

let poll: i32, option: i32, votes: i32;

function define(s: Spec): void {
  poll = s.inputInt64("poll_id");
  option = s.inputString("option");
  s.keyInt64("poll_id");
  s.keyString("option");
  votes = s.count("votes");
}

function aggregate(b: Batch, g: Groups): void {
  for (let i: u32 = 0; i < b.length; i++) {
    g.at(b.time(i)).int64(b.int64(poll, i)).string(b, option, i).add(votes, 1);
  }
}

register(define, aggregate);
