package proxy_test

import (
	"bytes"
	"compress/gzip"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver is an OTLP/HTTP collector on 127.0.0.1: it accepts POST
// /v1/traces and decodes each export with the official protobuf types.
type otlpReceiver struct {
	URL   string // the traces endpoint
	delay time.Duration

	mu      sync.Mutex
	spans   []*tracepb.Span
	service []string // service.name of each span's resource
	posts   atomic.Int64
}

func startReceiver(t *testing.T, delay time.Duration) *otlpReceiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &otlpReceiver{URL: "http://" + ln.Addr().String() + "/v1/traces", delay: delay}
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return r
}

func (r *otlpReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	r.posts.Add(1)
	if r.delay > 0 {
		select {
		case <-time.After(r.delay):
		case <-req.Context().Done():
			return
		}
	}
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var msg coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &msg); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	for _, rs := range msg.ResourceSpans {
		svc := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.Key == "service.name" {
				svc = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				r.spans = append(r.spans, s)
				r.service = append(r.service, svc)
			}
		}
	}
	r.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// trace returns the spans received for a trace id (hex).
func (r *otlpReceiver) trace(id string) []*tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*tracepb.Span
	for _, s := range r.spans {
		if hex.EncodeToString(s.TraceId) == id {
			out = append(out, s)
		}
	}
	return out
}

func (r *otlpReceiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.spans)
}

// waitTrace waits until n spans of trace id arrived.
func (r *otlpReceiver) waitTrace(t *testing.T, id string, n int) []*tracepb.Span {
	t.Helper()
	testkit.Eventually(t, 5*time.Second, func() bool { return len(r.trace(id)) >= n },
		fmt.Sprintf("trace %s: want %d spans at the collector", id, n))
	return r.trace(id)
}

func attr(s *tracepb.Span, key string) *commonpb.AnyValue {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return kv.Value
		}
	}
	return nil
}

func attrString(s *tracepb.Span, key string) string { return attr(s, key).GetStringValue() }
func attrInt(s *tracepb.Span, key string) int64     { return attr(s, key).GetIntValue() }

func eventAttr(e *tracepb.Span_Event, key string) string {
	for _, kv := range e.Attributes {
		if kv.Key == key {
			return kv.Value.GetStringValue()
		}
	}
	return ""
}

const (
	callerTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	callerSpanID  = "00f067aa0ba902b7"
)

var traceparentRE = regexp.MustCompile(`^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[0-3])$`)

// TestTracingSpans follows a call that continues the caller's trace
// through a retried upstream call: the spans the collector gets (names,
// parents, attributes, events), the traceparent the provider sees, the
// trace id in problem+json and the access log, the exemplars on the
// duration histograms and the per-consumer usage series.
func TestTracingSpans(t *testing.T) {
	t.Parallel()
	recv := startReceiver(t, 0)
	var flaky atomic.Int64
	up := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/flaky" && flaky.Add(1) == 1 {
			ctx.SetStatusCode(503)
			return
		}
		ctx.Response.Header.Set("X-RateLimit-Remaining", "42")
		ctx.Response.Header.Set("X-RateLimit-Limit", "100")
		ctx.SetBodyString(`{"ok":true}`)
	})
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: true}
tracing:
  enabled: true
  endpoint: %q
  service_name: sluice-test
consumers:
  team-a: {keys: ["team-a-key-0123456789"]}
  team-b: {keys: ["team-b-key-0123456789"]}
upstreams:
  up:   {url: %q}
  dead: {url: "http://%s"}
routes:
  r:
    path: "/r/{p:*}"
    upstream: up
    strip_prefix: "/r"
    plugins:
      authenticate: {}
      retry: {attempts: 2, backoff: 1ms}
      circuit_breaker: {consecutive_failures: 5}
  d: {path: "/d/{p:*}", upstream: dead}
