//! `Groups::columns`, the batch-at-a-time form of `Groups::at`: the group
//! keys of all records of a batch filled a key column at a time, each
//! window's groups found for all records in one loop, and each metric
//! folded for all records in one loop per window. It folds in exactly what
//! the same calls through `at` would, record by record (groups created and
//! changed in the same order, so the same rows and snapshots), and is the
//! faster form: in Wasm a call or a bounds check per record costs more than
//! most of the work.

use std::ptr;

use crate::batch::{Batch, Strings};
use crate::groups::{
    go_max, go_min, hash_end, hash_word, tail, too_many_groups, Groups, Pane, KEY_SLACK,
};
use crate::sketch::hash as sketch_hash;
use crate::spec::{Op, Type, WindowKind};
use crate::Metric;

/// A record no pane of the window holds (a ref's value).
const NONE: u64 = u64::MAX;

/// Columns' buffers, kept in `Groups` across batches.
#[derive(Default)]
pub(crate) struct Scratch {
    // the records' keys, record i's at from[i], 8-aligned, zero-padded to 8
    // bytes, followed by at least 8 more bytes (a string's tail is written
    // as a whole word), then KEY_SLACK bytes at the end
    keys: Vec<u8>,
    from: Vec<u32>,
    // the end of record i's key (while the keys are built: where its next
    // column goes)
    to: Vec<u32>,
    // record i's key hash (while the keys are built: before hash_end)
    hs: Vec<u64>,
    // per tumbling or global window, per record: the record's pane (high 32
    // bits) and group in it (low 32 bits), NONE when no pane holds it
    refs: Vec<Vec<u64>>,
    // per hopping window: (record, pane << 32 | group) of every target, in
    // record order (a record falls in several panes of the window)
    hops: Vec<Vec<(u32, u64)>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Filling,
    Resolved,
    Failed,
}

#[derive(Clone, Copy)]
enum Col<'a> {
    Words(&'a [u64]), // an int64 or float64 column's bits
    Str(Strings<'a>),
}

/// The group keys of all records of a batch; see `Groups::columns`. Fill
/// the key columns in declared order, each with one value per record, then
/// update metrics, each with one value per record. Every method returns the
/// builder, so the calls chain.
pub struct Columns<'a> {
    g: &'a mut Groups,
    times: &'a [i64],
    cols: Vec<Col<'a>>,
    state: State,
}

impl Groups {
    /// Starts the group keys of all of b's records, at their event times:
    /// the batch-at-a-time form of `at`, which folds in the same.
    ///
    /// ```text
    /// g.columns(b).int64(b.int64s(self.poll)).string(b.strings(self.option)).count(self.votes);
    /// ```
    ///
    /// Misuse (a column of the wrong type or length, too few or too many
    /// key columns, a metric of the wrong kind) fails the batch, as with
    /// `at`. Use `at` when what a record adds depends on the record (a
    /// filter, a branch, a key of its own).
    pub fn columns<'a>(&'a mut self, b: &Batch<'a>) -> Columns<'a> {
        let k = self.key_types.len();
        Columns {
            g: self,
            times: b.times(),
            cols: Vec::with_capacity(k),
            state: State::Filling,
        }
    }
}

/// Reports a key column filled out of turn (out of line, as column_misuse).
#[inline(never)]
fn fill_misuse(g: &mut Groups, col: usize, resolved: bool, ty: Type, n: usize, want: usize) {
    let method = ty.name();
    let k = g.key_types.len();
    let msg = if resolved {
        format!(
            "wagg: Columns::{} after a metric update: fill every key column first",
            method
        )
    } else if col >= k {
        format!(
            "wagg: Columns::{} fills key column {}, but the spec declares {}",
            method, col, k
        )
    } else if g.key_types[col] != ty {
        format!(
            "wagg: key column {} is declared {}, but Columns::{} filled it",
            col,
            g.key_types[col].name(),
            method
        )
    } else {
        format!(
            "wagg: Columns::{} for key column {} got {} values for {} records",
            method, col, n, want
        )
    };
    g.misuse(msg);
}

impl<'a> Columns<'a> {
    #[inline(never)]
    fn fail(&mut self, msg: String) {
        self.state = State::Failed;
        self.g.misuse(msg);
    }

