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
    go_max, go_min, hash_end, hash_word, same_key, tail, too_many_groups, Groups, Pane, KEY_SLACK,
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
    // the end of record i's key
    to: Vec<u32>,
    // while the keys are built: where record i's last string column ended
    at: Vec<u32>,
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
    /// `Key` does. A column's place in record i's key is a constant past the
    /// key's start until a string column, then past where the last string
    /// ended (`at`); the first column starts the hash, the last one ends it
    /// and sets the key's end. In Wasm every pass over the records and
    /// every load or store of linear memory costs, so the passes are one
    /// for the layout and one per column.
    fn build(&mut self) {
        let n = self.times.len();
        let s = &mut self.g.scratch;
        // The buffers only grow: every value a pass reads, an earlier pass
        // of the batch wrote.
        if s.from.len() < n {
            s.from.resize(n, 0);
            s.to.resize(n, 0);
            s.at.resize(n, 0);
            s.hs.resize(n, 0);
        }
        let (mut fixed, mut strs) = (0u32, 0);
        let mut one: &[u32] = &[];
        for c in &self.cols {
            match c {
                Col::Words(_) => fixed += 8,
                Col::Str(v) => {
                    strs += 1;
                    one = &v.offs[..n + 1];
                }
            }
        }
        // every key's room: its width rounded up to 8, and a word more when
        // it has a string (its tail is written as a whole word)
        let from = &mut s.from[..n];
        let mut total = 0u32;
        if strs == 0 {
            for f in from.iter_mut() {
                *f = total;
                total += fixed;
            }
        } else if strs == 1 {
            let mut prev = one[0];
            for (f, &next) in from.iter_mut().zip(&one[1..]) {
                *f = total;
                total += (fixed + 4 + (next - prev) + 7) / 8 * 8 + 8;
                prev = next;
            }
        } else {
            let to = &mut s.to[..n];
            for t in to.iter_mut() {
                *t = fixed;
            }
            for c in &self.cols {
                if let Col::Str(v) = c {
                    let o = &v.offs[..n + 1];
                    for (t, (&a, &b)) in to.iter_mut().zip(o.iter().zip(&o[1..])) {
                        *t += 4 + (b - a);
                    }
                }
            }
            for (f, &t) in from.iter_mut().zip(to.iter()) {
                *f = total;
                total += (t + 7) / 8 * 8 + 8;
            }
        }
        let size = total as usize + KEY_SLACK;
        if s.keys.len() < size {
            s.keys.resize(size, 0);
        }
        let (kp, fp, tp, ap, hp) = (
            s.keys.as_mut_ptr(),
            s.from.as_ptr(),
            s.to.as_mut_ptr(),
            s.at.as_mut_ptr(),
            s.hs.as_mut_ptr(),
        );
        let k = self.cols.len();
        // where a column goes: base[i] + since
        let (mut base, mut since) = (fp, 0u32);
        for (c, col) in self.cols.iter().enumerate() {
            let out = Out {
                n,
                keys: kp,
                from: fp,
                base,
                since,
                to: tp,
                at: ap,
                hs: hp,
                pad: strs > 0,
            };
            // SAFETY (the column passes): from, to, at and hs hold n values
            // each; a column lies within its record's room in keys (it is
            // counted in the key's width, and a string's tail word ends at
            // most 8 bytes past the string, within the word of room past
            // the width); a column holds n values (fill), a string column
            // n + 1 offsets rising within its data (Batch::decode).
            match (*col, c == 0, c + 1 == k) {
                (Col::Words(v), true, true) => unsafe { out.words::<true, true>(v) },
                (Col::Words(v), true, false) => unsafe { out.words::<true, false>(v) },
                (Col::Words(v), false, true) => unsafe { out.words::<false, true>(v) },
                (Col::Words(v), false, false) => unsafe { out.words::<false, false>(v) },
                (Col::Str(v), true, true) => unsafe { out.string::<true, true>(v) },
                (Col::Str(v), true, false) => unsafe { out.string::<true, false>(v) },
                (Col::Str(v), false, true) => unsafe { out.string::<false, true>(v) },
                (Col::Str(v), false, false) => unsafe { out.string::<false, false>(v) },
            }
            match col {
                Col::Words(_) => since += 8,
                Col::Str(_) => {
                    base = ap;
                    since = 0;
                }
            }
        }
        if k == 0 {
            // no key columns: every key is empty
            for (t, h) in s.to[..n].iter_mut().zip(s.hs[..n].iter_mut()) {
                *t = 0;
                *h = hash_end(0, 0);
            }
        }
    }

    /// Finds (or creates) every record's group in every window holding its
    /// time, window by window, records in order: in each pane, groups are
    /// created and marked changed in the order `at` would. With inc (an
    /// int64 sum), the groups of tumbling and global windows get 1 added to
    /// it as they are found, which saves a count its own pass over them
    /// (`Groups::resolve` does the same for a record's first add).
    fn resolve(&mut self, inc: Option<usize>) -> bool {
        self.state = State::Resolved;
        let nw = self.g.ws.len();
        let s = &mut self.g.scratch;
        while s.refs.len() < nw {
            s.refs.push(Vec::new());
            s.hops.push(Vec::new());
        }
        for h in &mut s.hops {
            h.clear();
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
                    self.lookup::<true>(w, if w == lw { link } else { None }, inc)
                }
                WindowKind::Tumbling => self.lookup::<false>(w, None, inc),
                WindowKind::Hopping => self.hopping(w),
            };
            if !ok {
                self.state = State::Failed;
                return false;
            }
        }
        true
    }

    /// Finds (or creates) each record's group in the pane of tumbling or
    /// global window w that holds its time, marks it changed and keeps it in
    /// the window's refs, records in order. A tumbling window's pane is
    /// found again only when a record's time leaves the last one's range.
    /// With link (a tumbling window before w, the first global window), a
    /// record whose group there links to its group here skips the probe,
    /// and one that does not gets the link (as `Groups::resolve`). The probe
    /// is `Pane::lookup`'s, over pointers kept while the pane stays the
    /// same: in Wasm each load of a pane's field is a checked access of
    /// linear memory. False on the host's limit.
    fn lookup<const GLOBAL: bool>(
        &mut self,
        w: usize,
        link: Option<usize>,
        inc: Option<usize>,
    ) -> bool {
        let n = self.times.len();
        let nm = self.g.metrics.len();
        let times = self.times;
        let max = self.g.max_groups;
        let Groups {
            ws,
            scratch,
            idents,
            distinct,
            ..
        } = &mut *self.g;
        let Scratch {
            keys,
            from,
            to,
            hs,
            refs,
            ..
        } = scratch;
        let (kp, fp, tp, hp) = (keys.as_ptr(), from.as_ptr(), to.as_ptr(), hs.as_ptr());
        let (refs_lo, refs_hi) = refs.split_at_mut(w);
        let refs = &mut refs_hi[0];
        if refs.len() < n {
            refs.resize(n, 0);
        }
        let rp = refs.as_mut_ptr();
        let (ws_lo, ws_hi) = ws.split_at_mut(w);
        let st = &mut ws_hi[0];
        let (lpanes, lrefs): (&mut [Pane], &[u64]) = match link {
            Some(l) => (&mut ws_lo[l].panes, &refs_lo[l][..n]),
            None => (&mut [], &[]),
        };
        let size = st.size;
        // the current pane: its index << 32, the times it holds [lo, hi]
        let (mut pr, mut lo, mut hi) = (0u64, 1i64, 0i64);
        let mut pp: *mut Pane = ptr::null_mut();
        let mut v = View {
            slots: ptr::null(),
            mask: 0,
            kpos: ptr::null(),
            keys: ptr::null(),
            marked: ptr::null_mut(),
            vals: ptr::null_mut(),
        };
        if GLOBAL {
            // the one pane, at 0, holds every time
            let pi = st.pane(0);
            pp = &mut st.panes[pi];
            // SAFETY: pp is the pane's.
            v = View::of(unsafe { &mut *pp });
            pr = (pi as u64) << 32;
            lo = i64::MIN;
            hi = i64::MAX;
        }
        let (mut lcur, mut links) = (NONE, ptr::null_mut::<u32>());
        let mut moved = false;
        let mut full = None;
        for i in 0..n {
            // SAFETY (the loop): i < n, and times, refs, from, to, hs and
            // the link window's refs hold at least n values; pp and v are
            // those of the pane pr names, set when it changes and after an
            // insert; a slot index is masked by the slots' length - 1, a
            // slot holds a group's index + 1, a group's key bounds lie in
            // its pane's keys, which, as the batch's keys, are zero-padded
            // and followed by KEY_SLACK bytes; the link window's refs name
            // its panes and groups, which have a link each.
            unsafe {
                let ts = if GLOBAL { 0 } else { *times.get_unchecked(i) };
                if !GLOBAL && (ts < lo || ts > hi) {
                    let m = ts.rem_euclid(size);
                    if ts < i64::MIN + m {
                        *rp.add(i) = NONE; // no window holds ts (the host dead-letters it)
                        continue;
                    }
                    let start = ts - m;
                    let before = st.panes.len();
                    let pi = st.pane(start);
                    // a pane made before others moves them: the refs are
                    // set again below
                    moved |= st.panes.len() != before && pi + 1 != st.panes.len();
                    pp = st.panes.as_mut_ptr().add(pi);
                    v = View::of(&mut *pp);
                    pr = (pi as u64) << 32;
                    lo = start;
                    hi = start.saturating_add(size - 1);
                }
                // the record's link, in the link window's group
                let mut lg: *mut u32 = ptr::null_mut();
                let mut known = 0;
                if !lrefs.is_empty() {
                    let l = *lrefs.get_unchecked(i);
                    if l != NONE {
                        if l >> 32 != lcur {
                            lcur = l >> 32;
                            links = lpanes.get_unchecked_mut(lcur as usize).link.as_mut_ptr();
                        }
                        lg = links.add(l as u32 as usize);
                        known = *lg;
                    }
                }
                let gi = if known != 0 {
                    known as usize - 1
                } else {
                    let (f, h) = (*fp.add(i) as usize, *hp.add(i));
                    let kn = *tp.add(i) as usize - f;
                    let key = kp.add(f);
                    let tag = h as u32;
                    let mut j = tag as usize & v.mask;
                    let gi = loop {
                        let s = *v.slots.add(j);
                        if s == 0 {
                            let p = &mut *pp;
                            if max > 0 && p.len() as i64 >= max {
                                full = Some(p.start);
                                break usize::MAX;
                            }
                            // the key and its pad to 8 bytes
                            let g = p.insert(
                                std::slice::from_raw_parts(key, (kn + 7) / 8 * 8),
                                kn,
                                h,
                                j,
                                idents,
                                distinct,
                            );
                            v = View::of(p);
                            break g;
                        }
                        if (s >> 32) as u32 == tag {
                            let g = (s as u32 - 1) as usize;
                            let e = *v.kpos.add(g);
                            if (e >> 32) as usize == kn
                                && same_key(v.keys.add(e as u32 as usize), key, kn)
                            {
                                break g;
                            }
                        }
                        j = (j + 1) & v.mask;
                    };
                    if gi == usize::MAX {
                        break;
                    }
                    if !lg.is_null() {
                        *lg = gi as u32 + 1;
                    }
                    gi
                };
                let m = v.marked.add(gi);
                if !*m {
                    *m = true;
                    (*pp).dirty.push(gi as u32);
                }
                if let Some(j) = inc {
                    // a pane's vals hold nm values per group, and j < nm
                    let x = v.vals.add(gi * nm + j);
                    *x = (*x).wrapping_add(1);
                }
                *rp.add(i) = pr | gi as u64;
            }
        }
        if let Some(start) = full {
            too_many_groups(self.g, w, start, max);
            return false;
        }
        if moved {
            let (mut pr, mut lo, mut hi) = (0u64, 1i64, 0i64);
            for (r, &ts) in refs[..n].iter_mut().zip(times) {
                if *r == NONE {
                    continue;
                }
                if ts < lo || ts > hi {
                    let start = ts - ts.rem_euclid(size);
                    pr = (st.pane(start) as u64) << 32;
                    lo = start;
                    hi = start.saturating_add(size - 1);
                }
                *r = pr | (*r as u32 as u64);
            }
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
                    Err(slot) => p.insert(key, t - f, h, slot, idents, distinct),
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

    /// Checks metric m for an update of n values and finds the records'
    /// groups if not yet done: its op, and whether resolving counted the
    /// update (with fuse, for a count of an int64 sum, the first update);
    /// None after misuse.
    fn metric(
        &mut self,
        m: Metric,
        n: usize,
        method: &str,
        want: Want,
        fuse: bool,
    ) -> Option<(Op, bool)> {
        let k = self.g.key_types.len();
        let msg = match self.g.metrics.get(m.0) {
            _ if self.state == State::Failed => return None,
            _ if self.cols.len() != k => {
                let c = self.cols.len();
                format!(
                    "wagg: metric update before key column {} was filled ({} of {} filled)",
                    c, c, k
                )
            }
            None => format!("wagg: metric {} is not one of the spec's", m.0),
            Some(_) if n != self.times.len() => format!(
                "wagg: Columns::{} of metric {} got {} values for {} records",
                method,
                m.0,
                n,
                self.times.len()
            ),
            Some(&(ty, op)) => match (want, ty, op) {
                (Want::Distinct, _, Op::Distinct) => return self.resolved(op, None),
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
                (_, Type::Int64, Op::Add) if fuse => return self.resolved(op, Some(m.0)),
                _ => return self.resolved(op, None),
            },
        };
        self.fail(msg);
        None
    }

    /// Finds the records' groups if not yet done (see resolve): op, and
    /// whether inc was counted.
    fn resolved(&mut self, op: Op, inc: Option<usize>) -> Option<(Op, bool)> {
        if self.state == State::Resolved {
            return Some((op, false));
        }
        if !self.resolve(inc) {
            return None;
        }
        Some((op, inc.is_some()))
    }

    /// Folds f(the value, the record) into metric j of every record's
    /// groups, window by window, records in order.
    #[inline(always)]
    fn fold(&mut self, j: usize, f: impl FnMut(u64, usize) -> u64) {
        self.fold_in(j, false, f);
    }

    /// fold, over only the hopping windows' groups with hopping_only.
    #[inline(always)]
    fn fold_in(&mut self, j: usize, hopping_only: bool, mut f: impl FnMut(u64, usize) -> u64) {
        let (n, nm) = (self.times.len(), self.g.metrics.len());
        let Groups { ws, scratch, .. } = &mut *self.g;
        for (w, st) in ws.iter_mut().enumerate() {
            if hopping_only && st.kind != WindowKind::Hopping {
                continue;
            }
            if st.kind == WindowKind::Hopping {
                for &(i, r) in &scratch.hops[w] {
                    let v = &mut st.panes[(r >> 32) as usize].vals[r as u32 as usize * nm + j];
                    *v = f(*v, i as usize);
                }
                continue;
            }
            let (mut last, mut vals) = (NONE, ptr::null_mut::<u64>());
            for (i, &r) in scratch.refs[w][..n].iter().enumerate() {
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
        let (n, nm) = (self.times.len(), self.g.metrics.len());
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
            for (i, &r) in scratch.refs[w][..n].iter().enumerate() {
                if r != NONE {
                    add(r, i);
                }
            }
        }
    }

    /// Adds 1 per record to an int64 metric of the records' groups (a
    /// count, usually), as `Key::add(m, 1)` does.
    pub fn count(mut self, m: Metric) -> Self {
        match self.metric(m, self.times.len(), "count", Want::Int, true) {
            Some((Op::Min, _)) => self.fold(m.0, |cur, _| (cur as i64).min(1) as u64),
            Some((Op::Max, _)) => self.fold(m.0, |cur, _| (cur as i64).max(1) as u64),
            // counted as the groups were found, but in hopping windows
            Some((_, counted)) => self.fold_in(m.0, counted, |cur, _| cur.wrapping_add(1)),
            None => {}
        }
        self
    }

    /// Folds one int64 value per record into an int64 metric of the
    /// records' groups, as `Key::add` does: a count or sum adds it, a min or
    /// max keeps the extreme.
    pub fn add(mut self, m: Metric, v: &[i64]) -> Self {
        // SAFETY (the closures): metric checked v holds a value per record.
        match self
            .metric(m, v.len(), "add", Want::Int, false)
            .map(|x| x.0)
        {
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
        let op = self
            .metric(m, v.len(), "add_float", Want::Float, false)
            .map(|x| x.0);
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
            .metric(m, v.len(), "add_distinct", Want::Distinct, false)
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
            .metric(m, n, "add_distinct_string", Want::Distinct, false)
            .is_some()
        {
            self.fold_distinct(m.0, |i| sketch_hash(v.get(i)));
        }
        self
    }
}

/// Where Columns::build writes a column: see build.
struct Out {
    n: usize,
    keys: *mut u8,
    from: *const u32,
    base: *const u32, // from or at
    since: u32,
    to: *mut u32,
    at: *mut u32,
    hs: *mut u64,
    pad: bool, // the keys have a string: zero-pad them to 8 bytes
}

impl Out {
    /// Ends record i's key at end with its hash so far h (the last column).
    #[inline(always)]
    unsafe fn end(&self, i: usize, end: u32, h: u64) {
        *self.to.add(i) = end;
        if self.pad {
            ptr::write_unaligned(self.keys.add(end as usize) as *mut u64, 0);
        }
        *self.hs.add(i) = hash_end(h, (end - *self.from.add(i)) as usize);
    }

    /// An int64 or float64 column. Safety: see build.
    #[inline(always)]
    unsafe fn words<const FIRST: bool, const LAST: bool>(&self, v: &[u64]) {
        for i in 0..self.n {
            let x = *v.get_unchecked(i);
            let o = *self.base.add(i) + self.since;
            ptr::write_unaligned(self.keys.add(o as usize) as *mut u64, x.to_le());
            let h = hash_word(if FIRST { 0 } else { *self.hs.add(i) }, x);
            if LAST {
                self.end(i, o + 8, h);
            } else {
                *self.hs.add(i) = h;
            }
        }
    }

    /// A string column: its length, then its bytes, copied and hashed by
    /// words; the tail read as the last 8 bytes before its end, shifted
    /// down, when the data has them, and written as a whole word. Safety:
    /// see build.
    #[inline(always)]
    unsafe fn string<const FIRST: bool, const LAST: bool>(&self, v: Strings<'_>) {
        let (offs, data) = (v.offs.as_ptr(), v.data);
        let dp = data.as_ptr();
        for i in 0..self.n {
            let (a, b) = (*offs.add(i) as usize, *offs.add(i + 1) as usize);
            let ln = b - a;
            let o = *self.base.add(i) + self.since;
            let d = self.keys.add(o as usize);
            ptr::write_unaligned(d as *mut u32, (ln as u32).to_le());
            let mut h = hash_word(if FIRST { 0 } else { *self.hs.add(i) }, ln as u64);
            let mut k = 0;
            while k + 8 <= ln {
                let w = u64::from_le(ptr::read_unaligned(dp.add(a + k) as *const u64));
                ptr::write_unaligned(d.add(4 + k) as *mut u64, w.to_le());
                h = hash_word(h, w);
                k += 8;
            }
            let r = ln - k;
            let t = if r == 0 {
                0
            } else if b >= 8 {
                u64::from_le(ptr::read_unaligned(dp.add(b - 8) as *const u64)) >> (64 - 8 * r)
            } else {
                tail(data.get_unchecked(a + k..b))
            };
            ptr::write_unaligned(d.add(4 + k) as *mut u64, t.to_le());
            h = hash_word(h, t);
            let end = o + 4 + ln as u32;
            if LAST {
                self.end(i, end, h);
            } else {
                *self.at.add(i) = end;
                *self.hs.add(i) = h;
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    Int,
    Float,
    Distinct,
}

/// A pane's probe and marks as pointers, for `Columns::lookup`.
#[derive(Clone, Copy)]
struct View {
    slots: *const u64,
    mask: usize,
    kpos: *const u64,
    keys: *const u8,
    marked: *mut bool,
    vals: *mut u64,
}

impl View {
    #[inline(always)]
    fn of(p: &mut Pane) -> View {
        View {
            slots: p.slots.as_ptr(),
            mask: p.slots.len() - 1,
            kpos: p.kpos.as_ptr(),
            keys: p.keys.as_ptr(),
            marked: p.marked.as_mut_ptr(),
            vals: p.vals.as_mut_ptr(),
        }
    }
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
