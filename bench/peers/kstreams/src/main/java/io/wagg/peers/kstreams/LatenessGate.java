package io.wagg.peers.kstreams;

import java.nio.charset.StandardCharsets;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.streams.processor.api.FixedKeyProcessor;
import org.apache.kafka.streams.processor.api.FixedKeyProcessorContext;
import org.apache.kafka.streams.processor.api.FixedKeyRecord;

/**
 * wagg's lateness rule, applied where it means what wagg means: in the source task, whose stream
 * time is the maximum record timestamp seen on its one input partition (the per-partition
 * watermark plus the allowed lateness). A record whose 1 s window has already closed there
 * ({@code windowEnd + lateness <= streamTime}, the same test Kafka Streams' window aggregation
 * uses) goes to the dead-letter topic with a reason instead of being counted; every other record
 * goes on to be re-keyed and counted.
 *
 * <p>Why not let the windowed count downstream decide: after the repartition topic, a task's
 * stream time is the maximum over records from all 12 source partitions, interleaved in whatever
 * order the upstream tasks happened to run. While catching up on a backlog those tasks drift apart
 * by seconds or more, and the textbook topology then drops on-time records as "expired" (see
 * README, "What surprised us"). The decision here depends only on the partition's own order, so
 * it is deterministic and replays identically.
 */
final class LatenessGate implements FixedKeyProcessor<String, Vote, Vote> {
    static final String HEADER_EXCEPTION = "__streams.errors.exception";
    static final String HEADER_MESSAGE = "__streams.errors.message";
    static final String LATE = "late";

    private final long windowMs;
    private final long latenessMs;
    private final String onTimeChild;
    private final String lateChild;
    private final Progress progress;
    private FixedKeyProcessorContext<String, Vote> context;

    LatenessGate(long windowMs, long latenessMs, String onTimeChild, String lateChild, Progress progress) {
        this.windowMs = windowMs;
        this.latenessMs = latenessMs;
        this.onTimeChild = onTimeChild;
        this.lateChild = lateChild;
        this.progress = progress;
    }

    @Override
    public void init(FixedKeyProcessorContext<String, Vote> context) {
        this.context = context;
    }

    @Override
    public void process(FixedKeyRecord<String, Vote> record) {
        long ts = record.timestamp();
        long windowEnd = ts - Math.floorMod(ts, windowMs) + windowMs;
        long streamTime = context.currentStreamTimeMs();
        if (windowEnd + latenessMs > streamTime) {
            context.forward(record, onTimeChild);
            return;
        }
        if (progress != null) {
            progress.late.increment();
        }
        RecordHeaders h = new RecordHeaders(record.headers().toArray());
        h.add(HEADER_EXCEPTION, LATE.getBytes(StandardCharsets.UTF_8));
        h.add(HEADER_MESSAGE, ("window [" + (windowEnd - windowMs) + "," + windowEnd + ") closed: partition stream time "
                + streamTime + " - allowed lateness " + latenessMs + " ms").getBytes(StandardCharsets.UTF_8));
        context.forward(record.withHeaders(h), lateChild);
    }
}
