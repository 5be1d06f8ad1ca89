package proxy

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	"github.com/fasthttp/router"
	"github.com/sluice-gw/sluice/proxy/config"
	"github.com/sluice-gw/sluice/proxy/httpx"
	"github.com/valyala/fasthttp"
)

// routeTable finds the route of a request. It holds one fasthttp/router per
// route host ("" for routes without host). Lookups run on the raw path (the
// router's PathOriginal) and never store path parameters, so matching a
// static or catch-all route allocates nothing.
type routeTable struct {
	byHost  map[string]*router.Router // lower-cased host -> routes of that host
	anyHost *router.Router
	methods []string // every method some route names, for 405 answers
	// owners maps "host method path" to the route that registered it, to name
	// both routes in a conflict.
	owners map[string]string
}

func newRouteTable() *routeTable {
	return &routeTable{byHost: map[string]*router.Router{}, anyHost: newRouter(), owners: map[string]string{}}
}

func newRouter() *router.Router {
	r := router.New()
	// An API gateway answers what it is asked: no redirects, no automatic
	// OPTIONS answers (OPTIONS goes upstream like any method).
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	r.HandleOPTIONS = false
	r.HandleMethodNotAllowed = false
	return r
}

// add registers a route. fasthttp/router panics on conflicting patterns;
// the panic becomes an error naming the other route where it can be told.
func (t *routeTable) add(name string, rc *config.RouteConfig, h fasthttp.RequestHandler) (err error) {
	host := strings.ToLower(rc.Host)
	r := t.anyHost
	if host != "" {
		if r = t.byHost[host]; r == nil {
			r = newRouter()
			t.byHost[host] = r
		}
	}
	methods := rc.Methods
	if len(methods) == 0 {
		methods = []string{router.MethodWild}
	}
	for _, m := range methods {
		key := host + " " + m + " " + rc.Path
		if other, dup := t.owners[key]; dup {
			return fmt.Errorf("%s %s is already served by route %q", methodLabel(m), rc.Path, other)
		}
		if err := register(r, m, rc.Path, h); err != nil {
			return fmt.Errorf("%s %s conflicts with %s", methodLabel(m), rc.Path, t.describe(host, m, err))
		}
		t.owners[key] = name
		if m != router.MethodWild && !slices.Contains(t.methods, m) {
			t.methods = append(t.methods, m)
		}
	}
	return nil
}

func register(r *router.Router, method, path string, h fasthttp.RequestHandler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	r.Handle(method, path, h)
	return nil
}

