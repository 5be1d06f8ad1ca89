package ratelimit

// UpstreamKey is upstreamKey for the external tests: the Redis key of an
// upstream limit, without the cluster's prefix.
var UpstreamKey = upstreamKey
