//! The state: per window of the deployment, per window start (a pane), per
//! group key, the metric values. Laid out as the Go and C SDKs lay it out so
//! that the same input gives the same rows and snapshots, byte for byte:
//! groups in creation order, changed groups in the order first touched.

use std::ptr;

use crate::columns::Scratch;
use crate::sketch::{hash as sketch_hash, Sketch};
use crate::spec::{MetricDef, Op, Type, Window, WindowKind};
use crate::{Error, Metric};

/// Bytes kept readable past the start of any key, in a pane's keys and in
/// the key being built: `same_key` reads a key's first three words at once.
pub(crate) const KEY_SLACK: usize = 24;

pub(crate) struct Pane {
    pub start: i64,
    // every group's encoded key, each 8-aligned and zero-padded to 8 bytes
    // (compared by whole words), then KEY_SLACK bytes
    pub keys: Vec<u8>,
    // kpos[i]: group i's key, its offset in keys | its length << 32: one load
    pub(crate) kpos: Vec<u64>,
    pub vals: Vec<u64>,           // nm values per group
    pub(crate) marked: Vec<bool>, // group i is in dirty
    // link[i]: the same key's group + 1 in the pane of the first global
    // window, 0 while unknown (see Groups::resolve)
    pub(crate) link: Vec<u32>,
    pub dirty: Vec<u32>, // groups changed since the last flush
    // Open addressing: the key's hash's low 32 bits above the group index
    // + 1; 0 is empty. One load per probe tells most other keys apart.
    pub(crate) slots: Vec<u64>,
    pub sketches: Vec<Sketch>, // a distinct metric's value in vals is its index here
}

