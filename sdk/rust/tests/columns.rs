//! `Groups::columns` must fold in exactly what `Groups::at` does record by
//! record: the same rows at every flush, the same snapshots, for every key
//! layout, window kind and metric; and refuse misuse as `at` does.

use wagg::{
    Aggregator, Batch, BatchBuilder, Code, Columns, Engine, Error, Float64Field, Groups,
    Int64Field, Local, Metric, Spec, StringField, Strings, Window,
};

/// Key layouts, by index: p poll (int64), v value (float64), n name and
/// t tag (strings).
const LAYOUTS: [&str; 9] = ["pnv", "p", "n", "pn", "vn", "nt", "", "ntp", "tvpn"];

/// The same fold, record by record (COLS false) or through columns.
struct Fold<const LAYOUT: usize, const COLS: bool> {
    poll: Int64Field,
    name: StringField,
    value: Float64Field,
    user: Int64Field,
    tag: StringField,
    count: Metric,
    sum: Metric,
    min: Metric,
    max: Metric,
    sum_f: Metric,
    min_f: Metric,
    max_f: Metric,
    avg: Metric,
    users: Metric,
    names: Metric,
    min_count: Metric,
    max_count: Metric,
}

impl<const LAYOUT: usize, const COLS: bool> Aggregator for Fold<LAYOUT, COLS> {
    fn define(s: &mut Spec) -> Self {
        let (poll, name, value) = (
            s.input_int64("poll_id"),
            s.input_string("name"),
            s.input_float64("value"),
        );
        let (user, tag) = (s.input_int64("user"), s.input_string("tag"));
        for (i, c) in LAYOUTS[LAYOUT].chars().enumerate() {
            let k = format!("k{}", i);
            match c {
                'p' => s.key_int64(&k),
                'v' => s.key_float64(&k),
                _ => s.key_string(&k),
            }
        }
        Fold {
            poll,
            name,
            value,
            user,
            tag,
            count: s.count("n"),
            sum: s.sum("total"),
            min: s.min("lo"),
            max: s.max("hi"),
            sum_f: s.sum_float("ftotal"),
            min_f: s.min_float("flo"),
            max_f: s.max_float("fhi"),
            avg: s.average("avg"),
            users: s.distinct("users"),
            names: s.distinct("names"),
            min_count: s.min("lo_count"),
            max_count: s.max("hi_count"),
        }
    }

    fn aggregate(&mut self, b: &Batch, g: &mut Groups) -> Result<(), Error> {
        let (polls, names, values) = (
            b.int64s(self.poll),
            b.strings(self.name),
            b.float64s(self.value),
        );
        let (users, tags) = (b.int64s(self.user), b.strings(self.tag));
        if COLS {
            let mut c = g.columns(b);
            for k in LAYOUTS[LAYOUT].chars() {
                c = match k {
                    'p' => c.int64(polls),
                    'v' => c.float64(values),
                    'n' => c.string(names),
                    _ => c.string(tags),
                };
            }
            c.count(self.count)
                .add(self.sum, users)
                .add(self.min, users)
                .add(self.max, users)
                .add_float(self.sum_f, values)
                .add_float(self.min_f, values)
                .add_float(self.max_f, values)
                .add_float(self.avg, values)
                .add_distinct(self.users, users)
                .add_distinct_string(self.names, names)
                .count(self.min_count)
                .count(self.max_count);
            return Ok(());
        }
        for i in 0..b.len() {
            let mut k = g.at(b.time(i));
            for c in LAYOUTS[LAYOUT].chars() {
                k = match c {
                    'p' => k.int64(polls[i]),
                    'v' => k.float64(values[i]),
                    'n' => k.string(names.get(i)),
                    _ => k.string(tags.get(i)),
                };
            }
            k.add(self.count, 1)
                .add(self.sum, users[i])
                .add(self.min, users[i])
                .add(self.max, users[i])
                .add_float(self.sum_f, values[i])
                .add_float(self.min_f, values[i])
                .add_float(self.max_f, values[i])
                .add_float(self.avg, values[i])
                .add_distinct(self.users, users[i])
                .add_distinct_string(self.names, names.get(i))
                .add(self.min_count, 1)
                .add(self.max_count, 1);
        }
        Ok(())
    }
}

