package io.wagg.peers.kstreams;

import java.lang.management.ManagementFactory;
import java.time.Duration;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.common.Metric;
import org.apache.kafka.common.MetricName;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse;

/** A KafkaStreams instance plus what the bench and verify modes ask of it. */
final class Runner implements AutoCloseable {
    final KafkaStreams streams;
    final AtomicReference<Throwable> fatal = new AtomicReference<>();

    Runner(Topology topology, Properties props) {
        streams = new KafkaStreams(topology, props);
        streams.setUncaughtExceptionHandler(e -> {
            fatal.compareAndSet(null, e);
            return StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
    }

    void start() {
        streams.start();
    }

    /** Throws if a stream thread died or the client left RUNNING/REBALANCING. */
    void check() {
        Throwable t = fatal.get();
        if (t != null) {
            throw new IllegalStateException("kafka streams failed: " + t, t);
        }
        KafkaStreams.State s = streams.state();
        if (s == KafkaStreams.State.ERROR || s == KafkaStreams.State.PENDING_ERROR
                || s == KafkaStreams.State.NOT_RUNNING || s == KafkaStreams.State.PENDING_SHUTDOWN) {
            throw new IllegalStateException("kafka streams is " + s);
        }
    }

    /** Waits until {@code events} input records are consumed and their totals emitted; 0 on timeout. */
    long await(Progress progress, long events, long timeoutMs) throws InterruptedException {
        long deadline = System.nanoTime() + timeoutMs * 1_000_000L;
        while (true) {
            check();
            long left = (deadline - System.nanoTime()) / 1_000_000L;
            if (left <= 0) {
                return 0;
            }
            long done = progress.awaitConsumed(events, Math.min(500, left));
            if (done != 0) {
                return done;
            }
        }
    }

    /** Sum of a task-level metric over all tasks, e.g. dropped-records-total. */
    double taskMetricSum(String name) {
        double sum = 0;
        for (Map.Entry<MetricName, ? extends Metric> e : streams.metrics().entrySet()) {
            MetricName m = e.getKey();
            if (m.name().equals(name) && m.group().equals("stream-task-metrics")) {
                Object v = e.getValue().metricValue();
                if (v instanceof Number) {
                    sum += ((Number) v).doubleValue();
                }
            }
        }
        return sum;
    }

    @Override
    public void close() {
        streams.close(Duration.ofSeconds(60));
    }

    /**
     * Closes, wipes the local state ({@link KafkaStreams#cleanUp()}) and removes the application's
     * directory under state.dir, which cleanUp leaves behind (lock and process-id files).
     */
    void closeAndWipe(java.nio.file.Path stateDir, String applicationId) {
        close();
        streams.cleanUp();
        java.nio.file.Path dir = stateDir.resolve(applicationId);
        try (java.util.stream.Stream<java.nio.file.Path> files = java.nio.file.Files.walk(dir)) {
            files.sorted(java.util.Comparator.reverseOrder()).forEach(f -> f.toFile().delete());
        } catch (java.io.IOException e) {
            // nothing there, or already gone
        }
    }

    /** CPU time of the whole process (all threads, including RocksDB's), in nanoseconds. */
    static long processCpuNanos() {
        java.lang.management.OperatingSystemMXBean os = ManagementFactory.getOperatingSystemMXBean();
        if (os instanceof com.sun.management.OperatingSystemMXBean) {
            return ((com.sun.management.OperatingSystemMXBean) os).getProcessCpuTime();
        }
        return -1;
    }
}
