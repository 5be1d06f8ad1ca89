package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-gw/sluice/proxy/config"
	"github.com/valyala/fasthttp"
)

// Upstream is one provider API as compiled from an upstreams.NAME block: its
// targets with their connection pools, its per-attempt timeout and its
// deadline. Each route that uses it ends at an upstreamCall, which makes one
// attempt to one of its targets.
type Upstream struct {
	Name    string
	Targets []*Target
	// Timeout bounds one attempt.
	Timeout time.Duration
	// Deadline bounds a whole call: every attempt and the waits between them.
	Deadline time.Duration

	next          atomic.Uint32
	leastInflight bool
	outlier       outlierSettings
	logger        *slog.Logger
	metrics       upstreamMetrics
	checker       *healthChecker // nil without health_check
	bodies        *bodyBudget    // the process-wide body budget

	forwarded       bool          // forwarded_headers: send X-Forwarded-*
	maxBody         int           // max_response_body
	streamThreshold int           // stream_threshold
	streamIdle      time.Duration // stream_idle_timeout
	streamMax       time.Duration // max_stream_duration; 0 for none
	writeTimeout    time.Duration // server.write_timeout, per write of a stream
	streams         *streamSet    // the process's open streams
}

func (u *Upstream) log() *slog.Logger {
	if u.logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return u.logger
}

// Target is one base URL of an upstream with its keep-alive connection pool.
type Target struct {
	// URL is the target's base URL as configured.
	URL string

	client   *fasthttp.HostClient
	health   *targetHealth // shared across reloads (see balance.go)
	index    int
	host     []byte // Host header value
	scheme   []byte // "http" or "https"
	basePath []byte // path of the base URL without trailing slash, may be empty
}

// Host is the host (and port, if the URL has one) of the target's base URL,
// as the Host header sends it. It is not a copy: a target never changes.
func (t *Target) Host() string { return b2s(t.host) }

// BasePath is the path of the target's base URL, without a trailing slash
// (empty for a bare host); request paths are appended to it.
func (t *Target) BasePath() string { return b2s(t.basePath) }

// appendRequestURI appends the outbound request URI: the target's base path,
// then the caller's raw path minus the route's strip_prefix, then the raw
// query. Nothing is decoded or re-encoded.
func (t *Target) appendRequestURI(dst, rawURI []byte, stripPrefix string) []byte {
	rest := rawURI
	if stripPrefix != "" && len(rest) >= len(stripPrefix) && b2s(rest[:len(stripPrefix)]) == stripPrefix {
		rest = rest[len(stripPrefix):]
	}
	dst = append(dst, t.basePath...)
	if len(rest) == 0 || rest[0] != '/' {
		dst = append(dst, '/')
	}
	return append(dst, rest...)
}

// clientKey identifies the settings of one target's pool. Targets with equal
// keys share a pool across reloads, so a reload does not drop warm connections.
func clientKey(target string, uc *config.UpstreamConfig) string {
	return fmt.Sprintf("%s|%v|%v|%d|%v|%d|%+v", target, uc.Timeout, uc.ConnectTimeout, uc.MaxConns,
		uc.IdleConnTimeout, uc.MaxResponseBody, uc.TLS)
}

// newTarget parses a validated base URL and prepares its pool (the pool is
// taken from pools when an identical one exists).
func newTarget(raw, key string, uc *config.UpstreamConfig, pools *clientPools, dial fasthttp.DialFunc) (*Target, error) {
	pu, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	t := &Target{
		URL:      raw,
		host:     []byte(pu.Host),
		scheme:   []byte(pu.Scheme),
		basePath: []byte(strings.TrimSuffix(pu.EscapedPath(), "/")),
	}
	if hc := pools.get(key); hc != nil {
		t.client = hc
		return t, nil
	}
	hc, err := newHostClient(pu, uc, dial)
	if err != nil {
		return nil, err
	}
	t.client = pools.put(key, hc)
	return t, nil
}

