// Package decode turns the JSON value of each Kafka record into the typed
// columns an aggregator declared in its input schema (abi.Schema.Input),
// building the abi.Batch that the host hands the guest.
//
// Decoding happens here, in the host, rather than in the guest because
// encoding/json inside a Go guest costs microseconds per record, while the
// throughput target is a million records per second per core for decoding
// and aggregating together. So this is a hand-written scanner: it touches
// each byte once, matches keys against the declared paths without
// allocating and appends straight into the batch's column slices, so that a
// steady stream of records costs no allocations.
//
// It is not a general JSON library. It reads top-level keys only (a field's
// Path is a key, not a path expression), it produces no values for keys
// nobody declared, and it never builds a tree. It still checks the syntax of
// the whole value, because a record it accepts must be one that any other
// JSON reader (ClickHouse, a dashboard, a replay tool) also accepts: an
// aggregator's results must not depend on which bytes it happened to skip.
//
// # Rules
//
// Each choice below errs on the side of sending a doubtful record to the
// dead-letter topic with a reason, rather than guessing, because a wrong
// number in a live dashboard is worse than a dead-lettered record that can be
// inspected and replayed.
//
//   - A value is exactly one JSON object (RFC 8259), optionally surrounded by
//     JSON whitespace. Anything after it is an error.
//   - The whole value must be well-formed, including the values of keys that
//     are not declared. Text must be valid UTF-8 (RFC 8259 section 8.1).
//     Objects and arrays nest at most MaxDepth deep, so that hostile input
//     cannot cost unbounded memory or stack.
//   - A declared key that appears twice is an error: JSON leaves duplicate
//     names undefined and readers disagree on which one wins. Duplicates of
//     keys nobody declared are not detected, since finding them would cost a
//     set of every key of every record.
//   - Keys match a field's path after unescaping, so "poll\u005fid" is
//     poll_id.
//   - An int64 field takes a JSON integer within int64 range. A fraction or an
//     exponent (1.0, 1e3) is an error even when the value is whole, and so is
//     a string holding digits ("42"): producers that send those have a bug
//     worth seeing.
//   - A float64 field takes any JSON number, with strconv.ParseFloat's
//     rounding; a number beyond float64's range is an error instead of an
//     infinity.
//   - A string field takes a JSON string. Escapes are decoded; a \u escape of
//     an unpaired UTF-16 surrogate becomes U+FFFD, as in encoding/json and in
//     browsers, since the grammar allows it and it is not the producer's data
//     that is broken but its text.
//   - null is an error for a required field and the zero value for an optional
//     one; a missing optional field is the zero value too (0, 0.0 or "").
//   - With schema.Raw the batch also carries each record's whole value, byte
//     for byte.
//
// Errors name the field and say what is wrong, for example
//
//	field "poll_id": want an integer, got "abc"
//
// and a record that fails leaves the batch as it was.
package decode