// describe names the route(s) a router panic is about: those whose path the
// panic message quotes, else every route of that host and method.
func (t *routeTable) describe(host, method string, perr error) string {
	msg := perr.Error()
	var names []string
	for key, name := range t.owners {
		h, rest, _ := strings.Cut(key, " ")
		m, path, _ := strings.Cut(rest, " ")
		if h == host && m == method && strings.Contains(msg, "'"+path+"'") && !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	if len(names) == 0 {
		return "another route: " + msg
	}
	return fmt.Sprintf("route %q (%s)", strings.Join(names, `", "`), msg)
}

func methodLabel(m string) string {
	if m == router.MethodWild {
		return "any method"
	}
	return m
}

// lookup returns the handler of the route that serves the request, or nil.
func (t *routeTable) lookup(ctx *fasthttp.RequestCtx) fasthttp.RequestHandler {
	method := b2s(ctx.Method())
	path := b2s(ctx.Request.URI().PathOriginal())
	if len(t.byHost) > 0 {
		if r := t.hostRouter(ctx.Host()); r != nil {
			if h := find(r, method, path); h != nil {
				return h
			}
		}
	}
	return find(t.anyHost, method, path)
}

func find(r *router.Router, method, path string) fasthttp.RequestHandler {
	if h, _ := r.Lookup(method, path, nil); h != nil {
		return h
	}
	// Lookup stops at a trailing-slash hint or an unknown method; the routes
	// registered for any method still apply.
	h, _ := r.Lookup(router.MethodWild, path, nil)
	return h
}

// allowed lists the methods of the routes whose path matches, for a 405.
func (t *routeTable) allowed(ctx *fasthttp.RequestCtx) []string {
	path := b2s(ctx.Request.URI().PathOriginal())
	var out []string
	routers := []*router.Router{t.anyHost}
	if r := t.hostRouter(ctx.Host()); r != nil {
		routers = append(routers, r)
	}
	for _, m := range t.methods {
		for _, r := range routers {
			if h, _ := r.Lookup(m, path, nil); h != nil && !slices.Contains(out, m) {
				out = append(out, m)
			}
		}
	}
	return out
}

// hostRouter returns the router of the request's host (port stripped,
// compared case-insensitively), or nil. It does not allocate.
func (t *routeTable) hostRouter(host []byte) *router.Router {
	if i := bytes.LastIndexByte(host, ':'); i >= 0 && bytes.IndexByte(host[i:], ']') < 0 {
		host = host[:i]
	}
	var buf [256]byte
	if len(host) > len(buf) {
		return nil
	}
	n := copy(buf[:], host)
	for i := range n {
		if c := buf[i]; c >= 'A' && c <= 'Z' {
			buf[i] = c + 'a' - 'A'
		}
	}
	return t.byHost[string(buf[:n])]
}

// hasDotSegment reports whether a raw path could climb out of the upstream's
// base path or the route's prefix on some server behind the gateway. The one
// rule, applied to every encoding: the path is percent-decoded (again, while
// a round still decodes something: some servers decode twice, so "%252e" is a
// dot), overlong UTF-8 forms of '.' and '/' ("%c0%ae", "%c0%af") count as
// those bytes, segments are split at '/' and also at '\' (which Windows
// servers and some frameworks treat as a separator), and a segment's ";"
// parameters are cut off ("..;/" is ".." to Tomcat and Jetty). A path in which
// any resulting segment is "." or ".." is refused with 400; nothing is
// normalised. Paths without '.', '%' or non-ASCII bytes cannot match and cost
// one scan.
func hasDotSegment(path []byte) bool {
	plain := true // no '.', no escape, no byte of a (possibly overlong) UTF-8 sequence
	for _, c := range path {
		if c == '.' || c == '%' || c >= 0x80 {
			plain = false
			break
		}
	}
	if plain {
		return false
	}
	// Decode into stack space (paths longer than it are rare and may allocate).
	var bufA, bufB [512]byte
	cur, next := bufA[:0], bufB[:0]
	cur = append(cur, path...)
	for round := 0; ; round++ {
		var changed bool
		next, changed = percentDecode(next[:0], cur)
		cur, next = next, cur
		if !changed || bytes.IndexByte(cur, '%') < 0 {
			return dotSegmentIn(cur)
		}
		if round == maxDecodeRounds-1 {
			return true // still decoding: deeper than any server goes
		}
	}
}

// maxDecodeRounds bounds repeated decoding: "%25252e" needs three rounds; a
// path that still decodes after that is treated as one that climbs.
const maxDecodeRounds = 4

// percentDecode appends the one-round percent-decoding of src to dst and
// reports whether any escape was decoded. Overlong UTF-8 encodings of '.'
// and '/' (C0 AE, C0 AF, E0 80 AE, E0 80 AF) are written as '.' and '/'.
func percentDecode(dst, src []byte) ([]byte, bool) {
	changed := false
	for i := 0; i < len(src); i++ {
		c := src[i]
		if c == '%' && i+2 < len(src) && unhex(src[i+1]) >= 0 && unhex(src[i+2]) >= 0 {
			c = byte(unhex(src[i+1])<<4 | unhex(src[i+2]))
			i += 2
			changed = true
		}
		dst = append(dst, c)
		if n := len(dst); n >= 2 && dst[n-2] == 0xc0 && (c == 0xae || c == 0xaf) {
			dst = append(dst[:n-2], c-0x80)
		} else if n >= 3 && dst[n-3] == 0xe0 && dst[n-2] == 0x80 && (c == 0xae || c == 0xaf) {
			dst = append(dst[:n-3], c-0x80)
		}
	}
	return dst, changed
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// dotSegmentIn reports whether a decoded path has a "." or ".." segment, with
// '/' and '\' as separators and ";..." parameters cut off each segment.
func dotSegmentIn(p []byte) bool {
	for len(p) > 0 {
		end := 0
		for end < len(p) && p[end] != '/' && p[end] != '\\' {
			end++
		}
		seg := p[:end]
		if i := bytes.IndexByte(seg, ';'); i >= 0 {
			seg = seg[:i]
		}
		if len(seg) == 1 && seg[0] == '.' || len(seg) == 2 && seg[0] == '.' && seg[1] == '.' {
			return true
		}
		if end == len(p) {
			break
		}
		p = p[end+1:]
	}
	return false
}

// isHTTP1 reports whether a request line's version is HTTP/1.x. Any minor
// version is served as HTTP/1.1 (RFC 9110 §6.2: a proxy sends its own
// version); other majors get 505.
func isHTTP1(proto []byte) bool {
	return len(proto) == 8 && string(proto[:7]) == "HTTP/1." && proto[7] >= '0' && proto[7] <= '9'
}

// hostByte marks the bytes of a valid Host value: RFC 3986 reg-name,
// IP-literal and port characters. No userinfo ('@'), path, space or control.
var hostByte = httpx.AlnumAnd("-._~!$&'()*+,;=%:[]")

// validHost checks the Host header (RFC 9112 §3.2): required in HTTP/1.1,
// and a host[:port] when present. A provider that builds links from
// X-Forwarded-Host must never see "user@evil.example".
func validHost(host []byte, http11 bool) bool {
	if len(host) == 0 {
		return !http11
	}
	for _, c := range host {
		if !hostByte[c] {
			return false
		}
	}
	return true
}
