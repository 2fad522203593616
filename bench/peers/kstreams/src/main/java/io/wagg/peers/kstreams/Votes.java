package io.wagg.peers.kstreams;

import java.util.SplittableRandom;

/** The votes workload's records: wire format and a deterministic generator. */
final class Votes {
    private Votes() {
    }

    /** {"poll_id":1234,"option":"opt3","user_id":"u-8812771","ts":1764212345678} */
    static String json(long pollId, String option, String userId, long ts) {
        StringBuilder sb = new StringBuilder(96);
        sb.append("{\"poll_id\":").append(pollId)
                .append(",\"option\":\"").append(option)
                .append("\",\"user_id\":\"").append(userId)
                .append("\",\"ts\":").append(ts).append('}');
        return sb.toString();
    }

    /** Inputs a correct parser must reject, cycled through by the generators' malformed records. */
    static final String[] MALFORMED = {
        "{not json",
        "",
        "{\"poll_id\":\"12\",\"option\":\"opt1\",\"user_id\":\"u-1\",\"ts\":1}",
        "{\"option\":\"opt1\",\"user_id\":\"u-1\",\"ts\":1}",
        "{\"poll_id\":7,\"user_id\":\"u-1\",\"ts\":1}",
        "{\"poll_id\":7,\"option\":null,\"user_id\":\"u-1\",\"ts\":1}",
        "[1,2,3]",
        "{\"poll_id\":7,\"option\":\"opt1\",\"user_id\":\"u-1\",\"ts\":1} trailing",
        "{\"poll_id\":1.5,\"option\":\"opt1\",\"user_id\":\"u-1\",\"ts\":1}",
        "null",
    };

    /** Zipf-distributed poll ids in [1, polls], options opt0..opt{options-1} uniform, random user ids. */
    static final class Generator {
        private final SplittableRandom rnd;
        private final double[] cdf;
        private final String[] options;
        long pollId;
        String option;
        String userId;

        Generator(long seed, int polls, int options, double zipfS) {
            this.rnd = new SplittableRandom(seed);
            this.cdf = new double[polls];
            double sum = 0;
            for (int i = 0; i < polls; i++) {
                sum += 1.0 / Math.pow(i + 1, zipfS);
                cdf[i] = sum;
            }
            for (int i = 0; i < polls; i++) {
                cdf[i] /= sum;
            }
            this.options = new String[options];
            for (int i = 0; i < options; i++) {
                this.options[i] = "opt" + i;
            }
        }

        SplittableRandom random() {
            return rnd;
        }

        void next() {
            double u = rnd.nextDouble();
            int lo = 0;
            int hi = cdf.length - 1;
            while (lo < hi) {
                int mid = (lo + hi) >>> 1;
                if (cdf[mid] < u) {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            pollId = lo + 1;
            option = options[rnd.nextInt(options.length)];
            userId = "u-" + rnd.nextInt(10_000_000);
        }
    }
}
