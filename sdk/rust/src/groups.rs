//! The state: per window of the deployment, per window start (a pane), per
//! group key, the metric values. Laid out as the Go and C SDKs lay it out so
//! that the same input gives the same rows and snapshots, byte for byte:
//! groups in creation order, changed groups in the order first touched.

use crate::sketch::{hash as sketch_hash, Sketch};
use crate::spec::{MetricDef, Op, Type, Window, WindowKind};
use crate::{Error, Metric};

pub(crate) struct Pane {
    pub start: i64,
    pub keys: Vec<u8>,    // every group's encoded key, back to back
    pub ends: Vec<u32>,   // ends[i]: end of group i's key in keys
    pub vals: Vec<u64>,   // nm values per group
    marked: Vec<bool>,    // group i is in dirty
    // link[i]: the same key's group + 1 in the pane of the first global
    // window, 0 while unknown (see Groups::resolve)
    link: Vec<u32>,
    pub dirty: Vec<u32>,  // groups changed since the last flush
    // Open addressing: the key's hash's low 32 bits above the group index
    // + 1; 0 is empty. One load per probe tells most other keys apart.
    slots: Vec<u64>,
    pub sketches: Vec<Sketch>, // a distinct metric's value in vals is its index here
}

impl Pane {
    fn new(start: i64) -> Pane {
        Pane {
            start,
            keys: Vec::new(),
            ends: Vec::new(),
            vals: Vec::new(),
            marked: Vec::new(),
            link: Vec::new(),
            dirty: Vec::new(),
            slots: vec![0; 16],
            sketches: Vec::new(),
        }
    }

    pub fn len(&self) -> usize { self.ends.len() }

    #[inline]
    pub fn key(&self, g: usize) -> &[u8] {
        let from = if g == 0 { 0 } else { self.ends[g - 1] as usize };
        &self.keys[from..self.ends[g] as usize]
    }

    /// The group of key, or Err(the empty slot where it goes).
    #[inline(always)]
    pub fn lookup(&self, key: &[u8], h: u64) -> Result<usize, usize> {
        let mask = self.slots.len() - 1;
        let tag = h as u32;
        let mut i = tag as usize & mask;
        loop {
            let s = self.slots[i];
            if s == 0 {
                return Err(i);
            }
            if (s >> 32) as u32 == tag {
                let g = (s as u32 - 1) as usize;
                if key_eq(self.key(g), key) {
                    return Ok(g);
                }
            }
            i = (i + 1) & mask;
        }
    }

    pub fn insert(&mut self, key: &[u8], h: u64, slot: usize, idents: &[u64], distinct: &[usize]) -> usize {
        let g = self.ends.len();
        self.keys.extend_from_slice(key);
        self.ends.push(self.keys.len() as u32);
        self.vals.extend_from_slice(idents);
        for &j in distinct {
            self.vals[g * idents.len() + j] = self.sketches.len() as u64;
            self.sketches.push(Sketch::default());
        }
        self.marked.push(false);
        self.link.push(0);
        self.slots[slot] = (h as u32 as u64) << 32 | (g as u64 + 1);
        if 2 * self.ends.len() > self.slots.len() {
            let size = 2 * self.slots.len();
            let old = std::mem::replace(&mut self.slots, vec![0; size]);
            let mask = size - 1;
            for s in old.into_iter().filter(|&s| s != 0) {
                let mut i = (s >> 32) as usize & mask;
                while self.slots[i] != 0 {
                    i = (i + 1) & mask;
                }
                self.slots[i] = s;
            }
        }
        g
    }

    #[inline]
    pub fn touch(&mut self, g: usize) {
        if !self.marked[g] {
            self.marked[g] = true;
            self.dirty.push(g as u32);
        }
    }

    pub fn clean(&mut self) {
        for &g in &self.dirty {
            self.marked[g as usize] = false;
        }
        self.dirty.clear();
    }
}

