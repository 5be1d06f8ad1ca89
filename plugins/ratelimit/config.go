package ratelimit

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/sluice-gw/sluice/proxy/config"
	"github.com/sluice-gw/sluice/proxy/httpx"
)

// Limit is one token bucket: Rate calls per Per, up to Burst at once, counted
// per Key. Its JSON (/admin/config) omits unset members, so that a block in
// the limits-list form does not show an empty single limit beside the list.
type Limit struct {
	// Rate is the number of calls allowed per Per. Required, > 0; fractions
	// are fine (rate: 0.5, per: 1s is one call every two seconds).
	Rate float64 `koanf:"rate" json:"rate,omitempty"`
	// Per is the period of Rate. Default 1s.
	Per config.Duration `koanf:"per" json:"per,omitempty"`
	// Burst is how many calls may go at once on a full bucket. Default: Rate
	// rounded up (at least 1).
	Burst int `koanf:"burst" json:"burst,omitempty"`
	// Key says what is counted apart: upstream (default: one bucket for the
	// upstream, shared by all its routes, counted per attempt after the
	// cache), route, consumer, ip (the caller's TCP peer address) or
	// header:NAME. Calls with no consumer or without the header share one
	// bucket (the empty key).
	Key string `koanf:"key" json:"key,omitempty"`
	// Name names the limit in the RateLimit headers and in the scope label
	// of the metrics. Default: the key ("consumer", "header:x-tenant").
	Name string `koanf:"name" json:"name,omitempty"`
	// Distributed enforces the limit across all gateways through Redis when
	// cluster.redis is set. Default true in cluster mode; ignored otherwise.
	Distributed *bool `koanf:"distributed" json:"distributed,omitempty"`
}

// Config of rate_limit. Either the single-limit form (rate, per, burst, key
// at the top) or limits: [...], not both. A block with neither and
// respect_upstream: true only obeys the provider.
type Config struct {
	Limit `koanf:",squash"`
	// Limits lists several limits; a call must pass all of them.
	Limits []Limit `koanf:"limits" json:"limits,omitempty"`
	// RespectUpstream obeys the provider's own "slow down": after a 429 or
	// 503 with Retry-After, or RateLimit / X-RateLimit-Remaining: 0 with a
	// reset, the upstream's calls are answered 429 upstream_rate_limited by
	// Sluice until the reset. Default false.
	RespectUpstream bool `koanf:"respect_upstream" json:"respect_upstream"`
	// QuotaHeaders names more remaining/reset header pairs the provider
	// sends besides the standard ones (respect_upstream only): a pair whose
	// remaining value is 0 pauses the upstream until its reset, written in
	// seconds from now, as a Unix time, or as a duration ("6m0s", "20ms").
	// The least remaining value of all pairs is the quota reported.
	QuotaHeaders []QuotaHeader `koanf:"quota_headers" json:"quota_headers,omitempty"`
	// ThrottleStatuses are statuses besides 429 and 503 that mean "slow
	// down" when the answer carries a Retry-After (respect_upstream only;
	// GitHub answers its secondary rate limits with 403 and Retry-After).
	ThrottleStatuses []int `koanf:"throttle_statuses" json:"throttle_statuses,omitempty"`
	// Mode is reject (default: an empty bucket answers 429 at once) or queue
	// (the call waits for a token up to MaxWait and the route's deadline).
	Mode string `koanf:"mode" json:"mode"`
	// MaxWait bounds the wait in queue mode. Default 1s; a call that would
	// wait longer gets the 429 at once.
	MaxWait config.Duration `koanf:"max_wait" json:"max_wait"`
	// MaxKeys bounds the buckets of one keyed limit (consumer, ip, header).
	// When it is reached, new keys share one overflow bucket until idle keys
	// expire. Default 100000.
	MaxKeys int `koanf:"max_keys" json:"max_keys"`
	// IdleTimeout drops the bucket of a key unused this long (and never
	// before its bucket has refilled, so forgetting it gives nothing away).
	// Default 10m.
	IdleTimeout config.Duration `koanf:"idle_timeout" json:"idle_timeout"`
	// Nodes is the number of gateways sharing distributed limits. While
	// Redis is unreachable, each gateway enforces rate/nodes (and
	// burst/nodes, at least 1) locally, so that the cluster as a whole stays
	// within the limit. Default 0: count the gateways through a heartbeat in
	// Redis (the count last seen holds during an outage).
	Nodes int `koanf:"nodes" json:"nodes"`
}

// QuotaHeader is one pair of a provider's quota headers.
type QuotaHeader struct {
	// Remaining is the header with the calls (or tokens) left. Required.
	Remaining string `koanf:"remaining" json:"remaining"`
	// Reset is the header saying when the quota is back. Without it, a
	// remaining value of 0 pauses for 1s.
	Reset string `koanf:"reset" json:"reset,omitempty"`
}

const (
	modeReject = "reject"
	modeQueue  = "queue"
)

// Defaults sets mode, max_wait, max_keys and idle_timeout; the defaults of
// each limit depend on its other settings and are filled by Settle.
func (c *Config) Defaults() {
	*c = Config{Mode: modeReject, MaxWait: config.Duration(time.Second), MaxKeys: 100000,
		IdleTimeout: config.Duration(10 * time.Minute)}
}

