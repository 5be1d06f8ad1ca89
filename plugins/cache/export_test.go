package cache

// TeeHighWater is the largest buffer a streamed answer's copy has held.
func TeeHighWater() int64 { return teeHighWater.Load() }