/// Compares keys 8 bytes at a time: they are short, and a call to memcmp
/// costs more than the comparison.
#[inline(always)]
fn key_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut a, mut b) = (a, b);
    while a.len() >= 8 && b.len() >= 8 {
        if word(a) != word(b) {
            return false;
        }
        a = &a[8..];
        b = &b[8..];
    }
    tail(a) == tail(b)
}

#[inline(always)]
fn word(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_le_bytes(w)
}

/// The last bytes of a key (fewer than 8) as a little-endian word, in at
/// most three loads instead of a loop over bytes (a loop costs a meter check
/// per byte in Wasm).
#[inline(always)]
fn tail(b: &[u8]) -> u64 {
    let (mut t, mut sh, mut i) = (0u64, 0, 0);
    if b.len() & 4 != 0 {
        t = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64;
        sh = 32;
        i = 4;
    }
    if b.len() & 2 != 0 {
        t |= (u16::from_le_bytes([b[i], b[i + 1]]) as u64) << sh;
        sh += 16;
        i += 2;
    }
    if b.len() & 1 != 0 {
        t |= (b[i] as u64) << sh;
    }
    t
}

/// The Go SDK's hashKey: 8 bytes at a time, multiply-rotate.
#[inline]
pub(crate) fn hash_key(mut b: &[u8]) -> u64 {
    const M1: u64 = 0x9e37_79b9_7f4a_7c15;
    const M2: u64 = 0xc2b2_ae3d_27d4_eb4f;
    let mut h = (b.len() as u64).wrapping_mul(M1);
    while b.len() >= 8 {
        h = ((h ^ word(b)).wrapping_mul(M2)).rotate_left(31);
        b = &b[8..];
    }
    h = (h ^ tail(b)).wrapping_mul(M2);
    h ^= h >> 29;
    h = h.wrapping_mul(M1);
    h ^ (h >> 32)
}

pub(crate) struct WindowState {
    pub panes: Vec<Pane>, // in increasing start
    last: usize,          // index of the pane used last, the common case
    latest: i64,          // the latest start found for the last record's time
    have_latest: bool,
}

/// The groups of the deployment. Aggregators reach them through `at`.
pub struct Groups {
    pub(crate) windows: Vec<Window>,
    pub(crate) ws: Vec<WindowState>,
    pub(crate) metrics: Vec<(Type, Op)>,
    pub(crate) idents: Vec<u64>,
    pub(crate) distinct: Vec<usize>, // the distinct metrics
    pub(crate) key_types: Vec<Type>,
    key: Vec<u8>,
    targets: Vec<(u16, u32, u32)>, // (window, pane index, group)
    pub(crate) err: Option<Error>,
    /// The host's limit of groups per pane (`abi.Config.max_groups`); 0: none.
    pub(crate) max_groups: i64,
    link_w: usize, // the first global window, if one follows another window; else usize::MAX
}

impl Groups {
    pub(crate) fn new(windows: Vec<Window>, keys: &[(String, Type)], metrics: &[MetricDef]) -> Groups {
        let link_w = (1..windows.len()).find(|&w| windows[w].kind == WindowKind::Global).unwrap_or(usize::MAX);
        let ws = windows.iter().map(|_| WindowState { panes: Vec::new(), last: 0, latest: 0, have_latest: false }).collect();
        Groups {
            windows,
            ws,
            metrics: metrics.iter().map(|m| (m.ty, m.op)).collect(),
            idents: metrics.iter().map(|m| m.identity()).collect(),
            distinct: metrics.iter().enumerate().filter(|(_, m)| m.op == Op::Distinct).map(|(j, _)| j).collect(),
            key_types: keys.iter().map(|k| k.1).collect(),
            key: Vec::with_capacity(64),
            targets: Vec::new(),
            err: None,
            max_groups: 0,
            link_w,
        }
    }

    pub(crate) fn clear(&mut self) {
        for w in &mut self.ws {
            w.panes.clear();
            w.last = 0;
            w.have_latest = false;
        }
    }

