//! The engine behind the exports and `Local`: config, batches in, rows and
//! snapshots out, in the encodings of `abi/ABI.md`.

use crate::batch::{schema_error, Batch};
use crate::groups::{hash_key, padded_key, Groups, Pane};
use crate::json::parse_config;
use crate::migrate::{Migration, NewGroup, OldGroup};
use crate::sketch::Sketch;
use crate::spec::{Op, Spec, Type};
use crate::{Aggregator, Code, Error};

const BATCH_MAGIC: u32 = 0x3142_4757; // "WGB1"
const ROWS_MAGIC: u32 = 0x3152_4757; // "WGR1"
const SNAP_MAGIC: u32 = 0x3153_4757; // "WGS1"

fn not_ready() -> Error {
    Error {
        code: Code::NotReady,
        message: "wagg: wagg_init has not succeeded".to_string(),
    }
}

/// Runs one aggregator for one deployment. The `export!` macro drives it
/// from the Wasm exports; `Local` drives it natively.
pub struct Engine<A: Aggregator> {
    agg: A,
    spec: Spec,
    types: Vec<Type>,
    groups: Option<Groups>,
    input: Vec<u64>, // 8-aligned, so columns are read in place
    input_len: usize,
    out: Vec<u8>,
    snap: Vec<u8>,
    schema: String,
    last_err: String,
    /// Set by a config with `migrate_from`: restores read and convert
    /// snapshots of that older build.
    migration: Option<Migration>,
}

impl<A: Aggregator> Default for Engine<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Aggregator> Engine<A> {
    pub fn new() -> Self {
        let mut spec = Spec::default();
        let agg = A::define(&mut spec);
        let types = spec.input.iter().map(|f| f.ty).collect();
        let schema = spec.to_json();
        Engine {
            agg,
            spec,
            types,
            groups: None,
            input: Vec::new(),
            input_len: 0,
            out: Vec::new(),
            snap: Vec::new(),
            schema,
            last_err: String::new(),
            migration: None,
        }
    }

    /// The key column and metric types, for decoding rows.
    /// A distinct metric reads as None.
    pub(crate) fn types(&self) -> (Vec<Type>, Vec<Option<Type>>) {
        (
            self.spec.keys.iter().map(|k| k.1).collect(),
            self.spec
                .metrics
                .iter()
                .map(|m| {
                    if m.op == Op::Distinct {
                        None
                    } else {
                        Some(m.ty)
                    }
                })
                .collect(),
        )
    }

    /// The schema as JSON (`wagg_describe`).
    pub fn describe(&self) -> &str {
        &self.schema
    }

    /// Starts an empty state for the config's windows (`wagg_init`).
    pub fn init(&mut self, cfg: &[u8]) -> Result<(), Error> {
        self.migration = None;
        let c = parse_config(cfg).map_err(Error::bad_input)?;
        self.migration = match c.migrate_from {
            Some(f) => Some(Migration::new(f, &self.spec)?),
            None => None,
        };
        let mut g = Groups::new(c.windows, &self.spec.keys, &self.spec.metrics);
        g.max_groups = c.max_groups;
        self.groups = Some(g);
        Ok(())
    }

