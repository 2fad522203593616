package io.wagg.peers.kstreams;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.SplittableRandom;
import java.util.TreeSet;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;

/**
 * {@code verify}: the correctness check against the real broker.
 *
 * <ol>
 *   <li>fresh topics (input with --partitions, 12 by default), fresh application.id;</li>
 *   <li>produce a known input: --events votes (Zipf over --polls x --options) whose event times
 *       advance over --span-ms, --late-fraction of them up to --max-lateness-ms out of order
 *       (inside the allowed lateness), --too-late-fraction of them 6-16 s behind (beyond it), and
 *       every --malformed-every-th value malformed;</li>
 *   <li>compute the exact answer from what was produced, by wagg's rules: per source partition in
 *       offset order, a record whose window ended 5 s or more before the partition's newest
 *       timestamp is late; the others count per (poll_id, option, 1 s window) and per
 *       (poll_id, option);</li>
 *   <li>run the topology until every input record is counted or dead-lettered, close it (which
 *       flushes the caches and commits), read the output topic (read_committed) and keep the last
 *       value per key;</li>
 *   <li>compare: same keys, same counts; the dead-letter topic holds exactly the malformed and the
 *       late records.</li>
 * </ol>
 * Exit status 0 on a match, 1 with the differences printed otherwise.
 */
final class Verify {
    private Verify() {
    }

    static int run(Args a) throws Exception {
        Settings s = new Settings(a);
        long n = a.lng("events", 20_000);
        long spanMs = a.lng("span-ms", 30_000);
        long maxLateMs = a.lng("max-lateness-ms", 4_000);
        double lateFraction = a.dbl("late-fraction", 0.1);
        double tooLateFraction = a.dbl("too-late-fraction", 0.002);
        long malformedEvery = a.lng("malformed-every", 1_000);
        int polls = a.integer("polls", 50);
        int options = a.integer("options", 4);
        double zipf = a.dbl("zipf", 1.0);
        long seed = a.lng("seed", 42);
        long timeoutMs = a.lng("timeout-s", 300) * 1000;
        boolean keep = a.flag("keep");
        a.rejectUnknown();
        if (maxLateMs >= VotesTopology.LATENESS.toMillis() - VotesTopology.WINDOW.toMillis()) {
            System.err.println("warning: --max-lateness-ms >= lateness - window: some 'out of order' records will be too late");
        }

        String appId = "wagg-kstreams-verify-" + s.guarantee.replace('_', '-') + "-" + System.currentTimeMillis();
        String input = appId + "-votes";
        String output = appId + "-out";
        String dlq = appId + "-dlq";
        System.out.println("verify: " + appId + " events=" + n + " partitions=" + s.partitions + " " + s.describe());
        try (Admin admin = Kafka.admin(s.bootstrap)) {
            Kafka.createTopic(admin, input, s.partitions);
            Kafka.createTopic(admin, output, s.partitions);
            Kafka.createTopic(admin, dlq, 1);
        }

        // 1. the known input
        long[] ts = new long[(int) n];
        String[] keys = new String[(int) n]; // poll_id/option, null for a malformed record
        int[] partition = new int[(int) n];
        long malformed = 0;
        long outOfOrder = 0;
        long tooLate = 0;
        Votes.Generator g = new Votes.Generator(seed, polls, options, zipf);
        SplittableRandom rnd = g.random().split();
        long base = (System.currentTimeMillis() / 1000) * 1000 - spanMs - 60_000;
        AtomicReference<Exception> failure = new AtomicReference<>();
        // One request in flight: on a freshly created topic the first batch to
        // a partition can fail while later ones land, and the idempotent
        // producer then retries OUT_OF_ORDER_SEQUENCE until its delivery
        // timeout (seen on a freshly formatted broker). The input is small.
        Properties one = new Properties();
        one.put(ProducerConfig.MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION, 1);
        try (KafkaProducer<String, String> p = Produce.producer(s.bootstrap, one)) {
            for (int i = 0; i < n; i++) {
                g.next();
                long t = base + i * spanMs / n;
                double u = rnd.nextDouble();
                if (u < tooLateFraction) {
                    // well past the allowed lateness: must end up in the dead-letter topic, not in a count
                    t -= VotesTopology.LATENESS.toMillis() + VotesTopology.WINDOW.toMillis() + rnd.nextLong(10_000);
                    tooLate++;
                } else if (u < tooLateFraction + lateFraction) {
                    t -= rnd.nextLong(maxLateMs + 1);
                    outOfOrder++;
                }
                String value;
                if (malformedEvery > 0 && i % malformedEvery == malformedEvery - 1) {
                    value = Votes.MALFORMED[(int) (malformed % Votes.MALFORMED.length)];
                    t = base; // never the partition's newest timestamp, whether or not it counts for stream time
                    malformed++;
                } else {
                    value = Votes.json(g.pollId, g.option, g.userId, t);
                    keys[i] = g.pollId + "/" + g.option;
                }
                ts[i] = t;
                final int idx = i;
                p.send(new ProducerRecord<>(input, null, t, g.userId, value), (md, e) -> {
                    if (e != null) {
                        failure.compareAndSet(null, e);
                    } else {
                        partition[idx] = md.partition();
                    }
                });
            }
            p.flush();
        }
        if (failure.get() != null) {
            throw failure.get();
        }

        // 2. the exact answer, computed from the input the way wagg defines it: per source partition,
        // in offset order, a record whose window ended more than the allowed lateness before the
        // partition's newest timestamp so far is late (dead-lettered); every other valid record counts.
        Map<String, Long> expected = new HashMap<>();
        Map<Integer, Long> watermark = new HashMap<>();
        long late = 0;
        long windowMs = VotesTopology.WINDOW.toMillis();
        for (int i = 0; i < n; i++) {
            if (keys[i] == null) {
                continue;
            }
            long streamTime = Math.max(watermark.getOrDefault(partition[i], Long.MIN_VALUE), ts[i]);
            watermark.put(partition[i], streamTime);
            long start = ts[i] - Math.floorMod(ts[i], windowMs);
            if (start + windowMs + VotesTopology.LATENESS.toMillis() <= streamTime) {
                late++;
                continue;
            }
            expected.merge(keys[i] + "/" + start, 1L, Long::sum);
            expected.merge(keys[i] + "/total", 1L, Long::sum);
        }
        System.out.printf("verify: produced %d records over %d ms of event time: %d malformed, %d out of order by up to"
                        + " %d ms, %d beyond the allowed lateness (%d of all records late per their partition's watermark)%n",
                n, spanMs, malformed, outOfOrder, maxLateMs, tooLate, late);

        // 3. run the peer to completion
        Properties props = s.streams(appId, dlq);
        Progress progress = Progress.register(appId);
        double dropped;
        long t0 = System.nanoTime();
        try (Runner r = new Runner(VotesTopology.build(input, output, dlq, VotesTopology.Options.of(s), props, progress), props)) {
            r.start();
            long done = r.await(progress, n, timeoutMs);
            if (done == 0) {
                System.out.printf("verify: FAIL: timed out after %d s: counted %d + malformed %d of %d%n",
                        timeoutMs / 1000, progress.counted(), progress.malformed.sum(), n);
                return 1;
            }
            dropped = r.taskMetricSum("dropped-records-total");
            // close flushes the caches and commits: every final value is now in the output topic
            r.closeAndWipe(s.stateDir, appId);
        } finally {
            Progress.unregister(appId);
        }
        System.out.printf("verify: peer consumed all input in %.1f s%n", (System.nanoTime() - t0) / 1e9);

        // 4. read back and compare
        Kafka.Readback out = Kafka.readToEnd(s.bootstrap, output);
        Kafka.Readback dead = Kafka.readToEnd(s.bootstrap, dlq);
        int rc = compare(expected, out, malformed + (s.naive ? 0 : late), dead.records, dropped);

        if (!keep) {
            try (Admin admin = Kafka.admin(s.bootstrap)) {
                Kafka.deleteRunTopics(admin, appId, input, output, dlq);
            }
        } else {
            System.out.println("verify: kept topics " + input + ", " + output + ", " + dlq);
        }
        return rc;
    }

