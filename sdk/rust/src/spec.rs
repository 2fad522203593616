//! What an aggregator declares, and the windows of its deployment.

/// The type of an input field, a key column or a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Int64,
    Float64,
    String,
}

impl Type {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Type::Int64 => "int64",
            Type::Float64 => "float64",
            Type::String => "string",
        }
    }
}

/// An int64 input field; read its column with `Batch::int64s`.
#[derive(Clone, Copy, Debug)]
pub struct Int64Field(pub(crate) usize);
/// A float64 input field; read its column with `Batch::float64s`.
#[derive(Clone, Copy, Debug)]
pub struct Float64Field(pub(crate) usize);
/// A string input field; read its column with `Batch::strings`.
#[derive(Clone, Copy, Debug)]
pub struct StringField(pub(crate) usize);

/// A metric; update it with `Key::add` (int64) or `Key::add_float`, or a
/// batch at a time with `Columns::add`, `Columns::add_float`, `Columns::count`.
#[derive(Clone, Copy, Debug)]
pub struct Metric(pub(crate) usize);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Add,
    Min,
    Max,
    Avg,      // a sum whose count follows it
    Distinct, // a sketch, whose index in the pane's sketches is the value
}

pub(crate) struct FieldDef {
    pub name: String,
    pub ty: Type,
    pub path: Option<String>,
    pub optional: bool,
}

pub(crate) struct MetricDef {
    pub name: String,
    pub kind: &'static str,
    pub ty: Type,
    pub op: Op,
}

impl MetricDef {
    /// The value before the first update.
    pub fn identity(&self) -> u64 {
        match (self.op, self.ty) {
            (Op::Min, Type::Float64) => f64::INFINITY.to_bits(),
            (Op::Max, Type::Float64) => f64::NEG_INFINITY.to_bits(),
            (Op::Min, _) => i64::MAX as u64,
            (Op::Max, _) => i64::MIN as u64,
            _ => 0,
        }
    }
}

/// What an aggregator declares in `Aggregator::define`: each call returns
/// the handle that the batch and group calls take. The host validates the
/// declaration at upload and names the offending field.
#[derive(Default)]
pub struct Spec {
    pub(crate) input: Vec<FieldDef>,
    pub(crate) raw: bool,
    pub(crate) keys: Vec<(String, Type)>,
    pub(crate) metrics: Vec<MetricDef>,
    pub(crate) state: Option<State>,
}

/// What the aggregator's state means (`abi.State`): its version, and the
/// older versions it restores as they are or migrates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct State {
    pub version: u32,
    pub accepts: Vec<u32>,
    pub migrates: Vec<u32>,
}

impl Spec {
    fn field(&mut self, name: &str, ty: Type) -> usize {
        self.input.push(FieldDef {
            name: name.to_string(),
            ty,
            path: None,
            optional: false,
        });
        self.input.len() - 1
    }
    /// An integer input field read from the JSON key `name`.
    pub fn input_int64(&mut self, name: &str) -> Int64Field {
        Int64Field(self.field(name, Type::Int64))
    }
    /// A number input field read from the JSON key `name`.
    pub fn input_float64(&mut self, name: &str) -> Float64Field {
        Float64Field(self.field(name, Type::Float64))
    }
    /// A string input field read from the JSON key `name`.
    pub fn input_string(&mut self, name: &str) -> StringField {
        StringField(self.field(name, Type::String))
    }
    /// Reads the last declared field from another top-level JSON key.
    pub fn from(&mut self, path: &str) -> &mut Self {
        if let Some(f) = self.input.last_mut() {
            f.path = Some(path.to_string());
        }
        self
    }
    /// Makes the last declared field read as its zero value when missing,
    /// instead of sending the record to the dead-letter topic.
    pub fn optional(&mut self) -> &mut Self {
        if let Some(f) = self.input.last_mut() {
            f.optional = true;
        }
        self
    }
    /// Also hand the aggregator each record's raw value (`Batch::raw`).
    pub fn raw(&mut self) {
        self.raw = true;
    }

    /// Group key columns, filled by `Key`'s methods in this order.
    pub fn key_int64(&mut self, name: &str) {
        self.keys.push((name.to_string(), Type::Int64));
    }
    pub fn key_float64(&mut self, name: &str) {
        self.keys.push((name.to_string(), Type::Float64));
    }
    pub fn key_string(&mut self, name: &str) {
        self.keys.push((name.to_string(), Type::String));
    }

