package ratelimit

import (
	"time"

	"github.com/sluice-gw/sluice/proxy"
)

// clock is the time base of the local buckets: the monotonic clock dressed
// as a time.Time. rate.Limiter only compares and subtracts the times it is
// given, so any steady base works; this one costs one clock read where
// time.Now costs two (wall and monotonic), which is most of a decision on
// virtual machines. Every call into a bucket must use it.
func clock() time.Time { return time.Unix(0, proxy.Nanotime()) }
