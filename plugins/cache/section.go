package cache

import (
	"time"

	"github.com/sluice-gw/sluice/proxy/config"
)

// Section is the top-level "cache:" section, which the cache plugin owns: the
// process-wide store that the cache block of every route stores into.
type Section struct {
	// MaxSize bounds the store: its entries' keys and values plus 192
	// bytes each (the Go heap they take is somewhat larger). Default
	// 256MiB. The store is made once per process: a reload that changes
	// max_size or shards is logged and applies at the next start.
	MaxSize config.Size `koanf:"max_size" json:"max_size" reload:"restart"`
	// MaxEntrySize is the largest entry (headers and body) stored; larger
	// answers are passed through and not stored. Default 1MiB. It must fit
	// in one shard (max_size / shards).
	MaxEntrySize config.Size `koanf:"max_entry_size" json:"max_entry_size"`
	// Shards splits the store (a power of two, 1 to 1024); more shards mean
	// less lock contention, but each shard holds max_size/shards. Default 0:
	// as many as fit four max-size entries each, at most 256.
	Shards int `koanf:"shards" json:"shards" reload:"restart"`

	// Shared makes Redis (cluster.redis) a second tier behind the store,
	// shared by every gateway of the cluster, for every caching route.
	// Default true; without cluster.redis there is no second tier.
	Shared bool `koanf:"shared" json:"shared"`
	// SharedMaxEntrySize is the largest entry written to the shared tier;
	// larger ones stay in this gateway's store only. Default 0: the same as
	// max_entry_size.
	SharedMaxEntrySize config.Size `koanf:"shared_max_entry_size" json:"shared_max_entry_size,omitempty"`
	// SharedTimeout bounds each call to the shared tier made for a request
	// (a lookup, a write); past it the request goes on without it. Default 50ms.
	SharedTimeout config.Duration `koanf:"shared_timeout" json:"shared_timeout"`
	// SharedWait is how long a miss waits for another gateway that is
	// already fetching the same entry before calling the provider itself
	// (never past the route's deadline). Default 2s; 0 turns collapsing
	// across gateways off.
	SharedWait config.Duration `koanf:"shared_wait" json:"shared_wait"`
}

// sharedMaxEntry is the largest entry the shared tier takes.
func (c *Section) sharedMaxEntry() int {
	if c.SharedMaxEntrySize > 0 {
		return int(c.SharedMaxEntrySize)
	}
	return int(c.MaxEntrySize)
}

// StoreShards returns the number of shards the cache store uses.
func (c *Section) StoreShards() int {
	if c.Shards > 0 {
		return c.Shards
	}
	n := 1
	for n < 256 && int64(c.MaxSize)/int64(n*2) >= 4*int64(c.MaxEntrySize) {
		n *= 2
	}
	return n
}

// Defaults sets max_size to 256MiB, max_entry_size to 1MiB, shared on,
// shared_timeout 50ms and shared_wait 2s.
func (c *Section) Defaults() {
	c.MaxSize, c.MaxEntrySize = 256<<20, 1<<20
	c.Shared = true
	c.SharedTimeout = config.Duration(50 * time.Millisecond)
	c.SharedWait = config.Duration(2 * time.Second)
}

// Validate checks that the store can be made and an entry fits in a shard.
func (c *Section) Validate() error {
	var p config.Problems
	switch per := c.MaxSize / config.Size(max(c.StoreShards(), 1)); {
	case c.MaxSize < 1<<20:
		p.Addf("max_size", "must be at least 1MiB, got %s", c.MaxSize)
	case c.Shards < 0 || c.Shards > 1024 || c.Shards&(c.Shards-1) != 0:
		p.Addf("shards", "must be a power of two between 1 and 1024 (or 0 for automatic), got %d", c.Shards)
	case c.MaxEntrySize < 1024:
		p.Addf("max_entry_size", "must be at least 1KiB, got %s", c.MaxEntrySize)
	case c.MaxEntrySize > per:
		p.Addf("max_entry_size", "%s does not fit in one shard of the store (max_size %s / %d shards = %s): lower it, raise max_size or use fewer shards",
			c.MaxEntrySize, c.MaxSize, c.StoreShards(), per)
	}
	switch {
	case c.SharedMaxEntrySize != 0 && c.SharedMaxEntrySize < 1024:
		p.Addf("shared_max_entry_size", "must be at least 1KiB (or 0 for max_entry_size), got %s", c.SharedMaxEntrySize)
	case c.SharedMaxEntrySize > c.MaxEntrySize:
		p.Addf("shared_max_entry_size", "%s is more than max_entry_size %s: the shared tier takes only what a gateway's own store took",
			c.SharedMaxEntrySize, c.MaxEntrySize)
	}
	switch {
	case c.SharedTimeout <= 0:
		p.Addf("shared_timeout", "must be positive, got %s", c.SharedTimeout)
	case c.SharedTimeout > config.Duration(10*time.Second):
		p.Addf("shared_timeout", "must be at most 10s (every miss may wait this long on Redis), got %s", c.SharedTimeout)
	}
	switch {
	case c.SharedWait < 0:
		p.Addf("shared_wait", "must not be negative (0 turns waiting for other gateways off), got %s", c.SharedWait)
	case c.SharedWait > config.Duration(time.Minute):
		p.Addf("shared_wait", "must be at most 1m, got %s", c.SharedWait)
	}
	return p.Err()
}
