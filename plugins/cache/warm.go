package cache

import (
	"bytes"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
	"github.com/sluice-gw/sluice/proxy/httpx"
	"github.com/valyala/fasthttp"
	"golang.org/x/time/rate"
)

// WarmConfig declares reads the cache fetches on its own: at start and on
// every reload (each path not already fresh in the cache), then again
// before each answer expires, so that callers find them fresh.
type WarmConfig struct {
	// Paths are request paths as a caller would send them, the route's
	// prefix included: ["/github/repos/acme/app"]. A query is allowed.
	Paths []string `koanf:"paths" json:"paths,omitempty"`
	// Template is a path with {name} parameters filled from Values, one
	// path per combination: "/github/repos/acme/{repo}".
	Template string `koanf:"template" json:"template,omitempty"`
	// Values lists the values of each parameter of Template: {repo: [app, api]}.
	Values map[string][]string `koanf:"values" json:"values,omitempty"`
	// RefreshAhead is when an answer is fetched again: when this share of
	// its freshness lifetime is left ("10%", the default) or this long
	// before it expires ("30s").
	RefreshAhead string `koanf:"refresh_ahead" json:"refresh_ahead"`
	// Rate is the most warm fetches per second the route makes (its own
	// budget: warm fetches also count against the provider's quota in
	// rate_limit, like any call). Default 1.
	Rate float64 `koanf:"rate" json:"rate"`
	// Concurrency is the most warm fetches in flight at once. Default 1.
	Concurrency int `koanf:"concurrency" json:"concurrency"`
	// Backoff is the wait before fetching a path again after a failure, an
	// error status or an answer the cache could not store; it doubles with
	// each failure in a row, up to MaxBackoff. Defaults 1s and 5m.
	Backoff    config.Duration `koanf:"backoff" json:"backoff"`
	MaxBackoff config.Duration `koanf:"max_backoff" json:"max_backoff"`
	// Consumer warms as this consumer: needed on routes whose answers are
	// kept apart per consumer (the entries serve that consumer only).
	Consumer string `koanf:"consumer" json:"consumer,omitempty"`
	// Headers are request headers sent with every warm fetch (say Accept,
	// when answers vary by it). Credentials do not go here: inject_auth adds
	// the provider's.
	Headers map[string]string `koanf:"headers" json:"headers,omitempty"`
}

// maxWarmPaths bounds the paths one route warms.
const maxWarmPaths = 10000

// minWarmGap is the shortest wait between two warm fetches of one path.
const minWarmGap = time.Second

// Settle fills the warm defaults, so that /admin/config shows them.
func (c *Config) Settle() {
	if w := c.Warm; w != nil {
		if w.RefreshAhead == "" {
			w.RefreshAhead = "10%"
		}
		if w.Rate == 0 {
			w.Rate = 1
		}
		if w.Concurrency == 0 {
			w.Concurrency = 1
		}
		if w.Backoff == 0 {
			w.Backoff = config.Duration(time.Second)
		}
		if w.MaxBackoff == 0 {
			w.MaxBackoff = config.Duration(5 * time.Minute)
		}
	}
}

