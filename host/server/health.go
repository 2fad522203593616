package server

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/wagg/wagg/host/api"
	"github.com/wagg/wagg/host/sink"
)

// The services' health is probed in the background and /healthz answers
// from the last probes: at once, however slow a service or the box is, and
// without a request to /healthz reaching ClickHouse or Kafka.
const (
	probeInterval = time.Second
	probeTimeout  = 2 * time.Second
	// probeStale is how old the last probe may be before /healthz says the
	// prober itself is stuck.
	probeStale = 5 * time.Second
)

// probes hold the last answer of each service.
type probes struct {
	mu        sync.Mutex
	at        time.Time // when the last probe finished; zero: none yet
	ch, kafka error
}

// probe asks ClickHouse and Kafka, together, once, and gives each
// probeTimeout to answer: a ClickHouse that accepts connections and says
// nothing holds its ping for the driver's dial timeout, and must not make
// Kafka look silent too.
func (s *Server) probe(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	ch, kafka := make(chan error, 1), make(chan error, 1)
	go func() { ch <- s.ch.Ping(ctx) }()
	go func() { kafka <- s.askKafka(ctx) }()
	answer := func(c <-chan error) error {
		select {
		case err := <-c:
			return err
		case <-ctx.Done():
			select {
			case err := <-c:
				return err
			default:
				return fmt.Errorf("no answer within %v", probeTimeout)
			}
		}
	}
	chErr, kErr := answer(ch), answer(kafka)
	s.health.mu.Lock()
	s.health.at, s.health.ch, s.health.kafka = time.Now(), chErr, kErr
	s.health.mu.Unlock()
}

// askKafka sends a broker a metadata request for no topic. kadm's
// BrokerMetadata would not do: once the client knows its brokers it
// answers from its cache, and said all was well with the only broker dead.
func (s *Server) askKafka(ctx context.Context) error {
	req := kmsg.NewPtrMetadataRequest()
	req.Topics = []kmsg.MetadataRequestTopic{}
	_, err := req.RequestWith(ctx, s.kafka)
	return err
}

// probeLoop probes every probeInterval until ctx is done.
func (s *Server) probeLoop(ctx context.Context) {
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.probe(ctx)
		}
	}
}

// Health reports the last probes of ClickHouse and Kafka, the ClickHouse
// circuit breaker and failed deployments.
func (s *Server) Health(ctx context.Context) api.Health {
	s.health.mu.Lock()
	at := s.health.at
	s.health.mu.Unlock()
	if at.IsZero() { // not serving yet: probe now
		s.probe(ctx)
	}
	s.health.mu.Lock()
	at, chErr, kErr := s.health.at, s.health.ch, s.health.kafka
	s.health.mu.Unlock()
	var reasons []string
	if age := time.Since(at); age > probeStale {
		reasons = append(reasons, fmt.Sprintf("probes: no answer from ClickHouse and Kafka for %v", age.Round(time.Second)))
	}
	if chErr != nil {
		reasons = append(reasons, "clickhouse: not answering: "+chErr.Error())
	}
	if st, err := s.breaker.Status(); st != sink.Closed {
		reasons = append(reasons, fmt.Sprintf("clickhouse: writes failing, circuit %s: %v; results wait in memory and are written when it recovers", st, err))
	}
	if kErr != nil {
		reasons = append(reasons, "kafka: not answering: "+kErr.Error())
	}
	for _, d := range s.Deployments() {
		if d.Status == api.StatusFailed {
			reasons = append(reasons, fmt.Sprintf("deployment %s failed: %s", d.Name, d.Error))
		}
		if d.NotStarted != "" {
			reasons = append(reasons, fmt.Sprintf("deployment %s: %s", d.Name, d.NotStarted))
		}
		if d.Stalled != "" {
			reasons = append(reasons, fmt.Sprintf("deployment %s: %s", d.Name, d.Stalled))
		}
	}
	if len(reasons) > 0 {
		return api.Health{Status: "degraded", Reasons: reasons}
	}
	return api.Health{Status: "ok"}
}
