package cache

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/httpx"
	"github.com/valyala/fasthttp"
)

// webhook is a compiled webhook block: the route answers signed provider
// webhooks by purging the tags found in their payload.
type webhook struct {
	secret      []byte
	timestamped bool
	header      httpx.Name
	tolerance   time.Duration
	tags        []tagTemplate
	now         func() time.Time
	seen        *seenSet // accepted deliveries, to refuse replays
	cluster     *proxy.Cluster
	clusterKey  string // prefix of the Redis keys of accepted deliveries
	logger      func() *slog.Logger
}

// maxFutureSkew is how far ahead of the gateway's clock a timestamped
// delivery may be (clock skew between provider and gateway); the tolerance
// caps it.
const maxFutureSkew = 30 * time.Second

// maxSeen bounds the deliveries a webhook route remembers.
const maxSeen = 1 << 16

func newWebhook(w *WebhookConfig, seen *seenSet) (*webhook, error) {
	if seen == nil {
		seen = newSeenSet(maxSeen)
	}
	h := &webhook{secret: []byte(w.Secret.Reveal()), timestamped: w.Scheme == "timestamped",
		header: httpx.NewName(w.Header), tolerance: w.Tolerance.D(), now: time.Now, seen: seen, logger: slog.Default}
	for i, t := range w.Tags {
		tt, err := parseTagTemplate(t)
		if err != nil {
			return nil, fmt.Errorf("webhook.tags[%d]: %w", i, err)
		}
		h.tags = append(h.tags, tt)
	}
	return h, nil
}

var (
	errSignature     = proxy.NewError(proxy.CodeUnauthorized, "the webhook signature is missing, malformed, stale or does not match")
	errReplay        = proxy.NewError(proxy.CodeUnauthorized, "this webhook delivery was already accepted: a replay is refused")
	errWebhookMethod = proxy.NewError(proxy.CodeMethodNotAllowed, "webhooks are delivered with POST").WithHeader("Allow", "POST")
)

// handle verifies and applies one webhook; the upstream is never called.
func (w *webhook) handle(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, s *Store) error {
	if !ctx.IsPost() {
		return errWebhookMethod
	}
	body := ctx.Request.Body()
	mac, expires, ok := w.verify(w.header.Peek(&ctx.Request.Header), body)
	if !ok {
		return errSignature
	}
	now := w.now()
	if !w.seen.add(mac, expires, now) || !w.firstInCluster(mac, expires.Sub(now), ex.Remaining()) {
		return errReplay
	}
	var doc any
	if err := json.Unmarshal(body, &doc); err != nil {
		return proxy.NewError(proxy.CodeBadRequest, "the webhook payload is not valid JSON")
	}
	tags := w.extract(doc)
	n := 0
	if len(tags) > 0 {
		n = s.invalidate(Invalidation{Source: "webhook", Tags: tags})
	}
	out, _ := json.Marshal(map[string]any{"purged": n, "tags": nonNil(tags)})
	ctx.Response.Reset()
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("application/json")
	ctx.Response.Header.Set(fasthttp.HeaderCacheControl, "no-store")
	ctx.SetBody(out)
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// verify checks the signature header against the body. It returns the
// MAC of the delivery (what identifies it for replay detection) and until
// when a replay of it must be refused.
func (w *webhook) verify(sig, body []byte) (mac [sha256.Size]byte, expires time.Time, ok bool) {
	if len(sig) == 0 {
		return mac, expires, false
	}
	now := w.now()
	if !w.timestamped {
		sig = bytes.TrimPrefix(bytes.TrimSpace(sig), []byte("sha256="))
		mac = w.sum(nil, body)
		return mac, now.Add(w.tolerance), w.match(sig, &mac)
	}
	// t=UNIX,v1=HEX[,v1=HEX...]
	var ts []byte
	var sigs [][]byte
	for _, part := range bytes.Split(sig, []byte{','}) {
		k, v, ok := bytes.Cut(bytes.TrimSpace(part), []byte{'='})
		if !ok {
			continue
		}
		switch string(k) {
		case "t":
			if ts != nil {
				return mac, expires, false // two timestamps: which one is signed is ambiguous
			}
			ts = v
		case "v1":
			sigs = append(sigs, v)
		}
	}
	t, err := strconv.ParseInt(string(ts), 10, 64)
	if err != nil || len(sigs) == 0 || t < 0 || t > 1<<40 {
		return mac, expires, false
	}
	sent := time.Unix(t, 0)
	if d := now.Sub(sent); d > w.tolerance || d < -min(w.tolerance, maxFutureSkew) {
		return mac, expires, false
	}
	mac = w.sum(append(ts, '.'), body)
	for _, s := range sigs {
		if w.match(s, &mac) {
			return mac, sent.Add(w.tolerance), true
		}
	}
	return mac, expires, false
}

// firstInCluster records the delivery in Redis (SET NX, expiring with the
// replay window) and reports whether no other gateway of the cluster had
// accepted it. Single-node, or when Redis does not answer within a second
// (or the route's deadline), the local seen-set alone decides.
func (w *webhook) firstInCluster(mac [sha256.Size]byte, ttl, left time.Duration) bool {
	if w.cluster == nil || ttl <= 0 {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), min(time.Second, max(left, 0)))
	defer cancel()
	ok, err := w.cluster.Redis.SetNX(ctx, w.clusterKey+hex.EncodeToString(mac[:]), 1, ttl).Result()
	if err != nil {
		w.logger().Warn("webhook replay check: redis unavailable, only this gateway's deliveries are checked", "error", err.Error())
		return true
	}
	return ok
}

