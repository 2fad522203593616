//! The batch as the aggregator sees it: typed columns read in place from
//! the host's encoding (`abi/ABI.md` "Batch layout").

use crate::spec::{Float64Field, Int64Field, StringField, Type};
use crate::{Code, Error};

/// A batch of records, decoded by the host into the declared typed columns.
/// Slices it returns are valid during `Aggregator::aggregate` only.
pub struct Batch<'a> {
    n: usize,
    times: &'a [i64],
    cols: Vec<Col<'a>>,
}

#[derive(Clone, Copy)]
enum Col<'a> {
    Fixed(&'a [u8]),
    Strings(&'a [u32], &'a [u8]), // offsets (n+1), data
}

/// A string column: `get(i)` is record i's bytes, aliasing the batch.
#[derive(Clone, Copy)]
pub struct Strings<'a> {
    pub(crate) offs: &'a [u32],
    pub(crate) data: &'a [u8],
}

impl<'a> Strings<'a> {
    /// Record i's value.
    #[inline(always)]
    pub fn get(&self, i: usize) -> &'a [u8] {
        &self.data[self.offs[i] as usize..self.offs[i + 1] as usize]
    }
}

/// Whether offsets ever decrease: four at a time without a branch each (in
/// Wasm a loop iteration also pays a meter check).
fn backwards(o: &[u32]) -> bool {
    let mut bad = false;
    let mut w = o.windows(5).step_by(4);
    for q in &mut w {
        bad |= (q[1] < q[0]) | (q[2] < q[1]) | (q[3] < q[2]) | (q[4] < q[3]);
    }
    let rest = (o.len() - 1) / 4 * 4;
    for i in rest..o.len() - 1 {
        bad |= o[i + 1] < o[i];
    }
    bad
}

fn bad(msg: &str) -> Error {
    Error::bad_input(format!("abi: malformed batch: {}", msg))
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

fn pad8(k: usize) -> usize {
    (8 - k % 8) % 8
}

/// Reinterprets 4-byte little-endian values as u32s, in place (the offsets
/// section starts on an 8-byte boundary).
fn as_u32s(b: &[u8]) -> &[u32] {
    assert!(b.as_ptr() as usize % 4 == 0 && cfg!(target_endian = "little"));
    unsafe { std::slice::from_raw_parts(b.as_ptr() as *const u32, b.len() / 4) }
}

/// Reinterprets 8-byte little-endian values as i64s, in place.
fn as_i64s(b: &[u8]) -> &[i64] {
    // The input buffer is 8-aligned and every section starts on an 8-byte
    // boundary of the batch; Wasm and the supported hosts are little-endian.
    assert!(b.as_ptr() as usize % 8 == 0 && cfg!(target_endian = "little"));
    unsafe { std::slice::from_raw_parts(b.as_ptr() as *const i64, b.len() / 8) }
}

impl<'a> Batch<'a> {
    /// Decodes an encoded batch with abi.DecodeBatch's checks, in place.
    pub(crate) fn decode(buf: &'a [u8], types: &[Type], raw: bool) -> Result<Batch<'a>, Error> {
        let len = buf.len();
        if len < 32 || u32_at(buf, 0) != 0x3142_4757 {
            return Err(bad("bad header"));
        }
        let n = u32_at(buf, 4) as usize;
        let flags = u32_at(buf, 12);
        if n > 1 << 20 {
            return Err(bad("too many records"));
        }
        if flags & !1 != 0 {
            return Err(bad("unknown flags"));
        }
        if u64_at(buf, 16) != len as u64 {
            return Err(bad("the header's length is not the batch's"));
        }
        if u64_at(buf, 24) != 0 {
            return Err(bad("reserved header bytes are not zero"));
        }
        let mut off = 32usize;
        let take = |off: &mut usize, k: usize| -> Result<&'a [u8], Error> {
            if k > len - *off {
                return Err(bad("a section overruns the batch"));
            }
            let s = &buf[*off..*off + k];
            *off += k;
            Ok(s)
        };
        let zeros = |s: &[u8]| s.iter().all(|&b| b == 0);
        let times = as_i64s(take(&mut off, 8 * n)?);
        let mut cols = Vec::with_capacity(types.len() + 1);
        let ncols = types.len() + raw as usize;
        for c in 0..ncols {
            let ty = if c < types.len() {
                types[c]
            } else {
                Type::String
            };
            if ty != Type::String {
                cols.push(Col::Fixed(take(&mut off, 8 * n)?));
                continue;
            }
            let ob = 4 * (n + 1);
            let offs = as_u32s(take(&mut off, ob)?);
            if !zeros(take(&mut off, pad8(ob))?) {
                return Err(bad("padding is not zero"));
            }
            if offs[0] != 0 {
                return Err(bad("string offsets go backwards"));
            }
            if backwards(offs) {
                return Err(bad("string offsets go backwards"));
            }
            let last = offs[n];
            let data = take(&mut off, last as usize)?;
            if !zeros(take(&mut off, pad8(last as usize))?) {
                return Err(bad("padding is not zero"));
            }
            cols.push(Col::Strings(offs, data));
        }
        if off != len {
            return Err(bad("trailing bytes"));
        }
        Ok(Batch { n, times, cols })
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.n
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    /// Record i's event time in Unix milliseconds.
    #[inline(always)]
    pub fn time(&self, i: usize) -> i64 {
        self.times[i]
    }
    /// Every event time.
    pub fn times(&self) -> &'a [i64] {
        self.times
    }
    /// The column of an int64 field.
    pub fn int64s(&self, f: Int64Field) -> &'a [i64] {
        match self.cols[f.0] {
            Col::Fixed(b) => as_i64s(b),
            _ => unreachable!(),
        }
    }
    /// The column of a float64 field.
    pub fn float64s(&self, f: Float64Field) -> &'a [f64] {
        match self.cols[f.0] {
            Col::Fixed(b) => {
                let i = as_i64s(b);
                unsafe { std::slice::from_raw_parts(i.as_ptr() as *const f64, i.len()) }
            }
            _ => unreachable!(),
        }
    }
    /// The column of a string field.
    pub fn strings(&self, f: StringField) -> Strings<'a> {
        self.string_col(f.0)
    }
    /// Record i's raw Kafka value; only with `Spec::raw`.
    pub fn raw(&self, i: usize) -> &'a [u8] {
        self.string_col(self.cols.len() - 1).get(i)
    }

    fn string_col(&self, c: usize) -> Strings<'a> {
        match self.cols[c] {
            Col::Strings(offs, data) => Strings { offs, data },
            _ => unreachable!(),
        }
    }
}

pub(crate) fn schema_error(fields: u32, raw: bool, declared: usize, declared_raw: bool) -> Error {
    Error {
        code: Code::Schema,
        message: format!(
            "wagg: batch does not match the declared input: {} fields (raw {}), declared {} (raw {})",
            fields, raw, declared, declared_raw
        ),
    }
}
