package io.wagg.peers.kstreams;

import java.util.Map;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.ErrorHandlerContext;
import org.apache.kafka.streams.errors.LogAndContinueExceptionHandler;

/**
 * Kafka Streams' stock {@link LogAndContinueExceptionHandler} (log, skip, and write the record to
 * {@code errors.dead.letter.queue.topic.name} with the exception in headers), plus a counter the
 * bench and verify modes read so that malformed input counts as consumed.
 */
public class CountingDlqHandler extends LogAndContinueExceptionHandler {
    private Progress progress;

    @Override
    public void configure(Map<String, ?> configs) {
        super.configure(configs);
        Object app = configs.get(StreamsConfig.APPLICATION_ID_CONFIG);
        progress = app == null ? null : Progress.lookup(app.toString());
    }

    @Override
    public Response handleError(ErrorHandlerContext context, ConsumerRecord<byte[], byte[]> record, Exception exception) {
        if (progress != null) {
            progress.malformed.increment();
        }
        return super.handleError(context, record, exception);
    }
}
