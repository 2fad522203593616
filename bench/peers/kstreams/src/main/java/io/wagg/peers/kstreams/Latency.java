package io.wagg.peers.kstreams;

import java.time.Duration;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicReference;
import java.util.stream.Collectors;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * {@code latency}: end-to-end latency at a fixed sustained rate, from the producer's send to the
 * updated running total being readable (read_committed) in the output topic.
 *
 * <p>The producer numbers each vote per group key (poll_id/option) in send order and remembers its
 * send time. When the consumer reads {@code poll_id/option/total = c}, every vote of that key up to
 * the c-th is readable: each one not seen before gets latency = now - its send time. Votes of one
 * key from different source partitions can be counted in another order than sent; the c-th
 * readable count still means c votes are in, so this charges each update to the oldest votes not
 * yet accounted for (the conservative reading). The first --warmup-s (30) seconds are not recorded: the JIT compiler alone spends ~25 CPU-seconds
 * warming up, and a backlog built up meanwhile would otherwise be measured as latency.
 * {@code kept_up=false} says the peer was still catching up 5 s after the last send (the
 * percentiles then measure a growing backlog, not the pipeline); the exit status stays 0 then.
 * Producer, consumer and the Kafka Streams app share this JVM.
 */
final class Latency {
    private Latency() {
    }