/// splitmix64: a seeded, repeatable stream.
struct Rand(u64);

impl Rand {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len() as u64) as usize]
    }
}

/// n records from t on: few polls and names (keys repeat within and
/// across batches), strings of 0 to 30 bytes, some times far out or
/// negative, float values whose sums depend on their order.
fn random_batch(r: &mut Rand, t: &mut i64, n: usize) -> BatchBuilder {
    let mut b = BatchBuilder::new();
    for _ in 0..n {
        *t += r.below(300) as i64;
        let mut ts = *t;
        if r.below(40) == 0 {
            ts = r.pick(&[i64::MIN, i64::MIN + 1, i64::MAX, -1, 0, -1500, -4_000_001]);
        }
        let name = r
            .pick(&["a", "b", "c"])
            .repeat(r.pick(&[0, 1, 3, 7, 8, 9, 16, 17, 30]));
        let tag = r.pick(&["x", "y"]).repeat(r.pick(&[0, 2, 5, 12, 24]));
        let value = r.pick(&[0.1, 1e16, -1e16, 0.3, -0.0, 2.5, f64::INFINITY, f64::NAN]);
        b.record(ts)
            .int64(r.below(5) as i64 - 2)
            .string(&name)
            .float64(value)
            .int64(r.below(1000) as i64 - 500)
            .string(&tag);
    }
    b
}

fn same_fold<const L: usize>() {
    let sec = Window::tumbling("sec", 1000);
    let five = Window::tumbling("five", 5000);
    let hop = Window::hopping("hop", 3000, 1000);
    let all = Window::global("all");
    let sets: Vec<Vec<Window>> = vec![
        vec![sec.clone(), all.clone()],
        vec![all.clone()],
        vec![sec.clone()],
        vec![all.clone(), sec.clone()],
        vec![sec.clone(), five.clone(), all.clone(), hop.clone()],
        vec![hop.clone(), all.clone()],
        vec![hop.clone(), sec.clone(), all.clone(), five.clone()],
        vec![five.clone(), all.clone(), sec.clone(), all.clone()],
    ];
    for (si, ws) in sets.iter().enumerate() {
        let what = format!("layout {:?}, windows {}", LAYOUTS[L], si);
        let mut r = Rand(L as u64 * 31 + si as u64);
        let mut rec = Local::<Fold<L, false>>::new(ws).unwrap();
        let mut col = Local::<Fold<L, true>>::new(ws).unwrap();
        let mut t = 1_700_000_000_000i64;
        let mut flushed = 0;
        for round in 0..40 {
            let n = if round == 5 { 0 } else { r.below(300) as usize };
            let b = random_batch(&mut r, &mut t, n);
            if n > 0 {
                rec.process(&b).unwrap();
                col.process(&b).unwrap();
            }
            if round % 3 == 2 {
                let wm = t - 2000;
                let (want, got) = (rec.flush(wm).unwrap(), col.flush(wm).unwrap());
                // NaN sums: rows compare as printed
                let show = |rows: &[wagg::Row]| -> Vec<String> {
                    rows.iter().map(|r| format!("{:?}", r)).collect()
                };
                let (want_s, got_s) = (show(&want), show(&got));
                if let Some(i) =
                    (0..want_s.len().max(got_s.len())).find(|&i| want_s.get(i) != got_s.get(i))
                {
                    panic!(
                        "{}: round {}: {} rows, want {}; row {}:\n{:?}\nwant\n{:?}",
                        what,
                        round,
                        got.len(),
                        want.len(),
                        i,
                        got_s.get(i),
                        want_s.get(i)
                    );
                }
                flushed += want.len();
            }
            assert!(
                col.snapshot() == rec.snapshot(),
                "{}: round {}: snapshots differ",
                what,
                round
            );
            if round == 20 {
                // the links are gone after a restore
                let (a, b) = (col.snapshot(), rec.snapshot());
                col.restore(&a).unwrap();
                rec.restore(&b).unwrap();
            }
        }
        assert!(flushed > 0, "{}: nothing flushed", what);
    }
}

