package io.wagg.peers.kstreams;

import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.LongAdder;

/**
 * How far a running topology has got, for the bench and verify modes (not used by {@code run}).
 *
 * <p>{@link #counted()} is the sum of the latest emitted running total per (poll_id, option): it
 * reaches the number of valid input records exactly when every one of them has been counted and
 * the update carrying it has left the state-store cache for the output topic (the cache flushes on
 * commit); malformed and late records (dead-lettered) are added to it. Re-emitted values after a task restart add nothing (the delta against the last value
 * seen is 0), so the figure never counts a record twice.
 */
final class Progress {
    private static final Map<String, Progress> BY_APP = new ConcurrentHashMap<>();

    final LongAdder malformed = new LongAdder();
    /** Records the lateness gate sent to the dead-letter topic. */
    final LongAdder late = new LongAdder();
    private final Map<String, Long> lastTotal = new ConcurrentHashMap<>();
    private final AtomicLong counted = new AtomicLong();
    private final AtomicLong firstRecordNanos = new AtomicLong();
    private volatile long target = Long.MAX_VALUE;
    private volatile long doneNanos;
    private final Object doneLock = new Object();

    static Progress register(String applicationId) {
        Progress p = new Progress();
        BY_APP.put(applicationId, p);
        return p;
    }

    static Progress lookup(String applicationId) {
        return BY_APP.get(applicationId);
    }

    static void unregister(String applicationId) {
        BY_APP.remove(applicationId);
    }

    /** Called for every input record that reaches the topology (after a successful parse). */
    void sawInput() {
        if (firstRecordNanos.get() == 0) {
            firstRecordNanos.compareAndSet(0, System.nanoTime());
        }
    }

    /** Called for every running-total update on its way to the output topic. */
    void total(String groupKey, long value) {
        Long old = lastTotal.put(groupKey, value);
        long now = counted.addAndGet(value - (old == null ? 0 : old));
        checkDone(now + malformed.sum() + late.sum());
    }

    private void checkDone(long consumed) {
        if (consumed >= target && doneNanos == 0) {
            synchronized (doneLock) {
                if (doneNanos == 0) {
                    doneNanos = System.nanoTime();
                    doneLock.notifyAll();
                }
            }
        }
    }

    long counted() {
        return counted.get();
    }

    long firstRecordNanos() {
        return firstRecordNanos.get();
    }

    /**
     * Waits until counted + malformed + late reaches {@code events} (all input consumed, counted and
     * emitted) or the timeout passes; returns the System.nanoTime() of completion, or 0 on timeout.
     */
    long awaitConsumed(long events, long timeoutMs) throws InterruptedException {
        target = events;
        long deadline = System.nanoTime() + timeoutMs * 1_000_000L;
        synchronized (doneLock) {
            while (doneNanos == 0) {
                // malformed and late records bump no total: re-check on a short tick
                checkDone(counted.get() + malformed.sum() + late.sum());
                long left = deadline - System.nanoTime();
                if (doneNanos != 0 || left <= 0) {
                    break;
                }
                doneLock.wait(Math.min(50, Math.max(1, left / 1_000_000L)));
            }
        }
        return doneNanos;
    }
}