`, recv.URL, up.URL, testkit.ClosedAddr(t)))

	resp := testkit.Do(t, "GET", gw.URL+"/r/flaky", "",
		"traceparent", "00-"+callerTraceID+"-"+callerSpanID+"-01", "tracestate", "vendor=x",
		"X-Api-Key", "team-a-key-0123456789")
	if resp.Status != 200 {
		t.Fatalf("status %d: %s", resp.Status, resp.Body)
	}

	// The provider saw the caller's trace, a new parent per attempt, and
	// the caller's tracestate.
	reqs := up.Requests()
	if len(reqs) != 2 {
		t.Fatalf("upstream got %d requests, want 2 (one retry)", len(reqs))
	}
	var attemptIDs []string
	for i, r := range reqs {
		m := traceparentRE.FindStringSubmatch(r.Header.Get("Traceparent"))
		if m == nil || m[1] != callerTraceID || m[3] != "01" || m[2] == callerSpanID {
			t.Fatalf("attempt %d: traceparent %q: want the caller's trace, a new parent id, sampled", i+1, r.Header.Get("Traceparent"))
		}
		if got := r.Header.Values("Traceparent"); len(got) != 1 {
			t.Errorf("attempt %d: %d traceparent headers, want 1", i+1, len(got))
		}
		if ts := r.Header.Get("Tracestate"); ts != "vendor=x" {
			t.Errorf("attempt %d: tracestate %q, want vendor=x", i+1, ts)
		}
		attemptIDs = append(attemptIDs, m[2])
	}

	spans := recv.waitTrace(t, callerTraceID, 3)
	if len(spans) != 3 {
		t.Fatalf("got %d spans, want 3 (server, two attempts)", len(spans))
	}
	var server *tracepb.Span
	var clients []*tracepb.Span
	for _, s := range spans {
		switch s.Kind {
		case tracepb.Span_SPAN_KIND_SERVER:
			server = s
		case tracepb.Span_SPAN_KIND_CLIENT:
			clients = append(clients, s)
		}
	}
	if server == nil || len(clients) != 2 {
		t.Fatalf("want one server and two client spans, got %v", spans)
	}
	if server.Name != "GET /r/{p:*}" {
		t.Errorf("server span name %q, want %q", server.Name, "GET /r/{p:*}")
	}
	if got := hex.EncodeToString(server.ParentSpanId); got != callerSpanID {
		t.Errorf("server span's parent %s, want the caller's %s", got, callerSpanID)
	}
	if server.TraceState != "vendor=x" {
		t.Errorf("server span trace state %q, want vendor=x", server.TraceState)
	}
	for key, want := range map[string]string{"sluice.route": "r", "sluice.upstream": "up", "http.route": "/r/{p:*}",
		"sluice.consumer": "team-a", "http.request.method": "GET", "url.path": "/r/flaky"} {
		if got := attrString(server, key); got != want {
			t.Errorf("server span %s = %q, want %q", key, got, want)
		}
	}
	if got := attrInt(server, "http.response.status_code"); got != 200 {
		t.Errorf("server span status code %d, want 200", got)
	}
	if got := attrInt(server, "sluice.attempts"); got != 2 {
		t.Errorf("server span sluice.attempts %d, want 2", got)
	}
	var breakerEvents int
	for _, e := range server.Events {
		if e.Name == "circuit_breaker.decision" && eventAttr(e, "circuit_breaker.decision") == "allowed" &&
			eventAttr(e, "circuit_breaker.target") == up.URL {
			breakerEvents++
		}
	}
	if breakerEvents != 2 {
		t.Errorf("want 2 circuit_breaker.decision events (one per attempt) on the server span, got %d in %v", breakerEvents, server.Events)
	}
	for i, c := range clients {
		if !bytes.Equal(c.ParentSpanId, server.SpanId) {
			t.Errorf("attempt span %d: parent %x, want the server span %x", i, c.ParentSpanId, server.SpanId)
		}
		n := attrInt(c, "sluice.attempt")
		if n != 1 && n != 2 {
			t.Fatalf("attempt span %d: sluice.attempt = %d", i, n)
		}
		if got := hex.EncodeToString(c.SpanId); got != attemptIDs[n-1] {
			t.Errorf("attempt %d: span id %s, but the provider got parent id %s", n, got, attemptIDs[n-1])
		}
		wantOutcome, wantStatus := "error_status", int64(503)
		if n == 2 {
			wantOutcome, wantStatus = "ok", 200
		}
		if got := attrString(c, "sluice.outcome"); got != wantOutcome {
			t.Errorf("attempt %d: outcome %q, want %q", n, got, wantOutcome)
		}
		if got := attrInt(c, "http.response.status_code"); got != wantStatus {
			t.Errorf("attempt %d: status %d, want %d", n, got, wantStatus)
		}
		if got := attrInt(c, "sluice.retry"); got != n-1 {
			t.Errorf("attempt %d: sluice.retry %d, want %d", n, got, n-1)
		}
		if got := attrString(c, "sluice.target"); got != up.URL {
			t.Errorf("attempt %d: target %q, want %q", n, got, up.URL)
		}
		if c.Name != "GET up" {
			t.Errorf("attempt span name %q, want %q", c.Name, "GET up")
		}
	}
	recv.mu.Lock()
	svc := recv.service[0]
	recv.mu.Unlock()
	if svc != "sluice-test" {
		t.Errorf("service.name %q, want sluice-test", svc)
	}

	// A gateway error: problem+json carries the (new) trace id, and so do
	// the access log and the exported spans.
	resp = testkit.Do(t, "GET", gw.URL+"/d/x", "")
	p := testkit.WantProblem(t, resp, 502, "upstream_unreachable")
	newID, _ := p["trace_id"].(string)
	if len(newID) != 32 || newID == callerTraceID {
		t.Fatalf("problem trace_id %q: want a new 32-digit trace id", newID)
	}
	dead := recv.waitTrace(t, newID, 2)
	for _, s := range dead {
		if s.Kind == tracepb.Span_SPAN_KIND_CLIENT && attrString(s, "sluice.outcome") != "conn_error" {
			t.Errorf("attempt to a closed port: outcome %q, want conn_error", attrString(s, "sluice.outcome"))
		}
		if s.Kind == tracepb.Span_SPAN_KIND_SERVER && (attrString(s, "error.type") != "upstream_unreachable" || s.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR) {
			t.Errorf("server span of a 502: error.type %q, status %v", attrString(s, "error.type"), s.Status)
		}
	}
	testkit.Eventually(t, 2*time.Second, func() bool {
		return strings.Contains(gw.Logs.String(), `"trace_id":"`+newID+`"`) &&
			strings.Contains(gw.Logs.String(), `"trace_id":"`+callerTraceID+`"`)
	}, "the access log has no trace_id for the calls")

	// Exemplars: the trace id on the buckets the calls fell in, parsed by
	// Prometheus' OpenMetrics parser.
	fams := scrapeOpenMetrics(t, gw.AdminURL)
	if !hasExemplar(fams["sluice_request_duration_seconds"], callerTraceID, "route", "r") {
		t.Errorf("sluice_request_duration_seconds{route=r}: no bucket has the exemplar trace_id=%s", callerTraceID)
	}
	if !hasExemplar(fams["sluice_upstream_duration_seconds"], callerTraceID, "outcome", "ok") {
		t.Errorf("sluice_upstream_duration_seconds{outcome=ok}: no bucket has the exemplar trace_id=%s", callerTraceID)
	}
	if !hasExemplar(fams["sluice_upstream_duration_seconds"], newID, "outcome", "conn_error") {
		t.Errorf("sluice_upstream_duration_seconds{outcome=conn_error}: no bucket has the exemplar trace_id=%s", newID)
	}

	// Per-consumer usage, with series for every configured consumer.
	m := gw.Metrics(t)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"sluice_consumer_requests_total", []string{"consumer", "team-a", "upstream", "up"}, 1},
		{"sluice_consumer_errors_total", []string{"consumer", "team-a", "upstream", "up"}, 0},
		{"sluice_consumer_quota_remaining", []string{"consumer", "team-a", "upstream", "up"}, 42},
		{"sluice_consumer_quota_limit", []string{"consumer", "team-a", "upstream", "up"}, 100},
		{"sluice_consumer_requests_total", []string{"consumer", "team-b", "upstream", "up"}, 0},
		{"sluice_consumer_requests_total", []string{"consumer", "team-b", "upstream", "dead"}, 0},
		{"sluice_consumer_requests_total", []string{"consumer", "_other", "upstream", "up"}, 0},
		{"sluice_tracing_spans_dropped_total", nil, 0},
	} {
		got, found := m.Value(c.name, c.labels...)
		if !found || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, got, found, c.want)
		}
	}
	testkit.Eventually(t, 5*time.Second, func() bool {
		v, _ := gw.Metrics(t).Value("sluice_tracing_spans_exported_total")
		return v >= 5
	}, "sluice_tracing_spans_exported_total never counted the 5 spans")
}

func scrapeOpenMetrics(t *testing.T, adminURL string) map[string]*dto.MetricFamily {
	t.Helper()
	req, err := http.NewRequest("GET", adminURL+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/openmetrics-text; version=1.0.0; charset=utf-8")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	format := expfmt.ResponseFormat(resp.Header)
	if format.FormatType() != expfmt.TypeOpenMetrics {
		t.Fatalf("/metrics answered %q, not OpenMetrics", resp.Header.Get("Content-Type"))
	}
	// The Go collector's go_memstats_alloc_bytes (gauge) and
	// go_memstats_alloc_bytes_total (counter) are one name to OpenMetrics,
	// which this strict parser refuses (Prometheus' scraper accepts it):
	// parse the gateway's own families.
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var own strings.Builder
	for line := range strings.Lines(string(body)) {
		for _, prefix := range []string{"sluice_", "# HELP sluice_", "# TYPE sluice_", "# UNIT sluice_", "# EOF"} {
			if strings.HasPrefix(line, prefix) {
				own.WriteString(line)
				break
			}
		}
	}
	if !strings.HasSuffix(own.String(), "# EOF\n") {
		t.Fatalf("/metrics: OpenMetrics without # EOF")
	}
	dec := expfmt.NewDecoder(strings.NewReader(own.String()), format)
	fams := map[string]*dto.MetricFamily{}
	for {
		var mf dto.MetricFamily
		if err := dec.Decode(&mf); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("OpenMetrics parser: %v", err)
		}
		fams[mf.GetName()] = &mf
	}
	return fams
}

// hasExemplar reports whether a bucket of a series with label name=value
// carries the exemplar trace_id=id.
func hasExemplar(mf *dto.MetricFamily, id, name, value string) bool {
	if mf == nil {
		return false
	}
	for _, m := range mf.Metric {
		match := false
		for _, l := range m.Label {
			match = match || l.GetName() == name && l.GetValue() == value
		}
		if !match {
			continue
		}
		for _, b := range m.GetHistogram().GetBucket() {
			for _, l := range b.GetExemplar().GetLabel() {
				if l.GetName() == "trace_id" && l.GetValue() == id {
					return true
				}
			}
		}
	}
	return false
}

// TestTracingSampling: a malformed traceparent starts a new trace (and its
// tracestate is dropped); an unsampled caller's traceparent passes as sent;
// parent_based follows the caller's sampled flag, sample decides otherwise.
func TestTracingSampling(t *testing.T) {
	t.Parallel()
	recv := startReceiver(t, 0)
	up := testkit.NewUpstream(t, nil)
	start := func(parentBased bool) *testkit.Gateway {
		return testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: true}
tracing: {enabled: true, endpoint: %q, sample: 0, parent_based: %v}
upstreams:
  up: {url: %q}
routes:
  r: {path: "/{p:*}", upstream: up}
`, recv.URL, parentBased, up.URL))
	}
	gw := start(true)
	unsampled := "00-" + callerTraceID + "-" + callerSpanID + "-00"
	sampled := "00-" + callerTraceID + "-" + callerSpanID + "-01"

	for _, bad := range []string{"garbage", "00-" + callerTraceID + "-" + callerSpanID + "-01-extra",
		"00-00000000000000000000000000000000-" + callerSpanID + "-01", strings.ToUpper(sampled), "ff" + sampled[2:]} {
		testkit.Do(t, "GET", gw.URL+"/x", "", "traceparent", bad, "tracestate", "vendor=x")
		got := up.Last(t).Header
		m := traceparentRE.FindStringSubmatch(got.Get("Traceparent"))
		if m == nil || strings.Contains(bad, m[1]) || m[3] != "00" {
			t.Errorf("malformed %q: provider got traceparent %q, want a new unsampled trace", bad, got.Get("Traceparent"))
			continue
		}
		if ts := got.Get("Tracestate"); ts != "" {
			t.Errorf("malformed %q: provider got tracestate %q, want none (it belonged to the malformed parent)", bad, ts)
		}
		if !strings.Contains(gw.Logs.String(), `"trace_id":"`+m[1]+`"`) {
			t.Errorf("malformed %q: access log lacks the new trace id %s", bad, m[1])
		}
	}

	testkit.Do(t, "GET", gw.URL+"/x", "", "traceparent", unsampled, "tracestate", "vendor=x")
	if got := up.Last(t).Header; got.Get("Traceparent") != unsampled || got.Get("Tracestate") != "vendor=x" {
		t.Errorf("unsampled caller: provider got %q / %q, want them as sent", got.Get("Traceparent"), got.Get("Tracestate"))
	}

	testkit.Do(t, "GET", gw.URL+"/x", "", "traceparent", sampled)
	m := traceparentRE.FindStringSubmatch(up.Last(t).Header.Get("Traceparent"))
	if m == nil || m[1] != callerTraceID || m[2] == callerSpanID || m[3] != "01" {
		t.Errorf("sampled caller, parent_based: provider got %q, want the trace continued by an attempt span", up.Last(t).Header.Get("Traceparent"))
	}
	if spans := recv.waitTrace(t, callerTraceID, 2); len(spans) != 2 {
		t.Errorf("sampled caller: %d spans, want 2", len(spans))
	}
	if n := recv.count(); n != 2 {
		t.Errorf("collector got %d spans, want only the 2 of the sampled caller (sample: 0)", n)
	}

	// parent_based: false: sample (0) decides, the caller's flag does not.
	gw2 := start(false)
	testkit.Do(t, "GET", gw2.URL+"/x", "", "traceparent", sampled)
	if got := up.Last(t).Header.Get("Traceparent"); got != sampled {
		t.Errorf("parent_based false, sample 0: provider got %q, want the caller's %q untouched", got, sampled)
	}
	time.Sleep(1500 * time.Millisecond) // longer than the batch timeout: a span would have been sent
	if n := recv.count(); n != 2 {
		t.Errorf("parent_based false, sample 0: collector has %d spans, want still 2", n)
	}
}