    /// Folds in an encoded batch (`wagg_process`). It must lie in 8-aligned
    /// memory. On error the batch may be partly folded in.
    pub fn process(&mut self, buf: &[u8]) -> Result<(), Error> {
        let g = self.groups.as_mut().ok_or_else(not_ready)?;
        if buf.len() >= 16 && u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) == BATCH_MAGIC {
            let fields = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]);
            let raw = buf[12] & 1 != 0;
            if fields as usize != self.types.len() || raw != self.spec.raw {
                return Err(schema_error(fields, raw, self.types.len(), self.spec.raw));
            }
        }
        let b = Batch::decode(buf, &self.types, self.spec.raw)?;
        g.err = None;
        let r = self.agg.aggregate(&b, g);
        if let Some(e) = g.err.take() {
            return Err(e);
        }
        r.map_err(|e| Error {
            code: Code::Aggregate,
            message: e.message,
        })
    }

    /// The rows of the changed groups, and every group of the windows that
    /// watermark closed, final; those windows are then forgotten
    /// (`wagg_flush`). Rows come by window, start, then group order.
    pub fn flush(&mut self, watermark: i64) -> Result<&[u8], Error> {
        let g = self.groups.as_mut().ok_or_else(not_ready)?;
        let nm = g.metrics.len();
        // out is written in place up to pos; its length is the most any
        // flush wrote (Pane::put_rows grows it without zeroing).
        let out = &mut self.out;
        if out.len() < 16 {
            out.resize(16, 0);
        }
        out[..4].copy_from_slice(&ROWS_MAGIC.to_le_bytes());
        let mut pos = 16;
        let mut count = 0u32;
        for (w, s) in g.ws.iter_mut().enumerate() {
            let win = &g.windows[w];
            for p in s.panes.iter_mut() {
                let fin = win.closed(p.start, watermark);
                if g.distinct.is_empty() {
                    let (end, n) = p.put_rows(out, pos, w as u8, fin, nm);
                    pos = end;
                    count += n;
                    p.clean();
                    continue;
                }
                out.truncate(pos);
                let ops = &g.metrics;
                let mut row = |gi: usize, out: &mut Vec<u8>| {
                    out.push(w as u8);
                    out.push(fin as u8);
                    out.extend_from_slice(&p.start.to_le_bytes());
                    out.extend_from_slice(p.key(gi));
                    put_values(out, p, gi, nm, ops);
                    count += 1;
                };
                if fin {
                    for gi in 0..p.len() {
                        row(gi, out);
                    }
                } else {
                    for &gi in &p.dirty {
                        row(gi as usize, out);
                    }
                }
                pos = out.len();
                p.clean();
            }
            s.panes.retain(|p| !win.closed(p.start, watermark));
        }
        out[4..8].copy_from_slice(&count.to_le_bytes());
        out[8..16].copy_from_slice(&(pos as u64).to_le_bytes());
        Ok(&self.out[..pos])
    }

    /// The state (`wagg_snapshot`), in the layout the Go and C SDKs write:
    ///
    /// ```text
    /// u32 "WGS1", u32 windows
    /// per window: u32 panes; per pane: i64 start, u32 groups;
    /// per group: u32 key length, key, metrics x u64 (a distinct metric:
    /// its sketch as a row carries it)
    /// ```
    pub fn snapshot(&mut self) -> Result<&[u8], Error> {
        let g = self.groups.as_ref().ok_or_else(not_ready)?;
        let nm = g.metrics.len();
        let b = &mut self.snap;
        b.clear();
        b.extend_from_slice(&SNAP_MAGIC.to_le_bytes());
        b.extend_from_slice(&(g.ws.len() as u32).to_le_bytes());
        for s in &g.ws {
            b.extend_from_slice(&(s.panes.len() as u32).to_le_bytes());
            for p in &s.panes {
                b.extend_from_slice(&p.start.to_le_bytes());
                b.extend_from_slice(&(p.len() as u32).to_le_bytes());
                for gi in 0..p.len() {
                    let k = p.key(gi);
                    b.extend_from_slice(&(k.len() as u32).to_le_bytes());
                    b.extend_from_slice(k);
                    put_values(b, p, gi, nm, &g.metrics);
                }
            }
        }
        Ok(&self.snap)
    }

    /// Replaces the state with a snapshot (`wagg_restore`). It refuses
    /// anything `snapshot` would not write, leaving the state empty. Every
    /// restored group is marked changed, so the next flush emits it. After
    /// an init with `migrate_from`, the snapshot is that build's, and
    /// `Aggregator::migrate` converts each group (`ErrAggregate` when it
    /// fails).
    pub fn restore(&mut self, b: &[u8]) -> Result<(), Error> {
        let key_types = self.spec.keys.iter().map(|k| k.1).collect::<Vec<_>>();
        let g = self.groups.as_mut().ok_or_else(not_ready)?;
        g.clear();
        let m = self
            .migration
            .as_ref()
            .map(|m| (m, &mut self.agg, &self.spec.metrics[..]));
        let r = decode_snapshot(b, g, &key_types, m);
        if r.is_err() {
            g.clear();
        }
        r
    }

    // ---- the export glue: lengths into the input buffer, packed regions ----

    fn fail(&mut self, e: Error) -> i32 {
        self.last_err = e.message;
        e.code as i32
    }

    fn region(b: &[u8]) -> i64 {
        if b.is_empty() {
            return 0;
        }
        ((b.as_ptr() as usize as u64) << 32 | b.len() as u64) as i64
    }

    /// `wagg_input_buffer`: the address of at least size bytes.
    pub fn input_buffer(&mut self, size: i32) -> i32 {
        if size < 0 {
            return 0;
        }
        if size as usize > self.input_len {
            self.input = vec![0u64; (size as usize + 7) / 8];
            self.input_len = size as usize;
        }
        self.input.as_ptr() as usize as i32
    }

    fn with_input(&mut self, n: i32, f: impl FnOnce(&mut Self, &[u8]) -> Result<(), Error>) -> i32 {
        let input = std::mem::take(&mut self.input);
        let len = self.input_len;
        let r = if n < 0 || n as usize > len {
            Err(Error::bad_input("wagg: length exceeds the input buffer"))
        } else {
            let b = unsafe { std::slice::from_raw_parts(input.as_ptr() as *const u8, n as usize) };
            f(self, b)
        };
        self.input = input;
        match r {
            Ok(()) => 0,
            Err(e) => self.fail(e),
        }
    }

    pub fn export_describe(&mut self) -> i64 {
        Self::region(self.schema.as_bytes())
    }
    pub fn export_init(&mut self, n: i32) -> i32 {
        self.with_input(n, |e, b| e.init(b))
    }
    pub fn export_process(&mut self, n: i32) -> i32 {
        if self.groups.is_none() {
            return self.fail(not_ready());
        }
        self.with_input(n, |e, b| e.process(b))
    }
    pub fn export_restore(&mut self, n: i32) -> i32 {
        if self.groups.is_none() {
            return self.fail(not_ready());
        }
        self.with_input(n, |e, b| e.restore(b))
    }
    pub fn export_flush(&mut self, watermark: i64) -> i64 {
        match self.flush(watermark) {
            Ok(b) => Self::region(b),
            Err(e) => self.fail(e) as i64,
        }
    }
    pub fn export_snapshot(&mut self) -> i64 {
        match self.snapshot() {
            Ok(b) => Self::region(b),
            Err(e) => self.fail(e) as i64,
        }
    }
    pub fn export_last_error(&mut self) -> i64 {
        Self::region(self.last_err.as_bytes())
    }
}