// validate checks what the block says on its own; build checks the paths
// against the route.
func (w *WarmConfig) validate(p *config.Problems) {
	if len(w.Paths) == 0 && w.Template == "" {
		p.Add("warm", "declares nothing to warm: give paths, or a template with values")
	}
	for i, path := range w.Paths {
		if err := checkWarmPath(path); err != nil {
			p.Addf(fmt.Sprintf("warm.paths[%d]", i), "%v", err)
		}
	}
	if w.Template != "" {
		w.validateTemplate(p)
	} else if len(w.Values) > 0 {
		p.Add("warm.values", "values fill a template: set warm.template")
	}
	if _, _, err := parseAhead(w.RefreshAhead); err != nil {
		p.Add("warm.refresh_ahead", err.Error())
	}
	if w.Rate <= 0 || w.Rate > 1000 || math.IsNaN(w.Rate) {
		p.Addf("warm.rate", "must be more than 0 and at most 1000 fetches per second, got %v", w.Rate)
	}
	if w.Concurrency < 1 || w.Concurrency > 64 {
		p.Addf("warm.concurrency", "must be 1 to 64, got %d", w.Concurrency)
	}
	if w.Backoff <= 0 {
		p.Add("warm.backoff", "must be positive")
	}
	if w.MaxBackoff < w.Backoff {
		p.Addf("warm.max_backoff", "must not be shorter than warm.backoff (%s)", w.Backoff)
	}
	for _, name := range slices.Sorted(maps.Keys(w.Headers)) {
		key := "warm.headers." + name
		switch {
		case !httpx.ValidToken(name):
			p.Addf(key, "invalid header name %q", name)
		case slices.Contains(defaultCredentialHeaders, textproto.CanonicalMIMEHeaderKey(name)):
			p.Add(key, "warm fetches carry no caller credentials: the provider's go in inject_auth")
		case slices.Contains(warmOwnHeaders, strings.ToLower(name)):
			p.Add(key, "is set by the gateway and cannot be set here")
		}
		if strings.ContainsAny(w.Headers[name], "\r\n\x00") {
			p.Add(key, "the value must not contain CR, LF or NUL")
		}
	}
	if total := w.count(); total > maxWarmPaths {
		p.Addf("warm", "declares %d paths, more than %d", total, maxWarmPaths)
	}
}

// warmOwnHeaders are headers a warm fetch may not set: they frame the
// message or the gateway sets them.
var warmOwnHeaders = []string{"host", "content-length", "transfer-encoding", "connection", "te", "upgrade",
	"keep-alive", "trailer", "expect", "x-request-id", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto",
	"x-http-method-override", "x-http-method", "x-method-override", "proxy-authorization"}

func (w *WarmConfig) validateTemplate(p *config.Problems) {
	if err := checkWarmPath(strings.NewReplacer("{", "", "}", "", ":*", "").Replace(w.Template)); err != nil {
		p.Addf("warm.template", "%v", err)
		return
	}
	params := paramNames(w.Template)
	if len(params) == 0 {
		p.Add("warm.template", "has no {parameter}: list the path in warm.paths")
	}
	for _, name := range params {
		if len(w.Values[name]) == 0 {
			p.Addf("warm.values", "gives no values for {%s} of the template", name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(w.Values)) {
		if !slices.Contains(params, name) {
			p.Addf("warm.values."+name, "{%s} is not a parameter of the template %q", name, w.Template)
			continue
		}
		rest := strings.Contains(w.Template, "{"+name+":*}")
		for i, v := range w.Values[name] {
			if err := checkWarmValue(v, rest); err != nil {
				p.Addf(fmt.Sprintf("warm.values.%s[%d]", name, i), "%v", err)
			}
		}
	}
}

// checkWarmPath checks a path as a caller would send it.
func checkWarmPath(path string) error {
	if path == "" || path[0] != '/' {
		return fmt.Errorf("must start with '/', got %q", path)
	}
	if strings.ContainsAny(path, "#\\") || strings.IndexFunc(path, func(r rune) bool { return r <= ' ' || r >= 0x7f }) >= 0 {
		return fmt.Errorf("%q is not a request path (no spaces, control characters, '#' or '\\'; percent-encode them)", path)
	}
	p, _, _ := strings.Cut(path, "?")
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." {
			return fmt.Errorf("%q has a dot segment, which the gateway refuses", path)
		}
	}
	return nil
}

// checkWarmValue checks one value of a template parameter.
func checkWarmValue(v string, rest bool) error {
	switch {
	case v == "":
		return errors.New("must not be empty")
	case v == "." || v == "..":
		return fmt.Errorf("%q is a dot segment", v)
	case !rest && strings.Contains(v, "/"):
		return fmt.Errorf("%q holds '/': a {name} parameter is one path segment", v)
	case strings.ContainsAny(v, "?#\\{}") || strings.IndexFunc(v, func(r rune) bool { return r <= ' ' || r >= 0x7f }) >= 0:
		return fmt.Errorf("%q is not a path segment (no spaces, control characters, '?', '#', '\\' or braces; percent-encode them)", v)
	}
	return nil
}