// single reports whether the block holds a limit of its own (rate, per...
// at the top) rather than, or besides, a limits list.
func (c *Config) single() bool {
	return c.Rate != 0 || c.Key != "" || c.Burst != 0 || c.Per != 0 || c.Name != "" || c.Distributed != nil
}

// Settle fills each limit's unset settings: per 1s, key upstream, burst the
// rate rounded up (at least 1), name the key.
func (c *Config) Settle() {
	if c.single() {
		c.Limit.settle()
	}
	for i := range c.Limits {
		c.Limits[i].settle()
	}
}

func (l *Limit) settle() {
	if l.Per == 0 {
		l.Per = config.Duration(time.Second)
	}
	if l.Key == "" {
		l.Key = "upstream"
	}
	if l.Burst == 0 && l.Rate > 0 {
		l.Burst = max(1, int(math.Ceil(l.Rate)))
	}
	if l.Name == "" {
		l.Name = strings.ToLower(l.Key)
	}
}

// limits returns the limits of the block: its own, then its list.
func (c *Config) limits() []Limit {
	var ls []Limit
	if c.single() {
		ls = append(ls, c.Limit)
	}
	return append(ls, c.Limits...)
}

// Validate checks every limit and the options.
func (c *Config) Validate() error {
	var p config.Problems
	single := c.single()
	if single && len(c.Limits) > 0 {
		p.Add("limits", "use either rate/per/burst/key at the top or a limits list, not both")
		return p.Err()
	}
	if !single && len(c.Limits) == 0 && !c.RespectUpstream {
		p.Add("rate", "required: set rate, a positive number of calls per `per` (or a limits list, or respect_upstream: true)")
	}
	names := map[string]bool{}
	for i, l := range c.limits() {
		path := ""
		if !single || i > 0 {
			path = fmt.Sprintf("limits[%d].", i-btoi(single))
		}
		switch {
		case l.Rate <= 0 || math.IsNaN(l.Rate) || math.IsInf(l.Rate, 0):
			p.Add(path+"rate", "must be a positive number of calls per `per`")
		case l.Rate/l.Per.D().Seconds() > 1e9:
			p.Add(path+"rate", "more than 1e9 calls per second: no limit at all")
		}
		if l.Burst < 0 {
			p.Add(path+"burst", "must not be negative")
		}
		if _, _, err := parseKey(l.Key); err != nil {
			p.Add(path+"key", err.Error())
		}
		if err := checkName(l.Name); err != nil {
			p.Add(path+"name", err.Error())
		} else if names[l.Name] {
			p.Addf(path+"name", "%q names two limits; give each a name", l.Name)
		}
		names[l.Name] = true
	}
	switch c.Mode {
	case modeReject, modeQueue:
	default:
		p.Addf("mode", "unknown mode %q: want reject or queue", c.Mode)
	}
	if c.Mode == modeQueue && c.MaxWait <= 0 {
		p.Add("max_wait", "must be positive in queue mode")
	}
	if (len(c.QuotaHeaders) > 0 || len(c.ThrottleStatuses) > 0) && !c.RespectUpstream {
		key := "quota_headers"
		if len(c.QuotaHeaders) == 0 {
			key = "throttle_statuses"
		}
		p.Add(key, "only read with respect_upstream: true")
	}
	for i, q := range c.QuotaHeaders {
		if !httpx.ValidToken(q.Remaining) {
			p.Addf(fmt.Sprintf("quota_headers[%d].remaining", i), "%q is not a header name", q.Remaining)
		}
		if q.Reset != "" && !httpx.ValidToken(q.Reset) {
			p.Addf(fmt.Sprintf("quota_headers[%d].reset", i), "%q is not a header name", q.Reset)
		}
	}
	for i, st := range c.ThrottleStatuses {
		if st < 400 || st > 599 {
			p.Addf(fmt.Sprintf("throttle_statuses[%d]", i), "%d is not a 4xx or 5xx status", st)
		}
	}
	if c.MaxKeys < 1 {
		p.Add("max_keys", "must be at least 1")
	}
	if c.IdleTimeout <= 0 {
		p.Add("idle_timeout", "must be positive")
	}
	if c.Nodes < 0 {
		p.Add("nodes", "must be 0 (count the gateways) or the number of gateways")
	}
	return p.Err()
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

type keyKind uint8

const (
	keyUpstream keyKind = iota
	keyRoute
	keyConsumer
	keyIP
	keyHeader
)

// parseKey reads upstream | route | consumer | ip | header:NAME.
func parseKey(k string) (keyKind, string, error) {
	switch k {
	case "upstream":
		return keyUpstream, "", nil
	case "route":
		return keyRoute, "", nil
	case "consumer":
		return keyConsumer, "", nil
	case "ip":
		return keyIP, "", nil
	}
	if name, ok := strings.CutPrefix(k, "header:"); ok {
		if !httpx.ValidToken(name) {
			return 0, "", fmt.Errorf("invalid header name %q in %q", name, k)
		}
		return keyHeader, name, nil
	}
	return 0, "", fmt.Errorf("unknown key %q: want upstream, route, consumer, ip or header:NAME", k)
}

// checkName accepts names that fit a structured-field string without escapes.
func checkName(n string) error {
	if n == "" || len(n) > 64 {
		return fmt.Errorf("must be 1 to 64 characters")
	}
	for _, r := range n {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return fmt.Errorf("invalid character %q: use printable ASCII without quotes or backslashes", r)
		}
	}
	return nil
}