#[test]
fn columns_fold_what_at_folds() {
    same_fold::<0>();
    same_fold::<1>();
    same_fold::<2>();
    same_fold::<3>();
    same_fold::<4>();
    same_fold::<5>();
    same_fold::<6>();
    same_fold::<7>();
    same_fold::<8>();
}

/// Two key columns (poll_id, name) and a few metrics, misused one way per
/// CASE.
struct Misuse<const CASE: usize> {
    poll: Int64Field,
    name: StringField,
    value: Float64Field,
    count: Metric,
    sum: Metric,
    sum_f: Metric,
    users: Metric,
}

impl<const CASE: usize> Aggregator for Misuse<CASE> {
    fn define(s: &mut Spec) -> Self {
        let (poll, name, value) = (
            s.input_int64("poll_id"),
            s.input_string("name"),
            s.input_float64("value"),
        );
        s.key_int64("poll_id");
        s.key_string("name");
        Misuse {
            poll,
            name,
            value,
            count: s.count("n"),
            sum: s.sum("total"),
            sum_f: s.sum_float("ftotal"),
            users: s.distinct("users"),
        }
    }

    fn aggregate(&mut self, b: &Batch, g: &mut Groups) -> Result<(), Error> {
        let (polls, names, values) = (
            b.int64s(self.poll),
            b.strings(self.name),
            b.float64s(self.value),
        );
        let c = g.columns(b);
        let keyed = |c| key(c, polls, names);
        match CASE {
            0 => c.string(names).int64(polls).count(self.count),
            1 => c.int64(polls).count(self.count),
            2 => keyed(c).int64(polls).count(self.count),
            3 => keyed(c).count(self.count).int64(polls),
            4 => c.int64(&polls[..2]).string(names).count(self.count),
            5 => keyed(c).add(self.sum, &[1]),
            6 => keyed(c).add(self.sum_f, &[1, 2, 3]),
            7 => keyed(c).add_float(self.sum, values),
            8 => {
                let mut other = Spec::default();
                let stray = (0..9).map(|i| other.count(&format!("m{}", i))).last();
                keyed(c).count(stray.unwrap())
            }
            9 => keyed(c).count(self.users),
            10 => keyed(c).add_distinct(self.count, polls),
            11 => keyed(c).count(self.sum_f),
            12 => keyed(c).add_float(self.sum_f, &values[..1]),
            _ => keyed(c)
                .add_distinct_string(self.users, names)
                .add_distinct(self.users, &[]),
        };
        Ok(())
    }
}

fn key<'a>(c: Columns<'a>, polls: &'a [i64], names: Strings<'a>) -> Columns<'a> {
    c.int64(polls).string(names)
}

fn misuse<const CASE: usize>(want: &str) {
    let mut l = Local::<Misuse<CASE>>::new(&[Window::tumbling("sec", 1000)]).unwrap();
    let mut b = BatchBuilder::new();
    for i in 0..3 {
        b.record(1000 * i).int64(i).string("yes").float64(0.5);
    }
    let err = l.process(&b).unwrap_err();
    assert!(
        err.code == Code::Aggregate && err.message.contains(want),
        "case {}: got {:?}, want an error with {:?}",
        CASE,
        err,
        want
    );
}

#[test]
fn misuse_is_an_error_from_process() {
    misuse::<0>("key column 0 is declared int64, but Columns::string filled it");
    misuse::<1>("metric update before key column 1 was filled (1 of 2 filled)");
    misuse::<2>("Columns::int64 fills key column 2, but the spec declares 2");
    misuse::<3>("Columns::int64 after a metric update");
    misuse::<4>("Columns::int64 for key column 0 got 2 values for 3 records");
    misuse::<5>("Columns::add of metric 1 got 1 values for 3 records");
    misuse::<6>("metric 2 is float64, use Columns::add_float");
    misuse::<7>("metric 1 is int64, use Columns::add");
    misuse::<8>("metric 8 is not one of the spec's");
    misuse::<9>("metric 3 is distinct, use Columns::add_distinct");
    misuse::<10>("metric 0 is not distinct");
    misuse::<11>("metric 2 is float64, use Columns::add_float");
    misuse::<12>("Columns::add_float of metric 2 got 1 values for 3 records");
    misuse::<13>("Columns::add_distinct of metric 3 got 0 values for 3 records");
}