// count returns how many paths the block declares (the template's
// combinations and paths, repeats included), stopping past maxWarmPaths.
func (w *WarmConfig) count() int {
	total := len(w.Paths)
	if w.Template == "" {
		return total
	}
	n := 1
	for _, name := range slices.Compact(slices.Sorted(slices.Values(paramNames(w.Template)))) {
		n *= len(w.Values[name])
		if n > maxWarmPaths {
			break
		}
	}
	return n + total
}

// expand returns the declared paths, template combinations after the
// paths, without repeats, each with its key path in the config.
func (w *WarmConfig) expand() (paths, keys []string) {
	seen := map[string]bool{}
	add := func(p, key string) {
		if !seen[p] {
			seen[p] = true
			paths, keys = append(paths, p), append(keys, key)
		}
	}
	for i, p := range w.Paths {
		add(p, fmt.Sprintf("warm.paths[%d]", i))
	}
	if w.Template == "" {
		return paths, keys
	}
	params := slices.Compact(slices.Sorted(slices.Values(paramNames(w.Template))))
	idx := make([]int, len(params))
	for {
		s := w.Template
		for i, name := range params {
			v := w.Values[name][idx[i]]
			s = strings.ReplaceAll(strings.ReplaceAll(s, "{"+name+":*}", v), "{"+name+"}", v)
		}
		add(s, "warm.template")
		i := len(idx) - 1
		for ; i >= 0; i-- {
			if idx[i]++; idx[i] < len(w.Values[params[i]]) {
				break
			}
			idx[i] = 0
		}
		if i < 0 {
			return paths, keys
		}
	}
}

// parseAhead parses refresh_ahead: "10%" (share of the lifetime) or a duration.
func parseAhead(s string) (share float64, d time.Duration, err error) {
	if pct, ok := strings.CutSuffix(s, "%"); ok {
		f, perr := strconv.ParseFloat(strings.TrimSpace(pct), 64)
		if perr != nil || !(f > 0 && f < 100) {
			return 0, 0, fmt.Errorf("want a share of the lifetime between 0%% and 100%% (\"10%%\") or a duration (\"30s\"), got %q", s)
		}
		return f / 100, 0, nil
	}
	d, perr := time.ParseDuration(s)
	if perr != nil || d <= 0 {
		return 0, 0, fmt.Errorf("want a share of the lifetime (\"10%%\") or a positive duration (\"30s\"), got %q", s)
	}
	return 0, d, nil
}

// Results of a warm fetch, the result label of sluice_cache_warm_fetches_total.
const (
	warmOK          = iota // stored
	warmNotStored          // a 2xx/3xx answer the cache could not store
	warmErrorStatus        // the upstream answered 4xx or 5xx
	warmFailed             // no answer: unreachable, timeout, circuit open, quota...
	warmPurged             // a purge ran while it was in flight: not kept
	numWarmResults
)

var warmResultNames = [numWarmResults]string{"ok", "not_stored", "error_status", "failed", "purged"}

type warmMetrics struct{ fetches *prometheus.CounterVec }

func newWarmMetrics(reg prometheus.Registerer) *warmMetrics {
	m := &warmMetrics{fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_cache_warm_fetches_total",
		Help: "Warm fetches made by the cache, by route and result (ok, not_stored, error_status, failed, purged).",
	}, []string{"route", "result"})}
	_ = reg.Register(m.fetches)
	return m
}

// warmer fetches a route's declared paths while its config serves.
type warmer struct {
	c        *Plugin
	route    *proxy.Route
	next     proxy.Handler // the pipeline after the cache (Chained)
	uris     []string
	consumer string
	headers  [][2]string
	share    float64       // refresh when this share of the lifetime is left, or
	ahead    time.Duration // this long before expiry
	rate     float64
	conc     int
	backoff  time.Duration
	maxBack  time.Duration
	results  [numWarmResults]prometheus.Counter
}

