package io.wagg.peers.kstreams;

import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;

/** Minimal {@code --name value} / {@code --name=value} flag parser; unknown flags are an error. */
final class Args {
    private final Map<String, String> values = new LinkedHashMap<>();
    private final Set<String> used = new HashSet<>();

    Args(String[] argv, int from) {
        for (int i = from; i < argv.length; i++) {
            String a = argv[i];
            if (!a.startsWith("--")) {
                throw new IllegalArgumentException("unexpected argument '" + a + "' (flags are --name value)");
            }
            String name = a.substring(2);
            String value;
            int eq = name.indexOf('=');
            if (eq >= 0) {
                value = name.substring(eq + 1);
                name = name.substring(0, eq);
            } else if (i + 1 < argv.length && !argv[i + 1].startsWith("--")) {
                value = argv[++i];
            } else {
                value = "true"; // boolean flag
            }
            values.put(name, value);
        }
    }

    String str(String name, String def) {
        used.add(name);
        return values.getOrDefault(name, def);
    }

    String required(String name) {
        used.add(name);
        String v = values.get(name);
        if (v == null) {
            throw new IllegalArgumentException("--" + name + " is required");
        }
        return v;
    }

    long lng(String name, long def) {
        String v = str(name, null);
        if (v == null) {
            return def;
        }
        try {
            return parseCount(v);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("--" + name + ": not a number: '" + v + "'");
        }
    }

    int integer(String name, int def) {
        long v = lng(name, def);
        if (v > Integer.MAX_VALUE || v < Integer.MIN_VALUE) {
            throw new IllegalArgumentException("--" + name + ": out of range: " + v);
        }
        return (int) v;
    }

    double dbl(String name, double def) {
        String v = str(name, null);
        if (v == null) {
            return def;
        }
        try {
            return Double.parseDouble(v);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("--" + name + ": not a number: '" + v + "'");
        }
    }

    boolean flag(String name) {
        String v = str(name, "false");
        return v.equals("true") || v.equals("1") || v.equals("yes");
    }

    /** Fails on flags nobody asked for, so a typo does not silently fall back to a default. */
    void rejectUnknown() {
        for (String k : values.keySet()) {
            if (!used.contains(k)) {
                throw new IllegalArgumentException("unknown flag --" + k);
            }
        }
    }

    /** Accepts 20000, 20k, 1M, 5m (counts, not bytes). */
    static long parseCount(String v) {
        String s = v.trim().replace("_", "");
        long mult = 1;
        char last = Character.toLowerCase(s.charAt(s.length() - 1));
        if (last == 'k') {
            mult = 1_000;
        } else if (last == 'm') {
            mult = 1_000_000;
        } else if (last == 'g') {
            mult = 1_000_000_000;
        }
        if (mult != 1) {
            s = s.substring(0, s.length() - 1);
        }
        return Long.parseLong(s) * mult;
    }
}
