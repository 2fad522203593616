package io.wagg.peers.kstreams;

import com.fasterxml.jackson.annotation.JsonCreator;
import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import com.fasterxml.jackson.annotation.JsonProperty;

/**
 * One poll vote as {@code wagg produce} writes it:
 * {@code {"poll_id":1234,"option":"opt3","user_id":"u-8812771","ts":1764212345678}}.
 * poll_id and option are required (they are the group key); user_id and ts are carried but
 * the event time used for windows is the Kafka record timestamp, which the producer sets equal to ts.
 */
@JsonIgnoreProperties(ignoreUnknown = true)
public record Vote(long pollId, String option, String userId, long ts) {

    public Vote {
        if (option == null || option.isEmpty()) {
            throw new IllegalArgumentException("option must be a non-empty string");
        }
    }

    /** Jackson's entry point: boxed numbers so that a missing or null poll_id is an error, not 0. */
    @JsonCreator
    static Vote fromJson(@JsonProperty(value = "poll_id", required = true) Long pollId,
                         @JsonProperty(value = "option", required = true) String option,
                         @JsonProperty("user_id") String userId,
                         @JsonProperty("ts") Long ts) {
        if (pollId == null) {
            throw new IllegalArgumentException("poll_id must be an integer");
        }
        return new Vote(pollId, option, userId, ts == null ? 0L : ts);
    }

    /** The group key of both aggregations: {@code poll_id/option}. */
    public String groupKey() {
        return pollId + "/" + option;
    }
}