// TestTracingOff: without tracing the caller's headers pass byte for byte,
// even malformed, and no trace id appears anywhere.
func TestTracingOff(t *testing.T) {
	t.Parallel()
	up := testkit.NewUpstream(t, nil)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: true}
upstreams:
  up:   {url: %q}
  dead: {url: "http://%s"}
routes:
  r: {path: "/{p:*}", upstream: up}
  d: {path: "/d/{p:*}", upstream: dead}
`, up.URL, testkit.ClosedAddr(t)))
	for _, tp := range []string{"00-" + callerTraceID + "-" + callerSpanID + "-01", "garbage"} {
		testkit.Do(t, "GET", gw.URL+"/x", "", "traceparent", tp, "tracestate", "vendor=x")
		if got := up.Last(t).Header; got.Get("Traceparent") != tp || got.Get("Tracestate") != "vendor=x" {
			t.Errorf("tracing off: provider got %q / %q, want %q / vendor=x", got.Get("Traceparent"), got.Get("Tracestate"), tp)
		}
	}
	testkit.Do(t, "GET", gw.URL+"/y", "")
	if got := up.Last(t).Header.Get("Traceparent"); got != "" {
		t.Errorf("tracing off: provider got traceparent %q for a call without one", got)
	}
	p := testkit.WantProblem(t, testkit.Do(t, "GET", gw.URL+"/d/x", ""), 502, "upstream_unreachable")
	if _, has := p["trace_id"]; has {
		t.Errorf("tracing off: problem+json has trace_id: %v", p)
	}
	if strings.Contains(gw.Logs.String(), "trace_id") {
		t.Errorf("tracing off: the log mentions trace_id")
	}
}

// TestTracingCollectorDown: with the collector refusing connections or too
// slow, calls are not held up and every span is counted as dropped.
func TestTracingCollectorDown(t *testing.T) {
	t.Parallel()
	slow := startReceiver(t, 3*time.Second)
	for _, c := range []struct{ name, endpoint string }{
		{"refused", "http://" + testkit.ClosedAddr(t) + "/v1/traces"},
		{"slow", slow.URL},
	} {
		t.Run(c.name, func(t *testing.T) {
			up := testkit.NewUpstream(t, nil)
			gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
tracing: {enabled: true, endpoint: %q, timeout: 2s, queue_size: 8, batch_size: 4}
upstreams:
  up: {url: %q}
routes:
  r: {path: "/{p:*}", upstream: up}
`, c.endpoint, up.URL))
			const calls = 40
			var slowest time.Duration
			for range calls {
				start := time.Now()
				if resp := testkit.Do(t, "GET", gw.URL+"/x", ""); resp.Status != 200 {
					t.Fatalf("status %d", resp.Status)
				}
				slowest = max(slowest, time.Since(start))
			}
			// A call that waited for an export would take the export's
			// timeout (2s: the slow collector answers after 3s).
			if slowest > 1500*time.Millisecond {
				t.Errorf("slowest call took %s with the collector %s", slowest, c.name)
			}
			// Each call made a server and an attempt span; all are dropped,
			// in the queue or when their export failed.
			testkit.Eventually(t, 15*time.Second, func() bool {
				v, _ := gw.Metrics(t).Value("sluice_tracing_spans_dropped_total")
				return v == 2*calls
			}, "sluice_tracing_spans_dropped_total never reached every span")
			m := gw.Metrics(t)
			if v, _ := m.Value("sluice_tracing_spans_exported_total"); v != 0 {
				t.Errorf("exported = %v, want 0", v)
			}
			if !strings.Contains(gw.Logs.String(), "tracing: export to the collector failed") {
				t.Errorf("no log line about the failing collector")
			}
		})
	}
	if n := slow.posts.Load(); n == 0 {
		t.Errorf("the slow collector was never called")
	}
}

