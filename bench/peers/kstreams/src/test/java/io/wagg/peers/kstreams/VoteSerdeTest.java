package io.wagg.peers.kstreams;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.nio.charset.StandardCharsets;
import org.apache.kafka.common.errors.SerializationException;
import org.apache.kafka.common.serialization.Deserializer;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

class VoteSerdeTest {
    private static byte[] b(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    @ParameterizedTest
    @ValueSource(strings = {"databind", "streaming"})
    void parsesTheWireFormat(String parser) {
        Deserializer<Vote> d = VoteSerde.deserializer(parser);
        Vote v = d.deserialize("t", b("{\"poll_id\":1234,\"option\":\"opt3\",\"user_id\":\"u-8812771\",\"ts\":1764212345678}"));
        assertEquals(new Vote(1234, "opt3", "u-8812771", 1764212345678L), v);
        assertEquals("1234/opt3", v.groupKey());
        // field order, unknown fields, whitespace and a missing user_id/ts do not matter
        Vote w = d.deserialize("t", b(" { \"ts\" : 5, \"extra\": {\"a\":[1,2]}, \"option\":\"x\", \"poll_id\": -7 } "));
        assertEquals(new Vote(-7, "x", null, 5), w);
        assertEquals(new Vote(9, "o", null, 0), d.deserialize("t", b("{\"poll_id\":9,\"option\":\"o\"}")));
    }

    @ParameterizedTest
    @ValueSource(strings = {"databind", "streaming"})
    void rejectsEveryMalformedSample(String parser) {
        Deserializer<Vote> d = VoteSerde.deserializer(parser);
        for (String bad : Votes.MALFORMED) {
            assertThrows(SerializationException.class, () -> d.deserialize("t", b(bad)), () -> "accepted: " + bad);
        }
        assertThrows(SerializationException.class, () -> d.deserialize("t", null));
        assertThrows(SerializationException.class, () -> d.deserialize("t", b("{\"poll_id\":1,\"option\":\"\"}")));
        assertThrows(SerializationException.class, () -> d.deserialize("t", b("{\"poll_id\":null,\"option\":\"a\"}")));
    }

    @ParameterizedTest
    @ValueSource(strings = {"databind", "streaming"})
    void roundTripsTheGenerator(String parser) {
        Deserializer<Vote> d = VoteSerde.deserializer(parser);
        Votes.Generator g = new Votes.Generator(3, 10_000, 8, 1.0);
        for (int i = 0; i < 1000; i++) {
            g.next();
            Vote v = d.deserialize("t", b(Votes.json(g.pollId, g.option, g.userId, 1000L + i)));
            assertEquals(new Vote(g.pollId, g.option, g.userId, 1000L + i), v);
        }
    }
}
