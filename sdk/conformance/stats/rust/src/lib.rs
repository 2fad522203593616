//! stats: the Rust twin of ../main.go (sdk/conformance).

use wagg::{Aggregator, Batch, Error, Float64Field, Groups, Int64Field, Metric, Spec, StringField};

pub struct Stats {
    region: StringField,
    status: Int64Field,
    tier: Float64Field,
    ms: Float64Field,
    size: Int64Field,
    requests: Metric,
    bytes: Metric,
    smallest: Metric,
    largest: Metric,
    total: Metric,
    fastest: Metric,
    slowest: Metric,
    latency: Metric,
    sizes: Metric,
}

impl Aggregator for Stats {
    fn define(s: &mut Spec) -> Self {
        let (region, status, tier) = (s.input_string("region"), s.input_int64("status"), s.input_float64("tier"));
        let (ms, size) = (s.input_float64("ms"), s.input_int64("bytes"));
        s.key_string("region");
        s.key_int64("status");
        s.key_float64("tier");
        Stats {
            region,
            status,
            tier,
            ms,
            size,
            requests: s.count("requests"),
            bytes: s.sum("bytes"),
            smallest: s.min("smallest"),
            largest: s.max("largest"),
            total: s.sum_float("ms_total"),
            fastest: s.min_float("fastest"),
            slowest: s.max_float("slowest"),
            latency: s.average("latency"),
            sizes: s.distinct("sizes"),
        }
    }

    fn aggregate(&mut self, b: &Batch, g: &mut Groups) -> Result<(), Error> {
        let (regions, statuses, tiers) = (b.strings(self.region), b.int64s(self.status), b.float64s(self.tier));
        let (mss, sizes) = (b.float64s(self.ms), b.int64s(self.size));
        for i in 0..b.len() {
            if statuses[i] < 0 {
                return Err(Error::new("stats: a negative status"));
            }
            let k = g.at(b.time(i)).string(regions.get(i)).int64(statuses[i]).float64(tiers[i]);
            let k = k.add(self.requests, 1).add(self.bytes, sizes[i]).add(self.smallest, sizes[i]).add(self.largest, sizes[i]);
            let k = k.add_distinct(self.sizes, sizes[i]);
            if statuses[i] < 400 {
                k.add_float(self.total, mss[i]).add_float(self.fastest, mss[i]).add_float(self.slowest, mss[i]).add_float(self.latency, mss[i]);
            }
        }
        Ok(())
    }
}

wagg::export!(Stats);
