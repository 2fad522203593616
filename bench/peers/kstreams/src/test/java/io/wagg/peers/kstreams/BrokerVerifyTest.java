package io.wagg.peers.kstreams;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.net.InetSocketAddress;
import java.net.Socket;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The end-to-end correctness check ({@code verify} mode) against the real broker, for both
 * guarantees. Skipped, with a message, when no broker answers: start one with
 * {@code bash scripts/kafka.sh up} (bootstrap: $WAGG_KAFKA_BOOTSTRAP, default 127.0.0.1:9092).
 */
class BrokerVerifyTest {
    static String bootstrap() {
        String b = System.getProperty("wagg.kafka.bootstrap");
        if (b == null || b.isEmpty() || b.startsWith("${")) {
            b = System.getenv("WAGG_KAFKA_BOOTSTRAP");
        }
        return b == null || b.isEmpty() ? Settings.DEFAULT_BOOTSTRAP : b;
    }

    static boolean reachable(String bootstrap) {
        String hp = bootstrap.split(",")[0];
        int colon = hp.lastIndexOf(':');
        try (Socket s = new Socket()) {
            s.connect(new InetSocketAddress(hp.substring(0, colon), Integer.parseInt(hp.substring(colon + 1))), 1000);
            return true;
        } catch (Exception e) {
            return false;
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"at_least_once", "exactly_once_v2"})
    void finalCountsEqualTheExactAnswer(String guarantee) throws Exception {
        String b = bootstrap();
        if (!reachable(b)) {
            System.err.println("BrokerVerifyTest: SKIPPED: no Kafka broker at " + b + " (bash scripts/kafka.sh up)");
        }
        assumeTrue(reachable(b), "no Kafka broker at " + b + ": run `bash scripts/kafka.sh up` to run this test");
        int rc = Verify.run(new Args(new String[] {"verify", "--bootstrap", b, "--guarantee", guarantee,
            "--events", "20000", "--timeout-s", "180"}, 1));
        assertEquals(0, rc, "verify mismatched (see the differences printed above)");
    }
}
