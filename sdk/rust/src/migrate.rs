//! Migrating a snapshot of an older state version (`abi/ABI.md` "State
//! versions"): the host names the build that wrote it (`migrate_from`), the
//! engine reads each group through that build's metrics and hands it to
//! `Aggregator::migrate`, as the Go SDK's `Spec.Migrate`.

use crate::json::FromSchema;
use crate::local::Value;
use crate::spec::{MetricDef, Op, Spec, Type, Window};
use crate::{Code, Error, Metric};

/// A group of a snapshot of an older state version, read through the
/// metrics of the build that wrote it.
pub struct OldGroup<'a> {
    pub(crate) from: &'a Migration,
    pub(crate) window: &'a Window,
    pub(crate) start: i64,
    pub(crate) key: &'a [u8],
    pub(crate) vals: &'a [u64],
}

impl<'a> OldGroup<'a> {
    /// The state version of the build that wrote the group.
    pub fn version(&self) -> u32 {
        self.from.version
    }
    /// The deployment's window the group belongs to.
    pub fn window(&self) -> &Window {
        self.window
    }
    /// The start of the group's window instance, Unix ms (0 for a global one).
    pub fn start(&self) -> i64 {
        self.start
    }
    /// The group's key, one value per key column.
    pub fn key(&self) -> Vec<Value> {
        let (k, mut off) = (self.key, 0usize);
        let mut out = Vec::new();
        for t in &self.from.key_types {
            if *t == Type::String {
                let n = u32::from_le_bytes([k[off], k[off + 1], k[off + 2], k[off + 3]]) as usize;
                out.push(Value::Str(
                    String::from_utf8_lossy(&k[off + 4..off + 4 + n]).into_owned(),
                ));
                off += 4 + n;
                continue;
            }
            let mut v = [0u8; 8];
            v.copy_from_slice(&k[off..off + 8]);
            let u = u64::from_le_bytes(v);
            out.push(if *t == Type::Float64 {
                Value::Float(f64::from_bits(u))
            } else {
                Value::Int(u as i64)
            });
            off += 8;
        }
        out
    }
    /// The names of the old build's metrics, in its order (an average is
    /// its two columns, `name_sum` and `name_count`).
    pub fn metrics(&self) -> Vec<&str> {
        self.from.metrics.iter().map(|m| m.0.as_str()).collect()
    }
    /// The value of the old int64 metric called name; None when the old
    /// build had no int64 metric of that name, or it was a distinct one.
    pub fn int64(&self, name: &str) -> Option<i64> {
        let j = self.from.find(name, Type::Int64)?;
        Some(self.vals[j] as i64)
    }
    /// The value of the old float64 metric called name; None when the old
    /// build had no float64 metric of that name.
    pub fn float64(&self, name: &str) -> Option<f64> {
        let j = self.from.find(name, Type::Float64)?;
        Some(f64::from_bits(self.vals[j]))
    }
}

/// The current metric values of a group being migrated. They start as the
/// old values of the metrics of the same name, kind and type, and as
/// nothing counted yet for the others. A distinct metric is a sketch, not a
/// value: no setter sets it; one of the same name, kind and type in the old
/// build carries its sketch over as it was, any other starts empty.
pub struct NewGroup<'a> {
    pub(crate) defs: &'a [MetricDef],
    pub(crate) vals: &'a mut [u64],
    pub(crate) err: Option<Error>,
}

impl<'a> NewGroup<'a> {
    fn check(&mut self, m: Metric, ty: Type, avg: bool, call: &str) -> bool {
        let ok = match self.defs.get(m.0) {
            Some(d) => d.ty == ty && (d.op == Op::Avg) == avg && d.op != Op::Distinct,
            None => false,
        };
        if !ok && self.err.is_none() {
            let name = self.defs.get(m.0).map(|d| d.name.as_str()).unwrap_or("?");
            self.err = Some(Error::new(format!(
                "wagg: migrate: NewGroup::{} does not set metric {}",
                call, name
            )));
        }
        ok
    }
    /// Sets an int64 metric (a count, sum, min or max).
    pub fn set(&mut self, m: Metric, v: i64) {
        if self.check(m, Type::Int64, false, "set") {
            self.vals[m.0] = v as u64;
        }
    }
    /// Sets a float64 metric (a float sum, min or max).
    pub fn set_float(&mut self, m: Metric, v: f64) {
        if self.check(m, Type::Float64, false, "set_float") {
            self.vals[m.0] = v.to_bits();
        }
    }
    /// Sets an average to the sum and the count of the values it averages.
    pub fn set_average(&mut self, m: Metric, sum: f64, count: i64) {
        if self.check(m, Type::Float64, true, "set_average") {
            self.vals[m.0] = sum.to_bits();
            self.vals[m.0 + 1] = count as u64;
        }
    }
}

/// How the engine reads a snapshot of the build named by `migrate_from`.
pub struct Migration {
    version: u32,
    key_types: Vec<Type>,
    metrics: Vec<(String, String, Type)>,
    /// Per current metric, the old metric it starts from.
    pub(crate) carry: Vec<Option<usize>>,
}

impl Migration {
    pub(crate) fn new(from: FromSchema, spec: &Spec) -> Result<Migration, Error> {
        let bad = |m: String| Error {
            code: Code::BadInput,
            message: format!("wagg: config migrate_from: {}", m),
        };
        let migrates = spec
            .state
            .as_ref()
            .map(|s| s.migrates.clone())
            .unwrap_or_default();
        let own = spec.state.as_ref().map(|s| s.version).unwrap_or(1);
        if from.version < 1 || from.version > 1 << 30 || !migrates.contains(&(from.version as u32))
        {
            return Err(bad(format!(
                "state version {}, which this build (state version {}) does not migrate",
                from.version, own
            )));
        }
        let own_keys: Vec<Type> = spec.keys.iter().map(|k| k.1).collect();
        if from.keys != own_keys {
            return Err(bad(format!("state version {} has other key column types: a migration keeps the key's column types", from.version)));
        }
        let carry = spec
            .metrics
            .iter()
            .map(|d| {
                from.metrics
                    .iter()
                    .position(|(n, k, t)| *n == d.name && k == d.kind && *t == d.ty)
            })
            .collect();
        Ok(Migration {
            version: from.version as u32,
            key_types: from.keys,
            metrics: from.metrics,
            carry,
        })
    }

    /// Per metric of the snapshot, whether it is distinct (a sketch).
    pub(crate) fn distinct(&self) -> Vec<bool> {
        self.metrics.iter().map(|m| m.1 == "distinct").collect()
    }

    /// A distinct metric is a sketch, not a value the hook reads.
    fn find(&self, name: &str, ty: Type) -> Option<usize> {
        self.metrics
            .iter()
            .position(|(n, k, t)| n == name && *t == ty && k != "distinct")
    }
}