impl Pane {
    fn new(start: i64) -> Pane {
        Pane {
            start,
            keys: vec![0; KEY_SLACK],
            kpos: Vec::new(),
            vals: Vec::new(),
            marked: Vec::new(),
            link: Vec::new(),
            dirty: Vec::new(),
            slots: vec![0; 16],
            sketches: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.kpos.len()
    }

    #[inline]
    pub fn key(&self, g: usize) -> &[u8] {
        let e = self.kpos[g];
        let from = e as u32 as usize;
        &self.keys[from..from + (e >> 32) as usize]
    }

    /// The group of the key of n bytes at the start of key, or Err(the
    /// empty slot where it goes). The key is zero-padded to 8 bytes and
    /// followed by at least KEY_SLACK bytes (`padded_key`).
    #[inline(always)]
    pub fn lookup(&self, key: &[u8], n: usize, h: u64) -> Result<usize, usize> {
        // The probe reads without bounds checks, by the table's invariants
        // (in Wasm a check is a reload of the vector's length, a compare and
        // a branch, on top of the access's own check).
        assert!(
            key.len() >= KEY_SLACK.max((n + 7) & !7),
            "wagg: a lookup key without its padding"
        );
        let mask = self.slots.len() - 1;
        let tag = h as u32;
        let mut i = tag as usize & mask;
        loop {
            // SAFETY: i <= mask < slots.len(), a power of two.
            let s = unsafe { *self.slots.get_unchecked(i) };
            if s == 0 {
                return Err(i);
            }
            if (s >> 32) as u32 == tag {
                let g = (s as u32 - 1) as usize;
                // SAFETY: a slot holds only the index + 1 of a group of
                // this pane, and every group's key is followed by
                // KEY_SLACK bytes of keys (insert).
                let (e, k) = unsafe {
                    let e = *self.kpos.get_unchecked(g);
                    (e, self.keys.get_unchecked(e as u32 as usize..))
                };
                // SAFETY: k is a key of this pane (above), key is padded
                // and readable as checked before the loop.
                if (e >> 32) as usize == n && unsafe { same_key(k.as_ptr(), key.as_ptr(), n) } {
                    return Ok(g);
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds the group of the key of n bytes at the start of key, which is
    /// zero-padded to 8 bytes and readable that far (as lookup takes it),
    /// in the empty slot lookup found. The key is copied by words and the
    /// values written in place: in Wasm a memcpy or memset is a call and a
    /// loop a few bytes at a time.
    pub fn insert(
        &mut self,
        key: &[u8],
        n: usize,
        h: u64,
        slot: usize,
        idents: &[u64],
        distinct: &[usize],
    ) -> usize {
        let g = self.kpos.len();
        let from = self.keys.len() - KEY_SLACK;
        let w = (n + 7) / 8 * 8;
        let key = &key[..w];
        self.keys.reserve(w);
        self.vals.reserve(idents.len());
        // SAFETY: keys has room for w more bytes (reserve): the key's words
        // go at from, over the old slack, and KEY_SLACK zero bytes after
        // them; vals has room for idents.
        unsafe {
            let d = self.keys.as_mut_ptr().add(from);
            for (i, c) in key.chunks_exact(8).enumerate() {
                ptr::copy_nonoverlapping(c.as_ptr(), d.add(8 * i), 8);
            }
            ptr::write_bytes(d.add(w), 0, KEY_SLACK);
            self.keys.set_len(from + w + KEY_SLACK);
            let v = self.vals.as_mut_ptr().add(self.vals.len());
            for (i, &x) in idents.iter().enumerate() {
                *v.add(i) = x;
            }
            self.vals.set_len(self.vals.len() + idents.len());
        }
        self.kpos.push((n as u64) << 32 | from as u64);
        for &j in distinct {
            self.vals[g * idents.len() + j] = self.sketches.len() as u64;
            self.sketches.push(Sketch::default());
        }
        self.marked.push(false);
        self.link.push(0);
        self.slots[slot] = (h as u32 as u64) << 32 | (g as u64 + 1);
        if 2 * self.kpos.len() > self.slots.len() {
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

    /// Writes the rows of window w's changed groups (all of them when fin)
    /// into out from pos (at most its length), growing it as needed, and
    /// returns the end and the number of rows. For metrics without a
    /// sketch. Each row is reserved once (room, not zeroed bytes) and
    /// written in place, a key copied by words, the first three in one copy
    /// (keys are zero-padded and readable for KEY_SLACK bytes): in Wasm
    /// every push would check the capacity, and a loop iteration pays a
    /// meter check. What a copy writes past the key the values overwrite,
    /// or it lies past the rows.
    pub(crate) fn put_rows(
        &self,
        out: &mut Vec<u8>,
        mut pos: usize,
        w: u8,
        fin: bool,
        nm: usize,
    ) -> (usize, u32) {
        let n = if fin { self.len() } else { self.dirty.len() };
        let mut head = [0u8; 10];
        head[0] = w;
        head[1] = fin as u8;
        head[2..].copy_from_slice(&self.start.to_le_bytes());
        for i in 0..n {
            let g = if fin { i } else { self.dirty[i] as usize };
            let e = self.kpos[g];
            let (from, kl) = (e as u32 as usize, (e >> 32) as usize);
            let need = 10 + kl + KEY_SLACK + 8 * nm;
            if out.capacity() < pos + need {
                // room, not zeroed bytes: a row's bytes are all written
                // below (in Wasm zeroing is a loop of 4-byte stores)
                out.reserve(pos + need - out.len());
            }
            let k = &self.keys[from..from + KEY_SLACK];
            let v = &self.vals[g * nm..(g + 1) * nm];
            // SAFETY: out has room for need bytes from pos, written through
            // the pointer, initialized or not.
            unsafe {
                let r = out.as_mut_ptr().add(pos);
                ptr::copy_nonoverlapping(head.as_ptr(), r, 10);
                ptr::copy_nonoverlapping(k.as_ptr(), r.add(10), KEY_SLACK);
                let mut j = 24;
                while j < kl {
                    let w = &self.keys[from + j..from + j + 8];
                    ptr::copy_nonoverlapping(w.as_ptr(), r.add(10 + j), 8);
                    j += 8;
                }
                let d = r.add(10 + kl);
                for (m, &x) in v.iter().enumerate() {
                    ptr::write_unaligned(d.add(8 * m) as *mut u64, x.to_le());
                }
            }
            pos += 10 + kl + 8 * nm;
        }
        if out.len() < pos {
            // SAFETY: pos was at most out.len() on entry, and every byte
            // from there to pos is a row's, written above.
            unsafe { out.set_len(pos) };
        }
        (pos, n as u32)
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

/// Whether the keys of n bytes at a and b are equal. Both are zero-padded
/// to 8 bytes and readable for KEY_SLACK bytes (the callers' safety
/// condition); they are compared by words, the first three without a
/// branch (in Wasm each branch starts a block whose loads are checked
/// again).
#[inline(always)]
pub(crate) unsafe fn same_key(a: *const u8, b: *const u8, n: usize) -> bool {
    let w = |p: *const u8, i: usize| ptr::read_unaligned(p.add(i) as *const u64);
    let mask = |on: bool| 0u64.wrapping_sub(on as u64);
    let mut d = (w(a, 16) ^ w(b, 16)) & mask(n > 16);
    d |= (w(a, 8) ^ w(b, 8)) & mask(n > 8);
    d |= (w(a, 0) ^ w(b, 0)) & mask(n > 0);
    let mut i = 24;
    while d == 0 && i < n {
        d |= w(a, i) ^ w(b, i);
        i += 8;
    }
    d == 0
}

/// A copy of key zero-padded to 8 bytes and followed by KEY_SLACK bytes, as
/// `Pane::lookup` takes it.
pub(crate) fn padded_key(key: &[u8]) -> Vec<u8> {
    let mut b = key.to_vec();
    b.resize((key.len() + 7) / 8 * 8 + KEY_SLACK, 0);
    b
}

#[inline(always)]
fn word(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_le_bytes(w)
}

/// The last bytes of a string (fewer than 8) as a little-endian word, in at
/// most three loads instead of a loop over bytes (a loop costs a meter check
/// per byte in Wasm).
#[inline(always)]
pub(crate) fn tail(b: &[u8]) -> u64 {
    let (mut t, mut sh, mut i) = (0u64, 0, 0);
    if b.len() & 4 != 0 {
        t = u32::from_le_bytes(b[..4].try_into().unwrap()) as u64;
        sh = 32;
        i = 4;
    }
    if b.len() & 2 != 0 {
        t |= (u16::from_le_bytes(b[i..i + 2].try_into().unwrap()) as u64) << sh;
        sh += 16;
        i += 2;
    }
    if b.len() & 1 != 0 {
        t |= (b[i] as u64) << sh;
    }
    t
}

/// The key's hash: the words of its columns (a string's length, then its
/// bytes 8 at a time and a tail) folded by multiply-rotate as `Key` fills
/// them, then mixed with the key's length. `hash_key` computes the same from
/// a key's bytes, for a restored group.
const M1: u64 = 0x9e37_79b9_7f4a_7c15;
const M2: u64 = 0xc2b2_ae3d_27d4_eb4f;

#[inline(always)]
pub(crate) fn hash_word(h: u64, w: u64) -> u64 {
    ((h ^ w).wrapping_mul(M2)).rotate_left(31)
}

#[inline(always)]
pub(crate) fn hash_end(h: u64, n: usize) -> u64 {
    let mut h = (h ^ n as u64).wrapping_mul(M1);
    h ^= h >> 29;
    h = h.wrapping_mul(M2);
    h ^ (h >> 32)
}

/// The hash of a key, valid for the key columns `types`.
pub(crate) fn hash_key(key: &[u8], types: &[Type]) -> u64 {
    let (mut h, mut b) = (0u64, key);
    for &t in types {
        if t != Type::String {
            h = hash_word(h, word(b));
            b = &b[8..];
            continue;
        }
        let n = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        h = hash_word(h, n as u64);
        let mut s = &b[4..4 + n];
        while s.len() >= 8 {
            h = hash_word(h, word(s));
            s = &s[8..];
        }
        h = hash_word(h, tail(s));
        b = &b[4 + n..];
    }
    hash_end(h, key.len())
}

pub(crate) struct WindowState {
    pub panes: Vec<Pane>, // in increasing start
    last: usize,          // index of the pane used last, the common case
    latest: i64,          // the latest start found for the last record's time
    // the slide once latest is set, else 0: a record's time within span of
    // latest has the same latest
    span: i64,
    // the window's kind and lengths, copied here: one place for resolve
    pub(crate) kind: WindowKind,
    pub(crate) size: i64,
    pub(crate) slide: i64,
}

impl WindowState {
    /// The index of the pane at start, created when missing.
    #[inline(always)]
    pub(crate) fn pane(&mut self, start: i64) -> usize {
        if self.last < self.panes.len() && self.panes[self.last].start == start {
            return self.last;
        }
        self.pane_slow(start)
    }

    #[inline(never)]
    fn pane_slow(&mut self, start: i64) -> usize {
        let i = match self.panes.binary_search_by(|p| p.start.cmp(&start)) {
            Ok(i) => i,
            Err(i) => {
                self.panes.insert(i, Pane::new(start));
                i
            }
        };
        self.last = i;
        i
    }
}

/// The groups of the deployment. Aggregators reach them through `columns`
/// (a batch at a time) or `at` (a record at a time).
pub struct Groups {
    pub(crate) windows: Vec<Window>,
    pub(crate) ws: Vec<WindowState>,
    pub(crate) metrics: Vec<(Type, Op)>,
    pub(crate) idents: Vec<u64>,
    pub(crate) distinct: Vec<usize>, // the distinct metrics
    pub(crate) key_types: Vec<Type>,
    // The key being built, its length in `Key`. The buffer always holds
    // key_room bytes past it: every int64 or float64 column fits, a string's
    // tail may be written as a whole word, the key padded and compared by
    // words (KEY_SLACK), so only a string column checks for room.
    key: Vec<u8>,
    key_room: usize,
    targets: Vec<(u16, u32, u32)>, // (window, pane index, group)
    pub(crate) scratch: Scratch,   // Columns' buffers, kept across batches
    pub(crate) err: Option<Error>,
    /// The host's limit of groups per pane (`abi.Config.max_groups`); 0: none.
    pub(crate) max_groups: i64,
    pub(crate) link_w: usize, // the first global window, if one follows another window; else usize::MAX
}

impl Groups {
    pub(crate) fn new(
        windows: Vec<Window>,
        keys: &[(String, Type)],
        metrics: &[MetricDef],
    ) -> Groups {
        let link_w = (1..windows.len())
            .find(|&w| windows[w].kind == WindowKind::Global)
            .unwrap_or(usize::MAX);
        let ws = windows
            .iter()
            .map(|w| WindowState {
                panes: Vec::new(),
                last: 0,
                latest: 0,
                span: 0,
                kind: w.kind,
                size: w.size_ms,
                slide: w.slide(),
            })
            .collect();
        let key_room = 8 * keys.len() + 8 + KEY_SLACK;
        Groups {
            windows,
            ws,
            metrics: metrics.iter().map(|m| (m.ty, m.op)).collect(),
            idents: metrics.iter().map(|m| m.identity()).collect(),
            distinct: metrics
                .iter()
                .enumerate()
                .filter(|(_, m)| m.op == Op::Distinct)
                .map(|(j, _)| j)
                .collect(),
            key_types: keys.iter().map(|k| k.1).collect(),
            key: vec![0; key_room.max(64)],
            key_room,
            targets: Vec::new(),
            scratch: Scratch::default(),
            err: None,
            max_groups: 0,
            link_w,
        }
    }

    pub(crate) fn clear(&mut self) {
        for w in &mut self.ws {
            w.panes.clear();
            w.last = 0;
            w.span = 0;
        }
    }

    /// The index of window w's pane at start, created when missing.
    #[inline(always)]
    pub(crate) fn pane(&mut self, w: usize, start: i64) -> usize {
        self.ws[w].pane(start)
    }

    /// Starts the group key of a record with event time ts. Fill the key
    /// columns in declared order with `Key`'s methods, then update metrics.
    #[inline]
    pub fn at(&mut self, ts: i64) -> Key<'_> {
        Key {
            g: self,
            ts,
            col: 0,
            resolved: false,
            failed: false,
            h: 0,
            len: 0,
        }
    }

    pub(crate) fn misuse(&mut self, msg: String) {
        if self.err.is_none() {
            self.err = Some(Error::new(msg));
        }
    }

    /// Finds (or creates) the groups of the key of n bytes (hashed so far
    /// h) in every window holding ts and keeps them as the record's
    /// targets. With `add` = Some((metric, v)), the record's first add of a
    /// sum is applied as the groups are found: in Wasm reading the targets
    /// back costs checked loads.
    #[inline(always)]
    fn resolve(&mut self, ts: i64, n: usize, h: u64, add: Option<(usize, i64)>) -> bool {
        let h = hash_end(h, n);
        self.key[n..n + 8].copy_from_slice(&[0; 8]); // the pad to 8 bytes
        self.targets.clear();
        let nm = self.metrics.len();
        // The record's first group, in a tumbling window, links to its group
        // in the first global window's one pane (it lives as long as the
        // panes do): a key seen again in the same pane skips the second
        // lookup.
        let mut lp: Option<(usize, usize, usize)> = None; // (window, pane, group)
        for w in 0..self.ws.len() {
            let st = &self.ws[w];
            let (kind, size, slide) = (st.kind, st.size, st.slide);
            if kind == WindowKind::Global {
                // the window's one pane, at start 0
                let pi = if st.panes.is_empty() {
                    self.ws[w].pane_slow(0)
                } else {
                    0
                };
                match lp {
                    Some((lw, lpi, lg)) if w == self.link_w => {
                        let l = self.ws[lw].panes[lpi].link[lg];
                        if l != 0 {
                            let p = &mut self.ws[w].panes[pi];
                            let g = l as usize - 1;
                            p.touch(g);
                            if let Some((m, v)) = add {
                                let val = &mut p.vals[g * nm + m];
                                *val = val.wrapping_add(v as u64);
                            }
                            self.targets.push((w as u16, pi as u32, l - 1));
                        } else if let Some(g) = self.target(w, pi, h, n, add) {
                            self.ws[lw].panes[lpi].link[lg] = g as u32 + 1;
                        }
                    }
                    _ => {
                        self.target(w, pi, h, n, add);
                    }
                }
                continue;
            }
            // The latest start at or before ts, then earlier ones while they
            // still hold ts (abi.Window.Starts). Records come mostly in time
            // order: reuse the last latest start while ts lies within one
            // slide of it, and divide otherwise. (The difference alone would
            // wrap: i64::MIN + 1 lies "within" a slide of a start near
            // i64::MAX.)
            let st = &mut self.ws[w];
            let latest =
                if ts >= st.latest && (ts as u64).wrapping_sub(st.latest as u64) < st.span as u64 {
                    st.latest
                } else {
                    let m = ts.rem_euclid(slide);
                    if ts < i64::MIN + m {
                        continue; // no window holds ts (the host dead-letters it)
                    }
                    st.latest = ts - m;
                    st.span = slide;
                    st.latest
                };
            if kind == WindowKind::Tumbling {
                // size == slide: the one window
                let pi = self.pane(w, latest);
                if let Some(g) = self.target(w, pi, h, n, add) {
                    if lp.is_none() {
                        lp = Some((w, pi, g));
                    }
                }
                continue;
            }
            // Hopping: create the panes first, inserting one moves the
            // later ones, whose indexes the targets hold.
            let mut s = latest;
            while ts - s < size {
                self.pane(w, s);
                if s < i64::MIN + slide {
                    break;
                }
                s -= slide;
            }
            let mut s = latest;
            while ts - s < size {
                let pi = self.pane(w, s);
                self.target(w, pi, h, n, add);
                if s < i64::MIN + slide {
                    break;
                }
                s -= slide;
            }
        }
        self.err.is_none()
    }

    /// Finds (or creates) the key's group in window w's pane pi, makes it
    /// a target and applies add to it (see resolve); None on the host's
    /// limit.
    #[inline(always)]
    fn target(
        &mut self,
        w: usize,
        pi: usize,
        h: u64,
        n: usize,
        add: Option<(usize, i64)>,
    ) -> Option<usize> {
        let (max, nm) = (self.max_groups, self.metrics.len());
        let p = &mut self.ws[w].panes[pi];
        let g = match p.lookup(&self.key, n, h) {
            Ok(g) => g,
            Err(_) if max > 0 && p.len() as i64 >= max => {
                let start = p.start;
                too_many_groups(self, w, start, max);
                return None;
            }
            Err(slot) => p.insert(&self.key, n, h, slot, &self.idents, &self.distinct),
        };
        p.touch(g);
        if let Some((m, v)) = add {
            let val = &mut p.vals[g * nm + m];
            *val = val.wrapping_add(v as u64);
        }
        self.targets.push((w as u16, pi as u32, g as u32));
        Some(g)
    }
}

/// Reports the host's limit of groups in a pane reached. Out of line, its
/// arguments by value: formatting them in place would keep them in memory on
/// the common path.
#[inline(never)]
pub(crate) fn too_many_groups(g: &mut Groups, w: usize, start: i64, max: i64) {
    let msg = format!(
        "wagg: too many groups in one pane: window {:?}, pane at {} holds {} groups, the host's limit (sandbox.max_groups_per_pane)",
        g.windows[w].name, start, max
    );
    g.misuse(msg);
}

/// Reports a key column filled out of turn. It takes the key's fields by
/// value: taking the key's address would keep it in memory instead of
/// registers on the common path.
#[inline(never)]
fn column_misuse(g: &mut Groups, col: usize, resolved: bool, method: &str) {
    let n = g.key_types.len();
    let msg = if resolved {
        format!(
            "wagg: Key::{} after add: fill every key column first",
            method
        )
    } else if col >= n {
        format!(
            "wagg: Key::{} fills key column {}, but the spec declares {}",
            method, col, n
        )
    } else {
        format!(
            "wagg: key column {} is declared {}, but Key::{} filled it",
            col,
            g.key_types[col].name(),
            method
        )
    };
    g.misuse(msg);
}

/// Reports an add before every key column was filled (see column_misuse).
#[inline(never)]
fn add_misuse(g: &mut Groups, col: usize) {
    let n = g.key_types.len();
    g.misuse(format!(
        "wagg: add before key column {} was filled ({} of {} filled)",
        col, col, n
    ));
}

/// A group key being built; see `Groups::at`. Its state lives in the value
/// (registers, once inlined), not in the groups: in Wasm every load and
/// store of linear memory is bounds-checked.
pub struct Key<'g> {
    g: &'g mut Groups,
    ts: i64,
    col: usize,
    resolved: bool,
    failed: bool,
    h: u64,     // the key's hash so far
    len: usize, // the key's length so far
}

impl<'g> Key<'g> {
    #[inline(always)]
    fn next(&mut self, ty: Type, method: &str) -> bool {
        if !self.failed
            && !self.resolved
            && self.col < self.g.key_types.len()
            && self.g.key_types[self.col] == ty
        {
            self.col += 1;
            return true;
        }
        if !self.failed {
            self.failed = true;
            column_misuse(self.g, self.col, self.resolved, method);
        }
        false
    }

    /// Appends an int64 or float64 column (the buffer has room for it).
    #[inline(always)]
    fn word(&mut self, v: u64) {
        let l = self.len;
        self.g.key[l..l + 8].copy_from_slice(&v.to_le_bytes());
        self.len = l + 8;
        self.h = hash_word(self.h, v);
    }

    /// Fills the next key column, declared `key_int64`.
    #[inline(always)]
    pub fn int64(mut self, v: i64) -> Self {
        if self.next(Type::Int64, "int64") {
            self.word(v as u64);
        }
        self
    }
    /// Fills the next key column, declared `key_float64`.
    #[inline]
    pub fn float64(mut self, v: f64) -> Self {
        if self.next(Type::Float64, "float64") {
            self.word(v.to_bits());
        }
        self
    }
    /// Fills the next key column, declared `key_string`.
    #[inline(always)]
    pub fn string(mut self, v: &[u8]) -> Self {
        if self.next(Type::String, "string") {
            let (l, n) = (self.len, v.len());
            let room = self.g.key_room;
            let key = &mut self.g.key;
            if key.len() < l + 4 + n + room {
                key.resize(l + 4 + n + room, 0);
            }
            // one slice for the column: its length is then a register, not
            // the buffer's, reloaded after every store
            let dst = &mut key[l..l + 4 + n + 8];
            dst[..4].copy_from_slice(&(n as u32).to_le_bytes());
            let mut h = hash_word(self.h, n as u64);
            // copied and hashed in one pass, by words; the tail written as a
            // whole word (the room is there), one store instead of up to
            // three
            let (mut d, mut s) = (4, v);
            while s.len() >= 8 {
                let w = word(s);
                dst[d..d + 8].copy_from_slice(&w.to_le_bytes());
                h = hash_word(h, w);
                d += 8;
                s = &s[8..];
            }
            let t = tail(s);
            dst[d..d + 8].copy_from_slice(&t.to_le_bytes());
            self.h = hash_word(h, t);
            self.len = l + 4 + n;
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
                add_misuse(self.g, self.col);
                return false;
            }
            if !self.g.resolve(self.ts, self.len, self.h, None) {
                self.failed = true;
                return false;
            }
        }
        match self.g.metrics.get(m.0) {
            None => {
                self.g
                    .misuse(format!("wagg: metric {} is not one of the spec's", m.0));
                false
            }
            Some(&(_, op)) if (op == Op::Distinct) != (want == Want::Distinct) => {
                let how = if want == Want::Distinct {
                    "a distinct metric's, use add or add_float"
                } else {
                    "distinct, use add_distinct"
                };
                self.g
                    .misuse(format!("wagg: metric {} is not {}", m.0, how));
                false
            }
            Some(&(ty, _)) if (ty == Type::Float64) != float => {
                self.g.misuse(format!(
                    "wagg: metric {} is {}, use {}",
                    m.0,
                    ty.name(),
                    if float { "add" } else { "add_float" }
                ));
                false
            }
            _ => true,
        }
    }

    /// Folds an int64 value into an int64 metric of the key's groups: a
    /// count or sum adds it, a min or max keeps the extreme.
    #[inline(always)]
    pub fn add(mut self, m: Metric, v: i64) -> Self {
        // The record's first add of an int64 sum: applied as the groups are
        // resolved.
        if !self.resolved
            && !self.failed
            && self.col == self.g.key_types.len()
            && self.g.metrics.get(m.0) == Some(&(Type::Int64, Op::Add))
        {
            self.resolved = true;
            if !self.g.resolve(self.ts, self.len, self.h, Some((m.0, v))) {
                self.failed = true;
            }
            return self;
        }
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
    pub fn add_distinct(self, m: Metric, v: i64) -> Self {
        self.add_distinct_hash(m, sketch_hash(&v.to_le_bytes()))
    }

    /// Folds a string value into a distinct metric of the key's groups.
    #[inline]
    pub fn add_distinct_string(self, m: Metric, v: &[u8]) -> Self {
        self.add_distinct_hash(m, sketch_hash(v))
    }

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
pub(crate) fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        return if a.is_nan() { a } else { b };
    }
    if a == 0.0 && b == 0.0 {
        return if a.is_sign_negative() { a } else { b };
    }
    if a < b {
        a
    } else {
        b
    }
}

/// Go's math.Max: NaN wins, +0 is above -0.
pub(crate) fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        return if a.is_nan() { a } else { b };
    }
    if a == 0.0 && b == 0.0 {
        return if a.is_sign_negative() { b } else { a };
    }
    if a > b {
        a
    } else {
        b
    }
}