// tcpDialer is shared by every upstream pool of the process: its DNS cache
// (one minute) has one cleaner goroutine for the life of the process, rather
// than one per pool per reload.
var tcpDialer = &fasthttp.TCPDialer{DNSCacheDuration: time.Minute}

func newHostClient(pu *url.URL, uc *config.UpstreamConfig, dial fasthttp.DialFunc) (*fasthttp.HostClient, error) {
	port := pu.Port()
	if port == "" {
		port = "80"
		if pu.Scheme == "https" {
			port = "443"
		}
	}
	addr := net.JoinHostPort(pu.Hostname(), port)
	connectTimeout := uc.ConnectTimeout.D()
	if dial == nil {
		dial = func(addr string) (net.Conn, error) {
			return wrapUpstreamConn(tcpDialer.DialTimeout(addr, connectTimeout))
		}
	} else {
		hook := dial // tests and in-process benchmarks
		dial = func(addr string) (net.Conn, error) { return wrapUpstreamConn(hook(addr)) }
	}
	hc := &fasthttp.HostClient{
		Addr:                     addr,
		Dial:                     dial,
		IsTLS:                    pu.Scheme == "https",
		NoDefaultUserAgentHeader: true, // forward the caller's User-Agent, add none
		MaxConns:                 uc.MaxConns,
		MaxIdleConnDuration:      uc.IdleConnTimeout.D(),
		MaxResponseBodySize:      int(uc.MaxResponseBody),
		ReadBufferSize:           32 << 10, // upstream response heads up to 32 KiB
		WriteBufferSize:          16 << 10,
		DisablePathNormalizing:   true, // forward the raw path as sent
		SecureErrorLogMessage:    true, // never put bodies or headers in error texts
		// Requests go through Upstream.roundTrip (transport.go), which reads
		// answers itself; Do is used by health checks only.
	}
	if hc.IsTLS {
		tc, err := tlsConfig(pu.Hostname(), &uc.TLS)
		if err != nil {
			return nil, err
		}
		hc.TLSConfig = tc
	}
	return hc, nil
}

func tlsConfig(host string, c *config.TLSConfig) (*tls.Config, error) {
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         host,
		InsecureSkipVerify: c.InsecureSkipVerify, //nolint:gosec // opt-in, documented as tests only
		ClientSessionCache: tls.NewLRUClientSessionCache(256),
	}
	if c.ServerName != "" {
		tc.ServerName = c.ServerName
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, &config.FieldError{Path: "tls.ca_file", Msg: fmt.Sprintf("cannot read %q: %v", c.CAFile, config.UnwrapPathErr(err))}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &config.FieldError{Path: "tls.ca_file", Msg: fmt.Sprintf("%q holds no PEM certificate", c.CAFile)}
		}
		tc.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, &config.FieldError{Path: "tls.cert_file", Msg: fmt.Sprintf("cannot load client certificate: %v", err)}
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// clientPools holds the upstream connection pools by settings, so that a
// reload reuses warm pools whose settings did not change.
type clientPools struct {
	mu sync.Mutex
	m  map[string]*fasthttp.HostClient
}

func newClientPools() *clientPools { return &clientPools{m: map[string]*fasthttp.HostClient{}} }

func (c *clientPools) get(key string) *fasthttp.HostClient {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[key]
}

func (c *clientPools) put(key string, hc *fasthttp.HostClient) *fasthttp.HostClient {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.m[key]; ok {
		return old
	}
	c.m[key] = hc
	return hc
}

// release removes the pools no longer in keep and returns them, so that
// their idle connections can be closed once no request uses them.
func (c *clientPools) release(keep map[string]bool) []*fasthttp.HostClient {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*fasthttp.HostClient
	for k, hc := range c.m {
		if !keep[k] {
			out = append(out, hc)
			delete(c.m, k)
		}
	}
	return out
}