    /// The index of window w's pane at start, created when missing.
    #[inline(always)]
    pub(crate) fn pane(&mut self, w: usize, start: i64) -> usize {
        let s = &self.ws[w];
        if s.last < s.panes.len() && s.panes[s.last].start == start {
            return s.last;
        }
        self.pane_slow(w, start)
    }

    #[inline(never)]
    fn pane_slow(&mut self, w: usize, start: i64) -> usize {
        let s = &mut self.ws[w];
        let i = match s.panes.binary_search_by(|p| p.start.cmp(&start)) {
            Ok(i) => i,
            Err(i) => {
                s.panes.insert(i, Pane::new(start));
                i
            }
        };
        s.last = i;
        i
    }

    /// Starts the group key of a record with event time ts. Fill the key
    /// columns in declared order with `Key`'s methods, then update metrics.
    #[inline]
    pub fn at(&mut self, ts: i64) -> Key<'_> {
        self.key.clear();
        Key { g: self, ts, col: 0, resolved: false, failed: false }
    }

    fn misuse(&mut self, msg: String) {
        if self.err.is_none() {
            self.err = Some(Error::new(msg));
        }
    }

    #[inline(always)]
    fn resolve(&mut self, ts: i64) -> bool {
        let h = hash_key(&self.key);
        self.targets.clear();
        // The record's first group, in a tumbling window, links to its group
        // in the first global window's one pane (it lives as long as the
        // panes do): a key seen again in the same pane skips the second
        // lookup.
        let mut lp: Option<(usize, usize, usize)> = None; // (window, pane, group)
        for w in 0..self.windows.len() {
            let (kind, size, slide) = (self.windows[w].kind, self.windows[w].size_ms, self.windows[w].slide());
            if kind == WindowKind::Global {
                match lp {
                    Some((lw, lpi, lg)) if w == self.link_w => {
                        let l = self.ws[lw].panes[lpi].link[lg];
                        if l != 0 {
                            let pi = self.pane(w, 0);
                            let p = &mut self.ws[w].panes[pi];
                            p.touch(l as usize - 1);
                            self.targets.push((w as u16, pi as u32, l - 1));
                        } else if let Some(g) = self.target(w, 0, h) {
                            self.ws[lw].panes[lpi].link[lg] = g as u32 + 1;
                        }
                    }
                    _ => {
                        self.target(w, 0, h);
                    }
                }
                continue;
            }
            // The latest start at or before ts, then earlier ones while they
            // still hold ts (abi.Window.Starts). Records come mostly in time
            // order: reuse the last latest start while ts lies within one
            // slide of it, and divide otherwise.
            let st = &mut self.ws[w];
            let latest = if st.have_latest && (ts as u64).wrapping_sub(st.latest as u64) < slide as u64 {
                st.latest
            } else {
                let m = ts.rem_euclid(slide);
                if ts < i64::MIN + m {
                    continue; // no window holds ts (the host dead-letters it)
                }
                st.latest = ts - m;
                st.have_latest = true;
                st.latest
            };
            if kind == WindowKind::Tumbling {
                // size == slide: the one window
                let g = self.target(w, latest, h);
                if lp.is_none() {
                    if let Some(g) = g {
                        lp = Some((w, self.targets[self.targets.len() - 1].1 as usize, g));
                    }
                }
                continue;
            }
            if kind == WindowKind::Hopping {
                // Create the panes first: inserting one moves the later
                // ones, whose indexes the targets hold.
                let mut s = latest;
                while ts - s < size {
                    self.pane(w, s);
                    if s < i64::MIN + slide {
                        break;
                    }
                    s -= slide;
                }
            }
            let mut s = latest;
            while ts - s < size {
                self.target(w, s, h);
                if s < i64::MIN + slide {
                    break;
                }
                s -= slide;
            }
        }
        self.err.is_none()
    }

    /// Finds (or creates) the key's group in window w's pane at start and
    /// makes it a target; None on the host's limit.
    #[inline(always)]
    fn target(&mut self, w: usize, start: i64, h: u64) -> Option<usize> {
        let pi = self.pane(w, start);
        let max = self.max_groups;
        let p = &mut self.ws[w].panes[pi];
        let g = match p.lookup(&self.key, h) {
            Ok(g) => g,
            Err(_) if max > 0 && p.len() as i64 >= max => {
                let name = &self.windows[w].name;
                self.misuse(format!(
                    "wagg: too many groups in one pane: window {:?}, pane at {} holds {} groups, the host's limit (sandbox.max_groups_per_pane)",
                    name, start, max
                ));
                return None;
            }
            Err(slot) => p.insert(&self.key, h, slot, &self.idents, &self.distinct),
        };
        p.touch(g);
        self.targets.push((w as u16, pi as u32, g as u32));
        Some(g)
    }
}

