//! The native test harness, as the Go SDK's `wagg.NewLocal`: the same
//! engine the Wasm exports drive, fed batches encoded as the host encodes
//! them.

use crate::engine::Engine;
use crate::sketch::estimate;
use crate::spec::{Type, Window};
use crate::{Aggregator, Error};

/// A value of a key column or metric in a decoded row.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Str(String),
}

/// A decoded output row.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub window: u8,
    pub start: i64,
    pub final_: bool,
    pub key: Vec<Value>,
    pub metrics: Vec<Value>,
}

/// Builds a batch record by record, each value in declared field order:
/// `b.record(ts).int64(7).string("yes")`.
#[derive(Default)]
pub struct BatchBuilder {
    times: Vec<i64>,
    cols: Vec<Column>,
    cur: usize,
    raw: bool,
}

enum Column {
    Fixed(Vec<u64>),
    Strings(Vec<u32>, Vec<u8>),
}

impl BatchBuilder {
    pub fn new() -> BatchBuilder {
        BatchBuilder::default()
    }

    /// Starts a record with event time ts (Unix ms).
    pub fn record(&mut self, ts: i64) -> &mut Self {
        self.times.push(ts);
        self.cur = 0;
        self
    }
    fn col(&mut self, strings: bool) -> &mut Column {
        if self.cur == self.cols.len() {
            self.cols.push(if strings {
                Column::Strings(vec![0], Vec::new())
            } else {
                Column::Fixed(Vec::new())
            });
        }
        self.cur += 1;
        &mut self.cols[self.cur - 1]
    }
    pub fn int64(&mut self, v: i64) -> &mut Self {
        if let Column::Fixed(c) = self.col(false) {
            c.push(v as u64);
        }
        self
    }
    pub fn float64(&mut self, v: f64) -> &mut Self {
        if let Column::Fixed(c) = self.col(false) {
            c.push(v.to_bits());
        }
        self
    }
    pub fn string(&mut self, v: &str) -> &mut Self {
        if let Column::Strings(o, d) = self.col(true) {
            d.extend_from_slice(v.as_bytes());
            o.push(d.len() as u32);
        }
        self
    }
    /// The record's raw value, after its fields (with `Spec::raw`).
    pub fn raw(&mut self, v: &str) -> &mut Self {
        self.raw = true;
        self.string(v)
    }

    /// The batch in the ABI's encoding (`abi/ABI.md` "Batch layout").
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        let pad = |b: &mut Vec<u8>| {
            while b.len() % 8 != 0 {
                b.push(0);
            }
        };
        b.extend_from_slice(&0x3142_4757u32.to_le_bytes());
        b.extend_from_slice(&(self.times.len() as u32).to_le_bytes());
        b.extend_from_slice(&((self.cols.len() - self.raw as usize) as u32).to_le_bytes());
        b.extend_from_slice(&(self.raw as u32).to_le_bytes());
        b.extend_from_slice(&[0; 16]);
        for t in &self.times {
            b.extend_from_slice(&t.to_le_bytes());
        }
        for c in &self.cols {
            match c {
                Column::Fixed(v) => v.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes())),
                Column::Strings(o, d) => {
                    o.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
                    pad(&mut b);
                    b.extend_from_slice(d);
                    pad(&mut b);
                }
            }
        }
        let n = b.len() as u64;
        b[16..24].copy_from_slice(&n.to_le_bytes());
        b
    }
}

/// Runs an aggregator natively, without a Wasm runtime, for unit tests and
/// for comparing a plugin with its native speed.
pub struct Local<A: Aggregator> {
    e: Engine<A>,
    key_types: Vec<Type>,
    metric_types: Vec<Option<Type>>,
    buf: Vec<u64>,
}

impl<A: Aggregator> Local<A> {
    /// Prepares the aggregator for the given windows.
    pub fn new(windows: &[Window]) -> Result<Local<A>, Error> {
        let mut e = Engine::<A>::new();
        let ws: Vec<String> = windows.iter().map(|w| w.to_json()).collect();
        let cfg = format!("{{\"abi\":1,\"windows\":[{}]}}", ws.join(","));
        e.init(cfg.as_bytes())?;
        let (key_types, metric_types) = e.types();
        Ok(Local {
            e,
            key_types,
            metric_types,
            buf: Vec::new(),
        })
    }

