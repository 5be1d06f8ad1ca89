package proxy

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// referenceTraceparent parses v with the OpenTelemetry propagator, the
// implementation parseTraceparent stands in for.
func referenceTraceparent(v string) (traceparent, bool) {
	ctx := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{"traceparent": v})
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return traceparent{}, false
	}
	return traceparent{traceID: sc.TraceID(), spanID: sc.SpanID(), flags: sc.TraceFlags()}, true
}

const validTP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestParseTraceparent(t *testing.T) {
	for _, c := range []struct {
		name, v string
		ok      bool
		sampled bool
	}{
		{"valid sampled", validTP, true, true},
		{"valid unsampled", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true, false},
		{"random flag kept", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03", true, true},
		{"reserved flag bits in version 00", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09", false, false},
		{"reserved flag bits in a later version", "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09", true, true},
		{"future version with more fields", "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds", true, true},
		{"future version, exact length", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true, true},
		{"empty", "", false, false},
		{"version ff", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, false},
		{"version 00 with trailing data", validTP + "-x", false, false},
		{"future version, no dash after flags", "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", false, false},
		{"upper-case hex", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", false, false},
		{"all-zero trace id", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", false, false},
		{"all-zero parent id", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false, false},
		{"short trace id", "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", false, false},
		{"non-hex in parent id", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01", false, false},
		{"bad separators", "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01", false, false},
		{"non-hex flags", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g", false, false},
		{"truncated", validTP[:54], false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, ok := parseTraceparent([]byte(c.v))
			if ok != c.ok {
				t.Fatalf("parseTraceparent(%q) ok = %v, want %v", c.v, ok, c.ok)
			}
			if ok && got.flags.IsSampled() != c.sampled {
				t.Errorf("sampled = %v, want %v", got.flags.IsSampled(), c.sampled)
			}
			ref, refOK := referenceTraceparent(c.v)
			if ok != refOK || got != ref {
				t.Errorf("differs from the OpenTelemetry propagator: got %+v %v, propagator %+v %v", got, ok, ref, refOK)
			}
			if ok && c.v[:2] == "00" {
				if back := string(appendTraceparent(nil, got.traceID, got.spanID, got.flags)); back != c.v[:53]+back[53:] || len(back) != 55 {
					t.Errorf("appendTraceparent = %q, want the same ids as %q", back, c.v)
				}
			}
		})
	}
}

func TestParseTraceparentAllocs(t *testing.T) {
	v := []byte(validTP)
	if n := testing.AllocsPerRun(100, func() { _, _ = parseTraceparent(v) }); n != 0 {
		t.Errorf("parseTraceparent: %v allocs, want 0", n)
	}
}

// FuzzParseTraceparent checks the hand-written parser against the
// OpenTelemetry propagator on any input, and that what it accepts formats
// back to the same ids.
func FuzzParseTraceparent(f *testing.F) {
	for _, s := range []string{validTP, "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		got, ok := parseTraceparent([]byte(v))
		ref, refOK := referenceTraceparent(v)
		if ok != refOK || got != ref {
			t.Fatalf("parseTraceparent(%q) = %+v %v; propagator %+v %v", v, got, ok, ref, refOK)
		}
		if ok {
			back := appendTraceparent(nil, got.traceID, got.spanID, got.flags)
			again, ok2 := parseTraceparent(back)
			if !ok2 || again != got {
				t.Fatalf("%q formats back as %q, which parses as %+v %v", v, back, again, ok2)
			}
		}
	})
}