func TestTracingConfigErrors(t *testing.T) {
	t.Parallel()
	base := "upstreams: {up: {url: \"http://127.0.0.1:1\"}}\nroutes: {r: {path: \"/\", upstream: up}}\n"
	for _, c := range []struct{ yaml, path, msg string }{
		{"tracing: {enabled: true}", "tracing.endpoint", "is required when tracing is enabled"},
		{"tracing: {enabled: true, endpoint: \"ftp://x/v1/traces\"}", "tracing.endpoint", "invalid URL"},
		{"tracing: {enabled: true, endpoint: \"http://u:p@x/v1/traces\"}", "tracing.endpoint", "must not contain credentials"},
		{"tracing: {enabled: true, endpoint: \"http://x/v1/traces\", sample: 1.5}", "tracing.sample", "between 0 and 1"},
		{"tracing: {enabled: true, endpoint: \"http://x/v1/traces\", batch_size: 4096}", "tracing.batch_size", "between 1 and queue_size"},
		{"tracing: {enabled: true, endpoint: \"http://x/v1/traces\", timeout: 0s}", "tracing.timeout", "positive"},
		{"tracing: {enabled: true, endpoint: \"http://x/v1/traces\", headers: {\"bad name\": \"secret-value-123\"}}", "tracing.headers.bad name", "invalid header name"},
		{"tracing: {enabled: true, endpoint: \"http://x/v1/traces\", sampel: 1}", "tracing.sampel", ""},
	} {
		testkit.WantOneProblem(t, testkit.ConfigProblems(t, base+c.yaml), c.path, c.msg)
	}
	testkit.WantOneProblem(t, testkit.ConfigProblems(t, base+"tracing: {endpoint: \"http://x/v1/traces\"}"), "", "")
}

// TestTracingHeadersSecret: the collector gets tracing.headers; the value
// never shows in /admin/config.
func TestTracingHeadersSecret(t *testing.T) {
	t.Parallel()
	var got atomic.Value
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(r.Header.Get("X-Collector-Key"))
		w.Header().Set("Content-Type", "application/x-protobuf")
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	dir := t.TempDir()
	testkit.WriteFile(t, dir+"/key", "collector-secret-value\n")
	up := testkit.NewUpstream(t, nil)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
tracing:
  enabled: true
  endpoint: "http://%s/v1/traces"
  headers: {X-Collector-Key: "file:%s/key"}
upstreams:
  up: {url: %q}
routes:
  r: {path: "/{p:*}", upstream: up}
`, ln.Addr(), dir, up.URL))
	testkit.Do(t, "GET", gw.URL+"/x", "")
	testkit.Eventually(t, 5*time.Second, func() bool { v, _ := got.Load().(string); return v != "" }, "the collector got no export")
	if v := got.Load().(string); v != "collector-secret-value" {
		t.Errorf("collector got X-Collector-Key %q", v)
	}
	cfg := testkit.Do(t, "GET", gw.AdminURL+"/admin/config", "")
	if strings.Contains(string(cfg.Body), "collector-secret-value") {
		t.Errorf("/admin/config shows the collector key")
	}
	var doc map[string]any
	if err := json.Unmarshal(cfg.Body, &doc); err != nil {
		t.Fatalf("/admin/config: %v", err)
	}
	if strings.Contains(gw.Logs.String(), "collector-secret-value") {
		t.Errorf("the log shows the collector key")
	}
}

// TestTracingPluginEvents: the cache's lookups and a rate-limit wait show
// as events on the sampled call's server span.
func TestTracingPluginEvents(t *testing.T) {
	t.Parallel()
	recv := startReceiver(t, 0)
	up := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("Cache-Control", "public, max-age=60")
		ctx.SetBodyString("cached")
	})
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
tracing: {enabled: true, endpoint: %q}
upstreams:
  up: {url: %q}
routes:
  r:
    path: "/{p:*}"
    upstream: up
    plugins:
      rate_limit: {rate: 1, per: 3s, burst: 1, key: upstream, mode: queue, max_wait: 5s}
      cache: {}
`, recv.URL, up.URL))
	// The cache answers before the rate limit: /x misses (a token is
	// there), /y misses and waits for the next token, /x again hits.
	calls := []struct{ id, path string }{
		{"1bf92f3577b34da6a3ce929d0e0e4736", "/x"},
		{"2bf92f3577b34da6a3ce929d0e0e4736", "/y"},
		{"3bf92f3577b34da6a3ce929d0e0e4736", "/x"},
	}
	for _, c := range calls {
		if resp := testkit.Do(t, "GET", gw.URL+c.path, "", "traceparent", "00-"+c.id+"-"+callerSpanID+"-01"); resp.Status != 200 {
			t.Fatalf("status %d", resp.Status)
		}
	}
	events := func(id string) map[string]*tracepb.Span_Event {
		out := map[string]*tracepb.Span_Event{}
		for _, s := range recv.waitTrace(t, id, 1) {
			if s.Kind == tracepb.Span_SPAN_KIND_SERVER {
				for _, e := range s.Events {
					out[e.Name] = e
				}
			}
		}
		return out
	}
	first, second, third := events(calls[0].id), events(calls[1].id), events(calls[2].id)
	for _, c := range []struct {
		n      int
		events map[string]*tracepb.Span_Event
		want   string
	}{{1, first, "miss"}, {2, second, "miss"}, {3, third, "hit"}} {
		if e := c.events["cache.lookup"]; e == nil || eventAttr(e, "cache.result") != c.want {
			t.Errorf("call %d: cache.lookup event %v, want result %s", c.n, e, c.want)
		}
	}
	e := second["rate_limit.wait"]
	if e == nil {
		t.Fatalf("second call: no rate_limit.wait event (one token per 3s): %v", second)
	}
	for _, kv := range e.Attributes {
		if kv.Key == "rate_limit.wait_seconds" && (kv.Value.GetDoubleValue() <= 0 || kv.Value.GetDoubleValue() > 3.5) {
			t.Errorf("rate_limit.wait_seconds = %v, want (0, 3.5]", kv.Value.GetDoubleValue())
		}
	}
	if _, waited := first["rate_limit.wait"]; waited {
		t.Errorf("first call: rate_limit.wait event, but a token was there")
	}
}

