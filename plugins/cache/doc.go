// Package cache is the cache plugin: a shared HTTP cache per RFC 9111 in
// front of a route's upstream, stored in one process-wide store of otter
// caches (W-TinyLFU, bounded by cache.max_size) that survives reloads.
//
// It owns: deciding what may be stored and for how long (Cache-Control,
// Expires, Age, Vary, the route's ttl/override), keys (upstream, path,
// query, partition, Vary values), answering hits with Cache-Status and Age,
// collapsing concurrent misses, revalidation with ETag/Last-Modified,
// stale-while-revalidate and stale-if-error, and every way of invalidating
// entries: unsafe methods, tag rules, POST /admin/cache/purge, signed
// provider webhooks, the OnInvalidate/Invalidate Go hooks and Redis pub/sub
// between the gateways of a cluster. With cluster.redis it also keeps a
// second tier in Redis shared by the gateways (l2.go): looked up after a
// miss of the store, written after a store, purged with it, and where
// misses for one key are collapsed across gateways.
//
// It must not: write error bodies (gateway errors are returned as
// *proxy.Error and rendered by the route), see or store credentials other
// than through a partition hash, allocate on a hit (the store returns the
// stored bytes without a copy: nothing writes into them), ask Redis on a
// hit of the store, or make a request wait on Redis longer than
// cache.shared_timeout per call (cache.shared_wait for another gateway's
// fetch), or fail because Redis does.
package cache