// newWarmer checks the warm block against the route and makes its warmer.
func newWarmer(w *WarmConfig, c *Plugin, b *proxy.Build) (*warmer, error) {
	var p config.Problems
	if c.webhook != nil {
		p.Add("warm", "a webhook route answers webhooks itself: there is nothing to warm")
	}
	if len(b.Route.Methods) > 0 && !slices.Contains(b.Route.Methods, "GET") {
		p.Addf("warm", "route %s does not accept GET (methods %v): warm fetches are GETs", b.Route.Name, b.Route.Methods)
	}
	if w.Consumer != "" {
		if _, ok := b.Consumers[w.Consumer]; !ok {
			p.Addf("warm.consumer", "unknown consumer %q", w.Consumer)
		}
	} else if c.byConsumer {
		p.Addf("warm", "route %s keeps cached answers apart per consumer (partition consumer, or inject_auth credentials per consumer): "+
			"warm fetches have no caller, so their entries would serve no one; set warm.consumer to warm for one consumer", b.Route.Name)
	}
	uris, keys := w.expand()
	for i, u := range uris {
		path, _, _ := strings.Cut(u, "?")
		if _, ok := c.pattern.match(path); !ok {
			p.Addf(keys[i], "%q does not match the path %q of route %s", u, b.Route.Path, b.Route.Name)
			if keys[i] == "warm.template" {
				break // one report for the template
			}
		}
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	share, ahead, _ := parseAhead(w.RefreshAhead)
	wr := &warmer{c: c, route: b.Route, uris: uris, consumer: w.Consumer, share: share, ahead: ahead,
		rate: w.Rate, conc: w.Concurrency, backoff: w.Backoff.D(), maxBack: w.MaxBackoff.D()}
	for _, name := range slices.Sorted(maps.Keys(w.Headers)) {
		wr.headers = append(wr.headers, [2]string{name, w.Headers[name]})
	}
	m := proxy.Share(b, struct{}{}, func() *warmMetrics { return newWarmMetrics(b.Registerer) })
	for i := range wr.results {
		wr.results[i] = m.fetches.WithLabelValues(b.Route.Name, warmResultNames[i])
	}
	b.Background(wr.run)
	return wr, nil
}

// Chained keeps the pipeline after the cache: warm fetches start there.
func (c *Plugin) Chained(next proxy.Handler) {
	if c.warm != nil {
		c.warm.next = next
	}
}

// warmItem is one declared path and when it is due.
type warmItem struct {
	uri   string
	due   time.Time
	fails int // failures in a row
	index int // in the heap
}

type warmHeap []*warmItem

func (h warmHeap) Len() int           { return len(h) }
func (h warmHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h warmHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].index, h[j].index = i, j }
func (h *warmHeap) Push(x any)        { it := x.(*warmItem); it.index = len(*h); *h = append(*h, it) }
func (h *warmHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

// run is the warmer's background work: it hands due paths to conc workers,
// no faster than rate, until ctx is done, then waits for them.
func (w *warmer) run(ctx context.Context) {
	now := time.Now()
	h := make(warmHeap, 0, len(w.uris))
	for i, u := range w.uris {
		h = append(h, &warmItem{uri: u, due: now.Add(time.Duration(i)), index: i}) // in declared order
	}
	heap.Init(&h)
	lim := rate.NewLimiter(rate.Limit(w.rate), 1)
	work := make(chan *warmItem)
	done := make(chan *warmItem, len(w.uris)) // never blocks a worker
	var workers sync.WaitGroup
	for range w.conc {
		workers.Go(func() {
			for it := range work {
				w.fetch(ctx, it)
				done <- it
			}
		})
	}
	defer func() {
		close(work)
		workers.Wait()
	}()
	idle := w.conc
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wait := time.Duration(math.MaxInt64)
		if h.Len() > 0 && idle > 0 {
			wait = time.Until(h[0].due)
		}
		if wait <= 0 {
			it := heap.Pop(&h).(*warmItem)
			if at, ok := w.refreshAt(it.uri); ok && time.Until(at) > 0 {
				it.due, it.fails = at, 0 // fresh in the cache (a reload, a caller's fill): not yet
				heap.Push(&h, it)
				continue
			}
			if lim.Wait(ctx) != nil {
				return
			}
			idle--
			work <- it
			continue
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case it := <-done:
			idle++
			heap.Push(&h, it)
		case <-timer.C:
		}
	}
}

