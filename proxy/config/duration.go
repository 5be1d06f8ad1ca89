package config

import "time"

// Duration is a time.Duration written in YAML as a Go duration string ("250ms",
// "10s", "1m30s"). A bare number is rejected at load: "timeout: 10" would
// otherwise silently mean ten nanoseconds.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats the duration like time.Duration.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText renders the duration the way it is written in YAML.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }
