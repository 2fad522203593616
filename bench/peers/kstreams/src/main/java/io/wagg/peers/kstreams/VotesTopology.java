package io.wagg.peers.kstreams;

import java.time.Duration;
import java.util.Properties;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KGroupedStream;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Named;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.WindowStore;

/**
 * The votes workload in the Kafka Streams DSL:
 *
 * <pre>
 *   votes (key user_id, JSON value, record timestamp = event time)
 *     -> parse                 malformed: skipped, counted, dead-letter topic (deserialization handler)
 *     -> lateness gate         window closed on this source partition: dead-letter topic ({@link LatenessGate})
 *     -> re-key by "poll_id/option" -> one repartition topic (key, empty value)
 *        -> windowedBy(1 s tumbling, grace).count()  -> "poll_id/option/windowStartMs" = count
 *        -> count()  (running total)                   -> "poll_id/option/total"         = count
 *     -> output topic (String key, count as decimal text): updates of absolute values
 * </pre>
 *
 * The windowed count's grace is the allowed lateness (5 s, enforced per source partition by the
 * gate) plus {@code repartitionSkewMs}: after the repartition topic a task sees the 12 source
 * partitions interleaved, so its stream time runs ahead of the slowest partition by however far
 * the upstream tasks have drifted apart; the extra grace keeps on-time records from being dropped
 * there. {@code naive} builds the textbook version instead (no gate, grace 5 s after the
 * repartition) for comparison. Both counts are RocksDB stores with changelogs; updates leave the
 * stores' cache on commit.
 */
public final class VotesTopology {
    public static final Duration WINDOW = Duration.ofSeconds(1);
    public static final Duration LATENESS = Duration.ofSeconds(5);
    public static final String PER_SECOND_STORE = "votes-per-second";
    public static final String TOTALS_STORE = "votes-total";
    private static final byte[] EMPTY = new byte[0];

    private VotesTopology() {
    }

    /** What to build. */
    public record Options(String parser, long repartitionSkewMs, boolean naive) {
        static Options of(Settings s) {
            return new Options(s.parser, s.repartitionSkewMs, s.naive);
        }
    }

    /**
     * @param props    the streams properties (passed to build() so topology.optimization applies)
     * @param dlq      the dead-letter topic (late records; the deserialization handler writes malformed ones)
     * @param progress counters for bench/verify, or null for a plain run
     */
    public static Topology build(String input, String output, String dlq, Options o, Properties props, Progress progress) {
        StreamsBuilder b = new StreamsBuilder();

        KStream<String, Vote> votes = b.stream(input,
                Consumed.with(Serdes.String(), VoteSerde.serde(o.parser())).withName("votes"));
        if (progress != null) {
            votes = votes.peek((k, v) -> progress.sawInput(), Named.as("progress-in"));
        }

        Duration grace = LATENESS;
        KStream<String, Vote> onTime = votes;
        if (!o.naive()) {
            grace = LATENESS.plusMillis(o.repartitionSkewMs());
            KStream<String, Vote> gated = votes.processValues(
                    () -> new LatenessGate(WINDOW.toMillis(), LATENESS.toMillis(), "key-by-option", "late-sink", progress),
                    Named.as("lateness-gate"));
            gated.to(dlq, Produced.with(Serdes.String(), VoteSerde.serde(o.parser())).withName("late-sink"));
            onTime = gated; // the gate forwards on-time records to "key-by-option" only
        }

        // Re-key by the group key. Only the key crosses the repartition topic: count() needs no value,
        // but ignores null values, so an empty one.
        KGroupedStream<String, byte[]> byOption = onTime
                .map((userId, v) -> KeyValue.pair(v.groupKey(), EMPTY), Named.as("key-by-option"))
                .groupByKey(Grouped.with("by-option", Serdes.String(), Serdes.ByteArray()));

        byOption.windowedBy(TimeWindows.ofSizeAndGrace(WINDOW, grace))
                .count(Named.as("count-per-second"),
                        Materialized.<String, Long, WindowStore<Bytes, byte[]>>as(PER_SECOND_STORE)
                                .withKeySerde(Serdes.String())
                                .withValueSerde(Serdes.Long()))
                .toStream(Named.as("per-second-updates"))
                .map((w, n) -> KeyValue.pair(w.key() + "/" + w.window().start(), Long.toString(n)),
                        Named.as("per-second-out"))
                .to(output, Produced.with(Serdes.String(), Serdes.String()).withName("per-second-sink"));

        KStream<String, Long> totals = byOption
                .count(Named.as("count-total"),
                        Materialized.<String, Long, KeyValueStore<Bytes, byte[]>>as(TOTALS_STORE)
                                .withKeySerde(Serdes.String())
                                .withValueSerde(Serdes.Long()))
                .toStream(Named.as("total-updates"));
        if (progress != null) {
            totals = totals.peek((k, n) -> progress.total(k, n), Named.as("progress-out"));
        }
        totals.map((k, n) -> KeyValue.pair(k + "/total", Long.toString(n)), Named.as("total-out"))
                .to(output, Produced.with(Serdes.String(), Serdes.String()).withName("total-sink"));

        return b.build(props);
    }
}