// warmFill is what the fill of one warm fetch found.
type warmFill struct {
	ran        bool // went upstream (false: a caller's fetch of the key was under way)
	status     int
	stored     bool
	overlapped bool // a purge ran meanwhile
	gone       bool // and removed what was stored
}

// fetch makes one warm fetch of it and sets when it is due again.
func (w *warmer) fetch(ctx context.Context, it *warmItem) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	w.request(req, it.uri)
	var f warmFill
	err := w.route.Internal(ctx, req, resp, proxy.HandlerFunc(func(ctx *fasthttp.RequestCtx, ex *proxy.Exchange) error {
		return w.fill(ctx, ex, &f)
	}))
	if ctx.Err() != nil && !f.ran {
		return // stopping
	}
	res := warmOK
	switch {
	case err != nil:
		res = warmFailed
		w.c.store.logger().Debug("warm fetch failed", "route", w.route.Name, "path", it.uri, "error", err.Error())
	case !f.ran:
		it.due = time.Now().Add(w.backoff) // a caller is filling it: look again then
		return
	case f.status >= 400:
		res = warmErrorStatus
	case f.gone || (f.overlapped && !f.stored):
		res = warmPurged
	case !f.stored:
		res = warmNotStored
	}
	w.results[res].Inc()
	now := time.Now()
	if res != warmOK {
		it.fails++
		d := w.backoff << min(it.fails-1, 30)
		if d > w.maxBack || d <= 0 {
			d = w.maxBack
		}
		it.due = now.Add(d)
		return
	}
	it.fails = 0
	it.due = now.Add(minWarmGap)
	if at, ok := w.refreshAt(it.uri); ok && at.After(it.due) {
		it.due = at
	}
}

// request fills req with the warm fetch of uri.
func (w *warmer) request(req *fasthttp.Request, uri string) {
	req.Header.SetMethod(fasthttp.MethodGet)
	req.SetRequestURI(uri)
	for _, kv := range w.headers {
		req.Header.Set(kv[0], kv[1])
	}
}

// fill runs in the warm fetch's exchange: it calls the pipeline after the
// cache and stores the answer as a caller's miss would, unless a caller's
// fetch of the same key is under way (its answer will be stored).
func (w *warmer) fill(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, f *warmFill) error {
	c := w.c
	ex.Consumer = w.consumer
	kb := keyPool.Get().(*keyBuf)
	defer keyPool.Put(kb)
	c.exchangeKey(ctx, ex, kb)
	key := bytes.Clone(kb.key)
	fl, leader := c.store.join(key)
	if !leader {
		return nil
	}
	defer c.store.leave(key, fl)
	c.forwardQuery(ex, kb)
	// An invalidation applied while the fetch is in flight wins: the store's
	// generation tells (see keepStored), as for a caller's miss.
	gen := c.store.gen.Load()
	f.ran = true
	if err := w.next.Handle(ctx, ex); err != nil {
		return err
	}
	f.status = ctx.Response.StatusCode()
	f.stored = c.storeResponse(ctx, ex, kb)
	if f.stored && !c.keepStored(kb, gen) {
		f.stored, f.overlapped, f.gone = false, true, true
	}
	return nil
}

// refreshAt reports when the stored answer for uri is due for a warm
// refresh; ok is false when there is none (or it cannot be read).
func (w *warmer) refreshAt(uri string) (time.Time, bool) {
	c := w.c
	var ctx fasthttp.RequestCtx
	w.request(&ctx.Request, uri)
	kb := keyPool.Get().(*keyBuf)
	defer keyPool.Put(kb)
	path, query, _ := strings.Cut(uri, "?")
	c.buildKey(&ctx, []byte(path), []byte(query), w.consumer, kb)
	b := c.lookup(&ctx, kb)
	var e entry
	if b == nil || decodeEntry(b, &e) != nil {
		return time.Time{}, false
	}
	expires := e.storedAt + e.lifetime - e.initialAge
	ahead := int64(w.ahead)
	if w.share > 0 {
		ahead = int64(float64(e.lifetime) * w.share)
	}
	return time.Unix(0, expires-ahead), true
}
