package io.wagg.peers.kstreams;

import java.util.Properties;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * {@code produce}: a stand-in for {@code wagg produce} for the peer's own tests and a first
 * benchmark. Zipf over --polls (10k) x --options (8), key user_id, value JSON, record timestamp =
 * ts = wall clock at send (or a synthetic clock with --span-ms). With --rate it paces itself.
 */
final class Produce {
    private Produce() {
    }

    static KafkaProducer<String, String> producer(String bootstrap) {
        return producer(bootstrap, new Properties());
    }

    static KafkaProducer<String, String> producer(String bootstrap, Properties extra) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.LINGER_MS_CONFIG, 10);
        p.put(ProducerConfig.BATCH_SIZE_CONFIG, 256 * 1024);
        p.put(ProducerConfig.BUFFER_MEMORY_CONFIG, 128L * 1024 * 1024);
        p.putAll(extra);
        return new KafkaProducer<>(p);
    }

    static int run(Args a) throws Exception {
        String bootstrap = a.str("bootstrap", envBootstrap());
        String topic = a.required("topic");
        long events = a.lng("events", 1_000_000);
        int partitions = a.integer("partitions", 12);
        long rate = a.lng("rate", 0);
        long seed = a.lng("seed", 1);
        int polls = a.integer("polls", 10_000);
        int options = a.integer("options", 8);
        double zipf = a.dbl("zipf", 1.0);
        long malformedEvery = a.lng("malformed-every", 0);
        a.rejectUnknown();

        try (Admin admin = Kafka.admin(bootstrap)) {
            Kafka.createTopic(admin, topic, partitions);
        }
        Votes.Generator g = new Votes.Generator(seed, polls, options, zipf);
        AtomicReference<Exception> failure = new AtomicReference<>();
        long start = System.nanoTime();
        try (KafkaProducer<String, String> p = producer(bootstrap)) {
            for (long i = 0; i < events; i++) {
                if (rate > 0 && (i & 255) == 0) {
                    long due = start + (long) (i * 1e9 / rate);
                    long wait;
                    while ((wait = due - System.nanoTime()) > 0) {
                        Thread.sleep(wait / 1_000_000, (int) (wait % 1_000_000));
                    }
                }
                g.next();
                long ts = System.currentTimeMillis();
                String value = malformedEvery > 0 && i % malformedEvery == malformedEvery - 1
                        ? Votes.MALFORMED[(int) ((i / malformedEvery) % Votes.MALFORMED.length)]
                        : Votes.json(g.pollId, g.option, g.userId, ts);
                p.send(new ProducerRecord<>(topic, null, ts, g.userId, value), (md, e) -> {
                    if (e != null) {
                        failure.compareAndSet(null, e);
                    }
                });
                if (failure.get() != null) {
                    throw failure.get();
                }
            }
            p.flush();
        }
        if (failure.get() != null) {
            throw failure.get();
        }
        double s = (System.nanoTime() - start) / 1e9;
        System.out.printf("produced %d votes to %s in %.2f s (%.0f/s)%n", events, topic, s, events / s);
        return 0;
    }

    static String envBootstrap() {
        String e = System.getenv("WAGG_KAFKA_BOOTSTRAP");
        return e == null || e.isEmpty() ? Settings.DEFAULT_BOOTSTRAP : e;
    }
}
