package io.wagg.peers.kstreams;

import java.time.Duration;
import java.util.Locale;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.streams.Topology;

/**
 * {@code bench}: catch up on a backlog. A fresh application.id (so the run starts from the
 * beginning of --input and restores no state) consumes --events records (default: all records in
 * the topic), and prints one machine-readable line:
 *
 * <pre>RESULT events=N seconds=S events_per_sec=R cpu_seconds=C ...</pre>
 *
 * seconds runs from the first input record reaching the topology to the moment the running totals
 * on their way to the output topic account for every input record (counted + malformed = N); the
 * commit that makes those updates readable follows within commit.interval.ms (close_seconds, not
 * included). cpu_seconds is the process CPU time (all threads, RocksDB included) over the same span.
 */
final class Bench {
    private Bench() {
    }

    static int run(Args a) throws Exception {
        Settings s = new Settings(a);
        String input = a.required("input");
        long events = a.lng("events", -1);
        long timeoutMs = a.lng("timeout-s", 1800) * 1000;
        boolean keep = a.flag("keep");
        long brokerPid = a.lng("broker-pid", 0);
        String appId = a.str("app-id", "wagg-kstreams-bench-" + s.guarantee.replace('_', '-') + "-" + System.currentTimeMillis());
        a.rejectUnknown();

        if (events < 0) {
            events = Kafka.recordCount(s.bootstrap, input);
        }
        String output = appId + "-out";
        String dlq = appId + "-dlq";
        try (Admin admin = Kafka.admin(s.bootstrap)) {
            Kafka.createTopic(admin, output, s.partitions);
            Kafka.createTopic(admin, dlq, 1);
        }
        System.err.println("bench: " + appId + " input=" + input + " events=" + events + " " + s.describe());

        Properties props = s.streams(appId, dlq);
        Progress progress = Progress.register(appId);
        Topology topology = VotesTopology.build(input, output, dlq, VotesTopology.Options.of(s), props, progress);

        long cpu0 = Runner.processCpuNanos();
        long[] brokerAtFirst = {-1};
        long t0 = System.nanoTime();
        long[] cpuAtFirst = {-1};
        Thread sampler = new Thread(() -> {
            while (progress.firstRecordNanos() == 0 && !Thread.currentThread().isInterrupted()) {
                try {
                    Thread.sleep(5);
                } catch (InterruptedException e) {
                    return;
                }
            }
            cpuAtFirst[0] = Runner.processCpuNanos();
            brokerAtFirst[0] = brokerPid > 0 ? procCpuNanos(brokerPid) : -1;
        }, "cpu-sampler");
        sampler.setDaemon(true);
        sampler.start();

        int rc = 0;
        try (Runner r = new Runner(topology, props)) {
            r.start();
            long done = r.await(progress, events, timeoutMs);
            long cpuDone = Runner.processCpuNanos();
            long brokerDone = brokerPid > 0 ? procCpuNanos(brokerPid) : -1;
            sampler.interrupt();
            sampler.join();
            if (done == 0) {
                System.err.printf("bench: TIMEOUT after %d s: counted %d + malformed %d of %d%n",
                        timeoutMs / 1000, progress.counted(), progress.malformed.sum(), events);
                rc = 1;
            } else {
                long first = progress.firstRecordNanos();
                double seconds = (done - first) / 1e9;
                double cpu = (cpuDone - cpuAtFirst[0]) / 1e9;
                double dropped = r.taskMetricSum("dropped-records-total");
                long tc = System.nanoTime();
                r.close();
                double closeSeconds = (System.nanoTime() - tc) / 1e9;
                System.out.println(String.format(Locale.ROOT,
                        "RESULT events=%d seconds=%.3f events_per_sec=%.0f cpu_seconds=%.3f"
                                + " cpu_seconds_per_million=%.3f startup_seconds=%.3f close_seconds=%.3f"
                                + " cpu_seconds_total=%.3f malformed=%d late=%d dropped_records=%.0f peer=kstreams guarantee=%s"
                                + " threads=%d commit_ms=%d cache_mb=%d parser=%s broker_cpu_seconds=%.3f",
                        events, seconds, events / seconds, cpu, cpu / (events / 1e6),
                        (first - t0) / 1e9, closeSeconds, (Runner.processCpuNanos() - cpu0) / 1e9,
                        progress.malformed.sum(), progress.late.sum(), dropped, s.guarantee,
                        s.threads, s.commitMs, s.cacheBytes >> 20, s.parser,
                        brokerPid > 0 ? (brokerDone - brokerAtFirst[0]) / 1e9 : Double.NaN));
            }
            r.closeAndWipe(s.stateDir, appId); // local state of a throw-away application id
        } finally {
            Progress.unregister(appId);
            if (!keep) {
                try (Admin admin = Kafka.admin(s.bootstrap)) {
                    Kafka.deleteRunTopics(admin, appId, output, dlq);
                }
            }
        }
        return rc;
    }

    /** utime + stime of another process from /proc/PID/stat (Linux; clock ticks of 10 ms). */
    static long procCpuNanos(long pid) {
        try {
            String stat = java.nio.file.Files.readString(java.nio.file.Path.of("/proc/" + pid + "/stat"));
            String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
            long ticks = Long.parseLong(f[11]) + Long.parseLong(f[12]); // fields 14 and 15 of the full line
            return ticks * 10_000_000L;
        } catch (java.io.IOException | RuntimeException e) {
            return -1;
        }
    }
}
