package ratelimit

// UpstreamKey is upstreamKey for the external tests: the Redis key of an
// upstream limit, without the cluster's prefix.
var UpstreamKey = upstreamKey

// RecoverGrace is how long decisions keep to the share after Redis is back.
const RecoverGrace = recoverGrace