    /// Prepares the aggregator to restore, and migrate, a snapshot written
    /// by an older build whose schema (its `describe`) is `from`, as the
    /// host does with `migrate_from` (`abi/ABI.md` "State versions").
    pub fn migrating(windows: &[Window], from: &str) -> Result<Local<A>, Error> {
        let mut e = Engine::<A>::new();
        let ws: Vec<String> = windows.iter().map(|w| w.to_json()).collect();
        let cfg = format!(
            "{{\"abi\":1,\"windows\":[{}],\"migrate_from\":{}}}",
            ws.join(","),
            from
        );
        e.init(cfg.as_bytes())?;
        let (key_types, metric_types) = e.types();
        Ok(Local {
            e,
            key_types,
            metric_types,
            buf: Vec::new(),
        })
    }

    /// The schema as the host reads it from `wagg_describe`.
    pub fn describe(&self) -> &str {
        self.e.describe()
    }

    /// Folds in a batch, as `wagg_process` would. On error the batch may be
    /// partly folded in, as in the guest, where the host then discards the
    /// instance: discard the Local too.
    pub fn process(&mut self, b: &BatchBuilder) -> Result<(), Error> {
        self.process_encoded(&b.encode())
    }

    /// Folds in a batch in its ABI encoding.
    pub fn process_encoded(&mut self, b: &[u8]) -> Result<(), Error> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.resize((b.len() + 7) / 8, 0);
        let v = unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr() as *mut u8, b.len()) };
        v.copy_from_slice(b);
        let r = self.e.process(v);
        self.buf = buf;
        r
    }

    /// The rows a flush at watermark emits, decoded.
    pub fn flush(&mut self, watermark: i64) -> Result<Vec<Row>, Error> {
        let b = self.e.flush(watermark)?.to_vec();
        Ok(decode_rows(&b, &self.key_types, &self.metric_types))
    }

    /// The state; `restore` puts it back.
    pub fn snapshot(&mut self) -> Vec<u8> {
        self.e.snapshot().map(|b| b.to_vec()).unwrap_or_default()
    }

    /// Replaces the state with a snapshot; refuses anything `snapshot` would
    /// not write, leaving the state empty.
    pub fn restore(&mut self, b: &[u8]) -> Result<(), Error> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.resize((b.len() + 7) / 8, 0);
        let v = unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr() as *mut u8, b.len()) };
        v.copy_from_slice(b);
        let r = self.e.restore(v);
        self.buf = buf;
        r
    }
}

/// Decodes rows; a distinct metric (None) reads as its estimate.
fn decode_rows(b: &[u8], keys: &[Type], metrics: &[Option<Type>]) -> Vec<Row> {
    let n = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let mut off = 16;
    let u64_at = |off: &mut usize| {
        let mut v = [0u8; 8];
        v.copy_from_slice(&b[*off..*off + 8]);
        *off += 8;
        u64::from_le_bytes(v)
    };
    let mut rows = Vec::new();
    for _ in 0..n {
        let (window, flags) = (b[off], b[off + 1]);
        off += 2;
        let start = u64_at(&mut off) as i64;
        let value = |t: Type, off: &mut usize| match t {
            Type::Int64 => Value::Int(u64_at(off) as i64),
            Type::Float64 => Value::Float(f64::from_bits(u64_at(off))),
            Type::String => {
                let l =
                    u32::from_le_bytes([b[*off], b[*off + 1], b[*off + 2], b[*off + 3]]) as usize;
                let s = String::from_utf8_lossy(&b[*off + 4..*off + 4 + l]).into_owned();
                *off += 4 + l;
                Value::Str(s)
            }
        };
        let key = keys.iter().map(|&t| value(t, &mut off)).collect();
        let metrics = metrics
            .iter()
            .map(|&t| match t {
                Some(t) => value(t, &mut off),
                None => {
                    let l =
                        u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]]) as usize;
                    off += 4 + l;
                    Value::Int(estimate(&b[off - l..off]))
                }
            })
            .collect();
        rows.push(Row {
            window,
            start,
            final_: flags & 1 != 0,
            key,
            metrics,
        });
    }
    rows
}
