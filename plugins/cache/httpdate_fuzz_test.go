package cache

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// FuzzHTTPDate: parsing never panics; an accepted value re-formats (in its
// own form) to the same instant and text; and where net/http.ParseTime
// accepts it too, both read the same instant (except rfc850-date, whose
// two-digit year net/http reads with time.Parse's fixed 1969-2068 window,
// not RFC 9110's "not more than 50 years ahead").
func FuzzHTTPDate(f *testing.F) {
	for _, s := range []string{
		"Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994",
		"Thu, 18  Aug  2050 02:01:18 GMT", "Thu, 18 Aug 2050 2:01:18 GMT", "Wed, 29 Feb 2023 00:00:00 GMT",
		"Tue, 29 Feb 2000 23:59:59 GMT", "Sat, 01 Jan 0000 00:00:00 GMT", "Mon, 31 Apr 2024 00:00:00 GMT",
		"Wednesday, 31-Dec-99 23:59:59 GMT", "Fri Dec 31 23:59:60 1999", "Sun, 06 Nov 1994 08:49:37 UTC",
		"sun, 06 nov 1994 08:49:37 gmt", "", "0", "Sun, 06 Nov 1994 08:49:37 GMT ",
	} {
		f.Add(s)
	}
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := parseHTTPDate([]byte(s), now)
		if !ok {
			return
		}
		if got.Location() != time.UTC || got.Nanosecond() != 0 {
			t.Fatalf("%q: %v is not whole seconds in UTC", s, got)
		}
		var layout string
		switch {
		case len(s) == imfFixdateLen:
			layout = http.TimeFormat
			if string(appendHTTPDate(nil, got)[5:]) != s[5:] { // the day name is not checked against the date
				t.Fatalf("%q re-formats as %q", s, appendHTTPDate(nil, got))
			}
		case len(s) == 24:
			layout = time.ANSIC
		default:
			layout = "Monday, 02-Jan-06 15:04:05 GMT"
		}
		back, ok := parseHTTPDate([]byte(got.Format(layout)), now)
		if !ok || !back.Equal(got) {
			t.Fatalf("%q: %v re-formatted as %q reads %v %v", s, got, got.Format(layout), back, ok)
		}
		if want, err := http.ParseTime(s); err == nil && layout != "Monday, 02-Jan-06 15:04:05 GMT" && !want.Equal(got) {
			t.Fatalf("%q: %v, net/http reads %v", s, got, want)
		}
	})
}

// FuzzRange: any Range value against any size never panics, and a
// satisfiable range lies inside the representation.
func FuzzRange(f *testing.F) {
	for _, s := range []string{"bytes=0-0", "bytes=2-4", "bytes=-3", "bytes=7-", "bytes=1-2,4-5", "bytes=4-2",
		"BYTES=0-", "bytes= 1-2 ", "bytes=-", "bytes=99999999999999999999-", "items=1-2", "bytes=-0", "bytes=0--1"} {
		f.Add(s, int64(10))
		f.Add(s, int64(0))
	}
	f.Fuzz(func(t *testing.T, v string, size int64) {
		if size < 0 || size > 1<<40 {
			return
		}
		first, last, out := parseRange([]byte(v), size)
		switch out {
		case rangeSatisfiable:
			if first < 0 || first > last || last >= size {
				t.Fatalf("%q size %d: %d-%d outside", v, size, first, last)
			}
			if cr := string(appendContentRange(nil, first, last, size)); !strings.HasPrefix(cr, "bytes ") {
				t.Fatalf("Content-Range %q", cr)
			}
		case rangeIgnore, rangeUnsatisfiable:
		default:
			t.Fatalf("outcome %d", out)
		}
	})
}

func TestHTTPDateFastPathDoesNotAllocate(t *testing.T) {
	b := []byte("Sun, 06 Nov 1994 08:49:37 GMT")
	now := time.Now()
	if n := testing.AllocsPerRun(100, func() {
		if _, ok := parseHTTPDate(b, now); !ok {
			t.Fatal("refused")
		}
	}); n != 0 {
		t.Errorf("%v allocs per IMF-fixdate", n)
	}
}

func BenchmarkHTTPDate(b *testing.B) {
	v := []byte("Sun, 06 Nov 1994 08:49:37 GMT")
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		parseHTTPDate(v, now)
	}
}