fn bad(msg: &str) -> Error {
    Error::bad_input(format!("wagg: malformed snapshot: {}", msg))
}

fn valid_key(k: &[u8], types: &[Type]) -> bool {
    let mut off = 0usize;
    for t in types {
        if *t == Type::String {
            if k.len() - off < 4 {
                return false;
            }
            let n = u32::from_le_bytes([k[off], k[off + 1], k[off + 2], k[off + 3]]) as usize;
            off += 4;
            if k.len() - off < n {
                return false;
            }
            off += n;
        } else {
            if k.len() - off < 8 {
                return false;
            }
            off += 8;
        }
    }
    off == k.len()
}

/// Appends group gi's metrics: 8 bytes each, a sketch for a distinct one.
fn put_values(out: &mut Vec<u8>, p: &Pane, gi: usize, nm: usize, ops: &[(Type, Op)]) {
    for (j, v) in p.vals[gi * nm..(gi + 1) * nm].iter().enumerate() {
        if ops[j].1 == Op::Distinct {
            p.sketches[*v as usize].put(out);
        } else {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

fn decode_snapshot<A: Aggregator>(
    b: &[u8],
    g: &mut Groups,
    key_types: &[Type],
    mut migrate: Option<(&Migration, &mut A, &[crate::spec::MetricDef])>,
) -> Result<(), Error> {
    let nm = g.metrics.len();
    // Which of the snapshot's metrics are distinct, in the schema that wrote
    // it: their sketches are of their own length, the others 8 bytes.
    let distinct: Vec<bool> = match migrate.as_ref() {
        Some(m) => m.0.distinct(),
        None => g.metrics.iter().map(|m| m.1 == Op::Distinct).collect(),
    };
    let width = distinct.len();
    let mut old = vec![0u64; width];
    let mut sketches = vec![Sketch::default(); width];
    let mut new = vec![0u64; nm];
    let mut off = 0usize;
    let mut take = |k: usize| -> Result<&[u8], Error> {
        if k > b.len() - off {
            return Err(bad("truncated"));
        }
        let s = &b[off..off + k];
        off += k;
        Ok(s)
    };
    let u32_of = |s: &[u8]| u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    if u32_of(take(4).map_err(|_| bad("bad magic"))?) != SNAP_MAGIC {
        return Err(bad("bad magic"));
    }
    if u32_of(take(4)?) as usize != g.windows.len() {
        return Err(bad("taken with another number of windows"));
    }
    for w in 0..g.windows.len() {
        let panes = u32_of(take(4)?);
        let mut prev = 0i64;
        for i in 0..panes {
            let h = take(12)?;
            let mut s8 = [0u8; 8];
            s8.copy_from_slice(&h[..8]);
            let start = i64::from_le_bytes(s8);
            let n = u32_of(&h[8..]);
            if i > 0 && start <= prev {
                return Err(bad("panes out of order"));
            }
            prev = start;
            if !g.windows[w].is_start(start) {
                return Err(bad("not a window start"));
            }
            let pi = g.pane(w, start);
            for _ in 0..n {
                let kl = u32_of(take(4)?) as usize;
                let key = take(kl)?;
                if !valid_key(key, key_types) {
                    return Err(bad("a key does not match the key columns"));
                }
                for j in 0..width {
                    if distinct[j] {
                        let n = u32_of(take(4)?) as usize;
                        sketches[j] = Sketch::from_body(take(n)?)
                            .ok_or_else(|| bad("a sketch does not decode"))?;
                        continue;
                    }
                    let mut b8 = [0u8; 8];
                    b8.copy_from_slice(take(8)?);
                    old[j] = u64::from_le_bytes(b8);
                }
                let hk = hash_key(key, key_types);
                let kb = padded_key(key); // lookups take a padded key
                if g.ws[w].panes[pi].lookup(&kb, kl, hk).is_ok() {
                    return Err(bad("a group appears twice"));
                }
                let vals: &[u64] = match migrate.as_mut() {
                    None => &old,
                    Some((m, agg, defs)) => {
                        for (j, v) in new.iter_mut().enumerate() {
                            *v = match m.carry[j] {
                                Some(o) => old[o],
                                None => g.idents[j],
                            };
                        }
                        let og = OldGroup {
                            from: m,
                            window: &g.windows[w],
                            start,
                            key,
                            vals: &old,
                        };
                        let mut ng = NewGroup {
                            defs,
                            vals: &mut new,
                            err: None,
                        };
                        let keep = agg.migrate(&og, &mut ng);
                        let fail = |e: Error| Error {
                            code: Code::Aggregate,
                            message: format!(
                                "wagg: migrate failed: window {:?}, pane at {}: {}",
                                g.windows[w].name, start, e.message
                            ),
                        };
                        if let Some(e) = ng.err {
                            return Err(fail(e));
                        }
                        if !keep.map_err(fail)? {
                            continue;
                        }
                        &new
                    }
                };
                let idents = g.idents.clone();
                let p = &mut g.ws[w].panes[pi];
                let gi = match p.lookup(&kb, kl, hk) {
                    Ok(_) => return Err(bad("a group appears twice")),
                    Err(slot) => p.insert(&kb, kl, hk, slot, &idents, &g.distinct),
                };
                for j in 0..nm {
                    if g.metrics[j].1 != Op::Distinct {
                        p.vals[gi * nm + j] = vals[j];
                        continue;
                    }
                    // A distinct metric's sketch comes from the snapshot's
                    // metric it carries (itself when not migrating); a new
                    // one starts empty.
                    let from = match migrate.as_ref() {
                        Some((m, _, _)) => m.carry[j],
                        None => Some(j),
                    };
                    if let Some(o) = from {
                        let i = p.vals[gi * nm + j] as usize;
                        p.sketches[i] = std::mem::take(&mut sketches[o]);
                    }
                }
                p.touch(gi);
            }
            if migrate.is_some() && g.ws[w].panes[pi].len() == 0 {
                g.ws[w].panes.remove(pi);
            }
        }
    }
    if off != b.len() {
        return Err(bad("trailing bytes"));
    }
    Ok(())
}
