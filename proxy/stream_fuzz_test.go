package proxy

import (
	"mime"
	"slices"
	"strings"
	"testing"
)

// isEventType decides from a provider's Content-Type whether an answer is
// streamed from its first byte. On any ASCII value mime.ParseMediaType
// accepts, it must agree with the media type that parser finds; on any other
// it must not panic. (Non-ASCII is left out of the comparison: the parser
// trims Unicode spaces such as U+00A0, which no media type token may hold.)
func FuzzIsEventType(f *testing.F) {
	for _, s := range []string{"text/event-stream", "Text/Event-Stream; charset=utf-8", "application/x-ndjson",
		"application/json", "text/event-streamx", "text/event-stream ;q=1", "", ";", "application/jsonl\t;x=y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ct string) {
		got := isEventType([]byte(ct))
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || strings.TrimSpace(ct) != ct || !isASCII(ct) {
			return
		}
		want := slices.ContainsFunc(eventTypes, func(e []byte) bool { return string(e) == mt })
		if got != want {
			t.Fatalf("isEventType(%q) = %v; media type %q", ct, got, mt)
		}
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
