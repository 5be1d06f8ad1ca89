package ratelimit

import "github.com/sluice-gw/sluice/proxy"

// clock is the time base of the local buckets and of the grace after a
// Redis outage: the runtime's monotonic clock in nanoseconds. It costs one
// clock read where time.Now costs two (wall and monotonic), which is most
// of a decision on virtual machines. Every call into a bucket must use it;
// it is not comparable with wall-clock (UnixNano) times.
func clock() int64 { return proxy.Nanotime() }