    fn metric(&mut self, name: &str, kind: &'static str, ty: Type, op: Op) -> Metric {
        self.metrics.push(MetricDef {
            name: name.to_string(),
            kind,
            ty,
            op,
        });
        Metric(self.metrics.len() - 1)
    }
    /// An int64 counter, merged by sum across partitions.
    pub fn count(&mut self, name: &str) -> Metric {
        self.metric(name, "count", Type::Int64, Op::Add)
    }
    /// A sum of int64 values.
    pub fn sum(&mut self, name: &str) -> Metric {
        self.metric(name, "sum", Type::Int64, Op::Add)
    }
    /// A sum of float64 values.
    pub fn sum_float(&mut self, name: &str) -> Metric {
        self.metric(name, "sum", Type::Float64, Op::Add)
    }
    /// The minimum of int64 values.
    pub fn min(&mut self, name: &str) -> Metric {
        self.metric(name, "min", Type::Int64, Op::Min)
    }
    /// The minimum of float64 values.
    pub fn min_float(&mut self, name: &str) -> Metric {
        self.metric(name, "min", Type::Float64, Op::Min)
    }
    /// The maximum of int64 values.
    pub fn max(&mut self, name: &str) -> Metric {
        self.metric(name, "max", Type::Int64, Op::Max)
    }
    /// The maximum of float64 values.
    pub fn max_float(&mut self, name: &str) -> Metric {
        self.metric(name, "max", Type::Float64, Op::Max)
    }

    /// A count of distinct values (unique users, say), estimated from a
    /// HyperLogLog sketch that the host merges across partitions (abi/ABI.md
    /// "Distinct counts"); fed by `Key::add_distinct` (int64) or
    /// `Key::add_distinct_string`, one of the two.
    pub fn distinct(&mut self, name: &str) -> Metric {
        self.metric(name, "distinct", Type::Int64, Op::Distinct)
    }
    fn state_mut(&mut self) -> &mut State {
        self.state.get_or_insert_with(|| State {
            version: 1,
            ..State::default()
        })
    }
    /// The version of what the aggregator's groups mean (1 when undeclared).
    /// Bump it when a new build would count on differently from the groups
    /// an older one left (other keys, other units, another rule), and say
    /// what becomes of the older versions with `accepts` or `migrates`. The
    /// host restores a deployment's checkpoints into a new build only when
    /// it accepts or migrates their version (`abi/ABI.md` "State versions").
    pub fn state_version(&mut self, version: u32) {
        self.state_mut().version = version;
    }
    /// Older state versions whose groups this build carries on as they are.
    pub fn accepts(&mut self, versions: &[u32]) {
        self.state_mut().accepts.extend_from_slice(versions);
    }
    /// Older state versions whose groups `Aggregator::migrate` converts as a
    /// snapshot of them is restored.
    pub fn migrates(&mut self, versions: &[u32]) {
        self.state_mut().migrates.extend_from_slice(versions);
    }

    /// An average of float64 values, carried as two metrics the host merges
    /// exactly across partitions: `name_sum` (a float64 sum) and
    /// `name_count` (a count); the average is their quotient, live and in
    /// ClickHouse. `Key::add_float` folds a value into both.
    pub fn average(&mut self, name: &str) -> Metric {
        let m = self.metric(&format!("{}_sum", name), "sum", Type::Float64, Op::Avg);
        self.metric(&format!("{}_count", name), "count", Type::Int64, Op::Add);
        m
    }

    /// The schema as `wagg_describe` returns it (`abi.Schema` JSON).
    pub(crate) fn to_json(&self) -> String {
        let mut s = String::from("{\"abi\":1,\"input\":[");
        for (i, f) in self.input.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str("{\"name\":");
            json_string(&mut s, &f.name);
            s.push_str(",\"type\":\"");
            s.push_str(f.ty.name());
            s.push('"');
            if let Some(p) = &f.path {
                s.push_str(",\"path\":");
                json_string(&mut s, p);
            }
            if f.optional {
                s.push_str(",\"optional\":true");
            }
            s.push('}');
        }
        s.push(']');
        if self.raw {
            s.push_str(",\"raw\":true");
        }
        s.push_str(",\"keys\":[");
        for (i, (name, ty)) in self.keys.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str("{\"name\":");
            json_string(&mut s, name);
            s.push_str(",\"type\":\"");
            s.push_str(ty.name());
            s.push_str("\"}");
        }
        s.push_str("],\"metrics\":[");
        for (i, m) in self.metrics.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str("{\"name\":");
            json_string(&mut s, &m.name);
            s.push_str(",\"kind\":\"");
            s.push_str(m.kind);
            s.push_str("\",\"type\":\"");
            s.push_str(m.ty.name());
            s.push_str("\"}");
        }
        s.push(']');
        if let Some(st) = &self.state {
            s.push_str(&format!(",\"state\":{{\"version\":{}", st.version));
            for (name, vs) in [("accepts", &st.accepts), ("migrates", &st.migrates)] {
                if !vs.is_empty() {
                    let vs: Vec<String> = vs.iter().map(|v| v.to_string()).collect();
                    s.push_str(&format!(",\"{}\":[{}]", name, vs.join(",")));
                }
            }
            s.push('}');
        }
        s.push('}');
        s
    }
}