    fn fill(mut self, ty: Type, col: Col<'a>, n: usize) -> Self {
        let c = self.cols.len();
        if self.state == State::Filling
            && c < self.g.key_types.len()
            && self.g.key_types[c] == ty
            && n == self.times.len()
        {
            self.cols.push(col);
        } else if self.state != State::Failed {
            let resolved = self.state == State::Resolved;
            self.state = State::Failed;
            fill_misuse(self.g, c, resolved, ty, n, self.times.len());
        }
        self
    }

    /// Fills the next key column, declared `key_int64`, one value per record.
    pub fn int64(self, v: &'a [i64]) -> Self {
        // SAFETY: i64 and u64 have the same size and alignment, and every
        // bit pattern is a u64.
        let w = unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u64, v.len()) };
        self.fill(Type::Int64, Col::Words(w), v.len())
    }

    /// Fills the next key column, declared `key_float64`, one value per
    /// record (keyed by its bits, as `Key::float64`).
    pub fn float64(self, v: &'a [f64]) -> Self {
        // SAFETY: as in int64; a float's bits are the key.
        let w = unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u64, v.len()) };
        self.fill(Type::Float64, Col::Words(w), v.len())
    }

    /// Fills the next key column, declared `key_string`, with a string
    /// column of the batch (`Batch::strings`).
    pub fn string(self, v: Strings<'a>) -> Self {
        let n = v.offs.len().saturating_sub(1);
        self.fill(Type::String, Col::Str(v), n)
    }

    /// Lays the records' keys out, one column at a time, and hashes them as
    /// `Key` does.
    fn build(&mut self) {
        let n = self.times.len();
        let s = &mut self.g.scratch;
        let fixed = 8 * self
            .cols
            .iter()
            .filter(|c| matches!(c, Col::Words(_)))
            .count() as u32;
        let strs = self.cols.len() as u32 - fixed / 8;
        // Key widths (8-aligned, plus a word for a string's tail write when
        // there is a string), then starts.
        s.to.clear();
        s.to.resize(n, fixed);
        for c in &self.cols {
            if let Col::Str(v) = c {
                let o = &v.offs[..n + 1];
                for (t, w) in s.to.iter_mut().zip(o.windows(2)) {
                    *t += 4 + (w[1] - w[0]);
                }
            }
        }
        let extra = if strs > 0 { 8 } else { 0 };
        s.from.clear();
        s.from.resize(n, 0);
        s.hs.clear();
        s.hs.resize(n, 0);
        let mut total = 0u32;
        for (f, t) in s.from.iter_mut().zip(s.to.iter_mut()) {
            *f = total;
            total += (*t + 7) / 8 * 8 + extra;
            *t = *f;
        }
        let size = total as usize + KEY_SLACK;
        if s.keys.len() < size {
            s.keys.resize(size, 0);
        }
        let kp = s.keys.as_mut_ptr();
        for c in &self.cols {
            match *c {
                Col::Words(v) => {
                    for ((t, h), &x) in s.to.iter_mut().zip(s.hs.iter_mut()).zip(v) {
                        // SAFETY: the column is counted in the record's
                        // width, so it lies within its key's room in keys.
                        unsafe { ptr::write_unaligned(kp.add(*t as usize) as *mut u64, x.to_le()) };
                        *h = hash_word(*h, x);
                        *t += 8;
                    }
                }
                Col::Str(v) => {
                    let (offs, data) = (&v.offs[..n + 1], v.data);
                    let dp = data.as_ptr();
                    for (i, (t, hh)) in s.to.iter_mut().zip(s.hs.iter_mut()).enumerate() {
                        // SAFETY: i < n and offs holds n + 1 offsets, rising
                        // within data (Batch::decode checks them); the
                        // column is counted in the record's width, and its
                        // tail word ends at most 8 bytes past the string,
                        // within the word of room a key has past its width.
                        unsafe {
                            let (a, b) = (
                                *offs.get_unchecked(i) as usize,
                                *offs.get_unchecked(i + 1) as usize,
                            );
                            let ln = b - a;
                            let o = kp.add(*t as usize);
                            ptr::write_unaligned(o as *mut u32, (ln as u32).to_le());
                            let mut h = hash_word(*hh, ln as u64);
                            let mut k = 0;
                            while k + 8 <= ln {
                                let w =
                                    u64::from_le(ptr::read_unaligned(dp.add(a + k) as *const u64));
                                ptr::write_unaligned(o.add(4 + k) as *mut u64, w.to_le());
                                h = hash_word(h, w);
                                k += 8;
                            }
                            let r = ln - k;
                            // the tail as a word: the last 8 bytes before b,
                            // shifted down, when the data has them
                            let tw = if r == 0 {
                                0
                            } else if b >= 8 {
                                u64::from_le(ptr::read_unaligned(dp.add(b - 8) as *const u64))
                                    >> (64 - 8 * r)
                            } else {
                                tail(&data[a + k..b])
                            };
                            ptr::write_unaligned(o.add(4 + k) as *mut u64, tw.to_le());
                            *hh = hash_word(h, tw);
                            *t += 4 + ln as u32;
                        }
                    }
                }
            }
        }
        for ((f, t), h) in s.from.iter().zip(&s.to).zip(s.hs.iter_mut()) {
            if strs > 0 {
                // the pad to 8 bytes (a key of words only has none)
                // SAFETY: the key's room is 8 bytes past its end.
                unsafe { ptr::write_unaligned(kp.add(*t as usize) as *mut u64, 0) };
            }
            *h = hash_end(*h, (*t - *f) as usize);
        }
    }

    /// Finds (or creates) every record's group in every window holding its
    /// time, window by window, records in order: in each pane, groups are
    /// created and marked changed in the order `at` would.
    fn resolve(&mut self) -> bool {
        match self.state {
            State::Resolved => return true,
            State::Failed => return false,
            State::Filling => {}
        }
        let k = self.g.key_types.len();
        if self.cols.len() != k {
            let c = self.cols.len();
            self.fail(format!(
                "wagg: metric update before key column {} was filled ({} of {} filled)",
                c, c, k
            ));
            return false;
        }
        self.state = State::Resolved;
        let nw = self.g.ws.len();
        let s = &mut self.g.scratch;
        while s.refs.len() < nw {
            s.refs.push(Vec::new());
            s.hops.push(Vec::new());
        }
        for w in 0..nw {
            self.g.scratch.refs[w].clear();
            self.g.scratch.hops[w].clear();
        }
        if self.times.is_empty() {
            return true; // no pane, not even the global window's, is made
        }
        self.build();
        // the first tumbling window before the first global window that
        // follows another: its groups link to the global window's
        let lw = self.g.link_w;
        let link = (0..nw.min(lw)).find(|&w| self.g.ws[w].kind == WindowKind::Tumbling);
        for w in 0..nw {
            let ok = match self.g.ws[w].kind {
                WindowKind::Global => {
                    self.global_panes(w);
                    self.lookup(w, if w == lw { link } else { None })
                }
                WindowKind::Tumbling => {
                    self.tumbling_panes(w);
                    self.lookup(w, None)
                }
                WindowKind::Hopping => self.hopping(w),
            };
            if !ok {
                self.state = State::Failed;
                return false;
            }
        }
        true
    }

    fn global_panes(&mut self, w: usize) {
        let n = self.times.len();
        let pi = self.g.ws[w].pane(0) as u64;
        let refs = &mut self.g.scratch.refs[w];
        refs.clear();
        refs.resize(n, pi << 32);
    }

    /// Each record's pane in tumbling window w, created when missing.
    fn tumbling_panes(&mut self, w: usize) {
        let Groups { ws, scratch, .. } = &mut *self.g;
        let (st, refs) = (&mut ws[w], &mut scratch.refs[w]);
        let size = st.size;
        refs.clear();
        refs.resize(self.times.len(), NONE);
        loop {
            // A pane inserted before others moves them, and the refs to
            // them: then, every pane made, the refs are found again.
            let mut moved = false;
            let (mut lo, mut hi, mut cur) = (1i64, 0i64, NONE); // the pane of times [lo, hi]
            for (r, &ts) in refs.iter_mut().zip(self.times) {
                if ts < lo || ts > hi {
                    let m = ts.rem_euclid(size);
                    if ts < i64::MIN + m {
                        *r = NONE; // no window holds ts (the host dead-letters it)
                        continue;
                    }
                    let start = ts - m;
                    let before = st.panes.len();
                    let pi = st.pane(start);
                    moved |= st.panes.len() != before && pi + 1 != st.panes.len();
                    cur = (pi as u64) << 32;
                    lo = start;
                    hi = start.saturating_add(size - 1);
                }
                *r = cur;
            }
            if !moved {
                return;
            }
        }
    }

    /// Finds (or creates) each record's group in the pane its ref in window
    /// w names, marks it changed and puts it in the ref, records in order.
    /// With link (a tumbling window before w, the first global window), a
    /// record whose group there links to its group here skips the probe, and
    /// one that does not gets the link (as `Groups::resolve`). False on the
    /// host's limit.
    fn lookup(&mut self, w: usize, link: Option<usize>) -> bool {
        let n = self.times.len();
        let g = &mut *self.g;
        let max = g.max_groups;
        let Groups {
            ws,
            scratch,
            idents,
            distinct,
            ..
        } = g;
        let Scratch {
            keys,
            from,
            to,
            hs,
            refs,
            ..
        } = scratch;
        let (keys, from, to, hs) = (&keys[..], &from[..n], &to[..n], &hs[..n]);
        let (refs_lo, refs_hi) = refs.split_at_mut(w);
        let refs = &mut refs_hi[0][..n];
        let (ws_lo, ws_hi) = ws.split_at_mut(w);
        let st = &mut ws_hi[0];
        let mut linked = link.map(|l| (&mut ws_lo[l], &refs_lo[l][..n]));
        let mut full = None;
        for i in 0..n {
            // SAFETY: i < n, and every slice here holds n values.
            let r = unsafe { *refs.get_unchecked(i) };
            if r == NONE {
                continue;
            }
            // SAFETY: a ref names a pane of the window (tumbling_panes,
            // global_panes), and no pane is made or dropped after.
            let p = unsafe { st.panes.get_unchecked_mut((r >> 32) as usize) };
            let (f, t, h) = unsafe {
                (
                    *from.get_unchecked(i) as usize,
                    *to.get_unchecked(i) as usize,
                    *hs.get_unchecked(i),
                )
            };
            // the record's group in the link window's pane, and its link
            let mut lg: Option<(&mut Pane, usize)> = None;
            if let Some((lst, lrefs)) = &mut linked {
                let l = unsafe { *lrefs.get_unchecked(i) };
                if l != NONE {
                    // SAFETY: the link window's refs are resolved (it comes
                    // first), each to a group of one of its panes.
                    let lp = unsafe { lst.panes.get_unchecked_mut((l >> 32) as usize) };
                    lg = Some((lp, l as u32 as usize));
                }
            }
            let known = match &lg {
                // SAFETY: lg's group is in its pane, which has a link each.
                Some((lp, j)) => unsafe { *lp.link.get_unchecked(*j) },
                None => 0,
            };
            let gi = if known != 0 {
                known as usize - 1
            } else {
                // SAFETY: f < keys.len(), and the key is zero-padded and
                // followed by KEY_SLACK bytes, as lookup takes it.
                let key = unsafe { keys.get_unchecked(f..) };
                let gi = match p.lookup(key, t - f, h) {
                    Ok(gi) => gi,
                    Err(_) if max > 0 && p.len() as i64 >= max => {
                        full = Some(p.start);
                        break;
                    }
                    Err(slot) => p.insert(&key[..t - f], h, slot, idents, distinct),
                };
                if let Some((lp, j)) = lg {
                    // SAFETY: as above
                    unsafe { *lp.link.get_unchecked_mut(j) = gi as u32 + 1 };
                }
                gi
            };
            touch(p, gi);
            // SAFETY: i < n
            unsafe { *refs.get_unchecked_mut(i) = r | gi as u64 };
        }
        if let Some(start) = full {
            too_many_groups(self.g, w, start, max);
            return false;
        }
        true
    }

    /// Finds (or creates) each record's groups in the panes of hopping
    /// window w that hold its time, as `Groups::resolve` does, and lists
    /// them in hops. False on the host's limit.
    fn hopping(&mut self, w: usize) -> bool {
        let max = self.g.max_groups;
        let Groups {
            ws,
            scratch,
            idents,
            distinct,
            ..
        } = &mut *self.g;
        let st = &mut ws[w];
        let (size, slide) = (st.size, st.slide);
        // The panes first: making one moves the later ones.
        for &ts in self.times {
            let m = ts.rem_euclid(slide);
            if ts < i64::MIN + m {
                continue;
            }
            let mut s = ts - m;
            while ts - s < size {
                st.pane(s);
                if s < i64::MIN + slide {
                    break;
                }
                s -= slide;
            }
        }
        let hops = &mut scratch.hops[w];
        for (i, &ts) in self.times.iter().enumerate() {
            let m = ts.rem_euclid(slide);
            if ts < i64::MIN + m {
                continue; // no window holds ts
            }
            let (f, t, h) = (
                scratch.from[i] as usize,
                scratch.to[i] as usize,
                scratch.hs[i],
            );
            let key = &scratch.keys[f..];
            let mut s = ts - m;
            while ts - s < size {
                let pi = st.pane(s);
                let p = &mut st.panes[pi];
                let gi = match p.lookup(key, t - f, h) {
                    Ok(gi) => gi,
                    Err(_) if max > 0 && p.len() as i64 >= max => {
                        too_many_groups(self.g, w, s, max);
                        return false;
                    }
                    Err(slot) => p.insert(&key[..t - f], h, slot, idents, distinct),
                };
                touch(p, gi);
                hops.push((i as u32, (pi as u64) << 32 | gi as u64));
                if s < i64::MIN + slide {
                    break;
                }
                s -= slide;
            }
        }
        true
    }

    /// Checks metric m for an update of n values; false after misuse.
    fn metric(&mut self, m: Metric, n: usize, method: &str, want: Want) -> Option<Op> {
        if !self.resolve() {
            return None;
        }
        let msg = match self.g.metrics.get(m.0) {
            None => format!("wagg: metric {} is not one of the spec's", m.0),
            Some(_) if n != self.times.len() => format!(
                "wagg: Columns::{} of metric {} got {} values for {} records",
                method,
                m.0,
                n,
                self.times.len()
            ),
            Some(&(ty, op)) => match (want, ty, op) {
                (Want::Distinct, _, Op::Distinct) => return Some(op),
                (Want::Distinct, _, _) => format!(
                    "wagg: metric {} is not distinct, use Columns::add or Columns::add_float",
                    m.0
                ),
                (_, _, Op::Distinct) => format!(
                    "wagg: metric {} is distinct, use Columns::add_distinct",
                    m.0
                ),
                (Want::Int, Type::Float64, _) => {
                    format!("wagg: metric {} is float64, use Columns::add_float", m.0)
                }
                (Want::Float, Type::Int64, _) => {
                    format!("wagg: metric {} is int64, use Columns::add", m.0)
                }
                _ => return Some(op),
            },
        };
        self.fail(msg);
        None
    }

    /// Folds f(the value, the record) into metric j of every record's
    /// groups, window by window, records in order.
    #[inline(always)]
    fn fold(&mut self, j: usize, mut f: impl FnMut(u64, usize) -> u64) {
        let nm = self.g.metrics.len();
        let Groups { ws, scratch, .. } = &mut *self.g;
        for (w, st) in ws.iter_mut().enumerate() {
            if st.kind == WindowKind::Hopping {
                for &(i, r) in &scratch.hops[w] {
                    let v = &mut st.panes[(r >> 32) as usize].vals[r as u32 as usize * nm + j];
                    *v = f(*v, i as usize);
                }
                continue;
            }
            let (mut last, mut vals) = (NONE, ptr::null_mut::<u64>());
            for (i, &r) in scratch.refs[w].iter().enumerate() {
                if r == NONE {
                    continue;
                }
                if r >> 32 != last {
                    last = r >> 32;
                    // SAFETY: a ref names a pane of the window (resolve).
                    vals = unsafe { st.panes.get_unchecked_mut(last as usize) }
                        .vals
                        .as_mut_ptr();
                }
                // SAFETY: a ref's group is in its pane, whose vals hold nm
                // values per group, and j < nm (metric).
                unsafe {
                    let v = vals.add(r as u32 as usize * nm + j);
                    *v = f(*v, i);
                }
            }
        }
    }

    /// Folds f(the record) into distinct metric j of every record's groups.
    fn fold_distinct(&mut self, j: usize, f: impl Fn(usize) -> u64) {
        let nm = self.g.metrics.len();
        let Groups { ws, scratch, .. } = &mut *self.g;
        for (w, st) in ws.iter_mut().enumerate() {
            let mut add = |r: u64, i: usize| {
                let p = &mut st.panes[(r >> 32) as usize];
                let k = p.vals[r as u32 as usize * nm + j] as usize;
                p.sketches[k].add_hash(f(i));
            };
            if st.kind == WindowKind::Hopping {
                for &(i, r) in &scratch.hops[w] {
                    add(r, i as usize);
                }
                continue;
            }
            for (i, &r) in scratch.refs[w].iter().enumerate() {
                if r != NONE {
                    add(r, i);
                }
            }
        }
    }

    /// Adds 1 per record to an int64 metric of the records' groups (a
    /// count, usually), as `Key::add(m, 1)` does.
    pub fn count(mut self, m: Metric) -> Self {
        match self.metric(m, self.times.len(), "count", Want::Int) {
            Some(Op::Min) => self.fold(m.0, |cur, _| (cur as i64).min(1) as u64),
            Some(Op::Max) => self.fold(m.0, |cur, _| (cur as i64).max(1) as u64),
            Some(_) => self.fold(m.0, |cur, _| cur.wrapping_add(1)),
            None => {}
        }
        self
    }

    /// Folds one int64 value per record into an int64 metric of the
    /// records' groups, as `Key::add` does: a count or sum adds it, a min or
    /// max keeps the extreme.
    pub fn add(mut self, m: Metric, v: &[i64]) -> Self {
        // SAFETY (the closures): metric checked v holds a value per record.
        match self.metric(m, v.len(), "add", Want::Int) {
            Some(Op::Min) => self.fold(m.0, |cur, i| {
                (cur as i64).min(unsafe { *v.get_unchecked(i) }) as u64
            }),
            Some(Op::Max) => self.fold(m.0, |cur, i| {
                (cur as i64).max(unsafe { *v.get_unchecked(i) }) as u64
            }),
            Some(_) => self.fold(m.0, |cur, i| {
                cur.wrapping_add(unsafe { *v.get_unchecked(i) } as u64)
            }),
            None => {}
        }
        self
    }

    /// Folds one float64 value per record into a float64 metric, as
    /// `Key::add_float` does (an average's sum and count both).
    pub fn add_float(mut self, m: Metric, v: &[f64]) -> Self {
        let x = |i: usize| unsafe { *v.get_unchecked(i) }; // SAFETY: as in add
        let op = self.metric(m, v.len(), "add_float", Want::Float);
        let float =
            |f: fn(f64, f64) -> f64| move |cur: u64, i| f(f64::from_bits(cur), x(i)).to_bits();
        match op {
            Some(Op::Min) => self.fold(m.0, float(go_min)),
            Some(Op::Max) => self.fold(m.0, float(go_max)),
            Some(Op::Avg) => {
                self.fold(m.0, float(|a, b| a + b));
                self.fold(m.0 + 1, |cur, _| cur.wrapping_add(1)); // the count follows the sum
            }
            Some(_) => self.fold(m.0, float(|a, b| a + b)),
            None => {}
        }
        self
    }

    /// Folds one int64 value per record (hashed as its 8 little-endian
    /// bytes) into a distinct metric of the records' groups.
    pub fn add_distinct(mut self, m: Metric, v: &[i64]) -> Self {
        if self
            .metric(m, v.len(), "add_distinct", Want::Distinct)
            .is_some()
        {
            self.fold_distinct(m.0, |i| sketch_hash(&v[i].to_le_bytes()));
        }
        self
    }

    /// Folds one string per record into a distinct metric of the records'
    /// groups.
    pub fn add_distinct_string(mut self, m: Metric, v: Strings<'_>) -> Self {
        let n = v.offs.len().saturating_sub(1);
        if self
            .metric(m, n, "add_distinct_string", Want::Distinct)
            .is_some()
        {
            self.fold_distinct(m.0, |i| sketch_hash(v.get(i)));
        }
        self
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    Int,
    Float,
    Distinct,
}

/// Marks group g of p changed.
#[inline(always)]
fn touch(p: &mut Pane, g: usize) {
    // SAFETY: g is a group of p, which has a mark each.
    let m = unsafe { p.marked.get_unchecked_mut(g) };
    if !*m {
        *m = true;
        p.dirty.push(g as u32);
    }
}
