package io.wagg.peers.kstreams;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.stream.Collectors;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.StringDeserializer;

/** Admin and consumer chores around a run: topics in, topics out, reading results back. */
final class Kafka {
    private Kafka() {
    }

    static Admin admin(String bootstrap) {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 30_000);
        return Admin.create(p);
    }

    /** Creates the topic with the given partitions (replication: the broker's default); existing is fine. */
    static void createTopic(Admin admin, String topic, int partitions) throws InterruptedException, ExecutionException {
        try {
            admin.createTopics(List.of(new NewTopic(topic, java.util.Optional.of(partitions), java.util.Optional.empty())))
                    .all().get();
        } catch (ExecutionException e) {
            if (!(e.getCause() instanceof TopicExistsException)) {
                throw e;
            }
        }
    }

    /** Deletes the given topics and every internal topic of the application id (changelogs, repartition). */
    static void deleteRunTopics(Admin admin, String applicationId, String... topics) throws InterruptedException {
        try {
            Set<String> all = admin.listTopics().names().get();
            List<String> doomed = new ArrayList<>();
            for (String t : all) {
                if (t.startsWith(applicationId + "-")) {
                    doomed.add(t);
                }
            }
            for (String t : topics) {
                if (t != null && all.contains(t) && !doomed.contains(t)) {
                    doomed.add(t);
                }
            }
            if (!doomed.isEmpty()) {
                admin.deleteTopics(doomed).all().get();
            }
        } catch (ExecutionException e) {
            System.err.println("warning: could not delete run topics: " + e.getCause());
        }
    }

    static List<TopicPartition> partitions(Admin admin, String topic) throws InterruptedException, ExecutionException {
        TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
        return d.partitions().stream().map(p -> new TopicPartition(topic, p.partition())).collect(Collectors.toList());
    }

    /** Number of records in the topic (sum of end minus beginning offsets). */
    static long recordCount(String bootstrap, String topic) {
        try (KafkaConsumer<byte[], byte[]> c = consumer(bootstrap, ByteArrayDeserializer.class, ByteArrayDeserializer.class)) {
            List<TopicPartition> tps = c.partitionsFor(topic).stream()
                    .map(pi -> new TopicPartition(topic, pi.partition())).collect(Collectors.toList());
            Map<TopicPartition, Long> end = c.endOffsets(tps);
            Map<TopicPartition, Long> begin = c.beginningOffsets(tps);
            long n = 0;
            for (TopicPartition tp : tps) {
                n += end.get(tp) - begin.get(tp);
            }
            return n;
        }
    }

    /** Result of reading a topic to its end. */
    static final class Readback {
        final Map<String, String> last = new HashMap<>();
        long records;
    }

    /** Reads the topic from the beginning to its current end (read_committed), keeping the last value per key. */
    static Readback readToEnd(String bootstrap, String topic) {
        Readback r = new Readback();
        try (KafkaConsumer<String, String> c = consumer(bootstrap, StringDeserializer.class, StringDeserializer.class)) {
            List<TopicPartition> tps = c.partitionsFor(topic).stream()
                    .map(pi -> new TopicPartition(topic, pi.partition())).collect(Collectors.toList());
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, Long> end = c.endOffsets(tps);
            long deadline = System.nanoTime() + Duration.ofMinutes(2).toNanos();
            while (true) {
                boolean done = true;
                for (TopicPartition tp : tps) {
                    if (c.position(tp) < end.get(tp)) {
                        done = false;
                        break;
                    }
                }
                if (done) {
                    break;
                }
                if (System.nanoTime() > deadline) {
                    throw new IllegalStateException("timed out reading " + topic + " to its end");
                }
                for (ConsumerRecord<String, String> rec : c.poll(Duration.ofMillis(200))) {
                    r.records++;
                    r.last.put(rec.key(), rec.value());
                }
            }
        }
        return r;
    }

    static <K, V> KafkaConsumer<K, V> consumer(String bootstrap, Class<?> keyDeser, Class<?> valueDeser) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, keyDeser);
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, valueDeser);
        p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 5000);
        return new KafkaConsumer<>(p);
    }
}
