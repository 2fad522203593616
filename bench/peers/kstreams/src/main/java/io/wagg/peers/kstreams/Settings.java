package io.wagg.peers.kstreams;

import java.nio.file.Path;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.streams.StreamsConfig;

/**
 * Every Kafka Streams setting the peer uses, in one place. README.md states each one and why; keep
 * the two in step. Flags override the defaults here; {@link #describe()} prints what a run used.
 */
final class Settings {
    static final String DEFAULT_BOOTSTRAP = "127.0.0.1:9092";

    final String bootstrap;
    final String guarantee;
    final int threads;
    final long commitMs;
    final long cacheBytes;
    final Path stateDir;
    final String parser;
    final int partitions;
    final long repartitionSkewMs;
    final boolean naive;
    final String extra;

    Settings(Args a) {
        String envBootstrap = System.getenv("WAGG_KAFKA_BOOTSTRAP");
        bootstrap = a.str("bootstrap", envBootstrap == null || envBootstrap.isEmpty() ? DEFAULT_BOOTSTRAP : envBootstrap);
        guarantee = a.str("guarantee", StreamsConfig.AT_LEAST_ONCE);
        if (!guarantee.equals(StreamsConfig.AT_LEAST_ONCE) && !guarantee.equals(StreamsConfig.EXACTLY_ONCE_V2)) {
            throw new IllegalArgumentException("--guarantee must be at_least_once or exactly_once_v2, not '" + guarantee + "'");
        }
        threads = a.integer("threads", 2);
        commitMs = a.lng("commit-ms", 100);
        cacheBytes = a.lng("cache-mb", 64) * 1024 * 1024;
        stateDir = Path.of(a.str("state-dir", Path.of(System.getProperty("java.io.tmpdir"), "wagg-kstreams-state").toString()));
        parser = a.str("parser", "databind");
        VoteSerde.deserializer(parser); // validate the name now
        partitions = a.integer("partitions", 12);
        repartitionSkewMs = a.lng("repartition-skew-ms", 60_000);
        naive = a.flag("naive");
        extra = a.str("streams-config", "");
    }

    boolean eos() {
        return guarantee.equals(StreamsConfig.EXACTLY_ONCE_V2);
    }

    Properties streams(String applicationId, String dlqTopic) {
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, applicationId);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, guarantee);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, threads);
        // Caches are flushed (and updates emitted downstream) on every commit, so the commit interval
        // is also the output cadence: 100 ms for both guarantees (see README).
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, commitMs);
        p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, cacheBytes);
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
        // One repartition topic feeds both aggregations (without this each count gets its own copy).
        p.put(StreamsConfig.TOPOLOGY_OPTIMIZATION_CONFIG, StreamsConfig.OPTIMIZE);
        // Single instance: no standbys. Internal topics take the broker's replication factor (1 here).
        p.put(StreamsConfig.NUM_STANDBY_REPLICAS_CONFIG, 0);
        // Malformed JSON: skip the record, log it, count it (dropped-records metric) and write it with
        // the exception in headers to the dead-letter topic; the partition goes on.
        p.put(StreamsConfig.DESERIALIZATION_EXCEPTION_HANDLER_CLASS_CONFIG, CountingDlqHandler.class);
        p.put(StreamsConfig.ERRORS_DEAD_LETTER_QUEUE_TOPIC_NAME_CONFIG, dlqTopic);
        // A fresh application.id starts from the beginning of the input (bench and verify rely on it).
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        // Clients: Kafka Streams' own producer/consumer defaults (producer linger.ms=100 etc.) are kept.
        p.put(StreamsConfig.producerPrefix(ProducerConfig.COMPRESSION_TYPE_CONFIG), "none");
        // --streams-config k=v,k=v: any further StreamsConfig/client setting, for experiments
        for (String kv : extra.split(",")) {
            if (kv.isBlank()) {
                continue;
            }
            int eq = kv.indexOf('=');
            if (eq <= 0) {
                throw new IllegalArgumentException("--streams-config wants k=v[,k=v...], got '" + kv + "'");
            }
            p.put(kv.substring(0, eq).trim(), kv.substring(eq + 1).trim());
        }
        return p;
    }

    String describe() {
        return "guarantee=" + guarantee + " threads=" + threads + " commit.interval.ms=" + commitMs
                + " statestore.cache.max.bytes=" + cacheBytes + " parser=" + parser
                + (naive ? " topology=naive(grace 5 s after the repartition)" : " repartition.skew.ms=" + repartitionSkewMs)
                + " state.dir=" + stateDir + (extra.isEmpty() ? "" : " extra=" + extra);
    }
}