/// The votes fold, through columns or at, for the limit test.
struct Votes<const COLS: bool> {
    poll: Int64Field,
    option: StringField,
    votes: Metric,
}

impl<const COLS: bool> Aggregator for Votes<COLS> {
    fn define(s: &mut Spec) -> Self {
        let (poll, option) = (s.input_int64("poll_id"), s.input_string("option"));
        s.key_int64("poll_id");
        s.key_string("option");
        Votes {
            poll,
            option,
            votes: s.count("votes"),
        }
    }
    fn aggregate(&mut self, b: &Batch, g: &mut Groups) -> Result<(), Error> {
        let (polls, options) = (b.int64s(self.poll), b.strings(self.option));
        if COLS {
            g.columns(b).int64(polls).string(options).count(self.votes);
        } else {
            for i in 0..b.len() {
                g.at(b.time(i))
                    .int64(polls[i])
                    .string(options.get(i))
                    .add(self.votes, 1);
            }
        }
        Ok(())
    }
}

/// Folds b through an engine with the host's limit of max groups per pane.
fn limited<A: Aggregator>(window: &str, max: i64, b: &BatchBuilder) -> Result<(), Error> {
    let mut e = Engine::<A>::new();
    let cfg = format!(
        "{{\"abi\":1,\"windows\":[{}],\"max_groups\":{}}}",
        window, max
    );
    e.init(cfg.as_bytes()).unwrap();
    let enc = b.encode();
    // 8-aligned, as the host's input buffer is
    let mut buf = vec![0u64; (enc.len() + 7) / 8];
    let v = unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr() as *mut u8, enc.len()) };
    v.copy_from_slice(&enc);
    e.process(v)
}

#[test]
fn columns_stop_at_the_group_limit() {
    let mut b = BatchBuilder::new();
    for i in 0..5 {
        b.record(1000 + i).int64(i % 3).string("yes");
    }
    for w in [
        r#"{"name":"sec","kind":"tumbling","size_ms":1000}"#,
        r#"{"name":"all","kind":"global"}"#,
        r#"{"name":"hop","kind":"hopping","size_ms":2000,"slide_ms":1000}"#,
    ] {
        let got = limited::<Votes<true>>(w, 2, &b).unwrap_err();
        let want = limited::<Votes<false>>(w, 2, &b).unwrap_err();
        assert!(
            got.message.contains("too many groups in one pane"),
            "{}: {:?}",
            w,
            got
        );
        assert_eq!(got, want, "{}: the error of at", w);
        limited::<Votes<true>>(w, 3, &b).unwrap();
    }
}

#[test]
fn an_empty_batch_folds_nothing() {
    // the encoding of a batch of no records: a header, then an int64 and a
    // string column
    let mut b = Vec::new();
    for w in [0x3142_4757u32, 0, 2, 0] {
        b.extend_from_slice(&w.to_le_bytes());
    }
    b.extend_from_slice(&40u64.to_le_bytes());
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&[0; 8]); // the offsets (one 0), padded
    let windows = [Window::global("all"), Window::tumbling("sec", 1000)];
    let mut col = Local::<Votes<true>>::new(&windows).unwrap();
    let mut rec = Local::<Votes<false>>::new(&windows).unwrap();
    col.process_encoded(&b).unwrap();
    rec.process_encoded(&b).unwrap();
    assert_eq!(col.flush(0).unwrap(), vec![]);
    assert!(
        col.snapshot() == rec.snapshot(),
        "an empty batch made a pane"
    );
}
