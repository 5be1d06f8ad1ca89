package cache

import (
	"time"
)

// HTTP dates (RFC 9110 section 5.6.7). Three forms are valid, each with
// fixed lengths and positions, and the names are case-sensitive:
//
//	IMF-fixdate  Sun, 06 Nov 1994 08:49:37 GMT   (29 bytes; the one to produce)
//	rfc850-date  Sunday, 06-Nov-94 08:49:37 GMT  (obsolete; 30 to 33 bytes)
//	asctime-date Sun Nov  6 08:49:37 1994        (obsolete; 24 bytes)
//
// Recipients must accept all three; anything else (extra spaces, a
// one-digit hour, a zone other than GMT, a day that does not exist) is
// invalid. net/http.ParseTime is more lenient (time.Parse accepts a
// one-digit hour and runs of spaces), which once made an Expires with
// doubled spaces fresh until 2050.

const imfFixdateLen = len("Sun, 06 Nov 1994 08:49:37 GMT")

var (
	dayNames     = [7]string{"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"}
	longDayNames = [7]string{"Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"}
	monthNames   = [12]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}
)

// parseHTTPDate parses an HTTP date strictly; ok is false when b is not
// exactly one of the three forms. It does not allocate. now is used only
// for the two-digit year of rfc850-date.
func parseHTTPDate(b []byte, now time.Time) (t time.Time, ok bool) {
	switch {
	case len(b) == imfFixdateLen && b[3] == ',':
		return parseIMFFixdate(b)
	case len(b) == 24:
		return parseAsctime(b)
	case len(b) >= 30 && len(b) <= 33:
		return parseRFC850(b, now)
	}
	return time.Time{}, false
}

// httpDate parses an HTTP date value of a header; ok is false when it is
// absent or invalid.
func httpDate(v []byte) (time.Time, bool) {
	if len(v) == 0 {
		return time.Time{}, false
	}
	return parseHTTPDate(v, time.Now())
}

// appendHTTPDate appends t as an IMF-fixdate.
func appendHTTPDate(dst []byte, t time.Time) []byte {
	return t.UTC().AppendFormat(dst, "Mon, 02 Jan 2006 15:04:05 GMT")
}

// Sun, 06 Nov 1994 08:49:37 GMT
// 0123456789012345678901234567
func parseIMFFixdate(b []byte) (time.Time, bool) {
	if !isName(b[0:3], dayNames[:]) || b[4] != ' ' || b[7] != ' ' || b[11] != ' ' ||
		b[16] != ' ' || b[25] != ' ' || string(b[26:29]) != "GMT" {
		return time.Time{}, false
	}
	day, ok1 := digits(b[5:7])
	year, ok2 := digits(b[12:16])
	month := monthIndex(b[8:11])
	if !ok1 || !ok2 || month == 0 {
		return time.Time{}, false
	}
	return makeDate(year, month, day, b[17:25])
}

// Sun Nov  6 08:49:37 1994
// 012345678901234567890123
func parseAsctime(b []byte) (time.Time, bool) {
	if !isName(b[0:3], dayNames[:]) || b[3] != ' ' || b[7] != ' ' || b[10] != ' ' || b[19] != ' ' {
		return time.Time{}, false
	}
	month := monthIndex(b[4:7])
	var day int
	var ok1 bool
	if b[8] == ' ' { // day = ( SP DIGIT ) / 2DIGIT
		day, ok1 = digits(b[9:10])
	} else {
		day, ok1 = digits(b[8:10])
	}
	year, ok2 := digits(b[20:24])
	if !ok1 || !ok2 || month == 0 {
		return time.Time{}, false
	}
	return makeDate(year, month, day, b[11:19])
}

// Sunday, 06-Nov-94 08:49:37 GMT
// the day name is 6 to 9 bytes long; n is its length.
func parseRFC850(b []byte, now time.Time) (time.Time, bool) {
	n := len(b) - 24
	if !isName(b[:n], longDayNames[:]) {
		return time.Time{}, false
	}
	r := b[n:] // ", 06-Nov-94 08:49:37 GMT"
	//            012345678901234567890123
	if r[0] != ',' || r[1] != ' ' || r[4] != '-' || r[8] != '-' || r[11] != ' ' || r[20] != ' ' || string(r[21:24]) != "GMT" {
		return time.Time{}, false
	}
	day, ok1 := digits(r[2:4])
	yy, ok2 := digits(r[9:11])
	month := monthIndex(r[5:8])
	if !ok1 || !ok2 || month == 0 {
		return time.Time{}, false
	}
	// RFC 9110 section 5.6.7: a two-digit year that appears to be more
	// than 50 years in the future is the most recent past year with the
	// same last two digits.
	cur := now.UTC().Year()
	year := cur - cur%100 + yy
	if year > cur+50 {
		year -= 100
	}
	return makeDate(year, month, day, r[12:20])
}

// makeDate checks the ranges of the fields (hh:mm:ss in clock) and builds
// the time in UTC.
func makeDate(year, month, day int, clock []byte) (time.Time, bool) {
	if clock[2] != ':' || clock[5] != ':' {
		return time.Time{}, false
	}
	hh, ok1 := digits(clock[0:2])
	mm, ok2 := digits(clock[3:5])
	ss, ok3 := digits(clock[6:8])
	if !ok1 || !ok2 || !ok3 || hh > 23 || mm > 59 || ss > 59 ||
		day < 1 || day > daysIn(time.Month(month), year) {
		return time.Time{}, false
	}
	return time.Date(year, time.Month(month), day, hh, mm, ss, 0, time.UTC), true
}

func daysIn(m time.Month, year int) int {
	switch m {
	case time.February:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case time.April, time.June, time.September, time.November:
		return 30
	}
	return 31
}

// digits parses b as unsigned decimal digits only (no sign, no space).
func digits(b []byte) (int, bool) {
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, len(b) > 0
}

func isName(b []byte, names []string) bool {
	for _, n := range names {
		if string(b) == n {
			return true
		}
	}
	return false
}

// monthIndex returns 1 to 12, or 0 when b is not a month name.
func monthIndex(b []byte) int {
	for i, m := range monthNames {
		if string(b) == m {
			return i + 1
		}
	}
	return 0
}