// TestTracingReload: a reload turns tracing on (the next calls export
// spans) and off again (the caller's traceparent passes untouched).
func TestTracingReload(t *testing.T) {
	t.Parallel()
	recv := startReceiver(t, 0)
	up := testkit.NewUpstream(t, nil)
	base := fmt.Sprintf(`
log: {access_log: false}
upstreams:
  up: {url: %q}
routes:
  r: {path: "/{p:*}", upstream: up}
`, up.URL)
	gw := testkit.StartGateway(t, base)
	sampled := "00-" + callerTraceID + "-" + callerSpanID + "-01"
	testkit.Do(t, "GET", gw.URL+"/x", "", "traceparent", sampled)
	if got := up.Last(t).Header.Get("Traceparent"); got != sampled {
		t.Fatalf("tracing off: provider got %q", got)
	}
	testkit.WriteFile(t, gw.File, base+fmt.Sprintf("tracing: {enabled: true, endpoint: %q}\n", recv.URL))
	if err := gw.Reload(); err != nil {
		t.Fatal(err)
	}
	testkit.Do(t, "GET", gw.URL+"/x", "", "traceparent", sampled)
	if got := up.Last(t).Header.Get("Traceparent"); got == sampled || !strings.Contains(got, callerTraceID) {
		t.Errorf("after the reload that turned tracing on: provider got %q, want the trace continued by an attempt span", got)
	}
	recv.waitTrace(t, callerTraceID, 2)
	testkit.WriteFile(t, gw.File, base)
	if err := gw.Reload(); err != nil {
		t.Fatal(err)
	}
	testkit.Do(t, "GET", gw.URL+"/x", "", "traceparent", sampled)
	if got := up.Last(t).Header.Get("Traceparent"); got != sampled {
		t.Errorf("after the reload that turned tracing off: provider got %q, want %q", got, sampled)
	}
}
