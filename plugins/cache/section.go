package cache

import (
	"github.com/sluice-gw/sluice/proxy/config"
)

// Section is the top-level "cache:" section, which the cache plugin owns: the
// process-wide store that the cache block of every route stores into.
type Section struct {
	// MaxSize is the hard limit of the cache's memory. Default 256MiB. The
	// store is made once per process: a reload that changes max_size or
	// shards is logged and applies at the next start.
	MaxSize config.Size `koanf:"max_size" json:"max_size" reload:"restart"`
	// MaxEntrySize is the largest entry (headers and body) stored; larger
	// answers are passed through and not stored. Default 1MiB. It must fit
	// in one shard (max_size / shards).
	MaxEntrySize config.Size `koanf:"max_entry_size" json:"max_entry_size"`
	// Shards splits the store (a power of two, 1 to 1024); more shards mean
	// less lock contention, but each shard holds max_size/shards. Default 0:
	// as many as fit four max-size entries each, at most 256.
	Shards int `koanf:"shards" json:"shards" reload:"restart"`
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

// Defaults sets max_size to 256MiB and max_entry_size to 1MiB.
func (c *Section) Defaults() { c.MaxSize, c.MaxEntrySize = 256<<20, 1<<20 }

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
	return p.Err()
}