    static int compare(Map<String, Long> expected, Kafka.Readback out, long deadLetters, long dlqRecords, double dropped) {
        List<String> diffs = new ArrayList<>();
        long winKeys = 0;
        long totKeys = 0;
        long winSumExpected = 0;
        long winSumGot = 0;
        for (Map.Entry<String, Long> e : new java.util.TreeMap<>(expected).entrySet()) {
            boolean total = e.getKey().endsWith("/total");
            if (total) {
                totKeys++;
            } else {
                winKeys++;
                winSumExpected += e.getValue();
            }
            String got = out.last.get(e.getKey());
            if (!total && got != null) {
                winSumGot += Long.parseLong(got);
            }
            if (got == null) {
                diffs.add("missing " + e.getKey() + " expected=" + e.getValue());
            } else if (Long.parseLong(got) != e.getValue()) {
                diffs.add("wrong   " + e.getKey() + " expected=" + e.getValue() + " got=" + got);
            }
        }
        for (String k : new TreeSet<>(out.last.keySet())) {
            if (!expected.containsKey(k)) {
                diffs.add("extra   " + k + " got=" + out.last.get(k));
            }
        }
        if (dlqRecords != deadLetters) {
            diffs.add("dead-letter topic holds " + dlqRecords + " records, expected the " + deadLetters + " malformed and late ones");
        }
        System.out.printf("verify: output %d updates, %d keys; expected %d window keys (sum %d, got sum %d) + %d totals;"
                        + " dead-lettered %d; dropped-records metric %.0f%n",
                out.records, out.last.size(), winKeys, winSumExpected, winSumGot, totKeys, dlqRecords, dropped);
        if (diffs.isEmpty()) {
            System.out.println("verify: PASS: every window count and running total equals the exact count from the input");
            return 0;
        }
        System.out.println("verify: FAIL: " + diffs.size() + " differences");
        for (int i = 0; i < Math.min(40, diffs.size()); i++) {
            System.out.println("  " + diffs.get(i));
        }
        if (diffs.size() > 40) {
            System.out.println("  ... " + (diffs.size() - 40) + " more");
        }
        return 1;
    }
}