/// A group key being built; see `Groups::at`.
pub struct Key<'g> {
    g: &'g mut Groups,
    ts: i64,
    col: usize,
    resolved: bool,
    failed: bool,
}

impl<'g> Key<'g> {
    #[inline(always)]
    fn next(&mut self, ty: Type, method: &str) -> bool {
        if !self.failed && !self.resolved && self.col < self.g.key_types.len() && self.g.key_types[self.col] == ty {
            self.col += 1;
            return true;
        }
        self.misuse(ty, method)
    }

    #[inline(never)]
    fn misuse(&mut self, ty: Type, method: &str) -> bool {
        if self.failed {
            return false;
        }
        let msg = if self.resolved {
            format!("wagg: Key::{} after add: fill every key column first", method)
        } else if self.col >= self.g.key_types.len() {
            format!("wagg: Key::{} fills key column {}, but the spec declares {}", method, self.col, self.g.key_types.len())
        } else {
            format!("wagg: key column {} is declared {}, but Key::{} filled it", self.col, self.g.key_types[self.col].name(), method)
        };
        let _ = ty;
        self.failed = true;
        self.g.misuse(msg);
        false
    }

    /// Fills the next key column, declared `key_int64`.
    #[inline(always)]
    pub fn int64(mut self, v: i64) -> Self {
        if self.next(Type::Int64, "int64") {
            self.g.key.extend_from_slice(&v.to_le_bytes());
        }
        self
    }
    /// Fills the next key column, declared `key_float64`.
    #[inline]
    pub fn float64(mut self, v: f64) -> Self {
        if self.next(Type::Float64, "float64") {
            self.g.key.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        self
    }
    /// Fills the next key column, declared `key_string`.
    #[inline(always)]
    pub fn string(mut self, v: &[u8]) -> Self {
        if self.next(Type::String, "string") {
            let key = &mut self.g.key;
            key.reserve(4 + v.len());
            key.extend_from_slice(&(v.len() as u32).to_le_bytes());
            // short: words and a tail of constant-size copies, no memcpy call
            let mut words = v.chunks_exact(8);
            for w in &mut words {
                key.extend_from_slice(&word(w).to_le_bytes());
            }
            let r = words.remainder();
            let mut i = 0;
            if r.len() & 4 != 0 {
                key.extend_from_slice(&[r[0], r[1], r[2], r[3]]);
                i = 4;
            }
            if r.len() & 2 != 0 {
                key.extend_from_slice(&[r[i], r[i + 1]]);
                i += 2;
            }
            if r.len() & 1 != 0 {
                key.push(r[i]);
            }
        }
        self
    }

    fn resolve(&mut self, m: Metric, float: bool) -> bool {
        self.resolve_as(m, if float { Want::Float } else { Want::Int })
    }

    fn resolve_as(&mut self, m: Metric, want: Want) -> bool {
        let float = want == Want::Float;
        if self.failed {
            return false;
        }
        if !self.resolved {
            self.resolved = true;
            if self.col != self.g.key_types.len() {
                self.failed = true;
                self.g.misuse(format!("wagg: add before key column {} was filled ({} of {} filled)", self.col, self.col, self.g.key_types.len()));
                return false;
            }
            if !self.g.resolve(self.ts) {
                self.failed = true;
                return false;
            }
        }
        match self.g.metrics.get(m.0) {
            None => {
                self.g.misuse(format!("wagg: metric {} is not one of the spec's", m.0));
                false
            }
            Some(&(_, op)) if (op == Op::Distinct) != (want == Want::Distinct) => {
                let how = if want == Want::Distinct { "a distinct metric's, use add or add_float" } else { "distinct, use add_distinct" };
                self.g.misuse(format!("wagg: metric {} is not {}", m.0, how));
                false
            }
            Some(&(ty, _)) if (ty == Type::Float64) != float => {
                self.g.misuse(format!("wagg: metric {} is {}, use {}", m.0, ty.name(), if float { "add" } else { "add_float" }));
                false
            }
            _ => true,
        }
    }

    /// Folds an int64 value into an int64 metric of the key's groups: a
    /// count or sum adds it, a min or max keeps the extreme.
    #[inline(always)]
    pub fn add(mut self, m: Metric, v: i64) -> Self {
        if self.resolve(m, false) {
            let nm = self.g.metrics.len();
            let op = self.g.metrics[m.0].1;
            let Groups { ws, targets, .. } = &mut *self.g;
            for &(w, p, g) in targets.iter() {
                let val = &mut ws[w as usize].panes[p as usize].vals[g as usize * nm + m.0];
                let cur = *val as i64;
                *val = match op {
                    Op::Min => cur.min(v),
                    Op::Max => cur.max(v),
                    Op::Add | Op::Avg | Op::Distinct => cur.wrapping_add(v),
                } as u64;
            }
        }
        self
    }

    /// Folds a float64 value into a float64 metric.
    #[inline]
    pub fn add_float(mut self, m: Metric, v: f64) -> Self {
        if self.resolve(m, true) {
            let nm = self.g.metrics.len();
            let op = self.g.metrics[m.0].1;
            let Groups { ws, targets, .. } = &mut *self.g;
            for &(w, p, g) in targets.iter() {
                let vals = &mut ws[w as usize].panes[p as usize].vals;
                let j = g as usize * nm + m.0;
                let cur = f64::from_bits(vals[j]);
                vals[j] = match op {
                    Op::Min => go_min(cur, v),
                    Op::Max => go_max(cur, v),
                    Op::Add | Op::Avg | Op::Distinct => cur + v,
                }
                .to_bits();
                if op == Op::Avg {
                    vals[j + 1] += 1; // the count follows the sum
                }
            }
        }
        self
    }
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Want {
    Int,
    Float,
    Distinct,
}

impl<'g> Key<'g> {
    /// Folds an int64 value (hashed as its 8 little-endian bytes) into a
    /// distinct metric of the key's groups.
    #[inline]
    pub fn add_distinct(self, m: Metric, v: i64) -> Self { self.add_distinct_hash(m, sketch_hash(&v.to_le_bytes())) }

    /// Folds a string value into a distinct metric of the key's groups.
    #[inline]
    pub fn add_distinct_string(self, m: Metric, v: &[u8]) -> Self { self.add_distinct_hash(m, sketch_hash(v)) }

    fn add_distinct_hash(mut self, m: Metric, h: u64) -> Self {
        if self.resolve_as(m, Want::Distinct) {
            let nm = self.g.metrics.len();
            let Groups { ws, targets, .. } = &mut *self.g;
            for &(w, p, g) in targets.iter() {
                let p = &mut ws[w as usize].panes[p as usize];
                let i = p.vals[g as usize * nm + m.0] as usize;
                p.sketches[i].add_hash(h);
            }
        }
        self
    }
}

/// Go's math.Min: NaN wins, -0 is below +0.
fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        return if a.is_nan() { a } else { b };
    }
    if a == 0.0 && b == 0.0 {
        return if a.is_sign_negative() { a } else { b };
    }
    if a < b { a } else { b }
}

/// Go's math.Max: NaN wins, +0 is above -0.
fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        return if a.is_nan() { a } else { b };
    }
    if a == 0.0 && b == 0.0 {
        return if a.is_sign_negative() { b } else { a };
    }
    if a > b { a } else { b }
}