fn json_string(s: &mut String, v: &str) {
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if (c as u32) < 0x20 => s.push_str(&format!("\\u{:04x}", c as u32)),
            c => s.push(c),
        }
    }
    s.push('"');
}

/// How a window slices time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowKind {
    Tumbling,
    Hopping,
    Global,
}

/// One window of the deployment (`abi.Window`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub name: String,
    pub kind: WindowKind,
    pub size_ms: i64,
    pub slide_ms: i64,
}

impl Window {
    pub fn tumbling(name: &str, size_ms: i64) -> Window {
        Window {
            name: name.to_string(),
            kind: WindowKind::Tumbling,
            size_ms,
            slide_ms: 0,
        }
    }
    pub fn hopping(name: &str, size_ms: i64, slide_ms: i64) -> Window {
        Window {
            name: name.to_string(),
            kind: WindowKind::Hopping,
            size_ms,
            slide_ms,
        }
    }
    pub fn global(name: &str) -> Window {
        Window {
            name: name.to_string(),
            kind: WindowKind::Global,
            size_ms: 0,
            slide_ms: 0,
        }
    }

    /// The slide between starts (the size for tumbling windows).
    pub(crate) fn slide(&self) -> i64 {
        if self.kind == WindowKind::Hopping {
            self.slide_ms
        } else {
            self.size_ms
        }
    }

    /// `abi.Window.Validate`.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let n = self.name.as_bytes();
        let name_ok = !n.is_empty()
            && n.len() <= 63
            && n.iter().enumerate().all(|(i, &c)| {
                c.is_ascii_lowercase() || c == b'_' || (i > 0 && c.is_ascii_digit())
            });
        if !name_ok {
            return Err(format!(
                "name {:?}: want lower-case letters, digits and _",
                self.name
            ));
        }
        match self.kind {
            WindowKind::Global => {
                if self.size_ms != 0 || self.slide_ms != 0 {
                    return Err(format!(
                        "{}: a global window has no size or slide",
                        self.name
                    ));
                }
                return Ok(());
            }
            WindowKind::Tumbling => {
                if self.slide_ms != 0 && self.slide_ms != self.size_ms {
                    return Err(format!(
                        "{}.slide: a tumbling window has no slide",
                        self.name
                    ));
                }
            }
            WindowKind::Hopping => {
                if self.slide_ms <= 0 || self.slide_ms % 1000 != 0 {
                    return Err(format!(
                        "{}.slide: want a positive whole number of seconds",
                        self.name
                    ));
                }
                if self.size_ms % self.slide_ms != 0 || self.size_ms / self.slide_ms > 64 {
                    return Err(format!(
                        "{}.size: want a multiple of the slide, at most 64 slides",
                        self.name
                    ));
                }
            }
        }
        if self.size_ms <= 0 || self.size_ms % 1000 != 0 {
            return Err(format!(
                "{}.size: want a positive whole number of seconds",
                self.name
            ));
        }
        Ok(())
    }

    /// Whether the window starting at `start` is final at `watermark`.
    pub(crate) fn closed(&self, start: i64, watermark: i64) -> bool {
        if self.kind == WindowKind::Global {
            return false;
        }
        let end = if start > i64::MAX - self.size_ms {
            i64::MAX
        } else {
            start + self.size_ms
        };
        end <= watermark
    }

    /// Whether `start` is a start of this window.
    pub(crate) fn is_start(&self, start: i64) -> bool {
        match self.kind {
            WindowKind::Global => start == 0,
            _ => start % self.slide() == 0,
        }
    }

    pub(crate) fn to_json(&self) -> String {
        match self.kind {
            WindowKind::Global => format!("{{\"name\":\"{}\",\"kind\":\"global\"}}", self.name),
            WindowKind::Tumbling => format!(
                "{{\"name\":\"{}\",\"kind\":\"tumbling\",\"size_ms\":{}}}",
                self.name, self.size_ms
            ),
            WindowKind::Hopping => format!(
                "{{\"name\":\"{}\",\"kind\":\"hopping\",\"size_ms\":{},\"slide_ms\":{}}}",
                self.name, self.size_ms, self.slide_ms
            ),
        }
    }
}