    static int run(Args a) throws Exception {
        Settings s = new Settings(a);
        long rate = a.lng("rate", 50_000);
        long seconds = a.lng("seconds", 60);
        long warmupS = a.lng("warmup-s", 30);
        int polls = a.integer("polls", 10_000);
        int options = a.integer("options", 8);
        double zipf = a.dbl("zipf", 1.0);
        int lingerMs = a.integer("linger-ms", 5);
        boolean keep = a.flag("keep");
        long drainS = a.lng("drain-s", 120);
        a.rejectUnknown();

        String appId = "wagg-kstreams-latency-" + s.guarantee.replace('_', '-') + "-" + System.currentTimeMillis();
        String input = appId + "-votes";
        String output = appId + "-out";
        String dlq = appId + "-dlq";
        try (Admin admin = Kafka.admin(s.bootstrap)) {
            Kafka.createTopic(admin, input, s.partitions);
            Kafka.createTopic(admin, output, s.partitions);
            Kafka.createTopic(admin, dlq, 1);
        }
        System.err.println("latency: " + appId + " rate=" + rate + "/s seconds=" + seconds + " " + s.describe());

        Properties props = s.streams(appId, dlq);
        Progress progress = Progress.register(appId);
        long total = rate * seconds;
        // per group key: send times (ns) of its votes in send order; filled by the producer thread
        Map<String, long[]> sent = new HashMap<>();
        Map<String, Integer> sentCount = new HashMap<>();
        Object lock = new Object();
        long[] latenciesUs = new long[(int) total];
        int[] nLat = {0};
        AtomicReference<Throwable> failure = new AtomicReference<>();
        long t0;
        int rc = 0;
        try (Runner r = new Runner(VotesTopology.build(input, output, dlq, VotesTopology.Options.of(s), props, progress), props)) {
            r.start();
            // wait until the app has its assignment, so start-up is not measured
            long deadline = System.nanoTime() + Duration.ofSeconds(120).toNanos();
            while (r.streams.state() != org.apache.kafka.streams.KafkaStreams.State.RUNNING) {
                r.check();
                if (System.nanoTime() > deadline) {
                    throw new IllegalStateException("kafka streams did not reach RUNNING in 120 s");
                }
                Thread.sleep(100);
            }
            t0 = System.nanoTime();
            long warmupEnd = t0 + warmupS * 1_000_000_000L;
            long[] readable = {0};
            java.util.concurrent.atomic.AtomicBoolean stop = new java.util.concurrent.atomic.AtomicBoolean();

            Thread consumer = new Thread(() -> {
                Map<String, Integer> seen = new HashMap<>();
                try (KafkaConsumer<String, String> c = Kafka.consumer(s.bootstrap, StringDeserializer.class, StringDeserializer.class)) {
                    List<TopicPartition> tps = c.partitionsFor(output).stream()
                            .map(pi -> new TopicPartition(output, pi.partition())).collect(Collectors.toList());
                    c.assign(tps);
                    c.seekToBeginning(tps);
                    while (readable[0] < total - progress.malformed.sum() - progress.late.sum() && !stop.get()) {
                        for (ConsumerRecord<String, String> rec : c.poll(Duration.ofMillis(50))) {
                            String k = rec.key();
                            if (!k.endsWith("/total")) {
                                continue;
                            }
                            long now = System.nanoTime();
                            String gk = k.substring(0, k.length() - "/total".length());
                            int value = Integer.parseInt(rec.value());
                            int from = seen.getOrDefault(gk, 0);
                            if (value <= from) {
                                continue;
                            }
                            seen.put(gk, value);
                            readable[0] += value - from;
                            long[] times;
                            synchronized (lock) {
                                times = sent.get(gk);
                            }
                            for (int i = from; i < value; i++) {
                                long st = times[i];
                                if (st >= warmupEnd) {
                                    latenciesUs[nLat[0]++] = (now - st) / 1000;
                                }
                            }
                        }
                    }
                } catch (Throwable e) {
                    failure.compareAndSet(null, e);
                }
            }, "latency-consumer");
            consumer.start();

            Properties pp = new Properties();
            pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, s.bootstrap);
            pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
            pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
            pp.put(ProducerConfig.LINGER_MS_CONFIG, lingerMs);
            pp.put(ProducerConfig.BATCH_SIZE_CONFIG, 256 * 1024);
            Votes.Generator g = new Votes.Generator(7, polls, options, zipf);
            long behind = 0;
            try (KafkaProducer<String, String> p = new KafkaProducer<>(pp)) {
                for (long i = 0; i < total; i++) {
                    long due = t0 + (long) (i * 1e9 / rate);
                    long now = System.nanoTime();
                    if (due > now) {
                        long w = due - now;
                        Thread.sleep(w / 1_000_000, (int) (w % 1_000_000));
                        now = System.nanoTime();
                    } else if (now - due > 100_000_000L) {
                        behind++;
                    }
                    g.next();
                    String gk = g.pollId + "/" + g.option;
                    synchronized (lock) {
                        int n = sentCount.getOrDefault(gk, 0);
                        long[] times = sent.get(gk);
                        if (times == null || times.length == n) {
                            times = times == null ? new long[16] : Arrays.copyOf(times, n * 2);
                            sent.put(gk, times);
                        }
                        times[n] = now;
                        sentCount.put(gk, n + 1);
                    }
                    long ts = System.currentTimeMillis();
                    p.send(new ProducerRecord<>(input, null, ts, g.userId, Votes.json(g.pollId, g.option, g.userId, ts)));
                }
                p.flush();
            }
            long sendDone = System.nanoTime();
            double sendSeconds = (sendDone - t0) / 1e9;
            consumer.join(drainS * 1000);
            stop.set(true);
            consumer.join();
            double drainSeconds = (System.nanoTime() - sendDone) / 1e9;
            if (failure.get() != null) {
                throw new IllegalStateException("consumer failed", failure.get());
            }
            int n = nLat[0];
            long[] l = Arrays.copyOf(latenciesUs, n);
            Arrays.sort(l);
            if (n == 0) {
                System.err.println("latency: no samples after the warm-up");
                rc = 1;
            } else {
                System.out.println(String.format(Locale.ROOT,
                        "RESULT_LATENCY rate=%d events=%d measured=%d p50_ms=%.1f p90_ms=%.1f p99_ms=%.1f p999_ms=%.1f max_ms=%.1f"
                                + " achieved_rate=%.0f producer_behind_100ms=%d readable=%d drain_seconds=%.1f kept_up=%b"
                                + " peer=kstreams guarantee=%s commit_ms=%d",
                        rate, total, n, pct(l, 0.50), pct(l, 0.90), pct(l, 0.99), pct(l, 0.999), l[n - 1] / 1000.0,
                        total / sendSeconds, behind, readable[0], drainSeconds,
                        readable[0] >= total && drainSeconds < 5, s.guarantee, s.commitMs));
                if (readable[0] < total) {
                    System.err.println("latency: only " + readable[0] + " of " + total + " votes became readable within "
                            + drainS + " s of the last send: the peer did not keep up with " + rate + "/s");
                }
            }
            r.closeAndWipe(s.stateDir, appId);
        } finally {
            Progress.unregister(appId);
            if (!keep) {
                try (Admin admin = Kafka.admin(s.bootstrap)) {
                    Kafka.deleteRunTopics(admin, appId, input, output, dlq);
                }
            }
        }
        return rc;
    }

    private static double pct(long[] sortedUs, double q) {
        int i = (int) Math.min(sortedUs.length - 1, Math.floor(q * sortedUs.length));
        return sortedUs[i] / 1000.0;
    }
}
