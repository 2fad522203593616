package io.wagg.peers.kstreams;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.MapperFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.ObjectReader;
import com.fasterxml.jackson.databind.json.JsonMapper;
import java.io.IOException;
import org.apache.kafka.common.errors.SerializationException;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;

/**
 * JSON serde for {@link Vote}. A failed parse throws {@link SerializationException}; Kafka Streams'
 * deserialization exception handler then skips the record, counts it and writes it to the
 * dead-letter topic (see {@link Settings}).
 *
 * <p>Two decoders, picked with {@code --parser}: {@code databind} (the default: an
 * {@link ObjectReader} bound to the {@link Vote} record, what a Kafka Streams team would normally
 * write) and {@code streaming} (a hand-rolled loop over Jackson's streaming {@link JsonParser},
 * no intermediate objects beyond the Vote). Both accept exactly the same inputs.
 */
public final class VoteSerde {
    private VoteSerde() {
    }

    static final ObjectMapper MAPPER = JsonMapper.builder()
            .disable(MapperFeature.ALLOW_COERCION_OF_SCALARS) // "poll_id":"12" is malformed, not 12
            .disable(DeserializationFeature.ACCEPT_FLOAT_AS_INT) // "poll_id":1.5 is malformed
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS) // `{...} junk` is malformed
            .build();

    public static Serde<Vote> serde(String parser) {
        return Serdes.serdeFrom(new VoteSerializer(), deserializer(parser));
    }

    public static Deserializer<Vote> deserializer(String parser) {
        switch (parser) {
            case "databind":
                return new DatabindDeserializer();
            case "streaming":
                return new StreamingDeserializer();
            default:
                throw new IllegalArgumentException("--parser must be databind or streaming, not '" + parser + "'");
        }
    }

    /** Writes a vote in the wire format (used by tests; the producer formats by hand). */
    public static final class VoteSerializer implements Serializer<Vote> {
        @Override
        public byte[] serialize(String topic, Vote v) {
            if (v == null) {
                return null;
            }
            return Votes.json(v.pollId(), v.option(), v.userId(), v.ts()).getBytes(java.nio.charset.StandardCharsets.UTF_8);
        }
    }

    public static final class DatabindDeserializer implements Deserializer<Vote> {
        private final ObjectReader reader = MAPPER.readerFor(Vote.class);

        @Override
        public Vote deserialize(String topic, byte[] data) {
            if (data == null || data.length == 0) {
                throw new SerializationException("empty value");
            }
            try {
                Vote v = reader.readValue(data);
                if (v == null) {
                    throw new SerializationException("not a JSON object");
                }
                return v;
            } catch (SerializationException e) {
                throw e;
            } catch (IOException | RuntimeException e) {
                throw new SerializationException("malformed vote JSON: " + e.getMessage(), e);
            }
        }
    }

    public static final class StreamingDeserializer implements Deserializer<Vote> {
        private final JsonFactory factory = MAPPER.getFactory();

        @Override
        public Vote deserialize(String topic, byte[] data) {
            if (data == null || data.length == 0) {
                throw new SerializationException("empty value");
            }
            try (JsonParser p = factory.createParser(data)) {
                return parse(p);
            } catch (IOException | RuntimeException e) {
                throw new SerializationException("malformed vote JSON: " + e.getMessage(), e);
            }
        }

        private static Vote parse(JsonParser p) throws IOException {
            if (p.nextToken() != JsonToken.START_OBJECT) {
                throw new IOException("not a JSON object");
            }
            boolean havePoll = false;
            long poll = 0;
            long ts = 0;
            String option = null;
            String user = null;
            JsonToken t;
            while ((t = p.nextToken()) == JsonToken.FIELD_NAME) {
                String name = p.currentName();
                JsonToken v = p.nextToken();
                switch (name) {
                    case "poll_id":
                        if (v != JsonToken.VALUE_NUMBER_INT) {
                            throw new IOException("poll_id must be an integer");
                        }
                        poll = p.getLongValue();
                        havePoll = true;
                        break;
                    case "option":
                        if (v != JsonToken.VALUE_STRING) {
                            throw new IOException("option must be a string");
                        }
                        option = p.getText();
                        break;
                    case "user_id":
                        if (v != JsonToken.VALUE_STRING && v != JsonToken.VALUE_NULL) {
                            throw new IOException("user_id must be a string");
                        }
                        user = v == JsonToken.VALUE_NULL ? null : p.getText();
                        break;
                    case "ts":
                        if (v != JsonToken.VALUE_NUMBER_INT && v != JsonToken.VALUE_NULL) {
                            throw new IOException("ts must be an integer");
                        }
                        ts = v == JsonToken.VALUE_NULL ? 0L : p.getLongValue();
                        break;
                    default:
                        p.skipChildren();
                }
            }
            if (t != JsonToken.END_OBJECT) {
                throw new IOException("unterminated object");
            }
            if (p.nextToken() != null) {
                throw new IOException("trailing data after the object");
            }
            if (!havePoll) {
                throw new IOException("missing poll_id");
            }
            if (option == null) {
                throw new IOException("missing option");
            }
            return new Vote(poll, option, user, ts);
        }
    }
}