// sum is HMAC-SHA256(secret, prefix + body).
func (w *webhook) sum(prefix, body []byte) (out [sha256.Size]byte) {
	m := hmac.New(sha256.New, w.secret)
	m.Write(prefix)
	m.Write(body)
	m.Sum(out[:0])
	return out
}

// match compares hex sig with mac in constant time.
func (w *webhook) match(sig []byte, mac *[sha256.Size]byte) bool {
	got := make([]byte, hex.DecodedLen(len(sig)))
	if _, err := hex.Decode(got, sig); err != nil {
		return false
	}
	return hmac.Equal(got, mac[:])
}

// seenSet remembers accepted webhook deliveries (by MAC) until their replay
// window ends, at most max of them: when full, the oldest is forgotten
// first. Only deliveries with a valid signature enter it, so a caller
// without the secret cannot fill it. It lives across reloads (per route).
type seenSet struct {
	mu    sync.Mutex
	max   int
	m     map[[sha256.Size]byte]time.Time
	order [][sha256.Size]byte // insertion order, a FIFO
}

func newSeenSet(max int) *seenSet {
	return &seenSet{max: max, m: map[[sha256.Size]byte]time.Time{}}
}

// add records mac until expires and reports whether it was new (or its
// previous window had ended).
func (s *seenSet) add(mac [sha256.Size]byte, expires, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Forget what has expired at the front, and the oldest when full.
	for len(s.order) > 0 {
		old := s.order[0]
		exp, ok := s.m[old]
		if ok && now.Before(exp) && len(s.order) < s.max {
			break
		}
		if ok && (!now.Before(exp) || len(s.order) >= s.max) {
			delete(s.m, old)
		}
		s.order = s.order[1:]
	}
	if exp, ok := s.m[mac]; ok && now.Before(exp) {
		return false
	}
	if _, ok := s.m[mac]; !ok {
		s.order = append(s.order, mac)
	}
	s.m[mac] = expires
	return true
}

// extract evaluates the tag templates against the payload.
func (w *webhook) extract(doc any) []string {
	var out []string
	for _, t := range w.tags {
		vals := []string{""}
		for _, p := range t.parts {
			if p.ptr == nil {
				for i := range vals {
					vals[i] += p.lit
				}
				continue
			}
			v, ok := p.ptr.Eval(doc)
			if !ok {
				vals = nil
				break
			}
			var subs []string
			switch x := v.(type) {
			case []any:
				for _, e := range x {
					if s, ok := scalar(e); ok {
						subs = append(subs, s)
					}
				}
			default:
				if s, ok := scalar(x); ok {
					subs = []string{s}
				}
			}
			var next []string
			for _, prefix := range vals {
				for _, s := range subs {
					next = append(next, prefix+s)
				}
			}
			vals = next
		}
		for _, v := range vals {
			if v != "" {
				out = append(out, v)
			}
		}
	}
	return out
}

func scalar(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, x != ""
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), true
	case bool:
		return strconv.FormatBool(x), true
	}
	return "", false
}
