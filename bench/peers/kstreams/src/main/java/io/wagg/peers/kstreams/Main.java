package io.wagg.peers.kstreams;

import java.util.Arrays;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.clients.admin.Admin;

/** Entry point: {@code java -jar wagg-kstreams-peer.jar MODE [--flag value ...]}. See README.md. */
public final class Main {
    private Main() {
    }

    static final String USAGE = String.join("\n",
            "usage: java -jar target/wagg-kstreams-peer.jar MODE [flags]",
            "",
            "modes:",
            "  run      --input T --output T [--dlq T] [--app-id ID]    run the peer until SIGTERM",
            "  bench    --input T [--events N] [--broker-pid P] [--keep] fresh app id, consume N (default: all) records,",
            "                                                             print RESULT events=.. seconds=.. events_per_sec=.. cpu_seconds=..",
            "  verify   [--events 20k] [--span-ms 30000] [--keep]       produce a known input to fresh topics, run the peer,",
            "                                                             compare the last value per output key with the exact counts",
            "  latency  [--rate 50000] [--seconds 60] [--warmup-s 30]   fresh topics; produce at a fixed rate, print RESULT_LATENCY",
            "                                                             p50/p99 from send to the updated total readable downstream",
            "  produce  --topic T [--events 1M] [--rate R]              write Zipf votes (10k polls x 8 options) keyed by user_id",
            "  describe [--input T --output T]                           print the topology",
            "",
            "streams flags (run, bench, verify): --bootstrap 127.0.0.1:9092 (or $WAGG_KAFKA_BOOTSTRAP)",
            "  --guarantee at_least_once|exactly_once_v2   --threads 2   --commit-ms 100   --cache-mb 64",
            "  --state-dir $TMPDIR/wagg-kstreams-state     --parser databind|streaming   --partitions 12 (topics created)",
            "  --repartition-skew-ms 60000 (extra grace after the repartition)   --naive (textbook topology, for comparison)");

    public static void main(String[] argv) {
        int rc;
        try {
            rc = run(argv);
        } catch (IllegalArgumentException e) {
            System.err.println("error: " + e.getMessage());
            System.err.println(USAGE);
            rc = 2;
        } catch (Throwable e) {
            System.err.println("error: " + e);
            e.printStackTrace();
            rc = 1;
        }
        System.exit(rc);
    }

    static int run(String[] argv) throws Exception {
        if (argv.length == 0 || argv[0].equals("-h") || argv[0].equals("--help") || argv[0].equals("help")) {
            System.out.println(USAGE);
            return argv.length == 0 ? 2 : 0;
        }
        Args a = new Args(argv, 1);
        switch (argv[0]) {
            case "run":
                return runForever(a);
            case "bench":
                return Bench.run(a);
            case "verify":
                return Verify.run(a);
            case "produce":
                return Produce.run(a);
            case "latency":
                return Latency.run(a);
            case "describe": {
                Settings s = new Settings(a);
                String in = a.str("input", "votes");
                String out = a.str("output", "votes-kstreams-out");
                a.rejectUnknown();
                Properties p = s.streams("describe", "describe-dlq");
                System.out.println(VotesTopology.build(in, out, "describe-dlq", VotesTopology.Options.of(s), p, null).describe());
                return 0;
            }
            default:
                throw new IllegalArgumentException("unknown mode '" + argv[0] + "' in " + Arrays.toString(argv));
        }
    }

    private static int runForever(Args a) throws Exception {
        Settings s = new Settings(a);
        String input = a.required("input");
        String output = a.required("output");
        String dlq = a.str("dlq", output + "-dlq");
        String appId = a.str("app-id", "wagg-kstreams-peer");
        a.rejectUnknown();
        try (Admin admin = Kafka.admin(s.bootstrap)) {
            Kafka.createTopic(admin, output, s.partitions);
            Kafka.createTopic(admin, dlq, 1);
        }
        Properties props = s.streams(appId, dlq);
        System.err.println("run: " + appId + " " + input + " -> " + output + " (dlq " + dlq + ") " + s.describe());
        CountDownLatch stopped = new CountDownLatch(1);
        Runner r = new Runner(VotesTopology.build(input, output, dlq, VotesTopology.Options.of(s), props, null), props);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            r.close();
            stopped.countDown();
        }, "shutdown"));
        r.start();
        while (!stopped.await(1, java.util.concurrent.TimeUnit.SECONDS)) {
            if (r.fatal.get() != null) {
                System.err.println("run: stream thread failed: " + r.fatal.get());
                return 1;
            }
        }
        return 0;
    }
}
