package config

import "time"

// DefaultConfig returns a Config holding every default. Load decodes the file
// on top of it.
func DefaultConfig() *Config {
	return &Config{
		Server: ServerConfig{
			Listen:         "127.0.0.1:8080",
			ReadTimeout:    Duration(10 * time.Second),
			WriteTimeout:   Duration(10 * time.Second),
			IdleTimeout:    Duration(60 * time.Second),
			MaxRequestBody: 10 << 20,
			MaxHeaderSize:  16 << 10,
			DrainTimeout:   Duration(15 * time.Second),
			MaxBodyMemory:  512 << 20,
		},
		Log:    LogConfig{Level: "info", Format: "json", AccessLog: true},
		Admin:  AdminConfig{Listen: "127.0.0.1:9090"},
		Reload: ReloadConfig{Debounce: Duration(time.Second)},
		Tracing: TracingConfig{Sample: 1, ParentBased: true, ServiceName: "sluice",
			Timeout: Duration(5 * time.Second), QueueSize: 2048, BatchSize: 512},
	}
}

// upstreamDefaults fills the zero fields of an upstream with defaults. Applied
// after decoding because upstreams live in a map.
func (u *UpstreamConfig) applyDefaults() {
	if u.Timeout == 0 {
		u.Timeout = Duration(30 * time.Second)
	}
	if u.Deadline == 0 {
		u.Deadline = 2 * u.Timeout
	}
	if u.ConnectTimeout == 0 {
		u.ConnectTimeout = Duration(5 * time.Second)
	}
	if u.MaxConns == 0 {
		u.MaxConns = 512
	}
	if u.IdleConnTimeout == 0 {
		u.IdleConnTimeout = Duration(10 * time.Second)
	}
	if u.MaxResponseBody == 0 {
		u.MaxResponseBody = 64 << 20
	}
	if u.StreamThreshold == 0 {
		u.StreamThreshold = min(1<<20, u.MaxResponseBody)
	}
	if u.StreamIdleTimeout == 0 {
		u.StreamIdleTimeout = Duration(5 * time.Minute)
	}
	if u.Balance == "" {
		u.Balance = BalanceRoundRobin
	}
	o := &u.Outlier
	if o.ConsecutiveFailures == 0 {
		o.ConsecutiveFailures = 5
	}
	if o.EjectFor == 0 {
		o.EjectFor = Duration(30 * time.Second)
	}
	if o.MaxEjectFor == 0 {
		o.MaxEjectFor = max(Duration(5*time.Minute), o.EjectFor)
	}
	if h := u.HealthCheck; h != nil {
		if h.Interval == 0 {
			h.Interval = Duration(10 * time.Second)
		}
		if h.Timeout == 0 {
			h.Timeout = min(Duration(2*time.Second), h.Interval)
		}
		if h.HealthyStatuses == nil {
			h.HealthyStatuses = []string{"2xx", "3xx"}
		}
		if h.UnhealthyAfter == 0 {
			h.UnhealthyAfter = 2
		}
		if h.HealthyAfter == 0 {
			h.HealthyAfter = 1
		}
	}
}

func (r *RedisConfig) applyDefaults() {
	if r.KeyPrefix == "" {
		r.KeyPrefix = "sluice:"
	}
	if r.DialTimeout == 0 {
		r.DialTimeout = Duration(200 * time.Millisecond)
	}
	if r.ReadTimeout == 0 {
		r.ReadTimeout = Duration(100 * time.Millisecond)
	}
	if r.WriteTimeout == 0 {
		r.WriteTimeout = Duration(100 * time.Millisecond)
	}
}
