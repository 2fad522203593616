//! A distinct metric's HyperLogLog sketch, as abi/ABI.md "Distinct counts"
//! defines it and the Go and C SDKs keep it: sparse (the set registers as
//! `index << 6 | rank`, in increasing index) while at most `SPARSE_MAX` are
//! set, dense (a byte per register) beyond.

const P: u32 = 12;
const M: usize = 1 << P;
const MAX_RANK: u32 = 64 - P + 1;
const SPARSE_MAX: usize = M / 4 - 1;

#[derive(Clone, Default)]
pub(crate) struct Sketch {
    entries: Vec<u32>,
    regs: Option<Box<[u8]>>,
}

fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// FNV-1a 64, then MurmurHash3's finalizer.
pub(crate) fn hash(b: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &c in b {
        h ^= c as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fmix64(h)
}

impl Sketch {
    pub fn add_hash(&mut self, h: u64) {
        let idx = (h >> (64 - P)) as u32;
        let rank = ((h << P) | (1 << (P - 1))).leading_zeros() + 1;
        if let Some(r) = &mut self.regs {
            let r = &mut r[idx as usize];
            if (*r as u32) < rank {
                *r = rank as u8;
            }
            return;
        }
        let e = idx << 6 | rank;
        match self.entries.binary_search_by(|x| (x >> 6).cmp(&idx)) {
            Ok(i) => {
                if self.entries[i] < e {
                    self.entries[i] = e;
                }
            }
            Err(i) => {
                self.entries.insert(i, e);
                if self.entries.len() > SPARSE_MAX {
                    let mut regs = vec![0u8; M].into_boxed_slice();
                    for &e in &self.entries {
                        regs[(e >> 6) as usize] = (e & 63) as u8;
                    }
                    self.entries = Vec::new();
                    self.regs = Some(regs);
                }
            }
        }
    }

    /// Appends the row form: u32 length, then the entries or the registers.
    pub fn put(&self, out: &mut Vec<u8>) {
        match &self.regs {
            Some(r) => {
                out.extend_from_slice(&(M as u32).to_le_bytes());
                out.extend_from_slice(r);
            }
            None => {
                out.extend_from_slice(&(4 * self.entries.len() as u32).to_le_bytes());
                for e in &self.entries {
                    out.extend_from_slice(&e.to_le_bytes());
                }
            }
        }
    }

    /// Decodes the body of the row form (after its length) with
    /// abi.DecodeSketch's checks: one encoding per sketch.
    pub fn from_body(body: &[u8]) -> Option<Sketch> {
        let n = body.len();
        let u32_at =
            |i: usize| u32::from_le_bytes([body[i], body[i + 1], body[i + 2], body[i + 3]]);
        if n > M {
            return None;
        }
        if n == M {
            if body.iter().any(|&r| r as u32 > MAX_RANK)
                || body.iter().filter(|&&r| r != 0).count() <= SPARSE_MAX
            {
                return None;
            }
            return Some(Sketch {
                entries: Vec::new(),
                regs: Some(body.to_vec().into_boxed_slice()),
            });
        }
        if n % 4 != 0 {
            return None;
        }
        let mut entries = Vec::with_capacity(n / 4);
        for i in 0..n / 4 {
            let e = u32_at(4 * i);
            let r = e & 63;
            if r == 0
                || r > MAX_RANK
                || (e >> 6) as usize >= M
                || entries.last().map_or(false, |&p: &u32| e >> 6 <= p >> 6)
            {
                return None;
            }
            entries.push(e);
        }
        Some(Sketch {
            entries,
            regs: None,
        })
    }
}

/// abi.Sketch.Estimate of a sketch in its row form (b after the length).
pub(crate) fn estimate(b: &[u8]) -> i64 {
    let m = M as f64;
    let ranks: Vec<u32> = if b.len() == M {
        b.iter().map(|&r| r as u32).collect()
    } else {
        b.chunks(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) & 63)
            .collect()
    };
    let (mut sum, mut set) = (0f64, 0usize);
    for r in ranks.into_iter().filter(|&r| r != 0) {
        sum += 1.0 / (1u64 << r) as f64;
        set += 1;
    }
    let zeros = M - set;
    sum += zeros as f64;
    let mut e = 0.7213 / (1.0 + 1.079 / m) * m * m / sum;
    if e <= 2.5 * m && zeros > 0 {
        e = m * (m / zeros as f64).ln();
    }
    (e + 0.5).floor() as i64
}
